"""The ``amqp`` transport: SCIM requests over RabbitMQ (AMQP 0-9-1, aio-pika; per message aiormq, see ``wire``).

What it is
    ``AmqpTransport`` (the agent's side) consumes one durable **quorum** queue per domain and
    replies to the queue each request names in ``reply_to``; ``AmqpRequester`` (the service's side)
    publishes requests and awaits the replies on its own reply queue, correlated by request id.
    Messages published within one event-loop turn leave in one socket write, and the deliveries
    of one socket read reach their consumers in one loop turn (``connection``): requests sent
    together stay together, which is what lets them share one batch signature.

Connection URL / options
    ``amqp://user:password@host:5672/vhost`` or ``amqps://…`` (TLS, the server's certificate checked
    against ``ca_file`` or the system store, host name included; ``cert_file``/``key_file`` for a
    client certificate). Settings (query string or options mapping, see ``AmqpSettings``):
    ``request_queue`` (``cloudprov.requests.{domain}``), ``dead_letter_suffix`` (``.dlq``),
    ``reply_prefix`` (``cloudprov.replies.``), ``requester_id`` (random), ``prefetch`` (32),
    ``delivery_limit`` (20), ``max_message_size`` (16 MiB), ``connect_timeout`` (10 s),
    ``publish_timeout`` (30 s), ``backoff_initial``/``backoff_max`` (0.5 s / 30 s),
    ``reply_queue_expires`` (1800 s), ``heartbeat`` (30 s).

Guarantees
    - At least once. A delivery is acked only when the dispatcher settles it; one not settled when
      its connection or the transport closes returns to its queue and comes again with
      ``delivery_count + 1`` (quorum queues count every return in ``x-delivery-count``). A delivery
      counts as a redelivery only when the broker flags it so (``redelivered``): the header alone,
      which a publisher can set, does not let a copy past the agent's replay check.
    - ``retry_later`` is a ``basic.nack`` with requeue. ``dead_letter(reason)`` publishes a copy to
      ``<request queue><dead_letter_suffix>`` with the reason in the headers
      (``x-cloudprov-dead-letter-reason``, ``-delivery-count``, ``-queue``), waits for the broker's
      confirm, then acks. As a backstop, the broker itself dead-letters to the same queue a message
      handed out ``delivery_limit`` times (an agent that crashes on it never gets to settle it).
    - Replies and requests are persistent and published with publisher confirms. A reply bigger
      than ``max_message_size`` is compressed, then split (``protocol.chunking``); requests are
      compressed but never split.
    - The first connect fails fast (``TransportBrokenError``); afterwards the connection is
      supervised: reconnect with exponential backoff and jitter, forever, each attempt logged.
      Deliveries handed out on a lost connection cannot be settled any more (the broker has already
      requeued them): settling them is logged and ignored.
"""

from transports.amqp.requester import AmqpRequester
from transports.amqp.settings import AmqpSettings
from transports.amqp.transport import AmqpDelivery, AmqpTransport

__all__ = ["AmqpDelivery", "AmqpRequester", "AmqpSettings", "AmqpTransport"]
