"""The ``Transport`` and ``Requester`` interfaces: how requests reach an agent and answers come back.

The agent side is a ``Transport``: an async context manager yielding ``Delivery`` objects. Each
delivery carries the raw envelope bytes and is settled exactly once: ``ack`` (done), ``retry_later``
(give it back; it will be delivered again) or ``dead_letter`` (poison: park it with a reason).
``reply`` sends the response envelope to whoever asked. The requester side is a ``Requester``:
send a request envelope, await the response envelope, many in flight.

Each implementation declares the errors worth reconnecting for in ``recoverable_errors``.
"""

from __future__ import annotations

import abc
import asyncio
import enum
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import Any, ClassVar, Self


class TransportError(Exception):
    """Root of every transport error."""


class TransportClosedError(TransportError):
    """Used after ``close()`` by us (not broken by the peer)."""


class TransportBrokenError(TransportError):
    """The connection was lost or refused by the peer; reconnecting may help."""


class AlreadySettledError(TransportError):
    """A delivery was settled twice."""


class MessageTooLargeError(TransportError):
    """A message exceeds what the transport carries, even after splitting."""


class RequestTimeoutError(TransportError, TimeoutError):
    """No response arrived before the requester's timeout."""


class MisroutedReplyError(TransportBrokenError):
    """The reply that came for a request answers another one (misrouted, or forged by whoever can publish to
    the reply queue): its request was not answered, and sending it again may help."""


class Settlement(enum.Enum):
    ACK = "ack"
    RETRY = "retry"
    DEAD_LETTER = "dead_letter"


class Delivery(abc.ABC):
    """One received request message, to be replied to and settled exactly once."""

    #: The envelope bytes as received.
    payload: bytes
    #: How many times the transport has handed out this message (1 on first delivery).
    delivery_count: int = 1
    #: The transport authenticated the sender itself (HTTP bearer/mTLS): no envelope signature needed.
    trusted: bool = False
    #: Set by the consumer once the request's signature verified: its envelope's id and ``reply_to``. A
    #: transport replies there, with that id as the correlation, whatever the message's own properties say:
    #: a copy of a signed request published with another reply queue must not bring its answer to whoever
    #: made the copy. None: the message's own (a request not verified, or one signed without ``reply_to``).
    signed_request_id: str | None = None
    signed_reply_to: str | None = None
    #: Why the message's frame could not be decoded (too large once inflated, corrupt): ``payload`` is then
    #: the body as received, and the consumer dead-letters the message with this reason.
    decode_error: Exception | None = None
    settlement: Settlement | None = None

    @property
    def redelivered(self) -> bool:
        return self.delivery_count > 1

    @abc.abstractmethod
    async def reply(self, payload: bytes) -> None:
        """Send a response envelope to the requester."""

    def reply_and_ack_now(self, payload: bytes) -> bool:
        """``reply(payload)`` then ``ack()``, done without awaiting anything if this transport can (True);
        False, having done nothing, if not (then await the two). A delivery already settled, or whose
        transport is closed, answers False: the two raise the error that applies."""
        return False

    async def settle(self, outcome: Settlement, reason: str = "") -> None:
        if self.settlement is not None:
            raise AlreadySettledError(f"delivery already settled as {self.settlement.value}")
        self.settlement = outcome
        await self._settle(outcome, reason)

    async def ack(self) -> None:
        await self.settle(Settlement.ACK)

    async def retry_later(self, reason: str) -> None:
        await self.settle(Settlement.RETRY, reason)

    async def dead_letter(self, reason: str) -> None:
        await self.settle(Settlement.DEAD_LETTER, reason)

    @abc.abstractmethod
    async def _settle(self, outcome: Settlement, reason: str) -> None: ...


