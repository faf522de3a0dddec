#!/usr/bin/env python
"""Agreement of the answer verifier with the labels of ``tests/verifier_cases.jsonl``.

Each line of the case file is ``{"prediction", "gold", "expected", "family"}``, optionally with
``"batch"`` (``dev``: written while the verifier was developed; ``heldout``: written before the
verifier was run on them) and ``"known_limit": "<reason>"``. A grader *agrees* on a case when its
verdict equals ``expected``; known limits count as they are graded.
Prints, per family and overall, the agreement of ``rlzoo.rewards.verifier.verify`` and, when the
``math_verify`` package is importable, of plain Math-Verify on the same cases, side by side.

Plain Math-Verify is called the way its README shows: ``verify(parse(gold), parse(prediction))``
with its default extraction configs and its own (signal-based) timeouts, which is fine here because
this script runs in the main thread. Math-Verify's LaTeX extraction needs a delimiter, so a
gold or a prediction without ``$``, ``\\(``, ``\\[``, ``\\boxed`` or ``####`` is parsed wrapped in
``$...$`` first (a prediction only when it is not prose: no word of three letters or more outside
LaTeX commands), and parsed as it is when that yields nothing; a prose prediction is parsed as it
is, then wrapped. So a bare answer such as ``\\frac{3}{6}`` or ``2\\cdot 3`` is not held against it.

Usage::

    python scripts/verify_agreement.py                    # rlzoo (working tree) vs Math-Verify
    python scripts/verify_agreement.py --rev HEAD~3       # also the verifier of another git revision
    python scripts/verify_agreement.py -v                 # list every disagreement
    python scripts/verify_agreement.py --no-math-verify   # rlzoo only
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import Callable, Optional

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

DEFAULT_CASES = REPO / "tests" / "verifier_cases.jsonl"

Grader = Callable[[str, str], bool]


def load_cases(path: Path = DEFAULT_CASES) -> list[dict]:
    """The cases of a jsonl case file, in file order."""
    cases = []
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                row = json.loads(line)
                for key in ("prediction", "gold", "expected", "family"):
                    if key not in row:
                        raise ValueError(f"{path}:{n}: missing field {key!r}")
                cases.append(row)
    return cases


def rlzoo_grader() -> Grader:
    from rlzoo.rewards.verifier import verify

    return lambda pred, gold: verify(pred, gold)


def revision_grader(rev: str) -> tuple[Grader, Callable[[], None]]:
    """``verify`` of the verifier as it was at git revision ``rev``.

    The package ``rlzoo/rewards/verifier/`` (or, before it was split, the file ``verifier.py``) is
    written to a temporary folder and loaded by path under a name of its own.
    """
    tmp = tempfile.mkdtemp(prefix="verifier_at_")
    name = f"verifier_at_{re.sub(r'[^0-9A-Za-z_]', '_', rev)}"
    listed = subprocess.run(
        ["git", "-C", str(REPO), "ls-tree", "--name-only", rev, "rlzoo/rewards/verifier/"],
        capture_output=True, text=True, check=True,
    ).stdout.split()
    paths = [p for p in listed if p.endswith(".py")] or ["rlzoo/rewards/verifier.py"]
    for path in paths:
        source = subprocess.run(
            ["git", "-C", str(REPO), "show", f"{rev}:{path}"], capture_output=True, text=True, check=True
        ).stdout
        Path(tmp, os.path.basename(path)).write_text(source)
    if paths == ["rlzoo/rewards/verifier.py"]:
        spec = importlib.util.spec_from_file_location(name, os.path.join(tmp, "verifier.py"))
    else:
        spec = importlib.util.spec_from_file_location(
            name, os.path.join(tmp, "__init__.py"), submodule_search_locations=[tmp]
        )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)

    def cleanup() -> None:
        module.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)

    return (lambda pred, gold: module.verify(pred, gold)), cleanup


_COMMAND_RE = re.compile(r"\\(?:begin|end|text[a-z]*|mbox|mathrm|textbf|operatorname)\{[^{}]*\}|\\[A-Za-z]+")


def _has_delimiters(text: str) -> bool:
    return any(d in text for d in ("$", "\\(", "\\[", "\\boxed", "####"))


def _is_prose(text: str) -> bool:
    """Words outside LaTeX commands (3+ ASCII letters, or any non-ASCII letter): a sentence."""
    rest = _COMMAND_RE.sub(" ", text)
    return re.search(r"[A-Za-z]{3,}", rest) is not None or any(ch.isalpha() and not ch.isascii() for ch in rest)


def math_verify_grader() -> Optional[Grader]:
    try:
        import math_verify
    except ImportError:
        return None
    logging.getLogger("math_verify").setLevel(logging.CRITICAL)

    def parsed(text: str, wrap_first: bool) -> list:
        import sympy

        def usable(res: list) -> bool:
            return any(isinstance(x, (sympy.Basic, sympy.MatrixBase)) for x in res)

        tries = [f"${text}$", text] if wrap_first else [text, f"${text}$"]
        first = math_verify.parse(tries[0])
        if usable(first):
            return first
        second = math_verify.parse(tries[1])
        return second if usable(second) else first

    def grade(pred: str, gold: str) -> bool:
        g = parsed(gold, wrap_first=not _has_delimiters(gold))
        p = parsed(pred, wrap_first=not _has_delimiters(pred) and not _is_prose(pred))
        try:
            return bool(math_verify.verify(g, p))
        except Exception:  # noqa: BLE001
            return False

    return grade


def evaluate(cases: list[dict], grader: Grader) -> tuple[list[bool], float]:
    """Per-case agreement with ``expected`` and the wall time of the run."""
    start = time.perf_counter()
    agree = []
    for c in cases:
        try:
            verdict = bool(grader(c["prediction"], c["gold"]))
        except Exception:  # noqa: BLE001 - a crashing grader disagrees
            verdict = not c["expected"]
        agree.append(verdict == c["expected"])
    return agree, time.perf_counter() - start


def _pct(k: int, n: int) -> str:
    return f"{100.0 * k / n:5.1f}%" if n else "    -"


def report(cases: list[dict], results: "OrderedDict[str, list[bool]]") -> str:
    """A table of agreement per family (with counts of cases and negatives) and overall."""
    families: "OrderedDict[str, list[int]]" = OrderedDict()
    for i, c in enumerate(cases):
        families.setdefault(c["family"], []).append(i)
    names = list(results)
    head = f"{'family':<22} {'cases':>5} {'neg':>4} " + " ".join(f"{n:>14}" for n in names)
    lines = [head, "-" * len(head)]
    for fam, idx in families.items():
        neg = sum(not cases[i]["expected"] for i in idx)
        cells = []
        for n in names:
            k = sum(results[n][i] for i in idx)
            cells.append(f"{k:>3}/{len(idx):<3} {_pct(k, len(idx))}")
        lines.append(f"{fam:<22} {len(idx):>5} {neg:>4} " + " ".join(f"{c:>14}" for c in cells))
    lines.append("-" * len(head))
    neg = sum(not c["expected"] for c in cases)
    cells = []
    for n in names:
        k = sum(results[n])
        cells.append(f"{k:>3}/{len(cases):<3} {_pct(k, len(cases))}")
    lines.append(f"{'overall':<22} {len(cases):>5} {neg:>4} " + " ".join(f"{c:>14}" for c in cells))
    batches = sorted({c.get("batch") for c in cases if c.get("batch")})
    for batch in batches if len(batches) > 1 else []:
        idx = [i for i, c in enumerate(cases) if c.get("batch") == batch]
        neg = sum(not cases[i]["expected"] for i in idx)
        cells = [f"{sum(results[n][i] for i in idx):>3}/{len(idx):<3} {_pct(sum(results[n][i] for i in idx), len(idx))}" for n in names]
        lines.append(f"{'  batch ' + batch:<22} {len(idx):>5} {neg:>4} " + " ".join(f"{c:>14}" for c in cells))
    for n in names:
        wrong_accepts = sum(1 for i, c in enumerate(cases) if not c["expected"] and not results[n][i])
        wrong_rejects = sum(1 for i, c in enumerate(cases) if c["expected"] and not results[n][i])
        lines.append(f"{n}: {wrong_accepts} wrong answers accepted, {wrong_rejects} right answers rejected")
    return "\n".join(lines)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=Path, default=DEFAULT_CASES, help="jsonl case file")
    parser.add_argument("--rev", action="append", default=[], help="also grade with the verifier of this git revision")
    parser.add_argument("--no-math-verify", action="store_true", help="skip plain Math-Verify")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every disagreement")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)

    cases = load_cases(args.cases)
    graders: "OrderedDict[str, Grader]" = OrderedDict()
    cleanups = []
    for rev in args.rev:
        g, cleanup = revision_grader(rev)
        graders[f"rlzoo@{rev}"] = g
        cleanups.append(cleanup)
    graders["rlzoo"] = rlzoo_grader()
    if not args.no_math_verify:
        mv = math_verify_grader()
        if mv is None:
            print("math_verify is not importable: Math-Verify column skipped")
        else:
            graders["Math-Verify"] = mv

    results: "OrderedDict[str, list[bool]]" = OrderedDict()
    try:
        for name, grader in graders.items():
            agree, seconds = evaluate(cases, grader)
            results[name] = agree
            print(f"{name}: {len(cases)} cases in {seconds:.1f}s")
    finally:
        for cleanup in cleanups:
            cleanup()
    print(report(cases, results))
    limits = [c for c in cases if c.get("known_limit")]
    if limits:
        print(f"{len(limits)} case(s) marked known_limit (counted above as they are graded)")
    if args.verbose:
        for name, agree in results.items():
            print(f"\n== disagreements of {name}")
            for c, ok in zip(cases, agree):
                if not ok:
                    mark = f"  [known_limit: {c['known_limit']}]" if c.get("known_limit") else ""
                    print(f"  [{c['family']}] expected {c['expected']}: {c['prediction']!r} vs {c['gold']!r}{mark}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
