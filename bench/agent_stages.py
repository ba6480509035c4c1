"""Where a request's time goes at C in flight over a directory with latency L: one ``agent_load`` phase, timed by stage.

``bench.agent_load`` prints requests/s and the ratio to C/L; this bench says what the rest of a
request's time is spent on, with the same set-up (requester and agent in one process and one event
loop, local transport, memory directory, filtered GETs). It wraps five points of the path with a
clock (the wrappers cost a few microseconds a request, so its rate is a little below agent_load's):

  batch wait       the call made its signed fields -> its batch was signed and posted
  queue to agent   posted -> the dispatcher decoded it (deliveries ahead of it, the batch's check)
  agent handle     decoded -> its response encoded (the directory round trip included)
  reply to caller  encoded -> the caller decoded the response
  directory        a simulated round trip's actual length (``TimerQueue.sleep``), against L

and prints the median and mean of each. In a closed loop of C callers, requests/s is
C / (L + the time outside the directory): at C=64 and L=5 ms, 0.8 of C/L leaves 1.25 ms.

It wraps functions, which code compiled with mypyc (``setup.py``) calls directly, so it runs
cloudprov as plain Python (``bench.plain``) whatever is installed: its stages are plain Python's
(``bench.agent_load`` measures the compiled code; a request costs about a third more CPU here).

    .venv/bin/python -m bench.agent_stages --requests 20000 --concurrency 64 --latency-ms 5
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from bench import plain

plain.use()  # before cloudprov is imported: the wrapped calls must go through module attributes

import agent.dispatcher  # noqa: E402
import service.client  # noqa: E402
from bench.agent_load import run_phase  # noqa: E402
from bench.common import result  # noqa: E402
from plugins.memory.chaos import TimerQueue  # noqa: E402
from transports.local import LocalRequester  # noqa: E402

_clock = time.perf_counter


def _instrument() -> tuple[dict[str, dict[str, float]], list[float], Callable[[], None]]:
    """Wrap the five points; returns the marks by stage and request id, the round trips, and an undo."""
    marks: dict[str, dict[str, float]] = {name: {} for name in ("made", "posted", "decoded", "encoded", "answered")}
    round_trips: list[float] = []
    undo: list[Callable[[], None]] = []

    def wrap(owner: Any, name: str, make: Callable[[Any], Any]) -> None:
        original = getattr(owner, name)
        setattr(owner, name, make(original))
        undo.append(lambda: setattr(owner, name, original))

    def before(stage: str) -> Callable[[Any], Any]:
        """Marks ``stage`` for the request id a function takes first, as it is called."""

        def make(original: Any) -> Any:
            def marked(request_id: str, *rest: Any) -> Any:
                marks[stage][request_id] = _clock()
                return original(request_id, *rest)

            return marked

        return make

    def after(stage: str, request_id: Callable[[Any], str]) -> Callable[[Any], Any]:
        """Marks ``stage`` for the request id of what a decoder returns, as it returns."""

        def make(original: Any) -> Any:
            def marked(raw: bytes | str) -> Any:
                decoded = original(raw)
                marks[stage][request_id(decoded)] = _clock()
                return decoded

            return marked

        return make

    def post(original: Any) -> Any:
        def posted(self: LocalRequester, domain: str, request_id: str, *rest: Any) -> None:
            marks["posted"][request_id] = _clock()
            original(self, domain, request_id, *rest)

        return posted

    def sleep(original: Any) -> Any:
        async def timed_sleep(self: TimerQueue, seconds: float) -> None:
            started = _clock()
            await original(self, seconds)
            round_trips.append(_clock() - started)

        return timed_sleep

    wrap(service.client, "request_fields", before("made"))
    wrap(LocalRequester, "post", post)
    wrap(agent.dispatcher, "decode_request", after("decoded", lambda request: request.id))
    wrap(agent.dispatcher, "encode_response", before("encoded"))
    wrap(service.client, "decode_response", after("answered", lambda response: response.request_id))
    wrap(TimerQueue, "sleep", sleep)

    def restore() -> None:
        for step in reversed(undo):
            step()

    return marks, round_trips, restore


def _ms(samples: list[float]) -> dict[str, float]:
    return {
        "median_ms": round(statistics.median(samples) * 1000, 3),
        "mean_ms": round(statistics.fmean(samples) * 1000, 3),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=20000)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--latency-ms", type=float, default=5.0)
    parser.add_argument("--users", type=int, default=1000)
    args = parser.parse_args()
    marks, round_trips, restore = _instrument()
    try:
        figures = await run_phase(
            "stages",
            users=args.users,
            requests=args.requests,
            concurrency=args.concurrency,
            latency=args.latency_ms / 1000,
            patch_share=0.0,
        )
    finally:
        restore()
    answered = list(marks["answered"])
    stages: dict[str, Any] = {}
    for name, start, end in (
        ("batch_wait", "made", "posted"),
        ("queue_to_agent", "posted", "decoded"),
        ("agent_handle", "decoded", "encoded"),
        ("reply_to_caller", "encoded", "answered"),
        ("total", "made", "answered"),
    ):
        began, ended = marks[start], marks[end]
        stages[name] = _ms([ended[i] - began[i] for i in answered if i in began and i in ended])
    stages["directory"] = _ms(round_trips) if round_trips else {}
    result(
        f"agent_stages.filtered_gets C={args.concurrency} L={args.latency_ms}ms",
        rps=figures["rps"],
        cpu_us_per_request=figures["cpu_us_per_request"],
        ratio_to_ideal=figures.get("ratio_to_ideal"),
        **stages,
    )


if __name__ == "__main__":
    asyncio.run(main())
