"""The peer's AMQP 1.0 behaviour: links, peek-lock deliveries, settlement, ``$cbs``, ``$management``."""

from __future__ import annotations

import logging
import time
import uuid
from typing import Any

from proton import UNDESCRIBED, Array, Condition, Data, Delivery, Link, Message, Terminus, symbol, timestamp
from proton.handlers import MessagingHandler

from tests.servicebus_peer import codec
from tests.servicebus_peer.store import DEAD_LETTER_QUEUE, Queue, Record, Store

log = logging.getLogger("servicebus_peer")

LOCK_LOST = "com.microsoft:message-lock-lost"
SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
SESSION_FILTER = symbol("com.microsoft:session-filter")


def entity(address: str | None) -> str:
    """``amqps://host:port/Queue/$management`` → ``queue/$management`` (names are case-insensitive)."""
    address = address or ""
    if "://" in address:
        address = address.split("://", 1)[1].partition("/")[2]
    return address.strip("/").lower()


def is_control(address: str) -> bool:
    return address == "$cbs" or address.endswith("$management")


class MgmtError(Exception):
    def __init__(self, status: int, condition: str) -> None:
        super().__init__(condition)
        self.status = status
        self.condition = condition


class Broker(MessagingHandler):  # type: ignore[misc]
    """Serves queues created on first use to the unmodified azure-servicebus SDK."""

    def __init__(self, url: str, store: Store, *, lock_seconds: float, max_message_size: int) -> None:
        super().__init__(prefetch=50, auto_accept=False, auto_settle=False)
        self.url = url
        self.store = store
        self.lock_seconds = lock_seconds
        self.max_message_size = max_message_size
        self.stats = {"sent": 0, "received": 0, "oversized": 0}

    # ---- lifecycle ----------------------------------------------------------------------
    def on_start(self, event: Any) -> None:
        self.container = event.container
        event.container.listen(self.url)
        event.container.schedule(0.25, self)
        log.warning("listening on %s", self.url)

    def on_timer_task(self, event: Any) -> None:
        """Expired locks put their messages back at the front of the queue."""
        now = time.time()
        for queue in list(self.store.queues.values()):
            expired = [r for r in queue.locked.values() if r.locked_until < now]
            for rec in sorted(expired, key=lambda r: r.seq, reverse=True):
                self._unlock(queue, rec)
                queue.ready.appendleft(rec)
            if expired:
                log.info("%s: %d lock(s) expired", queue.name, len(expired))
                self.pump(queue)
        event.container.schedule(0.25, self)

    # ---- links ----------------------------------------------------------------------------
    def on_link_opening(self, event: Any) -> None:
        link = event.link
        link.source.copy(link.remote_source)
        link.target.copy(link.remote_target)
        link.snd_settle_mode = link.remote_snd_settle_mode
        link.rcv_settle_mode = link.remote_rcv_settle_mode
        if link.is_receiver:
            link.address = entity(link.remote_target.address)
            if self.max_message_size and not is_control(link.address):
                link.max_message_size = self.max_message_size
            return
        link.address = entity(link.remote_source.address)
        if is_control(link.address):
            return
        filters = link.remote_source.filter
        filters.rewind()
        if filters.next() and SESSION_FILTER in (filters.get_object() or {}):
            link.source.type = Terminus.UNSPECIFIED  # sessions are not served: refuse the link
            link.condition = Condition("amqp:not-implemented", "this peer does not serve sessions")
            return
        self.store.queue(link.address).consumers.append(link)

    def _drop(self, link: Any) -> None:
        for queue in self.store.queues.values():
            if link in queue.consumers:
                queue.consumers.remove(link)

    def on_link_closing(self, event: Any) -> None:
        self._drop(event.link)

    def on_connection_closing(self, event: Any) -> None:
        self.on_disconnected(event)

    def on_disconnected(self, event: Any) -> None:
        link = event.connection.link_head(0) if event.connection else None
        while link:
            self._drop(link)
            link = link.next(0)

    def on_sendable(self, event: Any) -> None:
        if not is_control(event.link.address):
            self.pump(self.store.queue(event.link.address))

    # ---- handing messages out -------------------------------------------------------------
    def pump(self, queue: Queue) -> None:
        for link in list(queue.consumers):
            while queue.ready and link.credit > 0 and link.state & Link.LOCAL_ACTIVE:
                rec = queue.ready.popleft()
                presettled = link.snd_settle_mode == Link.SND_SETTLED
                self.store.handed_out(rec)
                if presettled:
                    rec.token = None
                else:
                    rec.token = uuid.uuid4()
                    rec.locked_until = time.time() + self.lock_seconds
                    queue.locked[rec.token] = rec
                tag = (rec.token or uuid.uuid4()).bytes_le
                delivery = link.delivery(tag)
                link.stream(self.encoded(rec, locked=not presettled))
                link.advance()
                self.stats["sent"] += 1
                if presettled:
                    delivery.settle()
                    self.store.removed(rec)
                else:
                    delivery.record, delivery.queue = rec, queue

    def encoded(self, rec: Record, *, locked: bool) -> bytes:
        return codec.for_delivery(
            rec.raw,
            delivery_count=max(rec.deliveries - 1, 0),
            sequence=rec.seq,
            enqueued=rec.enqueued,
            locked_until=rec.locked_until if locked else None,
            extra_properties=rec.extra_properties,
        )

    def _unlock(self, queue: Queue, rec: Record) -> None:
        if rec.token is not None:
            queue.locked.pop(rec.token, None)
            queue.deferred.pop(rec.token, None)
        rec.token = None

    def settle(self, queue: Queue, token: uuid.UUID, status: str, reason: str = "", description: str = "") -> bool:
        """Apply a disposition (``completed|abandoned|defered|suspended``); False if the lock is gone."""
        rec = queue.locked.get(token) or queue.deferred.get(token)
        if rec is None:
            return False
        self._unlock(queue, rec)
        if status == "abandoned":
            queue.ready.appendleft(rec)
        elif status == "defered":
            rec.token = uuid.uuid4()
            queue.deferred[rec.token] = rec
        else:
            self.store.removed(rec)
            if status == "suspended":
                target = f"{queue.name}/{DEAD_LETTER_QUEUE}"
                extra = {**rec.extra_properties, "DeadLetterReason": reason, "DeadLetterErrorDescription": description}
                self.store.enqueue(target, rec.raw, extra)
                self.pump(self.store.queue(target))
        self.pump(queue)
        return True

    # ---- outcomes from receivers (rcv-settle-mode second: echo the outcome, then settle) ----
    def _outcome(self, event: Any, status: str) -> None:
        delivery = event.delivery
        rec, queue = getattr(delivery, "record", None), getattr(delivery, "queue", None)
        remote = delivery.remote
        reason = description = ""
        if status == "suspended" and remote.condition is not None:
            info = {str(k): v for k, v in (remote.condition.info or {}).items()}
            reason, description = str(info.get("DeadLetterReason", "")), str(info.get("DeadLetterErrorDescription", ""))
        if status == "abandoned" and remote.undeliverable:
            status = "defered"
        if (
            rec is None
            or queue is None
            or rec.token is None
            or not self.settle(queue, rec.token, status, reason, description)
        ):
            delivery.local.condition = Condition(LOCK_LOST, "the lock expired or is unknown")
            delivery.update(Delivery.REJECTED)
        else:
            delivery.local.failed, delivery.local.undeliverable = remote.failed, remote.undeliverable
            delivery.update(delivery.remote_state)
        delivery.settle()

    def on_accepted(self, event: Any) -> None:
        self._outcome(event, "completed")

    def on_rejected(self, event: Any) -> None:
        self._outcome(event, "suspended")

    def on_released(self, event: Any) -> None:  # released or modified
        self._outcome(event, "abandoned")

    def on_settled(self, event: Any) -> None:  # settled by the receiver without waiting for our echo
        delivery = event.delivery
        rec, queue = getattr(delivery, "record", None), getattr(delivery, "queue", None)
        if delivery.link.is_sender and rec is not None and queue is not None and rec.token in queue.locked:
            self.settle(queue, rec.token, "completed" if delivery.remote_state == Delivery.ACCEPTED else "abandoned")

    # ---- incoming transfers: messages, $cbs and $management requests ------------------------
    def on_delivery(self, event: Any) -> None:
        delivery = event.delivery
        link = delivery.link
        if not link.is_receiver or not delivery.readable or delivery.partial:
            return
        raw = bytes(link.recv(delivery.pending))
        link.advance()
        address = link.address
        self.stats["received"] += 1
        if self.max_message_size and len(raw) > self.max_message_size and not is_control(address):
            self.stats["oversized"] += 1
            log.warning("%s: refused a message of %d bytes (limit %d)", address, len(raw), self.max_message_size)
            delivery.local.condition = Condition(  # with info: the SDK reads the error as a 3-element list
                SIZE_EXCEEDED,
                f"message of {len(raw)} bytes exceeds the limit of {self.max_message_size} bytes",
                {symbol("max-message-size"): self.max_message_size},
            )
            delivery.update(Delivery.REJECTED)
            delivery.settle()
            return
        if is_control(address):
            request = Message()
            request.decode(raw)
            self.control(event.connection, address, request)
        else:
            queue = self.store.queue(address)
            for part in codec.split_batch(raw):
                self.store.enqueue(address, part)
            self.pump(queue)
        delivery.update(Delivery.ACCEPTED)
        delivery.settle()

    def control(self, connection: Any, address: str, request: Message) -> None:
        properties = {str(k): v for k, v in (request.properties or {}).items()}
        operation = properties.get("operation")
        condition = None
        body: Any = None
        try:
            if address == "$cbs":
                status = 200
            else:
                queue = self.store.queue(address.removesuffix("/$management"))
                status, body = self.management(queue, str(operation), codec.owned(request.body) or {})
        except MgmtError as exc:
            status, condition = exc.status, exc.condition
        except Exception:  # report, never crash the peer
            log.exception("management operation %s failed", operation)
            status, condition = 500, "com.microsoft:internal-error"
        reply_props: dict[str, Any] = {
            "status-code": status,
            "statusCode": status,
            "status-description": condition or "OK",
            "statusDescription": condition or "OK",
        }
        if condition:
            reply_props["errorCondition"] = symbol(condition)
        reply = Message(correlation_id=request.id, body=body, properties=reply_props)
        reply_to = entity(request.reply_to) or address
        link = connection.link_head(0)
        while link and not (link.is_sender and getattr(link, "address", None) == reply_to):
            link = link.next(0)
        if link:
            link.send(reply)
        log.info("%s %s -> %s", address, operation, status)

    def management(self, queue: Queue, operation: str, body: dict[str, Any]) -> tuple[int, Any]:
        now = time.time()
        if operation == "com.microsoft:renew-lock":
            expirations = []
            for token in body.get("lock-tokens", []):
                rec = queue.locked.get(token)
                if rec is None:
                    raise MgmtError(410, LOCK_LOST)
                rec.locked_until = now + self.lock_seconds
                expirations.append(timestamp(int(rec.locked_until * 1000)))
            return 200, {"expirations": Array(UNDESCRIBED, Data.TIMESTAMP, *expirations)}
        if operation == "com.microsoft:update-disposition":
            for token in body.get("lock-tokens", []):
                status = str(body.get("disposition-status"))
                reason = str(body.get("deadletter-reason") or "")
                description = str(body.get("deadletter-description") or "")
                if not self.settle(queue, token, status, reason, description):
                    raise MgmtError(410, LOCK_LOST)
            return 200, {}
        if operation == "com.microsoft:peek-message":
            start, count = body.get("from-sequence-number", 0), body.get("message-count", 1)
            records = [r for r in queue.all() if r.seq >= start][:count]
            if not records:
                return 204, None
            return 200, {"messages": [{"message": self.encoded(r, locked=False)} for r in records]}
        if operation == "com.microsoft:receive-by-sequence-number":
            wanted = set(body.get("sequence-numbers", []))
            found = []
            for token, rec in list(queue.deferred.items()):
                if rec.seq in wanted:
                    rec.locked_until = now + self.lock_seconds
                    queue.locked[token] = queue.deferred.pop(token)
                    found.append({"message": self.encoded(rec, locked=True), "lock-token": token})
            return 200, {"messages": found}
        raise MgmtError(501, "amqp:not-implemented")
