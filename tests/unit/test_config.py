"""Agent configuration: defaults, interpolation, secrets, env overrides, and messages that name the key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from agent.config import AgentSettings, ConfigError, load_settings
from agent.lifecycle.remote import overlay
from cli.main import main


def _write(tmp_path: Path, text: str, name: str = "agent.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_defaults_validate_and_work() -> None:
    """With no file and no environment, the settings are the embedded defaults: local transport, memory directory."""
    settings = load_settings(None, env={})
    assert settings == AgentSettings()
    assert settings.transport.url == "local://"
    assert settings.directory.plugin == "memory"
    assert settings.dispatcher.max_in_flight >= 1
    assert settings.agent.domains == ["example.com"]


def test_empty_file_means_defaults(tmp_path: Path) -> None:
    """An empty YAML file is the defaults, not an error."""
    assert load_settings(_write(tmp_path, ""), env={}).transport.url == "local://"


def test_env_references_are_interpolated(tmp_path: Path) -> None:
    """``${NAME}`` takes the variable's value and ``${NAME:-default}`` falls back to the default."""
    path = _write(
        tmp_path,
        """
        agent:
          id: agent-${SITE}
          domains: ["${DOMAIN:-example.org}", "${OTHER:-}x.com"]
        transport:
          url: amqp://${USER}:${PASS}@mq/
        """,
    )
    settings = load_settings(path, env={"SITE": "paris", "USER": "u", "PASS": "p"})
    assert settings.agent.id == "agent-paris"
    assert settings.agent.domains == ["example.org", "x.com"]
    assert settings.transport.url == "amqp://u:p@mq/"


def test_set_variable_wins_over_default(tmp_path: Path) -> None:
    """A variable that is set is used even when the reference has a default."""
    path = _write(tmp_path, "transport:\n  url: ${URL:-local://}\n")
    assert load_settings(path, env={"URL": "http://127.0.0.1:1/"}).transport.url == "http://127.0.0.1:1/"


def test_missing_env_variable_is_named_with_its_key(tmp_path: Path) -> None:
    """A reference to an unset variable fails naming the variable and the key that used it."""
    path = _write(tmp_path, "transport:\n  url: amqp://${MQ_HOST}/\n")
    with pytest.raises(ConfigError, match=r"transport\.url: environment variable MQ_HOST is not set"):
        load_settings(path, env={})


def test_file_secret_is_read_without_trailing_newline(tmp_path: Path) -> None:
    """``file:/path`` loads a signing key from a mounted file, trailing newline stripped."""
    key_file = tmp_path / "k1.pub"
    key_file.write_text("AAAAC3NzaC1lZDI1NTE5AAAAI\n")
    path = _write(tmp_path, f"signing:\n  public_keys:\n    k1: file:{key_file}\n")
    assert load_settings(path, env={}).signing.public_keys == {"k1": "AAAAC3NzaC1lZDI1NTE5AAAAI"}


