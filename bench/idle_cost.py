"""What idle time costs the CPU: the same L=0 filtered GETs, with and without the process idling.

At C=64 and L=5 ms (``bench.agent_load``) a request costs more CPU than at L=0 (about 130 µs instead
of 85 on the project's test machine), and only part of that is extra work: smaller signature batches,
more loop turns, the simulated wait. This bench isolates the rest. It runs ``bench.agent_load``'s
L=0 phase (requester and agent in one process and one event loop, identical work) twice per round:
once as is, once with the event loop put to sleep (``time.sleep``, the process idle) for ``--nap-ms``
every ``--period-ms``, by default about the share of time the process is idle at C=64, L=5 ms. It
prints the CPU time per request of both (``time.process_time``, which a nap does not count) and the
ratio: above 1 means the machine charges the process for idling, in slower work after each nap
(caches and predictors cooled down, a virtual CPU descheduled).

    .venv/bin/python -m bench.idle_cost --requests 40000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

from bench.agent_load import run_phase
from bench.common import result


async def _phase(name: str, *, requests: int, users: int, nap: float, period: float) -> dict[str, float]:
    loop = asyncio.get_running_loop()
    napping: asyncio.TimerHandle | None = None

    def take_nap() -> None:
        nonlocal napping
        time.sleep(nap)  # blocks the loop: the process is idle, as while every request waits on the directory
        napping = loop.call_later(period, take_nap)

    if nap > 0:
        napping = loop.call_later(period, take_nap)
    try:
        return await run_phase(name, users=users, requests=requests, concurrency=64, latency=0.0, patch_share=0.0)
    finally:
        if napping is not None:
            napping.cancel()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=40000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--nap-ms", type=float, default=0.8, help="how long each nap keeps the process idle")
    parser.add_argument("--period-ms", type=float, default=5.0, help="busy time between the naps")
    parser.add_argument("--rounds", type=int, default=3, help="turns, alternating plain and napping (medians)")
    args = parser.parse_args()
    nap, period = args.nap_ms / 1000, args.period_ms / 1000
    plain: list[dict[str, float]] = []
    napping: list[dict[str, float]] = []
    common = {"requests": args.requests, "users": args.users, "period": period}
    for turn in range(args.rounds):
        plain.append(await _phase(f"plain-{turn}", nap=0.0, **common))
        napping.append(await _phase(f"napping-{turn}", nap=nap, **common))
    plain_cpu = statistics.median(r["cpu_us_per_request"] for r in plain)
    napping_cpu = statistics.median(r["cpu_us_per_request"] for r in napping)
    ratios = [n["cpu_us_per_request"] / p["cpu_us_per_request"] for p, n in zip(plain, napping, strict=True)]
    result(
        "idle_cost.filtered_gets C=64 L=0",
        requests=args.requests,
        rounds=args.rounds,
        idle_share=round(nap / (nap + period), 3),
        cpu_us_plain=plain_cpu,
        cpu_us_napping=napping_cpu,
        ratio=round(statistics.median(ratios), 3),
        ratios=[round(r, 3) for r in ratios],
        rps_plain=statistics.median(r["rps"] for r in plain),
    )


if __name__ == "__main__":
    asyncio.run(main())
