"""Helpers for the broker transport tests: a consumer in a subprocess, a dispatcher-like policy."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

from protocol.envelope import EnvelopeError, Response, decode_request
from protocol.signing import SignatureError, Verifier
from tests.contract.transport_suite import Responder
from transports.base import Delivery, Requester, Transport
from transports.registry import create_transport

ROOT = Path(__file__).resolve().parents[2]


class ConsumerProcess:
    """``python -m tests.integration.transport_support``: a consumer that takes requests and never settles them.

    It prints ``took <request id>`` for each delivery, so a test knows what the process holds when
    it sends SIGKILL.
    """

    def __init__(self, url: str, domain: str, options: dict[str, Any]) -> None:
        command = [sys.executable, "-m", "tests.integration.transport_support", url, domain, json.dumps(options)]
        self.process = subprocess.Popen(
            command, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE, text=True
        )
        self.taken: list[str] = []

    async def read_until(self, count: int, timeout: float = 30.0) -> None:
        """Wait until the process has taken ``count`` deliveries."""
        assert self.process.stdout is not None
        stdout = self.process.stdout
        async with asyncio.timeout(timeout):
            while len(self.taken) < count:
                line = await asyncio.to_thread(stdout.readline)
                if not line:
                    raise RuntimeError(f"the consumer process exited with {self.process.wait()}")
                if line.startswith("took "):
                    self.taken.append(line.split()[1])

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)
        if self.process.stdout is not None:
            self.process.stdout.close()


class SettlingRequester(Requester):
    """A requester that, once a response is in, lets the consumer finish settling before returning.

    On a broker, the reply reaches the requester while the consumer still awaits its publish
    confirm and has not acked yet; the suite's ``Responder`` counts a reply only after the ack, and
    a case that leaves ``async with Responder`` at once would cancel that ack midway. Waiting here
    (bounded, never failing) until the transport has nothing in hand closes that window.
    """

    def __init__(self, inner: Requester, transports: list[Transport]) -> None:
        self.inner = inner
        self.transports = transports
        self.max_message_size = inner.max_message_size

    async def connect(self) -> None:
        await self.inner.connect()

    async def close(self) -> None:
        await self.inner.close()

    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        raw = await self.inner.request(domain, request_id, payload, timeout=timeout)
        for _ in range(1000):  # at most ~2 s
            if not sum(getattr(t, "in_hand", 0) for t in self.transports):
                break
            await asyncio.sleep(0.002)
        return raw


def policy_handler(max_deliveries: int, verifier: Verifier | None = None) -> Any:
    """What the agent's dispatcher does, in small: verify, answer, dead-letter after ``max_deliveries``."""

    async def handle(responder: Responder, delivery: Delivery) -> None:
        try:
            request = decode_request(delivery.payload)
        except EnvelopeError as exc:
            await delivery.dead_letter(f"malformed envelope: {exc}")
            return
        if verifier is not None:
            try:
                verifier.verify(request, redelivered=delivery.redelivered)
            except SignatureError as exc:
                await delivery.reply(Response(request.id, exc.status, {"detail": str(exc)}).encode())
                await delivery.ack()
                return
        if request.operation.path == "/poison":
            if delivery.delivery_count >= max_deliveries:
                await delivery.dead_letter(f"failed {delivery.delivery_count} times")
            else:
                await delivery.retry_later("handler failed")
            return
        body = {"path": request.operation.path, "delivery_count": delivery.delivery_count}
        await delivery.reply(Response(request.id, 200, body, agent_id="policy").encode())
        await delivery.ack()
        responder.replied += 1

    return handle


async def _hold_forever(url: str, domain: str, options: dict[str, Any]) -> None:
    async with create_transport(url, domains=[domain], options=options) as transport:
        print("ready", flush=True)
        async for delivery in transport.deliveries():
            request_id = getattr(delivery, "request_id", "?")
            print(f"took {request_id}", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("domain")
    parser.add_argument("options")
    args = parser.parse_args()
    asyncio.run(_hold_forever(args.url, args.domain, json.loads(args.options)))
