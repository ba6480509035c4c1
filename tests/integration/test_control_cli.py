"""The control-plane commands: admin token/agents/assign/revoke and agent register against a live control plane."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from cli.main import main
from tests.integration.control_support import ADMIN_TOKEN, control_plane


async def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()  # drop what the in-process control plane logged before
    with capture_logs():  # and keep its logs out of the command's output
        code = await asyncio.to_thread(main, list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


async def test_admin_and_register_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """An admin makes a token, the agent registers with it once, and the admin sees, assigns and revokes it."""
    async with control_plane(tmp_path / "cp") as server:
        admin = ["admin", "--url", server.url, "--token", ADMIN_TOKEN, "--ca-file", str(tmp_path / "cp" / "ca.pem")]
        code, out, _ = await _cli(capsys, *admin, "token", "create", "--domain", "example.com")
        assert code == 0
        token = json.loads(out)
        agent_yaml = tmp_path / "agent.yaml"
        agent_yaml.write_text(f"agent: {{id: cli-agent, state_dir: {tmp_path / 'agent'}}}\n")
        register = ["agent", "register", "-c", str(agent_yaml), "--control-plane", server.url, "--token"]
        pin = ["--ca-fingerprint", token["ca_fingerprint"]]
        code, out, _ = await _cli(capsys, *register, token["token"], *pin)
        assert (code, "registered agent cli-agent for domain example.com" in out) == (0, True)
        code, _, err = await _cli(capsys, *register, token["token"], *pin)
        assert (code, "token_used" in err) == (2, True)

        assert (await _cli(capsys, *admin, "assign", "cli-agent", "b.example"))[0] == 0
        code, out, _ = await _cli(capsys, *admin, "agents", "list")
        assert json.loads(out)["agents"][0]["domains"] == ["b.example", "example.com"]
        assert (await _cli(capsys, *admin, "revoke", "cli-agent", "--reason", "test"))[0] == 0
        code, out, _ = await _cli(capsys, *admin, "agents", "list")
        assert json.loads(out)["agents"][0]["status"] == "revoked"

        code, out, _ = await _cli(capsys, *admin, "settings", "scim.max_page_size=50", "logging.level=debug")
        assert json.loads(out)["settings"] == {"scim.max_page_size": 50, "logging.level": "debug"}
        code, out, _ = await _cli(capsys, *admin, "settings", "logging.level=")
        assert json.loads(out)["settings"] == {"scim.max_page_size": 50}
        with pytest.raises(SystemExit):  # argparse names the bad pair and exits 2
            await _cli(capsys, *admin, "settings", "no-equals-sign")
        assert "'no-equals-sign' is not KEY=VALUE" in capsys.readouterr().err

        outsider = [*admin[:4], "wrong", *admin[5:]]
        code, _, err = await _cli(capsys, *outsider, "agents", "list")
        assert (code, "admin_unauthorized" in err) == (2, True)


async def test_endless_durations_are_refused_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A ttl or grace that is NaN, infinite or above its maximum ends the command with one line on stderr, exit 2."""
    async with control_plane(tmp_path / "cp") as server:
        admin = ["admin", "--url", server.url, "--token", ADMIN_TOKEN, "--ca-file", str(tmp_path / "cp" / "ca.pem")]
        for argv, expected in (
            (["token", "create", "--domain", "example.com", "--ttl", "inf"], "--ttl must be a finite number"),
            (["token", "create", "--domain", "example.com", "--ttl", "nan"], "--ttl must be a finite number"),
            (["token", "create", "--domain", "example.com", "--ttl", "1e300"], "at most 2592000 (30 days)"),
            (["keys", "rotate", "--grace=-inf"], "--grace must be a finite number"),
            (["keys", "rotate", "--grace", "1e300"], "at most 604800 (7 days)"),
        ):
            code, out, err = await _cli(capsys, *admin, *argv)
            assert (code, out) == (2, ""), argv
            assert len(err.strip().splitlines()) == 1, err
            assert err.startswith("admin: ")
            assert expected in err, argv
