"""CPU cost per request, counted in machine instructions: a figure a busy or drifting machine does not move.

Requests per second and CPU seconds depend on what else the machine is doing (on the project's test
machine the same run varies by 1.5x within minutes). ``valgrind --tool=callgrind`` counts the
instructions a process executes instead, which is the same from run to run for the same code and
inputs. This bench runs one ``bench.agent_load`` phase (requester and agent in one process, local
transport, memory directory, L=0) under callgrind twice, with ``--small`` and ``--large`` requests,
and prints the difference per request: start-up, seeding and warm-up cancel out. The two runs go in
parallel (valgrind runs a program about 50x slower).

    .venv/bin/python -m bench.cpu_cost                    # filtered GETs
    .venv/bin/python -m bench.cpu_cost --patch-share 0.2  # the agent_load mix, at L=0

Compare two versions of the code by running it on each; a change of 1% is outside the noise (0.2%).
Needs valgrind (``apt-get install valgrind``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.agent_load import run_phase
from bench.common import result

_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def _child(requests: int, users: int, patch_share: float) -> None:
    figures = asyncio.run(
        run_phase("cpu-cost", users=users, requests=requests, concurrency=64, latency=0.0, patch_share=patch_share)
    )
    if figures["failures"]:
        raise SystemExit(f"{figures['failures']} requests failed")


def _count(requests: int, args: argparse.Namespace, scratch: Path) -> subprocess.Popen[str]:
    command = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={scratch}/callgrind.{requests}",
        sys.executable,
        "-m",
        "bench.cpu_cost",
        "--child",
        str(requests),
        "--users",
        str(args.users),
        "--patch-share",
        str(args.patch_share),
    ]
    # A fixed hash seed: set and dict orders, and so the work done, are the same in every run.
    environment = {**os.environ, "PYTHONHASHSEED": "0"}
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=environment)


def _instructions(process: subprocess.Popen[str]) -> int:
    _, errors = process.communicate()
    found = _TOTAL.search(errors)
    if process.returncode != 0 or found is None:
        raise SystemExit(f"callgrind run failed (exit {process.returncode}):\n{errors[-2000:]}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=1000, help="requests in the first run")
    parser.add_argument("--large", type=int, default=3000, help="requests in the second run")
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--patch-share", type=float, default=0.0)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        _child(args.child, args.users, args.patch_share)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("bench.cpu_cost needs valgrind on PATH (apt-get install valgrind)")
    if args.large <= args.small:
        raise SystemExit("--large must be more than --small")
    with tempfile.TemporaryDirectory(prefix="cloudprov-cpu-cost-") as scratch:
        runs = [_count(n, args, Path(scratch)) for n in (args.small, args.large)]
        small, large = (_instructions(run) for run in runs)
    per_request = (large - small) / (args.large - args.small)
    name = "filtered_gets" if args.patch_share == 0 else f"mix patch_share={args.patch_share}"
    result(
        f"cpu_cost.{name} C=64 L=0",
        instructions_per_request=round(per_request),
        small=args.small,
        large=args.large,
        instructions_small=small,
        instructions_large=large,
    )


if __name__ == "__main__":
    main()
