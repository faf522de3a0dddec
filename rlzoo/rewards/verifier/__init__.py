"""Math answer verifier: is a model's final answer equal to the reference answer?

``verify(prediction, gold)`` is the reward function's core for GSM8K / MATH style data. It runs in
the RL training loop on thousands of completions per step, so it is built in three layers, and each
family of answers is decided by the cheapest layer that can decide it soundly:

1. **Extraction** (:func:`extract_answer`, rlzoo's own, pure string work). The final answer of a
   completion is taken, in this priority order, from

   a. the last ``\\boxed{...}`` / ``\\fbox{...}`` (braces matched, nesting allowed; ``\\boxed 5``
      without braces also works);
   b. the last final-answer phrase ("The answer is ...", "The final answer is $...$",
      "Final Answer: ...", "Answer:" at the start of a line, and "La réponse est", "Réponse :",
      "Die Antwort ist", "La respuesta es", "Ответ:", "答案是", "答案：", "答："): a leading ``$...$``
      span, else the rest of the sentence (up to ``. `` or ``。``); when that is prose
      ("15 gallons * 8 pints = 120 pints", "45 米") the part after the last ``=``, else its last
      number;
   c. GSM8K's last ``#### N`` line (not a markdown heading such as ``#### Step 2``);
   d. a program's printed output: the last non-empty line of the last ```` ```output ```` block;
   e. the whole text when it is itself a bare answer (one short line without words, such as
      ``\\frac{1}{2}`` or ``x = 3``, or at most two words; Chinese characters always make prose),
      otherwise the last number in the text, or the ``$...$`` span holding it when nothing follows
      that span ("the length is $\\sqrt{13}$ units" gives ``\\sqrt{13}``).

   Numbers in prose understand LaTeX thousands separators (``$3{,}600$``, ``2,\\!500``,
   ``1\\,234``) and no-break spaces (``1 250``); in French, German, Spanish, Italian, Portuguese
   or Russian prose (recognised by accented or Cyrillic letters or a few common words) ``3,5`` is
   3.5 and ``1 250`` is 1250, while a comma followed by exactly three digits stays a thousands
   separator. GSM8K calculator annotations (``<<48/2=24>>``) are removed first.

   When ``gold`` looks like a full solution (it contains ``\\boxed``, ``\\fbox`` or ``####``) the same
   extraction is applied to it; otherwise ``gold`` is used as it is.

   Why our own: it must run in microseconds without sympy (Math-Verify's extraction parses every
   candidate with sympy while it extracts), and it knows the GSM8K ``####`` and program-output
   conventions; on MATH and GSM8K it finds every reference answer (``scripts/verify_selfcheck.py``).

2. **Normalisation and a fast path** (rlzoo's own; microseconds, no sympy). Both answers are
   normalised as strings (``\\dfrac``/``\\tfrac`` -> ``\\frac``, ``\\left``/``\\right``, spacing,
   ``\\text{}``/``\\textnormal{}``/``\\mbox{}`` units, degrees, ``\\$``, thousands separators, one
   spelling per relation sign (``\\geq``, ``\\geqslant``, ``>=``, ``≥`` -> ``\\ge``; ``\\lt`` -> ``<``;
   ``\\neq``, ``!=`` -> ``\\ne``), "1 or 2" -> ``1,2``, ``x = 3`` -> ``3`` and ``(x, y) = (1, 2)`` ->
   ``(1,2)`` ...), then split into structure: tuples/points, intervals, sets and comma lists (where
   ``x=1, x=2`` lists 1 and 2 and ``1\\pm\\sqrt2`` is two elements), interval unions, matrices
   (``pmatrix``, ``bmatrix``, ``matrix`` and ``\\left[\\begin{array}...\\right]`` alike;
   ``vmatrix`` is a determinant, a number), and relations written left to right (``7 \\ge y`` and
   ``y \\le 7`` are the same chain ``y \\le 7``). Equal strings, plain numbers (integers, decimals,
   scientific notation, ``a/b``, ``\\frac{a}{b}``, mixed numbers, repeating decimals, percentages),
   words and every structural mismatch (a tuple against a set, ``[1, 3)`` against ``[1, 3]``,
   ``<`` against ``\\le``, a relation against a number) are decided here.

3. **Symbolic comparison**, in a helper process (only what the fast path cannot decide, e.g.
   ``\\frac{\\sqrt{3}}{2}`` against ``\\frac{1}{2}\\sqrt{3}``). Two deciders:

   * **rlzoo's rules on sympy objects** for scalars, matrices, relations and equations. LaTeX is
     converted with ``latex2sympy2_extended`` (Hugging Face's converter, the parser behind
     Math-Verify: maintained, tested on the MATH corpus's LaTeX, returns ordinary sympy objects).
     Values without free symbols are compared numerically (exact values to 1e-20, decimals to
     1e-6); expressions with symbols at random points (a mismatch proves inequality cheaply), then
     by ``sympy.simplify(a - b) == 0``. Matrix expressions (``2M``, ``M^{-1}``, ``MN``, ``M+N``) are
     evaluated and compared entry by entry. An equation or ``\\ne`` matches another when
     ``lhs - rhs`` of one is a non-zero constant times the other's (``2x+4y=6`` / ``x+2y=3``; an
     assignment ``y = 2x+3`` is also this equation); an inequality chain when each link is a
     *positive* constant times the other's (``-2y < 6`` / ``y > -3``, but not ``y < -3``). These
     rules are ours because they must keep rlzoo's tolerances and refusals (Math-Verify rounds
     floats to 6 places, reads an open interval ``(1, 2)`` as the set ``{1, 2}``, and on our case
     set misses scaled inequalities and matrix powers).
   * **Math-Verify** (``math_verify.parse``/``verify``) for one family: *a set of reals written two
     ways* -- an inequality in one variable in the gold against an interval or union in the
     prediction (``x^2 > 4`` / ``(-\\infty,-2)\\cup(2,\\infty)``, ``-80 \\le g(x) \\le 82`` /
     ``[-80, 82]``), and a union against an interval or a set (``[1,2]\\cup[2,3]`` / ``[1,3]``).
     It solves the inequality and compares sympy sets, which our structural comparison cannot do.
     As in Math-Verify's default, an interval gold is not matched by an inequality prediction (the
     question asked for interval notation). Its signal-based timeouts are turned off (they only
     work in the main thread); it runs under the helper's own timer and deadline instead, and its
     open-interval-as-pair rule is not used. Without ``math_verify`` installed such pairs are wrong.

   The helper is a **persistent subprocess** (one per calling process, started lazily with
   :mod:`subprocess`, so it also works from threads and from daemonic ``multiprocessing`` workers,
   where ``signal.alarm`` and child ``multiprocessing`` processes do not). Each request has a
   deadline of ``timeout_s`` seconds. The helper interrupts itself at 80% of it with a timer signal
   and reports a timeout (it stays alive); if it has still not answered at the deadline (stuck in C
   code, e.g. a huge integer power) the caller kills it. Either way the pair is judged wrong, a
   warning naming the expressions goes to the ``rlzoo.verifier`` logger and the timeout is counted
   (:func:`verifier_stats`). The next symbolic request starts a fresh helper, so one pathological
   answer never poisons later ones. The helper's address space is capped (4 GiB) so that a huge
   power fails with ``MemoryError`` rather than exhausting RAM. The helper exits when its parent
   closes the pipe or dies, and an ``atexit`` hook terminates it at interpreter exit. Decided
   symbolic verdicts are cached (LRU) because a GRPO group often repeats the same answer.

Equivalence rules, tolerance and known limits are listed in ``docs/rewards.md`` ("Answer verifier").
In short: exact values (integers, fractions) must be equal exactly; as soon as one side is written as
a decimal, a relative tolerance of 1e-6 (absolute 1e-9 near 0) applies; exact irrational values
(``\\sqrt{2}``, ``\\pi``) are evaluated to 30 digits and must agree to 1e-20. ``50\\%`` equals ``50``
and ``0.5``; a gold without ``%`` is never divided by 100 (gold ``0.5`` rejects ``50``).
:func:`answers_equivalent` compares two extracted answers with the same rules, made symmetric (for
Maj@k votes; there ``%`` is a unit: ``50\\%`` equals ``50`` but not ``0.5``).

The helper needs a POSIX system (``select`` on pipes, ``SIGALRM``); Linux and macOS are fine.

Modules, lowest first (each imports only modules above it in this list, and nothing of ``rlzoo``, so
that the helper can run these files by path):

* ``extract``: layer 1, the final answer of a completion (:func:`extract_answer`).
* ``normalize``: layer 2, the canonical string of an answer (:func:`normalize_answer`).
* ``numeric``: layer 2, plain numbers read exactly, the tolerances, the fast verdict on two scalars.
* ``structure``: layer 2, an answer as a tree of tuples, intervals, sets, unions, matrices, relations.
* ``symbolic``: layer 3, sympy with rlzoo's rules and Math-Verify (in the helper process only).
* ``compare``: two normalised answers compared node by node, fast (True/False/None) or symbolic.
* ``helper``: the helper process, its deadlines, the verdict cache and :func:`verifier_stats`.
* this ``__init__``: :func:`verify` and :func:`answers_equivalent` (extract, normalise, fast path,
  then the helper).
"""

