"""The ``cloudprov`` command: help with examples for every command, version, keys, and the demo."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import protocol
from cli.main import build_parser, main
from protocol.signing import Signer, load_private_key, load_public_key

COMMANDS = [
    [],
    ["demo"],
    ["sync"],
    ["sync", "status"],
    ["sync", "log"],
    ["sync", "restart"],
    ["sync", "approve-deletes"],
    ["agent"],
    ["agent", "run"],
    ["agent", "register"],
    ["config"],
    ["config", "check"],
    ["keys"],
    ["keys", "generate"],
    ["version"],
    ["service"],
    ["service", "run"],
    ["admin"],
    ["admin", "token"],
    ["admin", "token", "create"],
    ["admin", "agents"],
    ["admin", "agents", "list"],
    ["admin", "assign"],
    ["admin", "unassign"],
    ["admin", "revoke"],
    ["admin", "keys"],
    ["admin", "keys", "list"],
    ["admin", "keys", "rotate"],
    ["admin", "endpoints"],
]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cloudprov")
def test_help_works_for_every_command(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """``--help`` on every command prints usage and exits 0."""
    with pytest.raises(SystemExit) as caught:
        main([*command, "--help"])
    assert caught.value.code == 0
    assert "usage: cloudprov" in capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cloudprov")
def test_help_shows_an_example(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The help of the program and of every command shows an example invocation of that command."""
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    out = capsys.readouterr().out
    assert "example" in out
    assert f"cloudprov {' '.join(command)}".rstrip() in out.split("example", 1)[1]


def test_every_command_is_covered() -> None:
    """The help tests above name every sub-command the parser has (a new command must get an example)."""
    parser = build_parser()
    subparsers = parser._subparsers
    assert subparsers is not None
    top = subparsers._group_actions[0].choices
    assert isinstance(top, dict)
    assert set(top) == {"demo", "agent", "config", "keys", "version", "service", "admin", "sync"}


def test_missing_command_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov`` without a command is a usage error (exit 2) that names the choices."""
    with pytest.raises(SystemExit) as caught:
        main([])
    assert caught.value.code == 2
    assert "COMMAND" in capsys.readouterr().err


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov version`` prints the name, a version, and whether the install runs compiled."""
    assert main(["version"]) == 0
    out = capsys.readouterr().out.strip()
    name, number, build = out.split(" ", 2)
    assert (name, bool(number)) == ("cloudprov", True)
    assert build == ("(compiled)" if protocol.compiled() else "(plain Python)")


