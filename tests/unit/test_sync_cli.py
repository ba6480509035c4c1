"""``cloudprov sync`` commands against a state store."""

from __future__ import annotations

import argparse
import asyncio
import re
import time
from pathlib import Path

import pytest

from cli.sync import add_sync_commands
from service.provisioning.state import LogEntry, Retry, StagedDelete, StateStore


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_sync_commands(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


def test_status_log_approve_and_restart(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Status shows the last cycle and the objects waiting to be retried; log filters; approve resumes a paused
    job; an unknown job exits 2."""
    url = f"sqlite:///{tmp_path}/state.db"

    async def seed() -> None:
        async with StateStore(url) as state:
            await state.put_job("j", "example.com", "embedded:")
            cycle = await state.start_cycle("j", "full", "A")
            await state.finish_cycle(cycle, outcome="ok", counts={"create": 2}, objects=2, rate=2.0, lag=0.5)
            await state.write_log("j", [LogEntry(cycle, "create", "failed", anchor="a1", error="409 taken")])
            await state.stage_deletes("j", None, [StagedDelete("a2", "User", "t2", None, "deleted", 1.0)])
            retry = Retry("409 taken", 3, time.time() + 600)
            await state.advance_watermark("j", None, "w1", {("User", "a1"): retry})

    asyncio.run(seed())
    assert _main(["sync", "--state", url, "status"]) == 0
    shown = capsys.readouterr().out
    assert "last cycle: full ok, 2 objects" in shown
    assert re.search(
        r"1 object\(s\) failed and wait to be retried \(`sync log j --failed`\); the next in (599|600) s", shown
    )
    assert _main(["sync", "--state", url, "log", "j", "--failed"]) == 0
    assert "409 taken" in capsys.readouterr().out
    assert _main(["sync", "--state", url, "approve-deletes", "j"]) == 0
    assert "1 staged deletion(s) approved" in capsys.readouterr().out
    assert _main(["sync", "--state", url, "restart", "j", "--scope", "full"]) == 0
    assert _main(["sync", "--state", url, "restart", "nope"]) == 2
