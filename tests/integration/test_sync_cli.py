"""``cloudprov sync job|run-once|on-demand``: jobs in the state store, cycles wired as the service wires them."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from cli.main import main
from cli.sync import _on_demand, _run_once
from protocol.signing import private_key_text, public_key_text
from service.config import load_service_settings
from service.control.keys import seal
from service.provisioning.state import StateStore
from service.provisioning.targets.registry import create_target
from service.store import SigningKeyRecord, open_store
from tests.agent_support import AgentHarness, running_agent
from tests.provisioning_support import source_view, target_view


def _config(tmp_path: Path) -> Path:
    path = tmp_path / "service.yaml"
    path.write_text(yaml.safe_dump({"control": {"state_dir": str(tmp_path / "state")}}))
    (tmp_path / "state").mkdir()
    return path


def test_job_create_and_list_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``sync job create`` stores a validated job and ``sync job list`` shows it; bad settings exit 2."""
    config = str(_config(tmp_path))
    target = f"sqlite:///{tmp_path}/target.db"
    assert main(["sync", "-c", config, "job", "create", "--domain", "example.com", "--target", target]) == 0
    assert main(["sync", "-c", config, "job", "list"]) == 0
    out = capsys.readouterr().out
    assert f"example.com\texample.com\t{target}\tevery 120 s\tactive" in out
    bad = ["sync", "-c", config, "job", "create", "--domain", "d", "--target", target, "--settings", '{"nope": 1}']
    assert main(bad) == 2
    assert "nope" in capsys.readouterr().err


async def _trust_harness_key(config: Path, h: AgentHarness) -> None:
    """The control plane store of ``config``: the harness's signer as active key, the harness's broker as endpoint."""
    settings = load_service_settings(config)
    store = open_store(settings.store_url)
    await store.open()
    try:
        signer = h.signer
        record = SigningKeyRecord(
            signer.key_id,
            public_key_text(signer.public_key),
            seal(private_key_text(signer.private_key), signer.key_id, None),
            "active",
            time.time(),
        )
        await store.ensure_signing_key(lambda: record)
        await store.set_endpoints("example.com", [{"url": f"local://{h.broker_name}", "options": {}}], time.time())
    finally:
        await store.close()


async def test_run_once_and_on_demand_reach_the_agents_as_the_service_does(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``run-once`` syncs a job through the control plane's endpoints and active key; ``on-demand`` prints the steps."""
    config = _config(tmp_path)
    target_url = f"sqlite:///{tmp_path}/target.db"
    async with running_agent(memory={"seed_users": 8, "seed_groups": 2}) as h:
        await _trust_harness_key(config, h)
        state_url = load_service_settings(config).provisioning_state_url
        async with StateStore(state_url) as state:
            await state.put_job("j", "example.com", target_url, schedule=60, settings={"timeout": 10})
            args: Any = argparse.Namespace(job="j", config=str(config), state=None, dn="", dry_run=False)
            assert await _run_once(state, args) == 0
            assert "j: full cycle ok" in capsys.readouterr().out
            async with create_target(target_url) as target:
                assert await target_view(target) == await source_view(h)
            user = (await h.client.search("/Users", count="1"))["Resources"][0]
            args.dn = user["urn:cloudprov:scim:schemas:extension:ldap:1.0:Entry"]["distinguishedName"]
            assert await _on_demand(state, args) == 0
            lines = capsys.readouterr().out.splitlines()
            assert [line.split()[0] for line in lines] == ["Import", "Scope", "Match", "Action", "Result"]
            args.dn = "cn=nobody,dc=example,dc=com"
            assert await _on_demand(state, args) == 1
