"""Per-program cost of the sandbox: a fresh interpreter per program vs the pool of forked children.

Runs the same programs through both paths of :mod:`rlzoo.sandbox` in one process, alternating
rounds so that load from other jobs falls on both alike, and prints per program: wall time, and
CPU time of every process involved (this one, the servers, the children and their relays; the
children's CPU is counted by the kernel into their parent: into this process for the spawn path,
into the server for the pool path, which is measured through /proc/<server>/stat's cutime and
cstime). Usage (from the repository root):

    .venv/bin/python benchmarks/sandbox_pool.py [--n 64] [--rounds 3] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time

PROGRAMS = {
    "print": "print(sum(range(10)))\n",
    "pot": (  # a typical program-of-thought answer
        "from fractions import Fraction\n"
        "import math\n"
        "def solve():\n"
        "    apples = 3 * 12\n"
        "    eaten = Fraction(1, 4) * apples\n"
        "    left = apples - eaten\n"
        "    return math.floor(left / 2)\n"
        "print(solve())\n"
    ),
}


def _server_cpu_s() -> float:
    """CPU seconds of the pool servers and of their reaped children, from /proc."""
    from rlzoo import sandbox

    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for server in sandbox._pool_servers.values():
        with open(f"/proc/{server.proc.pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
        total += sum(int(fields[i]) for i in (11, 12, 13, 14)) / tick  # utime stime cutime cstime
    return total


def measure(code: str, n: int, workers: int, pool: bool) -> tuple[float, float]:
    """(wall ms, CPU ms) per program for ``n`` copies of ``code``."""
    from rlzoo import sandbox

    sandbox.USE_POOL = pool
    sandbox.run_python(code)  # warm: the pool starts its server here, outside the timing
    before, server_before = os.times(), _server_cpu_s()
    start = time.perf_counter()
    results = sandbox.run_many([code] * n, max_workers=workers)
    wall = time.perf_counter() - start
    after, server_after = os.times(), _server_cpu_s()
    assert all(r.ok for r in results), results[0]
    cpu = sum(getattr(after, f) - getattr(before, f)
              for f in ("user", "system", "children_user", "children_system"))
    cpu += server_after - server_before
    return 1000 * wall / n, 1000 * cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=64, help="programs per round and path")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2, help="run_many's max_workers")
    args = parser.parse_args()
    print(f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, {args.n} programs x "
          f"{args.rounds} rounds, max_workers={args.workers}; best round shown")
    print(f"{'program':8} {'path':6} {'wall ms/prog':>13} {'CPU ms/prog':>12}")
    for name, code in PROGRAMS.items():
        best: dict[bool, tuple[float, float]] = {}
        for _ in range(args.rounds):
            for pool in (False, True):
                wall, cpu = measure(code, args.n, args.workers, pool)
                old = best.get(pool, (float("inf"), float("inf")))
                best[pool] = (min(old[0], wall), min(old[1], cpu))
        for pool in (False, True):
            wall, cpu = best[pool]
            print(f"{name:8} {'pool' if pool else 'spawn':6} {wall:13.1f} {cpu:12.1f}")
        ratio_wall = best[False][0] / best[True][0]
        ratio_cpu = best[False][1] / best[True][1]
        print(f"{name:8} {'ratio':6} {ratio_wall:12.1f}x {ratio_cpu:11.1f}x")


if __name__ == "__main__":
    main()
