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
