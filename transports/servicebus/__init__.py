"""The ``sb`` transport: SCIM requests over Azure Service Bus (``azure.servicebus.aio``).

What it is
    ``ServiceBusTransport`` (the agent's side) receives from one queue per domain in peek-lock mode
    and replies to the queue each request names in ``reply_to``; ``ServiceBusRequester`` (the
    service's side) sends requests and receives the replies from its own reply queue, correlated by
    request id. Replies are routed by **reply-to entity**, not sessions: each requester owns the
    queue ``cloudprov.replies.{requester_id}`` (create it next to the request queues; on real
    Service Bus entities are not created on first use), so no session lock can strand replies when a
    requester restarts.

Connection URL / options
    ``sb://<namespace>.servicebus.windows.net/?key_name=…&key=…`` (shared access key),
    ``sb://<namespace>.servicebus.windows.net/`` with ``credential=<azure.core TokenCredential>`` in
    the options, ``connection_string="Endpoint=sb://…;SharedAccessKeyName=…;SharedAccessKey=…"`` in
    the options (the URL's host is then ignored), or ``sb://127.0.0.1:5673/?emulator=true`` for a
    local emulator or the project's test peer (``UseDevelopmentEmulator=true``: no TLS). Settings
    (see ``ServiceBusSettings``): ``request_queue`` (``cloudprov.requests.{domain}``),
    ``reply_prefix`` (``cloudprov.replies.``), ``requester_id`` (random), ``prefetch`` (32),
    ``max_message_size`` (262144: Standard tier; 1048576 or more on Premium), ``max_lock_renewal``
    (600 s), ``connect_timeout`` (20 s), ``operation_timeout`` (30 s), ``receive_wait`` (5 s),
    ``socket_timeout`` (0.02 s: an idle read's wait, which holds up a settlement on the same
    connection), ``backoff_initial``/``backoff_max`` (0.5 s / 30 s), ``retry_total`` (2: the SDK's own retries).

Guarantees
    - At least once. A request is completed only when the dispatcher acks it; ``retry_later``
      abandons it (comes again at once with ``delivery_count + 1``), ``dead_letter(reason)`` moves it
      to ``<queue>/$DeadLetterQueue`` with the reason as ``DeadLetterReason``. The SDK's
      ``AutoLockRenewer`` keeps the lock of every handed-out request for up to ``max_lock_renewal``
      seconds, so a long request is not handed to another agent meanwhile.
    - ``close()`` abandons what is still unsettled, so it comes back at once; a killed agent's locks
      expire (the queue's lock duration) and its requests come back with the count raised.
    - At most ``prefetch`` requests are locked by one agent at a time.
    - Replies bigger than ``max_message_size`` are compressed, then split (``protocol.chunking``);
      requests are compressed but never split.
    - Every open (client, receiver, sender) is bounded by ``connect_timeout``: the SDK can wait
      forever on a peer that never answers. The first connect fails fast (``TransportBrokenError``);
      a receiver that breaks later is re-opened with exponential backoff and jitter, forever, each
      attempt logged.
"""

from transports.servicebus.requester import ServiceBusRequester
from transports.servicebus.settings import ServiceBusSettings
from transports.servicebus.transport import ServiceBusDelivery, ServiceBusTransport

__all__ = ["ServiceBusDelivery", "ServiceBusRequester", "ServiceBusSettings", "ServiceBusTransport"]