class Transport(abc.ABC):
    """The agent's side of a transport: consume the request queues of some domains."""

    #: Errors worth reconnecting for; anything else is a bug or a configuration problem.
    recoverable_errors: ClassVar[tuple[type[BaseException], ...]] = (TransportBrokenError,)
    #: Largest message the transport carries (bytes), or None for no limit.
    max_message_size: int | None = None
    #: Largest request payload a delivery decodes to: a compressed frame inflates no further. The dispatcher
    #: sets its own limit (``scim.max_body_bytes``) when it consumes, so a small deflate bomb costs no more
    #: memory than the largest request the agent takes.
    max_request_size: int = 16 * 1024 * 1024

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None:
        """Connect and declare what is needed; fail fast if the first connection is refused."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop consuming and disconnect; unsettled deliveries go back to the queue. Idempotent."""

    @abc.abstractmethod
    def deliveries(self) -> AsyncIterator[Delivery]:
        """Deliveries as they arrive; ends after ``stop_consuming()`` or ``close()``."""

    @abc.abstractmethod
    async def stop_consuming(self) -> None:
        """Take no new work; deliveries already handed out can still be replied to and settled."""

    def hand_over(self, take: Callable[[Delivery], bool]) -> bool:
        """Offer each delivery to ``take`` as it arrives, before ``deliveries()`` would yield it, if this
        transport can (True; the default cannot). ``take(delivery)`` returns whether it took the delivery,
        without awaiting anything; one it does not take goes to ``deliveries()`` as usual. Saves the
        consumer one event-loop turn per arrival: the local transport, whose requester publishes in the
        callback that signs a batch, then starts the batch's work in that callback."""
        return False

    @property
    def connected(self) -> bool:
        """Readiness: the transport can take work now."""
        return True


class Requester(abc.ABC):
    """The service's side: send request envelopes to a domain's agents and await their responses."""

    max_message_size: int | None = None
    #: Where agents send this requester's replies (its reply queue), or None where the transport answers on the
    #: request's own connection (HTTP). A client signs it into each request's ``reply_to``.
    reply_address: str | None = None

    async def __aenter__(self) -> Self:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    @abc.abstractmethod
    async def connect(self) -> None: ...

    @abc.abstractmethod
    async def close(self) -> None: ...

    @abc.abstractmethod
    async def request(self, domain: str, request_id: str, payload: bytes, *, timeout: float) -> bytes:
        """Send one request envelope and return the response envelope (``RequestTimeoutError`` if late)."""


class PostingRequester(Requester):
    """A ``Requester`` whose sending awaits nothing, so a plain callback can send (a batch signer's, as it
    signs): ``request`` in three steps, its caller's task woken once, by the reply.

    ``expect`` makes the future of a request's response envelope (failing with ``TimeoutError`` after
    ``timeout`` seconds) before the request is sent; ``post`` sends it; ``reply`` awaits that future
    and forgets it, however the wait ends (late: ``RequestTimeoutError``). The three together behave as
    ``request``."""

    @abc.abstractmethod
    def expect(self, request_id: str, timeout: float) -> tuple[asyncio.Future[bytes], int]:
        """The future of ``request_id``'s response envelope and the key ``reply`` needs to stop its timer."""

    @abc.abstractmethod
    def post(self, domain: str, request_id: str, timeout: float, payload: bytes) -> None:
        """Send a request envelope whose reply is expected (``MessageTooLargeError`` if too large)."""

    @abc.abstractmethod
    async def reply(self, request_id: str, waiter: asyncio.Future[bytes], timer: int, timeout: float) -> bytes:
        """The response envelope ``expect`` made ``waiter`` for; the expectation ends with the wait."""


def signed_route(delivery: Delivery, request_id: str, reply_to: str, log: Any) -> tuple[str, str]:
    """Where a broker transport sends a reply: the id and reply address the request signed where the consumer
    set them (``Delivery.signed_request_id``/``signed_reply_to``), else the message's own. Message properties
    that differ from what was signed are logged: a copy made by whoever can publish to the queue (its answer
    is not theirs to read), or a requester that sets them wrongly."""
    signed_id = delivery.signed_request_id or request_id
    signed_to = delivery.signed_reply_to or reply_to
    if signed_id != request_id or signed_to != reply_to:
        log.warning(
            "message properties differ from the signed request; replying where it signed",
            request_id=signed_id,
            reply_to=signed_to,
            property_request_id=request_id[:64],
            property_reply_to=reply_to[:256],
        )
    return signed_id, signed_to
