"""Helpers for agent tests: a running agent over a memory directory on its own local broker.

``running_agent(...)`` starts a real ``Agent`` (memory directory, ``local://<unique>`` transport)
and yields an ``AgentHarness`` with a signed ``ScimClient`` talking to it through a
``LocalRequester``. ``HandDelivery`` is a delivery made by hand, for cases a broker would have to be
coaxed into (a given delivery count, the same envelope delivered twice): it records its replies and
its settlement.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent.config import AgentSettings
from agent.runtime import Agent
from plugins.memory import MemoryDirectory
from protocol.envelope import Response, decode_response
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from transports.base import Delivery, Settlement, Transport
from transports.local import LocalBroker, LocalRequester

DOMAIN = "example.com"
PATCH_SCHEMA = "urn:ietf:params:scim:api:messages:2.0:PatchOp"
USER_SCHEMA = "urn:ietf:params:scim:schemas:core:2.0:User"


def agent_settings(
    broker: str,
    signer: Signer,
    *,
    memory: dict[str, Any] | None = None,
    dispatcher: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    scim: dict[str, Any] | None = None,
    state_dir: Path | None = None,
) -> AgentSettings:
    """Settings of a test agent: fast retries, the signer's key trusted, a seeded memory directory."""
    return AgentSettings.model_validate(
        {
            "agent": {"id": "test-agent", "domains": [DOMAIN], **({"state_dir": state_dir} if state_dir else {})},
            "transport": {"url": f"local://{broker}"},
            "directory": {"plugin": "memory", "seed_users": 10, "seed_groups": 2, **(memory or {})},
            "signing": {"public_keys": {signer.key_id: public_key_text(signer.public_key)}},
            "dispatcher": dispatcher or {},
            "retry": {"attempts": 2, "initial_backoff": 0, "max_backoff": 0, "jitter": 0, **(retry or {})},
            "scim": scim or {},
        }
    )


@dataclass
class AgentHarness:
    agent: Agent
    client: ScimClient
    requester: LocalRequester
    broker_name: str
    signer: Signer

    @property
    def broker(self) -> LocalBroker:
        return LocalBroker.named(self.broker_name)

    @property
    def directory(self) -> MemoryDirectory:
        assert isinstance(self.agent.directory, MemoryDirectory)
        return self.agent.directory

    async def user_id(self, user_name: str = "user00001") -> str:
        body = await self.client.search("/Users", f'userName eq "{user_name}"')
        assert body["totalResults"] == 1, body
        return str(body["Resources"][0]["id"])

    async def group(self, index: int = 0) -> dict[str, Any]:
        body = await self.client.search("/Groups", count="10")
        group: dict[str, Any] = body["Resources"][index]
        return group

    async def dead_letter_count(self, at_least: int, domain: str = DOMAIN) -> int:
        """Wait until ``at_least`` messages are dead-lettered on ``domain`` (fails rather than hang)."""
        await wait_until(lambda: len(self.broker.dead_letters(domain)) >= at_least)
        return len(self.broker.dead_letters(domain))


async def wait_until(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    """Poll ``condition`` until it holds; ``TimeoutError`` after ``timeout`` seconds rather than hang."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110 - the state polled here has no event to wait on
            await asyncio.sleep(0.002)


@asynccontextmanager
async def running_agent(
    *,
    transport: Callable[[str], Transport] | None = None,
    timeout: float = 10.0,
    broker: str | None = None,
    signer: Signer | None = None,
    **settings: Any,
) -> AsyncIterator[AgentHarness]:
    """A started agent on a broker of its own, and a client for it; stopped and forgotten on exit.

    A ``broker`` and ``signer`` given (and a ``state_dir``) outlive it: a second agent on them is the first
    one restarted."""
    broker_name = broker or f"agent-test-{uuid.uuid4().hex}"
    signer = signer or Signer.generate("test")
    state = Path(tempfile.mkdtemp(prefix="cloudprov-agent-"))  # its replay memory is saved there
    settings.setdefault("state_dir", state)
    agent = Agent(
        agent_settings(broker_name, signer, **settings),
        transport=transport(broker_name) if transport else None,
    )
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    try:
        async with asyncio.timeout(5):
            await agent.started.wait()
        async with LocalRequester.from_url(f"local://{broker_name}") as requester:
            client = ScimClient(requester, signer, DOMAIN, timeout=timeout)
            yield AgentHarness(agent, client, requester, broker_name, signer)
    finally:
        stop.set()
        async with asyncio.timeout(10):
            await runner
        if broker is None:
            LocalBroker.discard(broker_name)
        shutil.rmtree(state, ignore_errors=True)


class HandDelivery(Delivery):
    """A delivery made by hand: records what the dispatcher replied and how it settled."""

    def __init__(self, payload: bytes, delivery_count: int = 1, *, trusted: bool = False) -> None:
        self.payload = payload
        self.delivery_count = delivery_count
        self.trusted = trusted
        self.replies: list[bytes] = []
        self.reason = ""

    async def reply(self, payload: bytes) -> None:
        self.replies.append(payload)

    async def _settle(self, outcome: Settlement, reason: str) -> None:
        self.reason = reason

    @property
    def response(self) -> Response:
        assert len(self.replies) == 1, f"expected one reply, got {len(self.replies)}"
        return decode_response(self.replies[0])
