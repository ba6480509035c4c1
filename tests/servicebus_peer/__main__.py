"""``python -m tests.servicebus_peer --port N``: run the test peer in the foreground."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

from proton.reactor import Container

from tests.servicebus_peer.broker import Broker
from tests.servicebus_peer.store import Store

STANDARD_TIER_LIMIT = 256 * 1024


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.servicebus_peer", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5673)
    parser.add_argument("--lock-seconds", type=float, default=30.0, help="peek-lock duration (Service Bus: 30 s)")
    parser.add_argument(
        "--max-message-size", type=int, default=STANDARD_TIER_LIMIT, help="bytes per message; 0 for no limit"
    )
    parser.add_argument("--data-dir", help="keep queues in a journal here, so a restart loses nothing")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s servicebus_peer %(message)s",
        stream=sys.stderr,
    )
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    store = Store(args.data_dir)
    broker = Broker(
        f"{args.host}:{args.port}", store, lock_seconds=args.lock_seconds, max_message_size=args.max_message_size
    )
    try:
        Container(broker).run()
    finally:
        store.close()


if __name__ == "__main__":
    main()