def test_keys_generate_prints_a_working_pair(capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov keys generate`` prints a key id and a base64 key pair that sign and verify."""
    assert main(["keys", "generate", "--key-id", "svc1"]) == 0
    lines = {line.split(":", 1)[0]: line.split(":", 1)[1].split()[0] for line in capsys.readouterr().out.splitlines()}
    assert lines["key id"] == "svc1"
    signer = Signer("svc1", load_private_key(lines["private key"]))
    assert load_public_key(lines["public key"]) == signer.public_key


def test_agent_run_with_a_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov agent run`` on an invalid file prints the faulty key and exits 2 without starting."""
    config = tmp_path / "agent.yaml"
    config.write_text("dispatcher:\n  max_in_flight: 0\n")
    assert main(["agent", "run", "-c", str(config)]) == 2
    assert "dispatcher.max_in_flight" in capsys.readouterr().err


@pytest.mark.parametrize("argument", ["--users", "--groups"])
def test_demo_refuses_a_negative_count(argument: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``cloudprov demo --users -1`` is a usage error (exit 2, one message), not a traceback."""
    with pytest.raises(SystemExit) as exited:
        main(["demo", argument, "-1"])
    assert exited.value.code == 2
    assert f"argument {argument}: -1 is negative" in capsys.readouterr().err


@pytest.mark.parametrize("url", ["postgresql+asyncpg://u:hunter2@db/cp", "mysql://u:hunter2@db/cp"])
def test_bad_store_urls_do_not_print_the_password(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A store or state URL that is refused is named with its password masked."""
    from service.provisioning.state import StateError, StateStore
    from service.store import StoreError, open_store

    with pytest.raises(StoreError) as store:
        open_store(url)
    with pytest.raises(StateError) as state:
        StateStore(url)
    assert main(["sync", "--state", url, "status"]) != 0
    for message in (str(store.value), str(state.value), capsys.readouterr().err):
        assert "u:***@db/cp" in message
        assert "hunter2" not in message


ADMIN = ["admin", "--url", "https://127.0.0.1:1", "--token", "t"]


def test_admin_with_an_invalid_service_file_is_one_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``admin -c service.yaml`` on an invalid or missing file names the file and keys, exit 2, no traceback."""
    config = tmp_path / "service.yaml"
    config.write_text("control: {port: 99999}\nadmin: {token: hunter2}\n")
    assert main(["admin", "-c", str(config), "agents", "list"]) == 2
    assert capsys.readouterr().err.splitlines() == [
        f"admin: {config}: invalid configuration",
        "  control.port: Input should be less than or equal to 65535",
    ]
    assert main(["admin", "-c", str(tmp_path / "missing.yaml"), "agents", "list"]) == 2
    err = capsys.readouterr().err
    assert err == f"admin: {tmp_path / 'missing.yaml'}: cannot read the configuration file: No such file or directory\n"


def test_admin_names_a_ca_file_it_cannot_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing or non-PEM CA file is named with where it came from, not reported as an unreachable control plane."""
    missing, text = tmp_path / "ca.pem", tmp_path / "notes.txt"
    text.write_text("not a certificate\n")
    assert main([*ADMIN, "--ca-file", str(missing), "agents", "list"]) == 2
    assert capsys.readouterr().err == (
        f"admin: cannot read the CA file {str(missing)!r} (--ca-file): No such file or directory\n"
    )
    monkeypatch.setenv("CLOUDPROV_CONTROL_CA", str(text))
    assert main([*ADMIN, "agents", "list"]) == 2
    assert (
        capsys.readouterr().err == f"admin: the CA file {str(text)!r} (CLOUDPROV_CONTROL_CA) holds no PEM certificate\n"
    )
    config = tmp_path / "service.yaml"
    config.write_text(f"control: {{state_dir: {tmp_path / 'state'}}}\nadmin: {{token: t}}\n")
    assert main(["admin", "-c", str(config), "agents", "list"]) == 2
    assert capsys.readouterr().err == (
        f"admin: cannot read the CA file {str(tmp_path / 'state' / 'ca.pem')!r} (control.state_dir of {config}): "
        "No such file or directory\n"
    )


def test_admin_without_a_target_exits_2(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """``admin`` with no URL, token or CA from options, variables or a file says what to give and exits 2."""
    for name in ("CLOUDPROV_CONTROL_URL", "CLOUDPROV_ADMIN_TOKEN", "CLOUDPROV_CONTROL_CA"):
        monkeypatch.delenv(name, raising=False)
    assert main(["admin", "agents", "list"]) == 2
    assert capsys.readouterr().err.startswith("admin: give --url, --token and --ca-file")


def test_agent_register_with_a_missing_ca_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``agent register --ca-file`` naming a missing file prints the option and file, exit 2, no traceback."""
    config = tmp_path / "agent.yaml"
    config.write_text(f"agent: {{state_dir: {tmp_path / 'state'}}}\n")
    missing = tmp_path / "ca.pem"
    command = ["agent", "register", "-c", str(config), "--control-plane", "https://127.0.0.1:1", "--token", "x"]
    assert main([*command, "--ca-file", str(missing)]) == 2
    assert capsys.readouterr().err == f"register: cannot read --ca-file {str(missing)!r}: No such file or directory\n"


def test_demo_runs_clean() -> None:
    """``cloudprov demo --users 30`` exits 0 and its summary reports no failed step."""
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", "demo", "--users", "30"],
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    summary = [line for line in result.stdout.splitlines() if line.startswith("summary:")]
    assert len(summary) == 1, result.stdout
    assert " 0 failed" in summary[0]
    assert "[ERR]" not in result.stdout
    assert "over a memory directory with 30 users" in result.stdout
