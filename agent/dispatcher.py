"""The dispatcher: deliveries in, verified SCIM operations through the handler, responses out.

For each delivery, in this order: refuse poison (delivered more than ``max_deliveries`` times:
dead-letter), decode the envelope (malformed: dead-letter with the reason), check the domain,
verify signature/deadline/freshness (refused: answer the SCIM error, touch nothing), answer a
redelivered id from the response store (never apply a write twice), then run the operation within
the request's deadline and at most ``max_in_flight`` at once. Settlement follows one policy: ack
after the reply is sent; give the delivery back (retry later) when the directory is unavailable and
deliveries remain; dead-letter poison. ``drain`` waits for in-flight work at shutdown.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from agent.config import DispatcherSection
from agent.idempotency import InFlight, ResponseStore
from agent.metrics import NO_METRICS, DispatcherMetrics
from agent.scim.handler import Result, ScimHandler
from protocol import deadlines
from protocol.chunking import FrameTooLargeError
from protocol.envelope import EnvelopeError, Request, decode_request, encode_response
from protocol.errors import ScimError
from protocol.signing import ReplayedRequestError, SignatureError, UnprovableFreshnessError, Verifier
from protocol.slots import Slots
from transports.base import Delivery, Transport, TransportError

_log = structlog.get_logger("cloudprov.dispatcher")


@dataclass
class Counters:
    """What the dispatcher did, for status reports and metrics."""

    received: int = 0
    answered: int = 0
    replayed_from_store: int = 0
    duplicates: int = 0  # copies of a request in hand, dropped (its answer goes to the first copy's sender)
    refused: int = 0
    dead_lettered: int = 0
    retried: int = 0
    errors: int = 0
    by_outcome: dict[str, int] = field(default_factory=dict)


class Dispatcher:
    def __init__(
        self,
        handler: ScimHandler,
        verifier: Verifier,
        settings: DispatcherSection,
        *,
        agent_id: str,
        domains: Sequence[str],
        max_body_bytes: int = 1_048_576,
        metrics: DispatcherMetrics = NO_METRICS,
    ) -> None:
        self.handler = handler
        self.verifier = verifier
        self.settings = settings
        self.agent_id = agent_id
        self.domains = {d.lower() for d in domains}
        self.max_body_bytes = max_body_bytes
        self.responses = ResponseStore(settings.idempotency_ttl, settings.idempotency_max_entries)
        self.running = InFlight()
        self.counters = Counters()
        self.metrics = metrics  #: where ``Counters`` events also go (Prometheus: ``agent.metrics``)
        self._slots = Slots(settings.max_in_flight)
        self._tasks: dict[asyncio.Task[None], set[asyncio.Task[None]]] = {}  # each with its transport's set
        self._by_transport: dict[int, set[asyncio.Task[None]]] = {}

    @property
    def in_flight(self) -> int:
        return len(self._tasks)

    async def consume(self, transport: Transport) -> None:
        """Take deliveries until the transport stops yielding them; each runs in its own task.

        A transport that can hand deliveries over as they arrive (``Transport.hand_over``: the local one)
        gets them started at once while a slot is free, one event-loop turn sooner than through
        ``deliveries()``: at C=64 over a 5 ms directory, 0.78-0.80 of C/L instead of 0.74-0.75
        (``bench.agent_load``; docs/performance.md)."""
        mine = self._by_transport.setdefault(id(transport), set())
        slots = self._slots
        loop = asyncio.get_running_loop()
        # The tasks' log context is this one's, not that of the code whose callback hands a delivery over.
        context = contextvars.copy_context()

        def take(delivery: Delivery) -> bool:
            if not slots.take():
                return False
            self._start(loop, delivery, mine, context.copy())
            return True

        transport.hand_over(take)
        async for delivery in transport.deliveries():
            if not slots.take():  # a free slot is taken without making a coroutine to await
                await slots.acquire()
            self._start(loop, delivery, mine, context.copy())

    def _start(
        self,
        loop: asyncio.AbstractEventLoop,
        delivery: Delivery,
        mine: set[asyncio.Task[None]],
        context: contextvars.Context,
    ) -> None:
        # named: an unnamed task formats a "Task-<n>" name of its own
        task = loop.create_task(self._run(delivery), name="cloudprov-delivery", context=context)
        self._tasks[task] = mine
        mine.add(task)

    def _forget(self, task: asyncio.Task[Any] | None) -> None:
        """Take a delivery's task out of the in-flight sets and free its slot (once: later calls do nothing).

        The task calls this as it ends (a done callback would cost the event loop a callback, a Handle and
        a turn per delivery); ``drain`` calls it for the tasks it waited for, since one cancelled before it
        started never ran a line of ``_run``.
        """
        if task is not None and (mine := self._tasks.pop(task, None)) is not None:
            mine.discard(task)
            self._slots.release()

    async def drain(self, grace: float, transport: Transport | None = None) -> int:
        """Wait up to ``grace`` seconds for in-flight work (of one transport, or all); cancel the rest.

        Returns how many were cancelled: their deliveries stay unsettled and go back to the queue.
        """
        tasks = self._tasks if transport is None else self._by_transport.pop(id(transport), set())
        if not tasks:
            return 0
        done, pending = await asyncio.wait(set(tasks), timeout=grace)  # a copy: tasks end meanwhile
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending)
        for task in (*done, *pending):  # those that ran ``_run`` are forgotten already
            self._forget(task)
        return len(pending)

    async def _run(self, delivery: Delivery) -> None:
        try:
            await self.process(delivery)
        except Exception:
            self.counters.errors += 1
            self.metrics.errored()
            _log.exception("delivery failed")
            if delivery.settlement is None:
                try:
                    await delivery.retry_later("agent error")
                except TransportError as error:
                    _log.warning("could not give the delivery back", error=str(error))
        finally:
            self._forget(asyncio.current_task())  # and its slot freed
            # The request's log context lives in this task's own context: it ends with the task.

    async def process(self, delivery: Delivery) -> None:
        received = time.monotonic()
        self.counters.received += 1
        self.metrics.received(delivery)
        if delivery.delivery_count > self.settings.max_deliveries:
            await self._dead_letter(
                delivery, f"delivered {delivery.delivery_count} times without being settled", "poison"
            )
            return
        if delivery.decode_error is not None:
            too_large = isinstance(delivery.decode_error, FrameTooLargeError)
            await self._dead_letter(
                delivery, f"undecodable message: {delivery.decode_error}", "too_large" if too_large else "malformed"
            )
            return
        if len(delivery.payload) > self.max_body_bytes:
            await self._dead_letter(
                delivery,
                f"message of {len(delivery.payload)} bytes exceeds the {self.max_body_bytes}-byte limit",
                "too_large",
            )
            return
        try:
            request = decode_request(delivery.payload)
        except EnvelopeError as error:
            await self._dead_letter(delivery, f"malformed envelope: {error}", "malformed")
            return
        structlog.contextvars.bind_contextvars(request_id=request.id, domain=request.domain)
        if request.domain.lower() not in self.domains:
            misdirected = ScimError(421, f"this agent does not serve domain {request.domain!r}")
            self.metrics.refused("wrong_domain")
            await self._finish(delivery, request, misdirected)
            return
        if not delivery.trusted:
            try:
                self.verifier.verify(request, redelivered=delivery.redelivered)
            except SignatureError as refused:  # a name of its own: compiled, ``error`` above is an EnvelopeError
                if isinstance(refused, ReplayedRequestError | UnprovableFreshnessError) and (
                    request.id in self.running or self.responses.get(request.id) is not None
                ):
                    # A second copy of a request this agent runs or ran (a requester that published it again
                    # when a confirm was lost): its answer goes, or went, to the first copy's sender. A 409
                    # would reach the caller first and stand for the answer; the stored one, where the request
                    # signed no reply queue (an older requester), would go to the copy's.
                    self.counters.duplicates += 1
                    _log.info("copy of a request in hand dropped", reason=str(refused))
                    await delivery.ack()
                    return
                self.counters.refused += 1
                self.metrics.refused(type(refused).__name__)
                _log.warning("request refused", reason=str(refused), kind=type(refused).__name__)
                await self._finish(delivery, request, refused.to_scim())
                return
            # the answer goes where the signature says (if it says), under the id it signed
            delivery.signed_request_id, delivery.signed_reply_to = request.id, request.reply_to
        stored = self.responses.get(request.id)
        if stored is not None:
            self.counters.replayed_from_store += 1
            self.metrics.replayed()
            await self._reply_and_ack(delivery, stored)
            return
        running = self.running.begin(request.id)
        if running is not None:
            response = await running
            if response is None:
                await delivery.retry_later("the first copy of this request did not finish")
            else:
                await self._reply_and_ack(delivery, response)
            return
        # A duplicate waiting on this copy (``running``) is told how it ended, whichever way. Not with a
        # ``finally``: compiled (mypyc), a variable narrowed in the ``try`` keeps its narrow type there.
        try:
            started = time.monotonic()
            # the operation, within the request's deadline (here, not in a coroutine of its own: one less)
            remaining = request.deadline - time.time()
            if remaining <= 0:
                result = _too_late(request)
            else:
                try:
                    with deadlines.running().within(remaining):  # asyncio.timeout on a timer shared per slot
                        result = await self.handler.handle(request.operation)
                except TimeoutError:
                    result = _timed_out(request)
            self.metrics.stage("directory", time.monotonic() - started)
            if result.transient and delivery.delivery_count < self.settings.max_deliveries and not _late(request):
                self.counters.retried += 1
                self.metrics.retried()
                await delivery.retry_later(f"directory unavailable: {result.body.get('detail', '')}")
                self.running.end(request.id, None)
                return
            # whole microseconds, in ms: round(x, 3) converts the float through decimal digits (dtoa)
            timing = {"handle_ms": round((time.monotonic() - received) * 1_000_000) / 1000}
            payload = encode_response(request.id, result.status, result.body, self.agent_id, timing)
            self.responses.put(request.id, payload)
            self._count(request, result.status)
        except BaseException:
            self.running.end(request.id, None)
            raise
        self.running.end(request.id, payload)
        started = time.monotonic()
        if delivery.reply_and_ack_now(payload):  # no coroutine to await, if the transport can
            self.metrics.stage("reply", time.monotonic() - started)
        else:
            await self._reply_and_ack(delivery, payload)

    def _count(self, request: Request, status: int) -> None:
        key = f"{request.operation.method} {status // 100}xx"
        self.counters.by_outcome[key] = self.counters.by_outcome.get(key, 0) + 1
        self.counters.answered += 1
        self.metrics.answered(request.operation.method, request.operation.path, status)

    async def _finish(self, delivery: Delivery, request: Request, error: ScimError) -> None:
        payload = encode_response(request.id, error.status, error.to_body(), self.agent_id, {})
        self._count(request, error.status)
        await self._reply_and_ack(delivery, payload)

    async def _reply_and_ack(self, delivery: Delivery, payload: bytes) -> None:
        started = time.monotonic()
        await delivery.reply(payload)
        await delivery.ack()
        self.metrics.stage("reply", time.monotonic() - started)

    async def _dead_letter(self, delivery: Delivery, reason: str, kind: str) -> None:
        self.counters.dead_lettered += 1
        self.metrics.dead_lettered(kind)
        _log.warning("dead-lettered", reason=reason, deliveries=delivery.delivery_count)
        await delivery.dead_letter(reason)


def _too_late(request: Request) -> Result:
    return Result(504, ScimError(504, f"request {request.id} reached its deadline before it ran").to_body())


def _timed_out(request: Request) -> Result:
    return Result(504, ScimError(504, f"request {request.id} did not finish before its deadline").to_body())


def _late(request: Request) -> bool:
    return request.deadline - time.time() < 1.0
