"""Service configuration: store URLs and the operator CA are checked as the file loads, in one line per key."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from cli.main import main
from service.config import ServiceConfigError, load_service_settings


def _write(tmp_path: Path, text: str, name: str = "service.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("key", ["store: {url: URL}", "provisioning: {state_url: URL}"])
@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql+asyncpg://cp:hunter2@db/cp", "no store for scheme 'postgresql+asyncpg'"),
        ("mysql://cp:hunter2@db/cp", "no store for scheme 'mysql'"),
        ("cp:hunter2@db/cp", "not a URL (no scheme://)"),
        ("cp:hunter2@db://cp", "not a URL (no scheme://)"),
    ],
)
def test_store_url_without_a_driver_is_refused_at_load(tmp_path: Path, key: str, url: str, problem: str) -> None:
    """A store or state URL whose scheme has no driver is refused naming the key, without repeating the URL."""
    path = _write(tmp_path, key.replace("URL", f'"{url}"') + "\n")
    with pytest.raises(ServiceConfigError) as caught:
        load_service_settings(path, env={})
    message = str(caught.value)
    assert f"{'store.url' if key.startswith('store') else 'provisioning.state_url'}: Value error, {problem}" in message
    assert "hunter2" not in message


@pytest.mark.parametrize(
    "url", ["", "sqlite:///var/lib/cloudprov/control.db", "postgresql://cp:pw@db/cp", "postgres://db"]
)
def test_store_urls_with_a_driver_load(tmp_path: Path, url: str) -> None:
    """Empty (the embedded default), ``sqlite:///…`` and ``postgresql://…`` store URLs are accepted."""
    path = _write(tmp_path, f'store: {{url: "{url}"}}\nprovisioning: {{state_url: "{url}"}}\n')
    settings = load_service_settings(path, env={})
    assert (settings.store.url, settings.provisioning.state_url) == (url, url)


def test_service_run_with_a_bad_store_url_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``service run`` on a store URL without a driver prints the key and exits 2, no traceback, no password."""
    path = _write(
        tmp_path, f'control: {{port: 0, state_dir: "{tmp_path}"}}\nstore: {{url: "mysql://cp:hunter2@db/cp"}}\n'
    )
    assert main(["service", "run", "-c", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"{path}: invalid configuration",
        "  store.url: Value error, no store for scheme 'mysql': expected sqlite:///path or postgresql://…",
    ]


def test_service_run_with_an_unreachable_store_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot be opened at start is one line with its password masked and exit 2, not a traceback."""
    from service.store import StoreError

    def refuse(url: str) -> None:
        raise StoreError(f"{url}: connection refused")

    monkeypatch.setattr("service.control.app.open_store", refuse)
    monkeypatch.setattr("cli.control.configure", lambda *_args, **_kwargs: None)  # leave logging as the suite has it
    path = _write(
        tmp_path, f'control: {{port: 0, state_dir: "{tmp_path}"}}\nstore: {{url: "postgresql://cp:hunter2@db/cp"}}\n'
    )
    assert main(["service", "run", "-c", str(path)]) == 2
    assert capsys.readouterr().err == "service: cannot start: postgresql://cp:***@db/cp: connection refused\n"


@pytest.mark.parametrize(
    ("given", "problem"),
    [
        ("ca_cert_file", "control: Value error, control.ca_key_file is not set"),
        ("ca_key_file", "control: Value error, control.ca_cert_file is not set"),
    ],
)
def test_operator_ca_needs_both_files(tmp_path: Path, given: str, problem: str) -> None:
    """``control.ca_cert_file`` without ``ca_key_file`` (or the reverse) is refused naming the one missing."""
    (tmp_path / "ca").write_text("pem")
    path = _write(tmp_path, f'control: {{{given}: "{tmp_path / "ca"}"}}\n')
    with pytest.raises(ServiceConfigError, match=problem):
        load_service_settings(path, env={})


def test_missing_operator_ca_files_are_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """CA files that do not exist are refused at load, each named with its key; ``service run`` exits 2."""
    cert, key = tmp_path / "nope.pem", tmp_path / "nope-key.pem"
    path = _write(
        tmp_path, f'control: {{state_dir: "{tmp_path}", ca_cert_file: "{cert}", ca_key_file: "{tmp_path}"}}\n'
    )
    assert main(["service", "run", "-c", str(path)]) == 2
    assert capsys.readouterr().err.splitlines()[1:] == [
        f"  control.ca_cert_file: Value error, {str(cert)!r} does not exist",
        f"  control.ca_key_file: Value error, {str(tmp_path)!r} is not a file",
    ]
    cert.write_text("pem")
    key.write_text("pem")
    path = _write(tmp_path, f'control: {{ca_cert_file: "{cert}", ca_key_file: "{key}"}}\n')
    assert load_service_settings(path, env={}).control.ca_key_file == key