from __future__ import annotations

from .compare import _compare_answers
from .extract import _looks_like_solution, extract_answer
from .helper import _count, _short, _symbolic_compare, logger, shutdown, verifier_stats, warm_up
from .normalize import _normalize, normalize_answer
from .numeric import ABS_TOL, REL_TOL  # noqa: F401 - public constants of the verifier, re-exported

__all__ = [
    "verify", "answers_equivalent", "extract_answer", "normalize_answer", "verifier_stats", "warm_up", "shutdown"
]

_MAX_SYMBOLIC_CHARS = 1000  # longer normalised answers are judged wrong without sympy (MATH max: 159)


def verify(prediction: str, gold: str, *, timeout_s: float = 2.0) -> bool:
    """Whether the final answer in ``prediction`` equals the reference answer ``gold``.

    ``prediction`` may be a whole completion (the answer is extracted, see :func:`extract_answer`);
    ``gold`` is a reference answer (plain or LaTeX) or a full reference solution. Plain strings and
    numbers are decided in microseconds; anything needing sympy goes to a persistent helper process
    with a deadline of ``timeout_s`` seconds, and a pair that runs past it is judged wrong (and
    counted in :func:`verifier_stats`). Thread- and process-safe; never raises on bad input.

    Example:
        >>> verify("Half of 3 is $\\\\boxed{\\\\dfrac{3}{2}}$.", "1.5")
        True
        >>> verify("Natalia sold 48/2 = 24 clips in May.\\n#### 72", "72")
        True
        >>> verify("The answer is $(1, 2]$.", "(1,2)")
        False
        >>> verify("\\\\boxed{\\\\frac{\\\\sqrt{3}}{2}}", "\\\\frac{1}{2}\\\\sqrt{3}")  # symbolic helper
        True
    """
    _count("verify/calls")
    try:
        pred = extract_answer(prediction)
        ref = extract_answer(gold) if _looks_like_solution(gold) else gold
        return _judge(pred, ref, timeout_s, symmetric=False)
    except Exception:  # noqa: BLE001 - a reward function must not crash the training loop
        logger.exception("verify failed on %r vs %r", _short(str(prediction)), _short(str(gold)))
        return False