def test_unreadable_secret_file_is_named(tmp_path: Path) -> None:
    """A ``file:`` reference to a missing file fails naming the key and the file."""
    missing = tmp_path / "nope.pub"
    path = _write(tmp_path, f"signing:\n  public_keys:\n    k1: file:{missing}\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert "signing.public_keys.k1" in message
    assert str(missing) in message
    assert "cannot read secret file" in message


@pytest.mark.parametrize("key", ["token", "key", "connection_string", "password", "client_secret", "sas_token"])
def test_secret_transport_option_is_read_from_its_file(tmp_path: Path, key: str) -> None:
    """A secret transport option (http token, Service Bus key, anything password-like) may be ``file:/path``."""
    secret = tmp_path / "secret"
    secret.write_text("s3cret-value\n")
    path = _write(tmp_path, f'transport: {{url: "sb://ns/", options: {{{key}: "file:{secret}", prefetch: 8}}}}\n')
    assert load_settings(path, env={}).transport.options == {key: "s3cret-value", "prefetch": 8}


@pytest.mark.parametrize("key", ["token_file", "tls_key", "key_name", "request_queue"])
def test_other_transport_options_are_left_as_written(tmp_path: Path, key: str) -> None:
    """Options that are no secret (paths such as ``token_file`` and ``tls_key``, names) keep a ``file:`` prefix."""
    path = _write(tmp_path, f'transport: {{url: "sb://ns/", options: {{{key}: "file:/nonexistent/x"}}}}\n')
    assert load_settings(path, env={}).transport.options == {key: "file:/nonexistent/x"}


def test_http_transport_uses_the_token_from_its_file(tmp_path: Path) -> None:
    """``options: {token: file:/…}`` makes the file's content the bearer token, not the ``file:`` text."""
    from agent.runtime import build_transport

    secret = tmp_path / "http-token"
    secret.write_text("s3cret-token\n")
    path = _write(tmp_path, f'transport: {{url: "http://127.0.0.1:0/", options: {{token: "file:{secret}"}}}}\n')
    transport = build_transport(load_settings(path, env={}))
    assert transport._token == "s3cret-token"  # type: ignore[attr-defined]


def test_unreadable_transport_secret_file_is_named_with_its_option(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``config check`` names ``transport.options.<key>`` and the file of an unreadable secret, one line each."""
    missing = tmp_path / "nope"
    binary = tmp_path / "binary"
    binary.write_bytes(b"\xbe\xef hunter2")
    path = _write(
        tmp_path,
        f'transport: {{url: "sb://ns/", options: {{key: "file:{missing}", connection_string: "file:{binary}"}}}}\n',
    )
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert f"  transport.options.key: cannot read secret file {str(missing)!r}: No such file or directory\n" in err
    assert f"  transport.options.connection_string: cannot read secret file {str(binary)!r}: not UTF-8 text\n" in err
    assert "hunter2" not in err


def test_transport_secret_from_a_file_is_not_echoed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A secret read from a file appears neither in ``config check`` output nor in a transport option error."""
    secret = tmp_path / "secret"
    secret.write_text("hunter2")
    path = _write(
        tmp_path, f'transport: {{url: "http://127.0.0.1:0/", options: {{token: "file:{secret}", portt: 1}}}}\n'
    )
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert "transport.options: unknown setting 'portt'" in captured.err
    assert "hunter2" not in captured.err + captured.out


def test_env_override_replaces_file_value(tmp_path: Path) -> None:
    """``CLOUDPROV__TRANSPORT__URL`` overrides the file; other keys of the section stay."""
    path = _write(tmp_path, "transport:\n  url: local://a\n  options: {retry_delay: 1}\n")
    settings = load_settings(path, env={"CLOUDPROV__TRANSPORT__URL": "amqp://mq/", "UNRELATED": "x"})
    assert settings.transport.url == "amqp://mq/"
    assert settings.transport.options == {"retry_delay": 1}


@pytest.mark.parametrize("reverse", [False, True])
def test_env_overrides_of_a_section_and_a_key_inside_it_are_refused(reverse: bool) -> None:
    """``CLOUDPROV__TRANSPORT`` with ``CLOUDPROV__TRANSPORT__URL`` names both variables, whatever their order."""
    pairs = [("CLOUDPROV__TRANSPORT", "amqp://x"), ("CLOUDPROV__TRANSPORT__URL", "amqp://y")]
    env = dict(reversed(pairs) if reverse else pairs)
    with pytest.raises(ConfigError) as caught:
        load_settings(None, env=env)
    assert str(caught.value) == (
        "environment variables CLOUDPROV__TRANSPORT and CLOUDPROV__TRANSPORT__URL conflict: the first sets all of "
        "transport, the second transport.url inside it; unset one of them"
    )


def test_env_overrides_of_the_same_key_are_refused() -> None:
    """Two variables that differ only in case set the same key: both are named instead of one winning by chance."""
    env = {"CLOUDPROV__AGENT__ID": "a", "CLOUDPROV__agent__id": "b"}
    with pytest.raises(ConfigError, match=r"^environment variables CLOUDPROV__AGENT__ID and CLOUDPROV__agent__id both"):
        load_settings(None, env=env)


def test_env_overrides_of_sibling_keys_combine() -> None:
    """Variables for different keys of one section (or of nested options) are laid over together."""
    env = {"CLOUDPROV__TRANSPORT__URL": "amqp://mq/", "CLOUDPROV__TRANSPORT__OPTIONS__PREFETCH": "4"}
    settings = load_settings(None, env=env)
    assert (settings.transport.url, settings.transport.options) == ("amqp://mq/", {"prefetch": "4"})


def test_env_overrides_parse_numbers_and_lists() -> None:
    """Override values are YAML scalars: numbers become numbers, flow lists become lists."""
    settings = load_settings(
        None,
        env={"CLOUDPROV__DISPATCHER__MAX_IN_FLIGHT": "8", "CLOUDPROV__AGENT__DOMAINS": "[a.com, b.com]"},
    )
    assert settings.dispatcher.max_in_flight == 8
    assert settings.agent.domains == ["a.com", "b.com"]


def test_env_override_of_number_like_text_stays_text() -> None:
    """A number-like override of a text setting (an agent id of 0042) stays that text, unquoted."""
    assert load_settings(None, env={"CLOUDPROV__AGENT__ID": "0042"}).agent.id == "0042"


def test_env_override_list_is_parsed() -> None:
    """A list-valued override in YAML flow style becomes a list, and numeric text still converts where wanted."""
    settings = load_settings(
        None, env={"CLOUDPROV__AGENT__DOMAINS": "[a.example, b.example]", "CLOUDPROV__DISPATCHER__MAX_IN_FLIGHT": "7"}
    )
    assert settings.agent.domains == ["a.example", "b.example"]
    assert settings.dispatcher.max_in_flight == 7


def test_unknown_key_is_named(tmp_path: Path) -> None:
    """A misspelt key is reported with its dotted path as unknown."""
    path = _write(tmp_path, "dispatcher:\n  max_inflight: 3\n")
    with pytest.raises(ConfigError, match=r"dispatcher\.max_inflight: unknown key"):
        load_settings(path, env={})


def test_unknown_section_is_named(tmp_path: Path) -> None:
    """A misspelt section is reported as an unknown key."""
    with pytest.raises(ConfigError, match="transprot: unknown key"):
        load_settings(_write(tmp_path, "transprot:\n  url: local://\n"), env={})


def test_every_faulty_key_is_listed(tmp_path: Path) -> None:
    """All problems are reported at once, each with its dotted key and the file name."""
    path = _write(
        tmp_path,
        """
        dispatcher:
          max_in_flight: many
          grace_period: -1
        logging:
          level: loud
        transport:
          url: no-scheme
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: invalid configuration")
    assert "dispatcher.max_in_flight: Input should be a valid integer" in message
    assert "dispatcher.grace_period: Input should be greater than or equal to 0" in message
    assert "logging.level: Input should be 'debug', 'info', 'warning' or 'error'" in message
    assert "transport.url: Value error, not a URL (no scheme://)" in message


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("signing:\n  clock_skew: .inf\n", "signing.clock_skew: Input should be a finite number"),
        ("scim:\n  cursor_ttl: .nan\n", "scim.cursor_ttl: Input should be a finite number"),
        ("dispatcher:\n  grace_period: -.inf\n", "dispatcher.grace_period: Input should be a finite number"),
        ("health:\n  max_loop_lag: .inf\n", "health.max_loop_lag: Input should be a finite number"),
        ("dispatcher:\n  max_deliveries: true\n", "dispatcher.max_deliveries: Input should be a number, not true"),
        ("health:\n  port: false\n", "health.port: Input should be a number, not true or false"),
        ("retry:\n  jitter: yes\n", "retry.jitter: Input should be a number, not true or false"),
        ("signing:\n  clock_skew: 301\n", "signing.clock_skew: Input should be at most 300 seconds"),
        ("signing:\n  max_lifetime: 1e12\n", "signing.max_lifetime: Input should be at most 3600 seconds"),
    ],
)
def test_numbers_must_be_finite_bounded_and_not_booleans(tmp_path: Path, yaml_text: str, message: str) -> None:
    """Infinity and NaN, a boolean where a number belongs, and a skew or lifetime above its cap are refused by key."""
    with pytest.raises(ConfigError) as caught:
        load_settings(_write(tmp_path, yaml_text), env={})
    assert message in str(caught.value)


def test_numbers_at_their_caps_and_from_the_environment_are_accepted() -> None:
    """The caps themselves are valid, and numeric text from an environment variable still converts."""
    env = {
        "CLOUDPROV__SIGNING__CLOCK_SKEW": "300",
        "CLOUDPROV__SIGNING__MAX_LIFETIME": "3600",
        "CLOUDPROV__DISPATCHER__MAX_DELIVERIES": "7",
    }
    settings = load_settings(None, env=env)
    assert (settings.signing.clock_skew, settings.signing.max_lifetime) == (300, 3600)
    assert settings.dispatcher.max_deliveries == 7
    with pytest.raises(ConfigError, match=r"signing\.clock_skew: Input should be a finite number"):
        load_settings(None, env={"CLOUDPROV__SIGNING__CLOCK_SKEW": "inf"})


def test_settings_from_the_control_plane_follow_the_same_rules() -> None:
    """A pushed value that is not finite, a boolean for a number, or above a cap is skipped with its reason."""
    base = AgentSettings()
    remote = {
        "signing.clock_skew": float("inf"),
        "signing.max_lifetime": 1e12,
        "scim.cursor_ttl": float("nan"),
        "dispatcher.max_deliveries": True,
        "dispatcher.grace_period": 10,
    }
    settings, skipped = overlay(base, remote)
    assert skipped == {
        "signing.clock_skew": "Input should be a finite number",
        "signing.max_lifetime": "Input should be at most 3600 seconds: a captured request could be replayed that long",
        "scim.cursor_ttl": "Input should be a finite number",
        "dispatcher.max_deliveries": "Input should be a number, not true or false",
    }
    assert settings.signing == base.signing
    assert settings.scim == base.scim
    assert (settings.dispatcher.max_deliveries, settings.dispatcher.grace_period) == (5, 10)


def test_invalid_yaml_is_reported(tmp_path: Path) -> None:
    """A file that is not YAML fails with a message saying so and naming the file."""
    path = _write(tmp_path, "agent: [unclosed\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_settings(path, env={})


def test_yaml_error_names_file_line_and_column_but_not_the_line(tmp_path: Path) -> None:
    """A YAML syntax error gives the file, line and column, and not the offending text (it may hold a password)."""
    path = _write(tmp_path, 'directory:\n  plugin: ldap\n  password: "hunter2\n  bind_dn: x\n')
    with pytest.raises(ConfigError) as caught:
        load_settings(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: not valid YAML: ")
    assert "line 5, column 1" in message
    assert "hunter2" not in message
    assert "<unicode string>" not in message
    assert "\n" not in message


@pytest.mark.parametrize("data", ["# f\u00fcr\nagent: {id: a}\n".encode("latin-1"), b"\xff\xfe bad"])
def test_non_utf8_file_is_one_clear_error(tmp_path: Path, data: bytes) -> None:
    """A file that is not UTF-8 (Latin-1, UTF-16, binary) is refused in one line naming the file, not a traceback."""
    path = tmp_path / "agent.yaml"
    path.write_bytes(data)
    with pytest.raises(ConfigError, match=rf"^{path}: not UTF-8 text \(byte 0x(fc|ff) on line 1\)"):
        load_settings(path, env={})


def test_transport_url_without_scheme_is_not_repeated(tmp_path: Path) -> None:
    """A transport URL missing its ``://`` is refused without echoing it: its password could not be masked."""
    path = _write(tmp_path, 'transport: {url: "amqps//cloudprov:hunter2@rabbitmq:5671/"}\n')
    with pytest.raises(ConfigError, match=r"transport\.url: .*not a URL") as caught:
        load_settings(path, env={})
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize(("text", "kind"), [("- a\n- b\n", "list"), ("just text\n", "str"), ("42\n", "int")])
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    """A file whose top level is not a mapping of sections is refused, naming what it is."""
    with pytest.raises(ConfigError, match=f"top level must be a mapping of sections, not {kind}"):
        load_settings(_write(tmp_path, text), env={})


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A file that does not exist fails with a readable message, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read the configuration file"):
        load_settings(tmp_path / "absent.yaml", env={})


def test_plugin_settings_are_passed_through(tmp_path: Path) -> None:
    """The directory section's keys other than ``plugin`` go to the plugin unvalidated by the agent."""
    settings = load_settings(_write(tmp_path, "directory:\n  plugin: memory\n  seed_users: 3\n"), env={})
    assert settings.directory.plugin_settings() == {"seed_users": 3}


# ------------------------------------------------------------------------------------- the CLI


def test_config_check_accepts_a_valid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov config check`` exits 0 and summarises a valid file."""
    path = _write(tmp_path, "transport:\n  url: local://x\ndirectory:\n  plugin: memory\n  seed_users: 5\n")
    assert main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"{path}: OK" in out
    assert "transport local" in out
    assert "directory memory" in out


def test_config_check_rejects_an_invalid_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov config check`` exits 2 and prints the faulty key on stderr."""
    path = _write(tmp_path, "scim:\n  max_page_size: 0\n")
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert "scim.max_page_size: Input should be greater than or equal to 1" in captured.err
    assert captured.out == ""


def test_config_check_rejects_invalid_plugin_settings(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad setting of the directory plugin is caught by ``config check``, naming the key."""
    path = _write(tmp_path, "directory:\n  plugin: memory\n  seed_users: -1\n  colour: blue\n")
    assert main(["config", "check", str(path)]) == 2
    err = capsys.readouterr().err
    assert "directory.seed_users" in err
    assert "directory.colour" in err


def test_config_check_rejects_unknown_plugin(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt plugin name is refused with a suggestion."""
    path = _write(tmp_path, "directory:\n  plugin: memroy\n")
    assert main(["config", "check", str(path)]) == 2
    assert "did you mean 'memory'" in capsys.readouterr().err


def test_config_check_rejects_bad_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``config check`` on a non-YAML file exits 2 with a message, not a traceback."""
    path = _write(tmp_path, "a: b: c\n")
    assert main(["config", "check", str(path)]) == 2
    assert "not valid YAML" in capsys.readouterr().err


BAD_AT_BUILD = [
    ("signing: {public_keys: {k1: not-a-key}}", "signing.public_keys.k1: the public key is neither PEM nor base64"),
    ("scim: {profile: openldp}", "scim.profile: unknown profile 'openldp'"),
    ("scim: {profile_overrides: {nonsense: 1}}", "scim.profile_overrides: profile override 'nonsense'"),
    ('transport: {url: "rabbit://guest:hunter2@mq/"}', "transport.url: no transport for scheme 'rabbit'"),
    (
        'transport: {url: "amqp://u:hunter2@mq/", options: {prefetchh: 64}}',
        "transport.options: unknown setting 'prefetchh'",
    ),
    (
        'transport: {url: "amqp://u:hunter2@mq/", options: {prefetch: lots}}',
        "transport.options: setting 'prefetch' must be int",
    ),
    (
        'transport: {url: "http://127.0.0.1:0/", options: {token_file: /nonexistent/token}}',
        "transport.options: token_file: cannot read",
    ),
    (
        'transport: {url: "http://127.0.0.1:0/"}',
        "transport.options: the http transport refuses to start without authentication",
    ),
    ("directory: {plugin: memroy}", "directory.plugin: unknown directory plugin 'memroy'"),
    ("directory: {plugin: memory, seed_ldif: /nonexistent/seed.ldif}", "directory.seed_ldif: "),
    (
        "directory: {plugin: ldap, bind_dn: cn=admin, password: hunter2, "
        'scope_filter: "(!(isCriticalSystemObject=TRUE)"}',
        "directory.scope_filter: Value error, not an RFC 4515 filter: ",
    ),
]


@pytest.mark.parametrize(("text", "problem"), BAD_AT_BUILD)
def test_config_check_builds_what_the_agent_builds(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, problem: str
) -> None:
    """``config check`` refuses what ``agent run`` could not build (keys, profile, transport), naming the setting."""
    path = _write(tmp_path, text + "\n")
    assert main(["config", "check", str(path)]) == 2
    captured = capsys.readouterr()
    assert problem in captured.err
    assert "hunter2" not in captured.err
    assert captured.out == ""


@pytest.mark.parametrize(("text", "problem"), BAD_AT_BUILD)
def test_agent_run_reports_what_it_cannot_build_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, text: str, problem: str
) -> None:
    """``agent run`` prints one line naming the setting and exits 2 instead of a traceback."""
    monkeypatch.setattr("cli.main.configure", lambda *_args, **_kwargs: None)  # leave logging as the suite has it
    path = _write(tmp_path, text + "\nhealth: {enabled: false}\nagent: {state_dir: " + str(tmp_path) + "}\n")
    assert main(["agent", "run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert problem in err
    assert "Traceback" not in err
    assert "hunter2" not in err


def test_config_check_lists_every_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Problems found while building are all reported, one line each."""
    path = _write(tmp_path, "scim: {profile: openldp}\nsigning: {public_keys: {k1: not-a-key}}\n")
    assert main(["config", "check", str(path)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == f"{path}: invalid configuration"
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["signing.public_keys.k1", "scim.profile"]


def test_ldap_base_dn_split_by_yaml_is_refused() -> None:
    """``base_dns: [dc=example,dc=com]`` (YAML makes it two DNs) is refused with the quoted form to write instead."""
    from plugins.registry import PluginSettingsError, create_directory

    settings = {"bind_dn": "cn=admin,dc=example,dc=com", "password": "pw", "base_dns": ["dc=example", "dc=com"]}
    with pytest.raises(
        PluginSettingsError, match=r'directory\.base_dns: .*quote each DN: base_dns: \["dc=example,dc=com"\]'
    ):
        create_directory("ldap", settings)
    with pytest.raises(PluginSettingsError, match=r"directory\.base_dns: .*'ou=x\+' is not a DN"):
        create_directory("ldap", {**settings, "base_dns": ["ou=x+"]})
    quoted = create_directory("ldap", {**settings, "base_dns": ["dc=example,dc=com"]})
    assert quoted.settings.base_dns == ("dc=example,dc=com",)  # type: ignore[attr-defined]


@pytest.mark.parametrize("scope_filter", ["(!(isCriticalSystemObject=TRUE)", "(cn=a)(cn=b)", ""])
def test_ldap_scope_filter_that_does_not_parse_is_refused(scope_filter: str) -> None:
    """A ``scope_filter`` the LDAP filter parser rejects is refused as the plugin's settings load, naming it."""
    from plugins.registry import PluginSettingsError, create_directory

    settings = {"bind_dn": "cn=admin,dc=example,dc=com", "password": "pw", "scope_filter": scope_filter}
    with pytest.raises(PluginSettingsError, match=r"directory\.scope_filter: .*not an RFC 4515 filter"):
        create_directory("ldap", settings)
    valid = create_directory("ldap", {**settings, "scope_filter": "(!(isCriticalSystemObject=TRUE))"})
    assert valid.settings.scope_filter == "(!(isCriticalSystemObject=TRUE))"  # type: ignore[attr-defined]
