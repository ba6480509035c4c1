"""Agent load: signed SCIM requests through the local transport against the memory directory.

Runs, in one process and one event loop (one core, requester and agent together; the agent with the
collector settings of ``cloudprov agent run``, ``settle_heap``):
  1. filtered GETs with L=0: the CPU ceiling of signing, transport, verification and SCIM work
     (target >= 2,000 filtered GETs/s);
  2. filtered GETs with directory latency L at each concurrency of ``--sweep`` and at C: requests/s,
     p50/p99, the ratio to the ideal C/L (every GET is one directory round trip; target >= 0.8 at
     C=64, L=5 ms), the ratio to the lower of C/L and the CPU ceiling, and the share of the time the
     process was busy (``cpu_busy``: the CPU is the limit near 1, idle gaps between cohorts below);
  3. a mix of filtered GETs and PATCHes (``--patch-share``) with latency L: requests/s and the ratio
     to C / (L x measured round trips per request).
The phases take ``--rounds`` turns and each figure is the median over the turns: the machine's speed
drifts between phases minutes apart, and the CPU bound of a latency phase is the L=0 rate of its round.

    .venv/bin/python -m bench.agent_load --requests 5000 --concurrency 64 --latency-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import random
import statistics
import time
from collections.abc import Awaitable, Callable

from agent.config import AgentSettings
from agent.runtime import Agent, settle_heap
from bench.common import agent_state, result, summary_ms
from plugins.memory import MemoryDirectory, MemorySettings
from protocol.signing import Signer, public_key_text
from service.client import ScimClient
from transports.local import LocalRequester


async def run_phase(
    name: str, *, users: int, requests: int, concurrency: int, latency: float, patch_share: float
) -> dict[str, float]:
    signer = Signer.generate("bench")
    broker = f"bench-{name}"
    settings = AgentSettings.model_validate(
        {
            "agent": {"id": "bench", "domains": ["example.com"], "state_dir": agent_state()},
            "transport": {"url": f"local://{broker}"},
            "signing": {"public_keys": {"bench": public_key_text(signer.public_key)}},
            "dispatcher": {"max_in_flight": max(concurrency, 1)},
            "logging": {"level": "error"},
        }
    )
    directory = MemoryDirectory(
        MemorySettings(seed_users=users, seed_groups=0, latency={"kind": "fixed", "seconds": latency})
    )
    agent = Agent(settings, directory=directory, services=[settle_heap])  # as `agent run` does
    stop = asyncio.Event()
    runner = asyncio.create_task(agent.run(stop))
    await agent.started.wait()
    rng = random.Random(7)
    latencies: list[float] = []
    failures = 0
    async with LocalRequester.from_url(f"local://{broker}") as requester:
        client = ScimClient(requester, signer, "example.com", timeout=120)
        ids: list[str] = []
        if patch_share > 0:
            async for page in client.read_all("/Users", page_size=1000, attributes="id"):
                ids.extend(r["id"] for r in page)
        round_trips_before = directory.stats.round_trips

        def next_call() -> Callable[[], Awaitable[int]]:
            if ids and rng.random() < patch_share:
                target = rng.choice(ids)
                operations = [{"op": "replace", "path": "title", "value": f"t{rng.randrange(1000)}"}]

                async def patch() -> int:
                    body = {"schemas": ["urn:ietf:params:scim:api:messages:2.0:PatchOp"], "Operations": operations}
                    return (await client.call("PATCH", f"/Users/{target}", body=body)).status

                return patch
            number = rng.randrange(1, users + 1)

            async def get() -> int:
                query = {"filter": f'userName eq "user{number:05d}"'}
                return (await client.call("GET", "/Users", query)).status

            return get

        calls = [next_call() for _ in range(requests)]
        queue = iter(calls)

        async def worker() -> None:
            nonlocal failures
            for call in queue:
                started = time.perf_counter()
                status = await call()
                latencies.append(time.perf_counter() - started)
                failures += status >= 400

        started, cpu_started = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            for _ in range(concurrency):
                group.create_task(worker())
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    stop.set()
    await runner
    round_trips = (directory.stats.round_trips - round_trips_before) / requests
    rate = requests / elapsed
    figures: dict[str, float] = {"requests": requests, "rps": round(rate, 1), "failures": failures}
    figures.update(summary_ms(latencies))
    figures["round_trips_per_request"] = round(round_trips, 2)
    # CPU per request (requester and agent together): the cost that a busy machine does not distort.
    figures["cpu_us_per_request"] = round(cpu / requests * 1e6, 1)
    # The share of the phase the process was busy: near 1, the CPU is the limit; well below it with a
    # ratio short of C/L, the loop idles between cohorts (docs/performance.md, "Cohorts against the cost").
    figures["cpu_busy"] = round(cpu / elapsed, 3)
    if latency > 0:
        ideal = concurrency / (latency * max(round_trips, 1.0))
        figures["ideal_rps"] = round(ideal, 1)
        figures["ratio_to_ideal"] = round(rate / ideal, 3)
    return figures


def _median(rounds: list[dict[str, float]]) -> dict[str, float]:
    """Each figure's median over the rounds (the machine's speed drifts between phases run minutes apart);
    failures are added up."""
    figures = {key: round(statistics.median(r[key] for r in rounds), 3) for key in rounds[0]}
    figures["failures"] = sum(r["failures"] for r in rounds)
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--patch-share", type=float, default=0.2)
    parser.add_argument("--sweep", default="8,16,32", help="extra concurrencies to measure at latency L")
    parser.add_argument("--rounds", type=int, default=3, help="turns each phase takes (medians reported)")
    args = parser.parse_args()
    latency = args.latency_ms / 1000
    common = {"users": args.users, "requests": args.requests}
    concurrencies = [*(int(c) for c in args.sweep.split(",") if c), args.concurrency]
    zeros: list[dict[str, float]] = []
    loaded: dict[int, list[dict[str, float]]] = {c: [] for c in concurrencies}
    mixes: list[dict[str, float]] = []
    for turn in range(args.rounds):
        zero = await run_phase(
            f"gets-zero-{turn}", latency=0.0, patch_share=0.0, concurrency=args.concurrency, **common
        )
        zeros.append(zero)
        for concurrency in concurrencies:
            figures = await run_phase(
                f"gets-{concurrency}-{turn}", latency=latency, patch_share=0.0, concurrency=concurrency, **common
            )
            # The best any implementation on this core could do: the directory bound C/L, or the CPU bound
            # measured with L=0 in the same round (seconds before), whichever is lower.
            figures["ratio_to_bound"] = round(figures["rps"] / min(figures["ideal_rps"], zero["rps"]), 3)
            loaded[concurrency].append(figures)
        mixes.append(
            await run_phase(
                f"mix-{turn}", latency=latency, patch_share=args.patch_share, concurrency=args.concurrency, **common
            )
        )
    rounds = {"rounds": args.rounds}
    result(f"agent_load.filtered_gets C={args.concurrency} L=0", **_median(zeros), **rounds, target_rps=2000)
    for concurrency in concurrencies:
        result(
            f"agent_load.filtered_gets C={concurrency} L={args.latency_ms}ms",
            **_median(loaded[concurrency]),
            **rounds,
            target_ratio=0.8,
        )
    result(
        f"agent_load.mix patch_share={args.patch_share} C={args.concurrency} L={args.latency_ms}ms",
        **_median(mixes),
        **rounds,
    )


if __name__ == "__main__":
    asyncio.run(main())