def answers_equivalent(a: Optional[str], b: Optional[str], *, timeout_s: float = 2.0) -> bool:
    """Whether two *extracted* answers are the same answer (for grouping the votes of Maj@k).

    ``a`` and ``b`` are outputs of :func:`extract_answer` (``None`` when a completion had no
    answer; ``None`` equals nothing, not even ``None``). Neither is extracted again. The rules are
    those of :func:`verify` with two changes that make the relation symmetric and keep groups
    consistent:

    * a percent sign is a unit: ``50\\%`` equals ``50`` (and ``50.0\\%``), never ``0.5``
      (``verify`` accepts both readings of a ``%`` side, which is not transitive:
      50 = 50% = 0.5 but 50 != 0.5);
    * the pair is put in a fixed order before it is compared, so ``answers_equivalent(a, b)`` and
      ``answers_equivalent(b, a)`` give the same verdict, also after a timeout.

    Like :func:`verify` it never raises, decides plain numbers in microseconds, sends the rest to
    the symbolic helper with a deadline of ``timeout_s`` and judges a pair that runs past it
    *different* (so a slow answer forms its own group).

    >>> answers_equivalent("0.5", "\\\\frac12"), answers_equivalent("1/2", "0.5")
    (True, True)
    >>> answers_equivalent("50\\\\%", "50"), answers_equivalent("50\\\\%", "0.5")
    (True, False)
    >>> answers_equivalent(None, None)
    False
    """
    _count("verify/calls")
    try:
        if a is None or b is None:
            return False
        return _judge(a, b, timeout_s, symmetric=True)
    except Exception:  # noqa: BLE001
        logger.exception("answers_equivalent failed on %r vs %r", _short(str(a)), _short(str(b)))
        return False


def _judge(pred: Optional[str], ref: Optional[str], timeout_s: float, symmetric: bool) -> bool:
    """Normalise two extracted answers, then the fast path, then (if needed) the symbolic helper."""
    if pred is None or ref is None:
        return False
    a, va = _normalize(pred)
    b, vb = _normalize(ref)
    if symmetric:
        a, b = a.replace("%", ""), b.replace("%", "")
        if (b, vb or "") < (a, va or ""):
            a, va, b, vb = b, vb, a, va
    if not a or not b:
        return False
    fast = _compare_answers(a, va, b, vb, symbolic=False, symmetric=symmetric)
    if fast is not None:
        return fast
    if max(len(a), len(b)) > _MAX_SYMBOLIC_CHARS:
        logger.debug("answer too long for the symbolic check (%d chars); judged wrong", max(len(a), len(b)))
        return False
    return _symbolic_compare((a, va, b, vb, symmetric), timeout_s)
