"""What durability costs per update, under each fsync policy ("none", "flush", "always").

Two patterns, each with an `AsyncFileClient` making N edits (one map key each) to a file in
`--dir` (a real disk: tmpfs makes fsync free):

- "acked": `await client.flush()` after every edit, so each edit is acknowledged (durable under
  the policy) before the next: the latency of one acknowledged edit;
- "stream": the N edits as fast as they come, one `flush()` at the end: the store batches what
  arrives while it writes (and, under "always", while it fsyncs).

Reported per update, median of `--runs`: wall time, CPU time of the whole process (Python and
the native store's threads), and the store's fsyncs and writes for the run.

    python bench/fsync_cost.py [--updates 2000] [--runs 3] [--dir bench/out]

Not a test: the figures depend on the disk and on what else the machine does.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
from pycrdt import Map

from wire_file import AsyncFileClient

POLICIES = ("none", "flush", "always")


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def run_once(directory: Path, fsync: Any, pattern: str, n: int) -> tuple[float, float, Any]:
    path = directory / f"{pattern}-{fsync}.y"
    path.unlink(missing_ok=True)
    async with AsyncFileClient(path=path, fsync=fsync) as client:
        items = client.doc.get("items", type=Map)
        items["warmup"] = 0
        await client.flush()
        state0 = client._link.store.poll()  # type: ignore[union-attr]
        cpu0, t0 = cpu_seconds(), time.perf_counter()
        for i in range(n):
            items[f"k{i}"] = i
            if pattern == "acked":
                await client.flush()
        await client.flush()
        wall, cpu = time.perf_counter() - t0, cpu_seconds() - cpu0
        state = client._link.store.poll()  # type: ignore[union-attr]
        counts = (state.syncs - state0.syncs, state.writes - state0.writes)
    return wall, cpu, counts


async def main(args: argparse.Namespace) -> None:
    args.dir.mkdir(parents=True, exist_ok=True)
    directory = Path(tempfile.mkdtemp(prefix="fsync-cost-", dir=args.dir))
    try:
        print(f"{args.updates} updates, median of {args.runs} runs, files in {directory}")
        header = f"{'pattern':<7} {'fsync':<7} {'wall µs/update':>15} {'CPU µs/update':>14}"
        print(f"{header} {'fsyncs':>7} {'writes':>7}")
        for pattern in ("acked", "stream"):
            for fsync in POLICIES:
                runs = [
                    await run_once(directory, fsync, pattern, args.updates)
                    for _ in range(args.runs)
                ]
                wall = statistics.median(r[0] for r in runs) / args.updates * 1e6
                cpu = statistics.median(r[1] for r in runs) / args.updates * 1e6
                syncs, writes = runs[-1][2]
                print(f"{pattern:<7} {fsync:<7} {wall:>15.1f} {cpu:>14.1f} {syncs:>7} {writes:>7}")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(__file__).resolve().parent / "out")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    arguments = parser.parse_args()
    anyio.run(main, arguments, backend=arguments.backend)
