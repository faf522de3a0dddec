#!/usr/bin/env python
"""Self-check of the answer verifier on the real GSM8K and MATH data in ``shared/data``.

For every row of every file:

* **self**: ``verify(solution, answer)`` must be True (the reference solution is graded against its
  own answer field; for GSM8K the answer is the ``#### N`` value of the solution);
* **cross**: ``verify(solution, other_answer)`` must be False, where ``other_answer`` is the answer of
  the next row (cyclically) whose *normalised* answer string differs from this row's.

Rows whose reference answer is empty (two MATH train rows have ``\\boxed{}``) cannot be graded;
they are listed as data defects and do not count as misses.

Prints pass counts per file and every miss with its reason. Exit status 1 when there is a miss.

Usage::

    python scripts/verify_selfcheck.py                 # everything, 2 processes
    python scripts/verify_selfcheck.py --limit 300     # first 300 rows of each file
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from rlzoo.rewards.verifier import extract_answer, normalize_answer, verifier_stats, verify  # noqa: E402

DEFAULT_DATA = REPO.parent / "shared" / "data"
FILES = (
    "gsm8k/train.jsonl",
    "gsm8k/test.jsonl",
    "math/train.jsonl",
    "math/test.jsonl",
    "math/test_full.jsonl",
)


@dataclass
class FileResult:
    name: str
    total: int = 0
    defects: int = 0
    self_pass: int = 0
    cross_fail: int = 0
    timeouts: int = 0
    symbolic: int = 0
    seconds: float = 0.0
    misses: list[str] = field(default_factory=list)
    defect_rows: list[str] = field(default_factory=list)

    @property
    def graded(self) -> int:
        return self.total - self.defects


def load_pairs(path: Path, limit: Optional[int] = None) -> list[tuple[str, str]]:
    """(solution, answer) pairs of a GSM8K or MATH jsonl file."""
    pairs: list[tuple[str, str]] = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            if limit is not None and len(pairs) >= limit:
                break
            row = json.loads(line)
            if "question" in row:  # GSM8K: the answer is the "#### N" value of the solution
                pairs.append((row["answer"], row["answer"].rsplit("####", 1)[1].strip()))
            else:
                pairs.append((row["solution"], row["answer"]))
    return pairs


def cross_answers(answers: list[str]) -> list[Optional[str]]:
    """For each row, the answer of the next row whose normalised answer differs.

    A trailing ``%`` is ignored in this comparison because ``7\\%`` and ``7`` are equal by design.
    """
    norms = [normalize_answer(a).rstrip("%") for a in answers]
    n = len(answers)
    out: list[Optional[str]] = []
    for i in range(n):
        other = None
        for k in range(1, n):
            j = (i + k) % n
            if norms[j] != norms[i]:
                other = answers[j]
                break
        out.append(other)
    return out


def _describe(solution: str, gold: str) -> str:
    pred = extract_answer(solution)
    gold_ans = extract_answer(gold) if ("\\boxed" in gold or "####" in gold) else gold
    return (
        f"extracted {pred!r} -> {normalize_answer(pred) if pred else None!r}; "
        f"gold {gold!r} -> {normalize_answer(gold_ans) if gold_ans else None!r}"
    )


ChunkResult = tuple[int, int, list[str], list[str], int, int]


def _check_chunk(args: tuple[int, list[tuple[str, str, Optional[str]]], float]) -> ChunkResult:
    start, items, timeout_s = args
    self_pass = cross_fail = 0
    misses: list[str] = []
    defects: list[str] = []
    before = verifier_stats()
    for k, (solution, answer, other) in enumerate(items):
        row = start + k
        if not answer.strip():
            defects.append(f"row {row}: empty reference answer; solution ends {solution[-80:]!r}")
            continue
        if verify(solution, answer, timeout_s=timeout_s):
            self_pass += 1
        else:
            misses.append(f"row {row} self: judged wrong; {_describe(solution, answer)}")
        if other is None or not verify(solution, other, timeout_s=timeout_s):
            cross_fail += 1
        else:
            misses.append(f"row {row} cross: judged right against {other!r}; {_describe(solution, other)}")
    after = verifier_stats()
    timeouts = after["verify/timeouts"] - before["verify/timeouts"]
    symbolic = after["verify/symbolic"] - before["verify/symbolic"]
    return self_pass, cross_fail, misses, defects, timeouts, symbolic


def check_file(
    path: Path, limit: Optional[int] = None, workers: int = 1, timeout_s: float = 5.0, pool: Optional[mp.pool.Pool] = None
) -> FileResult:
    """Run the self and cross checks on one file."""
    t0 = time.perf_counter()
    pairs = load_pairs(path, limit)
    others = cross_answers([a for _, a in pairs])
    items = [(s, a, o) for (s, a), o in zip(pairs, others)]
    chunk = max(1, min(200, len(items) // max(1, workers * 4) or 1))
    jobs = [(i, items[i : i + chunk], timeout_s) for i in range(0, len(items), chunk)]
    results = pool.map(_check_chunk, jobs) if pool is not None else [_check_chunk(j) for j in jobs]
    res = FileResult(name=str(path), total=len(items))
    for self_pass, cross_fail, misses, defects, timeouts, symbolic in results:
        res.symbolic += symbolic
        res.self_pass += self_pass
        res.cross_fail += cross_fail
        res.misses.extend(misses)
        res.defect_rows.extend(defects)
        res.timeouts += timeouts
    res.defects = len(res.defect_rows)
    res.seconds = time.perf_counter() - t0
    return res


def run_selfcheck(
    data_dir: Path = DEFAULT_DATA, limit: Optional[int] = None, workers: int = 1, timeout_s: float = 5.0
) -> list[FileResult]:
    """Check every file present under ``data_dir``; ``workers`` > 1 uses a process pool (max 2)."""
    workers = max(1, min(2, workers))
    paths = [data_dir / f for f in FILES if (data_dir / f).exists()]
    if workers == 1:
        return [check_file(p, limit, 1, timeout_s) for p in paths]
    ctx = mp.get_context("fork") if hasattr(os, "fork") else mp.get_context("spawn")
    with ctx.Pool(workers) as pool:
        return [check_file(p, limit, workers, timeout_s, pool) for p in paths]


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="shared/data directory")
    parser.add_argument("--limit", type=int, default=None, help="first N rows of each file")
    parser.add_argument("--workers", type=int, default=2, help="processes (at most 2)")
    parser.add_argument("--timeout", type=float, default=5.0, help="verify timeout_s per pair")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    results = run_selfcheck(args.data, args.limit, args.workers, args.timeout)
    ok = True
    for r in results:
        defects = f" ({r.defects} rows skipped: data defects)" if r.defects else ""
        print(
            f"{r.name}: self {r.self_pass}/{r.graded} pass, cross {r.cross_fail}/{r.graded} fail{defects}, "
            f"{r.symbolic} symbolic checks, {r.timeouts} timeouts, {r.seconds:.1f}s"
        )
        for miss in r.misses:
            print(f"  MISS {miss}")
        for defect in r.defect_rows:
            print(f"  DATA DEFECT {defect}")
        ok = ok and not r.misses
    print(f"total time {time.perf_counter() - t0:.1f}s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
