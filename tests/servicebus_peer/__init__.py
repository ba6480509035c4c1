"""An AMQP 1.0 peer that the unmodified azure-servicebus SDK talks to as if it were Service Bus.

What it is
    A test double for Azure Service Bus, written with python-qpid-proton, run as
    ``python -m tests.servicebus_peer --port N`` or from tests through ``PeerProcess`` (a subprocess
    that a test can SIGKILL and start again). It implements what ``transports.servicebus`` and the
    SDK need: SASL ANONYMOUS, ``$cbs`` put-token (every token accepted), queues created on first use,
    single and batched sends, peek-lock receive with 16-byte lock tokens as delivery tags and the
    ``x-opt-sequence-number`` / ``x-opt-enqueued-time`` / ``x-opt-locked-until`` annotations and an
    explicit header ``delivery-count``, settlement echoes (complete = accepted, abandon =
    modified(failed), defer = modified(undeliverable), dead-letter = rejected with the reason),
    ``<queue>/$deadletterqueue``, ``$management`` (renew-lock, update-disposition, peek,
    receive-by-sequence-number), receive-and-delete, lock expiry → redelivery with the count raised,
    and the per-message size limit (announced as the link's max-message-size and enforced on
    receipt with ``amqp:link:message-size-exceeded``). Sessions are not served.

Connection URL / options
    ``Endpoint=sb://127.0.0.1:N;SharedAccessKeyName=k;SharedAccessKey=v;UseDevelopmentEmulator=true``
    (no TLS). Options: ``--lock-seconds`` (30), ``--max-message-size`` (262144, Standard tier; 0 for
    none), ``--data-dir`` (journal: queues survive a restart), ``-v``.

Guarantees
    Test-only: no authentication, one process, a single reactor thread. With ``--data-dir`` every
    accepted message, hand-out and removal is journalled before it is confirmed, so a SIGKILL loses
    nothing; locks do not survive a restart, so locked messages come back ready. Entity names are
    case-insensitive, as in Service Bus.
"""

from tests.servicebus_peer.process import PeerProcess, free_port

__all__ = ["PeerProcess", "free_port"]
