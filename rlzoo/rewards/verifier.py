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
"""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import random
import re
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from fractions import Fraction
from typing import Any, Optional

__all__ = [
    "verify", "answers_equivalent", "extract_answer", "normalize_answer", "verifier_stats", "warm_up", "shutdown"
]

logger = logging.getLogger("rlzoo.verifier")

REL_TOL = 1e-6
ABS_TOL = 1e-9
_EXACT_REL_TOL = 1e-20  # for exact irrational values evaluated to 30 digits
_EXACT_ABS_TOL = 1e-25
_REL_TOL_FRACTION = Fraction(REL_TOL)
_ABS_TOL_FRACTION = Fraction(ABS_TOL)
_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine can take a while
_SOFT_TIMEOUT_FRACTION = 0.8  # the helper interrupts itself at this share of timeout_s
_CACHE_SIZE = 8192
_LOG_EXPR_CHARS = 200
_HELPER_MEMORY_BYTES = 4 << 30  # address-space cap of the symbolic helper
_MAX_SYMBOLIC_CHARS = 1000  # longer normalised answers are judged wrong without sympy (MATH max: 159)

# ----------------------------------------------------------------------------------------------
# Extraction
# ----------------------------------------------------------------------------------------------

_BOXED_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_PHRASE_RE = re.compile(
    r"(?:final\s+answer|the\s+answer)\s*(?:is\s*:?|:|=)\s*"
    r"|^[ \t>#*_]*answer[ \t*_]*:[ \t*_]*",  # a line that starts with "Answer:" ("**Answer:** 64")
    re.IGNORECASE | re.MULTILINE,
)
# the same phrases in French, German, Spanish, Russian and Chinese (searched only when a cheap
# substring test finds one of _OTHER_PHRASE_KEYS: the regex costs ~40 us per kB of text)
_OTHER_PHRASE_RE = re.compile(
    r"(?:la\s+r[ée]ponse(?:\s+finale)?\s+est|r[ée]ponse(?:\s+finale)?\s*:|die\s+(?:endg[üu]ltige\s+)?antwort\s+"
    r"(?:ist|lautet)|antwort\s*:|la\s+respuesta(?:\s+final)?\s+es|respuesta\s*:|ответ\s*:"
    r"|答案\s*(?:是|为|為|:)|答\s*:)\s*",
    re.IGNORECASE,
)
_OTHER_PHRASE_KEYS = ("ponse", "antwort", "respuesta", "ответ", "答")
_HASH_RE = re.compile(r"####[ \t]*([^\n]*)")
_OUTPUT_BLOCK_RE = re.compile(r"```output[^\n]*\n(.*?)(?:```|\Z)", re.DOTALL)
_NUMBER_IN_TEXT_RE = re.compile(
    r"-?\d{1,3}(?:[\u00a0\u202f\u2009]\d{3})+(?:\.\d+)?(?!\d)"  # 1 250 with (narrow) no-break spaces
    r"|-?\d+(?:,\d{3})+(?:\.\d+)?(?!\d)(?!,\d)|-?\d*\.?\d+(?:/\d+)?"
)
# prose in a language that writes decimal commas: 3,5 is 3.5, 1 250 (any space) is 1250
_NUMBER_DECIMAL_COMMA_RE = re.compile(
    r"-?\d{1,3}(?:[ \u00a0\u202f\u2009]\d{3})+(?:,\d+)?(?!\d)(?![ \u00a0\u202f\u2009]?\d)"
    r"|-?\d+(?:,\d{3})+(?!\d)(?!,\d)|-?\d+,\d{1,2}(?!\d)|-?\d+,\d{4,}|-?\d*\.?\d+(?:/\d+)?"
)
_MATH_SPAN_RE = re.compile(  # $$...$$, $...$ (an escaped \$ inside is money), \(...\), \[...\]
    r"\$\$(.+?)\$\$|\$((?:\\.|[^$\\\n])+?)\$|\\\((.+?)\\\)|\\\[(.+?)\\\]", re.DOTALL
)
_SENTENCE_END_RE = re.compile(r"\.(?:\s|$)|[\u3002\uff01\uff1f]")  # also the CJK full stop 。
_CALC_ANNOTATION_RE = re.compile(r"<<[^<>\n]*>>")  # GSM8K calculator annotations <<48/2=24>>
_LATEX_CMD_RE = re.compile(r"\\begin\{array\}\{[^{}]*\}|\\(?:begin|end)\{[A-Za-z*]*\}|\\[A-Za-z]+")
_TEXT_CMD_RE = re.compile(
    r"\\(?:text|textbf|textit|textrm|textnormal|textup|textsf|texttt|textsl|mbox|hbox|mathrm|mathbf|mathit"
    r"|mathsf|rm|operatorname)\s*\{"
)
# a word: three letters of any alphabet, or one CJK character (Chinese is written without spaces)
_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af"
_WORD_RE = re.compile(rf"[^\W\d_]{{3,}}|[{_CJK}]")
_CJK_RE = re.compile(rf"[{_CJK}]")
_FULLWIDTH = str.maketrans({**{chr(0xFF10 + d): str(d) for d in range(10)}, "\uff1a": ":", "\u2212": "-"})
# LaTeX thousands separators in running text: 1{,}600, 2,\!500, 1\,234
_TEXT_THOUSANDS_RE = re.compile(r"\{,\}|,\\!\s*(?=\d)|(?<=\d)\\[,!]\s*(?=\d{3}(?!\d))")
# prose written in a language with decimal commas (French, German, Spanish, Italian, Portuguese, Russian)
# (two regexes: with IGNORECASE the letter range would also match ASCII "i" and "s", through the
# case folding of the dotless i and the long s)
_DECIMAL_COMMA_LETTER_RE = re.compile(r"[\u00c0-\u00d6\u00d8-\u00f6\u00f8-\u0130\u0132-\u017e\u0400-\u04ff]")
# one of these words is enough; of the common ones, two different are needed (none is also English)
_DECIMAL_COMMA_WORD_RE = re.compile(
    r"\b(?:donc|vaut|ainsi|r[ée]ponse|antwort|ergebnis|daher|respuesta|tiene|tanto|quindi|risposta|então|resposta)\b",
    re.IGNORECASE,
)
_DECIMAL_COMMA_COMMON_RE = re.compile(
    r"\b(?:le|les|des|du|est|et|une|il|elle|avec|sont|reste|der|das|ist|und|sind|nicht|los|las|por|para|una"
    r"|que|sono|della|tem)\b",
    re.IGNORECASE,
)


def _match_brace(text: str, open_pos: int) -> Optional[int]:
    """Index of the ``}`` closing the ``{`` at ``open_pos`` (escaped ``\\{``/``\\}`` are skipped)."""
    depth = 0
    i = open_pos
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def _boxed_content(text: str, start: int) -> Optional[str]:
    """Content of the box whose command ends at ``start``: ``{...}`` or one bare token."""
    i = start
    while i < len(text) and text[i] in " \t":
        i += 1
    if i >= len(text):
        return None
    if text[i] == "{":
        end = _match_brace(text, i)
        return None if end is None else text[i + 1 : end]
    m = re.match(r"[^\s$]+", text[i:])
    return m.group(0) if m else None


def _last_boxed(text: str) -> Optional[str]:
    """Content of the last well-formed ``\\boxed``/``\\fbox`` in ``text`` ("" for an empty box)."""
    for m in reversed(list(_BOXED_RE.finditer(text))):
        content = _boxed_content(text, m.end())
        if content is not None:
            return content.strip()
    return None


def _phrase_tail(tail: str) -> tuple[str, bool]:
    """The answer after a final-answer phrase: a leading math span, else up to the sentence end.

    The flag says whether it came from a math span (then a comma is never a decimal comma).
    """
    tail = tail.strip().lstrip("*").strip()
    span = _MATH_SPAN_RE.match(tail)
    if span:
        content = next(g for g in span.groups() if g is not None).strip()
        if not _SENTENCE_END_RE.search(content):  # "$18. She paid $5" is money, not math
            return content, True
    line = tail.split("\n", 1)[0]
    line = _SENTENCE_END_RE.split(line, maxsplit=1)[0]
    return line.strip().strip("*").strip(), False


def _reduce_phrase(ans: str, decimal_comma: bool = False) -> str:
    """"15 gallons * 8 pints = 120 pints" -> "120 pints"; "therefore 3" -> "3"; "3,5 kg" -> "3.5"."""
    if decimal_comma and re.fullmatch(r"-?\d[\d \u00a0\u202f\u2009]*,\d+\s*[^\W\d_]*\.?", ans):
        return _last_number(ans, decimal_comma) or ans  # French "3,5 kg"
    if _is_bare_answer(ans, allow_words=False):
        return ans
    if "=" in ans:
        ans = ans.rsplit("=", 1)[1].strip()
        if _is_bare_answer(ans, allow_words=False):
            return ans
    return _last_number(ans, decimal_comma) or ans


def _last_phrase(text: str) -> Optional[str]:
    lower = text.lower()
    matches = list(_PHRASE_RE.finditer(text)) if "answer" in lower else []
    if not text.isascii() and any(k in lower for k in _OTHER_PHRASE_KEYS):
        matches += _OTHER_PHRASE_RE.finditer(text)
        matches.sort(key=lambda m: m.start())
    for m in reversed(matches):
        ans, in_math = _phrase_tail(text[m.end() :])
        if ans:
            return ans if in_math else _reduce_phrase(ans, _uses_decimal_comma(text))
    return None


def _last_hash(text: str) -> Optional[str]:
    for m in reversed(list(_HASH_RE.finditer(text))):
        content = m.group(1).strip()
        if content and _is_bare_answer(content, allow_words=False):  # not a heading "#### Step 2"
            return content
    return None


def _last_output_block(text: str) -> Optional[str]:
    blocks = _OUTPUT_BLOCK_RE.findall(text)
    if not blocks:
        return None
    lines = [ln.strip() for ln in blocks[-1].splitlines() if ln.strip()]
    return lines[-1] if lines else None


def _is_bare_answer(text: str, allow_words: bool = True) -> bool:
    """One short line that is an expression (``x = 3``, ``5 cm``), or up to two words, not prose.

    Chinese or Japanese characters always make prose (they are written without spaces).
    """
    if "\n" in text or len(text) > 120:
        return False
    if _CJK_RE.search(text):
        return False
    if allow_words and len(text.split()) <= 2:
        return True
    rest = text
    for m in reversed(list(_TEXT_CMD_RE.finditer(rest))):
        end = _match_brace(rest, m.end() - 1)
        if end is not None:
            rest = rest[: m.start()] + rest[end + 1 :]
    rest = _LATEX_CMD_RE.sub(" ", rest)
    return _WORD_RE.search(rest) is None


def _last_number(text: str, decimal_comma: bool = False) -> Optional[str]:
    """The last number in running text (LaTeX thousands separators understood), as plain digits.

    With ``decimal_comma`` (prose in French, German, Russian ...) ``3,5`` is 3.5 and ``1 250`` is
    1250; a comma followed by exactly three digits stays a thousands separator everywhere.
    """
    if "\\" in text or "{,}" in text:
        text = _TEXT_THOUSANDS_RE.sub(lambda m: "," if "," in m.group(0) else "", text)
    last = None
    for m in (_NUMBER_DECIMAL_COMMA_RE if decimal_comma else _NUMBER_IN_TEXT_RE).finditer(text):
        last = m
    if last is None:
        return None
    num = last.group(0)
    prev = text[last.start() - 1] if last.start() > 0 else " "
    if num.startswith("-") and (prev.isalnum() or prev in ")}]"):
        num = num[1:]  # "3-4" is a subtraction, not the number -4
    num = re.sub(r"[ \u00a0\u202f\u2009]", "", num)
    if decimal_comma and re.fullmatch(r"-?\d+,(?:\d{1,2}|\d{4,})", num):
        num = num.replace(",", ".")
    return num


def _strip_math_delims(text: str) -> str:
    text = text.strip()
    for left, right in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if len(text) >= len(left) + len(right) and text.startswith(left) and text.endswith(right):
            return text[len(left) : len(text) - len(right)].strip()
    return text


def extract_answer(text: str) -> Optional[str]:
    """Extract the final answer from a completion, or ``None`` when there is none.

    Priority: last ``\\boxed{}``/``\\fbox{}``; last "the answer is ..." phrase (also "Answer:" at
    the start of a line, and the same phrase in French, German, Spanish, Russian, Chinese); last
    ``#### N``; last line of the last ```` ```output ```` block; the whole text if it is a bare
    answer; the last number in the text.

    >>> extract_answer("So $x = 2 + 3 = \\\\boxed{5}$.")
    '5'
    >>> extract_answer("She pays 3 * 6 = 18 dollars.\\n#### 18")
    '18'
    >>> extract_answer("所以她每周赚 120 元。")
    '120'
    >>> extract_answer("La réponse est 3,5 kg.")
    '3.5'
    """
    if not text or not text.strip():
        return None
    if "<<" in text:
        text = _CALC_ANNOTATION_RE.sub("", text)
    if not text.isascii():
        text = text.translate(_FULLWIDTH)
    for finder in (_last_boxed, _last_phrase, _last_hash, _last_output_block):
        found = finder(text)
        if found is not None:
            return found or None  # an empty \boxed{} is an empty answer
    stripped = _strip_math_delims(text)
    if _is_bare_answer(stripped):
        return stripped
    return _last_number_or_span(text, _uses_decimal_comma(text))


def _uses_decimal_comma(text: str) -> bool:
    """Prose in French, German, Spanish, Italian, Portuguese or Russian (there 3,5 is 3.5)."""
    if not text.isascii() and _DECIMAL_COMMA_LETTER_RE.search(text):
        return True  # accented Latin or Cyrillic letters
    if _DECIMAL_COMMA_WORD_RE.search(text):
        return True
    return len({m.group(0).lower() for m in _DECIMAL_COMMA_COMMON_RE.finditer(text)}) >= 2


def _last_number_or_span(text: str, decimal_comma: bool) -> Optional[str]:
    """The last number of prose, or the whole math span it sits in.

    "the length is $\\sqrt{13}$ units" gives ``\\sqrt{13}``, not ``13``; "we find $x = 2+3 = 5$"
    gives ``5`` (the part after the span's last ``=``). A span with words in it (``$5 and $7``
    is money) is not used.
    """
    num = _last_number(text, decimal_comma)
    if num is None:
        return None
    spans = list(_MATH_SPAN_RE.finditer(text))
    if not spans:
        return num
    span = spans[-1]
    after = text[span.end() :]
    if _NUMBER_IN_TEXT_RE.search(after):
        return num  # the last number is outside the last span
    content = next(g for g in span.groups() if g is not None).strip()
    if "=" in content:
        content = content.rsplit("=", 1)[1].strip()
    if content and re.search(r"\d", content) and _is_bare_answer(content, allow_words=False):
        return content
    return num


def _looks_like_solution(gold: str) -> bool:
    return "\\boxed" in gold or "\\fbox" in gold or "####" in gold


# ----------------------------------------------------------------------------------------------
# Normalisation
# ----------------------------------------------------------------------------------------------

_SIMPLE_REPLACEMENTS = (
    ("\u2212", "-"), ("\u00b7", "\\cdot "), ("\u00d7", "\\times "), ("\u221e", "\\infty "),
    ("\u03c0", "\\pi "), ("\\dfrac", "\\frac"), ("\\tfrac", "\\frac"), ("\\displaystyle", ""), ("\\textstyle", ""),
    ("{,}", ","), ("\\qquad", " "), ("\\quad", " "), ("~", " "), ("\\lbrace", "\\{"), ("\\rbrace", "\\}"),
    ("\\lvert", "|"), ("\\rvert", "|"), ("\\vert", "|"), ("\\lbrack", "["), ("\\rbrack", "]"),
    ("\\infinity", "\\infty"), ("\\emptyset", "\\varnothing"), ("\\mathbb{R}", "(-\\infty,\\infty)"),
)
_THIN_THOUSANDS_RE = re.compile(r",\s*\\!\s*(?=\d{3}(?!\d))")  # MATH writes 11,\! 111 for 11,111
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]")  # a LaTeX row break "\\" is kept, "\\ " is a space
_LEFT_RIGHT_RE = re.compile(r"\\(?:left|right|bigl|bigr|Bigl|Bigr|big|Big)(?![A-Za-z])\s*")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ|\u00b0|\\degree")
_DOLLAR_RE = re.compile(r"\\\$|\$")
_UNIT_POWER_RE = re.compile(r"^\s*\^\s*(?:\{\s*\d\s*\}|\d)")
_CONNECTIVES = {"and", "or", "if", "for", "where", "to"}
_LHS_RE = re.compile(
    r"^\s*([A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?(?:\^\{?-1\}?)?(?:\([A-Za-z]\))?)\s*(=|\\in(?![A-Za-z]))\s*(.+)$", re.DOTALL
)
_LHS_TUPLE_RE = re.compile(r"^\s*\(\s*[A-Za-z](?:\s*,\s*[A-Za-z])+\s*\)\s*=\s*(\(.+)$", re.DOTALL)  # (x, y) = (1, 2)
# relation signs, one spelling each: \ge, \le, \ne, <, >
_RELATION_SIGN_RE = re.compile(
    r"\\geqslant|\\geqq|\\geq|\\ge(?![A-Za-z])|\u2265|>=|\\leqslant|\\leqq|\\leq|\\le(?![A-Za-z])|\u2264|<="
    r"|\\neq|\\ne(?![A-Za-z])|\u2260|!=|\\lt(?![A-Za-z])|\\gt(?![A-Za-z])"
)
_RELATION_SIGNS = {"\\ge": "\\ge ", "\u2265": "\\ge ", ">=": "\\ge ", "\\le": "\\le ", "\u2264": "\\le ", "<=": "\\le ",
                   "\\ne": "\\ne ", "\u2260": "\\ne ", "!=": "\\ne ", "\\lt": "<", "\\gt": ">"}
# "1 or 2", "7, -2, and -5": a list of answers
_OR_AND_RE = re.compile(r"\s*,?\s*(?<![A-Za-z\\])(?:or|and)(?![A-Za-z])\s*")
_THOUSANDS_RE = re.compile(r"^[+-]?\d{1,3}(?:,\d{3})+(?:\.\d+)?%?$")
_PLAIN_UNIT_RE = re.compile(
    r"^([+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?%?)\s+([A-Za-z][A-Za-z.]*(?:\s+[A-Za-z][A-Za-z.]*)*)\s*(?:\^\s*\{?\d\}?)?$"
)
_NOT_UNITS = {"pi", "i", "e", "x", "y", "z", "n", "k", "sqrt"}
_WS_RE = re.compile(r"\s+")
_CMD_SPACE_RE = re.compile(r"(\\[A-Za-z]+)\s+(?=[A-Za-z])")
_FRAC_BARE_RE = re.compile(r"\\frac(\d)(\d)")
_FRAC_BARE_NUM_RE = re.compile(r"\\frac(\d)(?=\{)")
_FRAC_BARE_DEN_RE = re.compile(r"(\\frac\{[^{}]*\})(\d)")
_SQRT_BARE_RE = re.compile(r"\\sqrt(?![A-Za-z\[{])(\w)")
_CHOICE_RE = re.compile(r"^\(([A-Za-z])\)$")


def _spacing_repl(m: re.Match[str]) -> str:
    tok = m.group(0)
    if tok == "\\\\":
        return tok
    return "" if tok in ("\\,", "\\!") else " "  # "\\," and "\\!" appear inside numbers: 1\\,600


def _replace_text_commands(s: str) -> str:
    """Unwrap ``\\text{...}``-like commands; drop them (with a ``^2``) when they are trailing units."""
    while True:
        m = _TEXT_CMD_RE.search(s)
        if m is None:
            return s
        end = _match_brace(s, m.end() - 1)
        if end is None:
            return s[: m.start()] + s[m.end() :]
        content = s[m.end() : end]
        prefix = s[: m.start()].rstrip()
        after = s[end + 1 :]
        word = content.strip()
        is_unit = (
            bool(prefix)
            and prefix[-1] not in "=+-*/({[,"
            and re.fullmatch(r"[A-Za-z][A-Za-z .\s]*", word) is not None
            and word.lower() not in _CONNECTIVES
        )
        if is_unit:
            after = _UNIT_POWER_RE.sub("", after)
            s = prefix + after
        else:
            s = s[: m.start()] + content + after


def _remove_whitespace(s: str) -> str:
    """Drop whitespace, keeping one space where it ends a command name (``\\pi r``)."""
    s = _CMD_SPACE_RE.sub("\\1\x00", s)
    return _WS_RE.sub("", s).replace("\x00", " ")


def _fix_shorthand(s: str) -> str:
    """``\\frac12`` -> ``\\frac{1}{2}``, ``\\sqrt3`` -> ``\\sqrt{3}``."""
    if "\\frac" in s:
        s = _FRAC_BARE_RE.sub(r"\\frac{\1}{\2}", s)
        s = _FRAC_BARE_NUM_RE.sub(r"\\frac{\1}", s)
        s = _FRAC_BARE_DEN_RE.sub(r"\1{\2}", s)
    if "\\sqrt" in s:
        s = _SQRT_BARE_RE.sub(r"\\sqrt{\1}", s)
    return s


def _strip_outer(s: str) -> str:
    s = s.strip()
    prev = None
    while prev != s:
        prev = s
        s = _strip_math_delims(s)
        if s.endswith(".") and not s.endswith("\\."):
            s = s[:-1].rstrip()
        while s and s[-1] in ",;" and not s.endswith("\\" + s[-1]):  # keep the spacing command "\\,"
            s = s[:-1].rstrip()
        if s.startswith("{") and _match_brace(s, 0) == len(s) - 1:  # "{\\frac{5}{7}}"
            s = s[1:-1].strip()
    return s


def _relation_sign(m: re.Match[str]) -> str:
    tok = m.group(0)
    for key, sign in _RELATION_SIGNS.items():
        if tok.startswith(key):
            return sign
    return tok


def normalize_answer(answer: str) -> str:
    """Canonical string form of an extracted answer (pure string work, no sympy).

    >>> normalize_answer("\\\\$1,600.")
    '1600'
    >>> normalize_answer("x = \\\\dfrac{1}{2}")
    '\\\\frac{1}{2}'
    >>> normalize_answer("y \\\\geqslant 3")
    'y\\\\ge3'
    """
    return _normalize(answer)[0]


def _normalize(answer: str) -> tuple[str, Optional[str]]:
    """``normalize_answer`` and the variable of a dropped left side (``"y"`` for ``y = 2x+3``).

    The variable is kept so that ``y = 2x+3`` can still be compared as an equation with
    ``2x - y + 3 = 0``; it is ``None`` unless the left side was one letter followed by ``=``.
    """
    s = _strip_outer(answer)
    for old, new in _SIMPLE_REPLACEMENTS:
        if old in s:
            s = s.replace(old, new)
    s = _RELATION_SIGN_RE.sub(_relation_sign, s)
    s = _THIN_THOUSANDS_RE.sub(",", s)
    s = _SPACING_RE.sub(_spacing_repl, s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = _DEGREE_RE.sub("", s)
    s = _DOLLAR_RE.sub("", s)
    s = s.replace("\\%", "%")
    s = _replace_text_commands(s)
    if "or" in s or "and" in s:
        parts = _OR_AND_RE.split(s)
        if len(parts) > 1 and all(p.strip() for p in parts):
            s = ",".join(parts)
    s = _strip_outer(s)
    var = None
    m = _LHS_RE.match(s)
    if m and "=" not in m.group(3):
        s = m.group(3).strip()
        if m.group(2) == "=" and len(m.group(1)) == 1:
            var = m.group(1)
    else:
        m = _LHS_TUPLE_RE.match(s)
        if m and "=" not in m.group(1):
            s = m.group(1).strip()
    if _THOUSANDS_RE.match(s):
        s = s.replace(",", "")
    m = _PLAIN_UNIT_RE.match(s)
    if m and m.group(2).lower() not in _NOT_UNITS:
        s = m.group(1)
    s = _remove_whitespace(s)
    s = _fix_shorthand(s)
    m = _CHOICE_RE.match(s)
    if m:
        s = m.group(1)
    if s.startswith("+"):
        s = s[1:]
    if s == "\\{\\}":
        s = "\\varnothing"
    return s, var


# ----------------------------------------------------------------------------------------------
# Fast numeric path
# ----------------------------------------------------------------------------------------------

_DEC = r"(?:\d+(?:\.\d*)?|\.\d+)"
_INT_OR_DEC_RE = re.compile(rf"^([+-]?){_DEC}$")
_SCI_RE = re.compile(rf"^([+-]?{_DEC})(?:[eE]([+-]?\d+)|(?:\\times|\\cdot|\*)10\^(?:\{{([+-]?\d+)\}}|(\d)))$")
_SLASH_RE = re.compile(r"^([+-]?)(\d+)/(\d+)$")
_FRAC_RE = re.compile(r"^([+-]?)\\frac\{([+-]?\d+)\}\{([+-]?\d+)\}$")
_MIXED_RE = re.compile(r"^([+-]?)(\d+)\\frac\{(\d+)\}\{(\d+)\}$")
_REPEATING_RE = re.compile(r"^([+-]?)(\d*)\.(\d*)\\overline\{(\d{1,50})\}$")  # 0.1\overline{6} = 1/6
_MAX_DIGITS = 400


class _Num:
    """A parsed number: exact ``Fraction`` value, whether it was written approximately, percent."""

    __slots__ = ("value", "approx", "percent")

    def __init__(self, value: Fraction, approx: bool, percent: bool) -> None:
        self.value = value
        self.approx = approx
        self.percent = percent


def _parse_number(s: str) -> Optional[_Num]:
    """Parse a normalised plain number (int, decimal, sci, a/b, \\frac{a}{b}, mixed, ``%``)."""
    if not s or len(s) > _MAX_DIGITS:
        return None
    percent = s.endswith("%")
    if percent:
        s = s[:-1]
    try:
        if _INT_OR_DEC_RE.match(s):
            return _Num(Fraction(s), "." in s, percent)
        m = _SCI_RE.match(s)
        if m:
            exp = int(m.group(2) or m.group(3) or m.group(4))
            if abs(exp) > 300:
                return None
            return _Num(Fraction(m.group(1)) * Fraction(10) ** exp, True, percent)
        m = _SLASH_RE.match(s) or _FRAC_RE.match(s)
        if m:
            den = int(m.group(3))
            if den == 0:
                return None
            sign = -1 if m.group(1) == "-" else 1
            return _Num(sign * Fraction(int(m.group(2)), den), False, percent)
        m = _REPEATING_RE.match(s)
        if m:
            whole, fixed, rep = m.group(2) or "0", m.group(3), m.group(4)
            value = Fraction(int(whole + fixed + rep) - int(whole + fixed), 10 ** len(fixed) * (10 ** len(rep) - 1))
            return _Num(-value if m.group(1) == "-" else value, False, percent)
        m = _MIXED_RE.match(s)
        if m and int(m.group(4)) != 0:
            sign = -1 if m.group(1) == "-" else 1
            value = int(m.group(2)) + Fraction(int(m.group(3)), int(m.group(4)))
            return _Num(sign * value, False, percent)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None
    return None


def _values_close(
    a: Fraction | float | complex, b: Fraction | float | complex, exact: bool, rel_tol: float = REL_TOL
) -> bool:
    """Equality for exact values; otherwise relative tolerance, absolute ``ABS_TOL`` near 0."""
    if exact:
        return a == b
    if isinstance(a, Fraction) and isinstance(b, Fraction):  # exact arithmetic: no float overflow
        tol = _REL_TOL_FRACTION if rel_tol == REL_TOL else Fraction(rel_tol)
        return abs(a - b) <= max(tol * max(abs(a), abs(b)), _ABS_TOL_FRACTION)
    ca, cb = complex(a), complex(b)
    abs_tol = ABS_TOL if rel_tol >= REL_TOL else _EXACT_ABS_TOL
    return abs(ca - cb) <= max(rel_tol * max(abs(ca), abs(cb)), abs_tol)


def _percent_candidates(value: Any, percent: bool) -> list[Any]:
    """A ``%`` side may mean the number itself or its hundredth; a plain side means itself."""
    return [value, value / 100] if percent else [value]


def _numbers_equal(a: _Num, b: _Num) -> bool:
    exact = not (a.approx or b.approx)
    if a.percent == b.percent:
        return _values_close(a.value, b.value, exact)
    return any(
        _values_close(x, y, exact)
        for x in _percent_candidates(a.value, a.percent)
        for y in _percent_candidates(b.value, b.percent)
    )


# ----------------------------------------------------------------------------------------------
# Structure: tuples, intervals, sets, lists, unions, matrices, relations
# ----------------------------------------------------------------------------------------------

# a matrix environment, possibly inside brackets (\left[\begin{array}{cc}...\end{array}\right]);
# vmatrix / Vmatrix are determinants / norms, i.e. numbers: they are left to sympy
_MATRIX_RE = re.compile(
    r"^([\[(]?)\\begin\{(matrix|[pbB]matrix|smallmatrix|array)\}(?:\{[^{}]*\})?"
    r"((?:(?!\\(?:begin|end)\{).)*)\\end\{\2\}([\])]?)$",
    re.DOTALL,
)
_OPEN = "([{"
_CLOSE = ")]}"
_RELATION_OPS = {"<": "<", ">": ">", "=": "=", "\\le": "\\le", "\\ge": "\\ge", "\\ne": "\\ne"}
_FLIPPED = {">": "<", "\\ge": "\\le"}
_ELEMENT_LHS_RE = re.compile(r"^([A-Za-z])=([^=]+)$")


def _split_top(s: str, sep: str) -> list[str]:
    """Split ``s`` at ``sep`` where it is outside every bracket pair."""
    if sep not in s:
        return [s]
    parts: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\" and i + 1 < n and s[i + 1] in "{}":
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        i += 1
    parts.append(s[start:])
    return parts


def _wraps_whole(s: str, open_len: int, close_len: int) -> bool:
    """True when the bracket opening at 0 closes exactly at the end of ``s``."""
    inner = s[open_len : len(s) - close_len]
    depth = 0
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\" and i + 1 < len(inner) and inner[i + 1] in "{}":
            depth += 1 if inner[i + 1] == "{" else -1
            i += 2
            if depth < 0:
                return False
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
            if depth < 0:
                return False
        i += 1
    return depth == 0


def _split_relation(s: str) -> Optional[tuple[tuple[str, ...], list[str]]]:
    """``x+1<4`` -> ``(("<",), ["x+1", "4"])``, written left to right with ``<``/``\\le`` only.

    ``4>x>-1`` becomes ``-1<x<4``. Returns ``None`` unless ``s`` is one ``=`` or ``\\ne`` relation
    or a chain of inequalities all pointing the same way (so ``a=b=c`` stays a plain string).
    """
    if not any(c in s for c in "<>=") and "\\le" not in s and "\\ge" not in s and "\\ne" not in s:
        return None
    ops: list[str] = []
    sides: list[str] = []
    depth = 0
    start = 0
    i = 0
    n = len(s)
    while i < n:
        ch = s[i]
        if ch == "\\":
            m = re.match(r"\\([A-Za-z]+)|\\.", s[i:])
            tok = m.group(0) if m else "\\"
            if tok in ("\\{", "\\}"):
                depth += 1 if tok == "\\{" else -1
            elif depth == 0 and tok in _RELATION_OPS:
                ops.append(tok)
                sides.append(s[start:i])
                start = i + len(tok)
            i += len(tok)
            continue
        if ch in _OPEN:
            depth += 1
        elif ch in _CLOSE:
            depth -= 1
        elif depth == 0 and ch in "<>=":
            ops.append(ch)
            sides.append(s[start:i])
            start = i + 1
        i += 1
    if not ops:
        return None
    sides.append(s[start:])
    sides = [x.strip() for x in sides]
    if not all(sides):
        return None
    if len(ops) == 1 and ops[0] in ("=", "\\ne"):
        return (ops[0],), sides
    if all(op in ("<", "\\le") for op in ops):
        return tuple(ops), sides
    if all(op in _FLIPPED for op in ops):
        return tuple(_FLIPPED[op] for op in reversed(ops)), sides[::-1]
    return None


def _expand_pm(s: str) -> list[str]:
    """``1\\pm\\sqrt{2}`` -> ``["1+\\sqrt{2}", "1-\\sqrt{2}"]`` (only for exactly one ``\\pm``)."""
    if s.count("\\pm") != 1 or "\\mp" in s:
        return [s]
    return [s.replace("\\pm", "+").lstrip("+"), s.replace("\\pm", "-")]


def _set_elements(parts: list[str]) -> list[Node]:
    """Elements of a set or a bare list: ``x=1,x=2`` -> 1, 2 (one common variable); ``\\pm`` expanded."""
    matches = [_ELEMENT_LHS_RE.match(p) for p in parts]
    if len(parts) > 1 and all(matches) and len({m.group(1) for m in matches if m}) == 1:
        parts = [m.group(2) for m in matches if m]
    return [_structure(q) for p in parts for q in _expand_pm(p)]


Node = tuple  # ("scalar", s) | ("seq", open, close, [nodes]) | ("set", [nodes]) | ("union", [nodes])
#             | ("matrix", [[nodes]]) | ("rel", (ops...), [sides])


def _structure(s: str) -> Node:
    m = _MATRIX_RE.match(s)
    if m and (m.group(1) + m.group(4)) in ("", "[]", "()"):
        rows = [r for r in m.group(3).split("\\\\") if r.strip()]
        return ("matrix", [[("scalar", c) for c in row.split("&")] for row in rows])
    union = _split_top(s, "\\cup")
    if len(union) > 1:
        return ("union", [_structure(p) for p in union])
    if s.startswith("\\{") and s.endswith("\\}") and _wraps_whole(s, 2, 2):
        inner = s[2:-2]
        return ("set", _set_elements(_split_top(inner, ",")) if inner else [])
    if len(s) >= 2 and s[0] in "([" and s[-1] in ")]" and _wraps_whole(s, 1, 1):
        parts = _split_top(s[1:-1], ",")
        if len(parts) >= 2:
            return ("seq", s[0], s[-1], [_structure(p) for p in parts])
        if s[0] == "(" and s[-1] == ")":
            return _structure(s[1:-1])
    parts = _split_top(s, ",")
    if len(parts) >= 2:
        return ("set", _set_elements(parts))
    rel = _split_relation(s)
    if rel is not None:
        return ("rel", rel[0], rel[1])
    expanded = _expand_pm(s)
    if len(expanded) > 1:
        return ("set", [("scalar", x) for x in expanded])
    return ("scalar", s)


# ----------------------------------------------------------------------------------------------
# Comparison (tri-state: True / False / None = "needs the symbolic step")
# ----------------------------------------------------------------------------------------------

_WORDS_RE = re.compile(r"^[A-Za-z]+$")
_BASE_RE = re.compile(r"^([0-9A-Za-z]+)_\{?(\d+)\}?$")


def _fast_scalar_equal(a: str, b: str) -> Optional[bool]:
    if a == b:
        return True
    if not a or not b:
        return False
    na = _parse_number(a)
    nb = _parse_number(b)
    if na is not None and nb is not None:
        return _numbers_equal(na, nb)
    if _WORDS_RE.match(a) and _WORDS_RE.match(b):
        return a.lower() == b.lower()
    ma, mb = _BASE_RE.match(a), _BASE_RE.match(b)
    if ma and mb:  # both written with a base subscript: digits and base must agree
        return ma.group(1) == mb.group(1) and int(ma.group(2)) == int(mb.group(2))
    if (ma and ma.group(1) == b) or (mb and mb.group(1) == a):
        return True  # "11010_2" written without its base subscript
    return None


def _all_decided(results: list[Optional[bool]]) -> Optional[bool]:
    if any(r is False for r in results):
        return False
    if any(r is None for r in results):
        return None
    return True


def _unordered_equal(xs: list[Node], ys: list[Node], symbolic: bool) -> Optional[bool]:
    if len(xs) != len(ys):
        return False
    unused = list(range(len(ys)))
    undecided = False
    for x in xs:
        match = None
        for j in unused:
            r = _nodes_equal(x, ys[j], symbolic)
            if r is True:
                match = j
                break
            if r is None:
                undecided = True
        if match is None:
            return None if undecided else False
        unused.remove(match)
    return True


def _scalar_equal(a: str, b: str, symbolic: bool) -> Optional[bool]:
    return _sympy_scalar_equal(a, b) if symbolic else _fast_scalar_equal(a, b)


def _relations_equal(a: Node, b: Node, symbolic: bool) -> Optional[bool]:
    """Relations: same signs (after writing them left to right), then the same sides, or sympy.

    Sympy accepts a rearrangement or a constant factor: ``=`` and ``\\ne`` when ``lhs - rhs`` of one
    is a non-zero constant times that of the other; an inequality when each link is a *positive*
    constant times the other's (``-2y < 6`` is ``y > -3``; ``y < -3`` is not).
    """
    ops, xs, ys = a[1], a[2], b[2]
    if ops != b[1] or len(xs) != len(ys):
        return False
    if _all_decided([_scalar_equal(x, y, symbolic) for x, y in zip(xs, ys)]) is True:
        return True
    if ops in (("=",), ("\\ne",)) and _all_decided([_scalar_equal(xs[0], ys[1], symbolic), _scalar_equal(xs[1], ys[0], symbolic)]) is True:
        return True  # the same relation written from the other side
    if not symbolic:
        return None
    return _sympy_relation_equal(ops, xs, ys)


def _matrix_latex(node: Node) -> str:
    return "\\begin{pmatrix}" + "\\\\".join("&".join(c[1] for c in row) for row in node[1]) + "\\end{pmatrix}"


def _nodes_equal(a: Node, b: Node, symbolic: bool) -> Optional[bool]:
    if a[0] != b[0]:
        kinds = {a[0], b[0]}
        if kinds == {"matrix", "scalar"}:  # "2\begin{pmatrix}1\\3\end{pmatrix}" is a matrix too
            m, s = (a, b) if a[0] == "matrix" else (b, a)
            if "\\begin{" not in s[1]:
                return False
            return _sympy_scalar_equal(_matrix_latex(m), s[1]) if symbolic else None
        return False
    kind = a[0]
    if kind == "scalar":
        return _scalar_equal(a[1], b[1], symbolic)
    if kind == "seq":
        if a[1] != b[1] or a[2] != b[2] or len(a[3]) != len(b[3]):
            return False
        return _all_decided([_nodes_equal(x, y, symbolic) for x, y in zip(a[3], b[3])])
    if kind in ("set", "union"):
        return _unordered_equal(a[1], b[1], symbolic)
    if kind == "matrix":
        if len(a[1]) != len(b[1]) or any(len(r) != len(s) for r, s in zip(a[1], b[1])):
            return False
        return _all_decided(
            [_nodes_equal(x, y, symbolic) for r, s in zip(a[1], b[1]) for x, y in zip(r, s)]
        )
    if kind == "rel":
        return _relations_equal(a, b, symbolic)
    return False


def _is_interval_like(n: Node) -> bool:
    return n[0] == "union" or (n[0] == "seq" and len(n[3]) == 2)


def _is_inequality(n: Node) -> bool:
    return n[0] == "rel" and n[1] not in (("=",), ("\\ne",))


def _same_set_two_ways(pred: Node, gold: Node, symmetric: bool) -> bool:
    """Pairs whose structures differ but which may be one set of reals written two ways.

    A union against an interval or a set (``[1,2]\\cup[2,3]`` / ``[1,3]``), and an inequality
    in the *gold* against an interval or union in the prediction (``x \\le 7`` / ``(-\\infty, 7]``;
    with ``symmetric`` either way round). These are decided by Math-Verify (see the module doc).
    """
    if pred[0] == gold[0]:
        return False
    if _is_inequality(gold) and _is_interval_like(pred):
        return True
    if symmetric and _is_inequality(pred) and _is_interval_like(gold):
        return True
    return "union" in (pred[0], gold[0]) and all(_is_interval_like(n) or n[0] == "set" for n in (pred, gold))


def _compare(a: str, b: str, symbolic: bool, symmetric: bool = False) -> Optional[bool]:
    """Compare two normalised answers (fast rules, or sympy when ``symbolic``); ``b`` is the gold."""
    if a == b:
        return True
    na, nb = _structure(a), _structure(b)
    r = _nodes_equal(na, nb, symbolic)
    if r is False and _same_set_two_ways(na, nb, symmetric):
        return _math_verify_same_set(a, b, symmetric) if symbolic else None
    return r


def _compare_answers(
    a: str, va: Optional[str], b: str, vb: Optional[str], symbolic: bool, symmetric: bool = False
) -> Optional[bool]:
    """:func:`_compare`, plus: an assignment ``y = 2x+3`` (``a``/``va``) is also an equation.

    ``x = 3`` against ``3`` compares ``3`` with ``3`` as before; against another equation
    (``2x = 6``, ``y - 2x = 3``) the whole equation is compared, up to rearrangement and factor.
    """
    r = _compare(a, b, symbolic, symmetric)
    if r is True or (va is None and vb is None):
        return r
    na = _structure(f"{va}={a}" if va else a)
    nb = _structure(f"{vb}={b}" if vb else b)
    if na[0] != "rel" or nb[0] != "rel" or na[1] != ("=",) or nb[1] != ("=",):
        return r
    r2 = _nodes_equal(na, nb, symbolic)
    if r2 is True:
        return True
    return None if (r is None or r2 is None) else False


# ----------------------------------------------------------------------------------------------
# Symbolic scalar comparison (runs inside the helper process only)
# ----------------------------------------------------------------------------------------------

_sympy_mod: Any = None
_latex2sympy: Any = None
_l2s_config: Any = None
_MAX_MATRIX_POWER = 64


def _load_sympy() -> None:
    global _sympy_mod, _latex2sympy, _l2s_config
    if _sympy_mod is None:
        import sympy
        from latex2sympy2_extended import NormalizationConfig, latex2sympy

        _l2s_config = NormalizationConfig(
            basic_latex=True, units=False, malformed_operators=True, nits=False, boxed="none", equations=False
        )
        _latex2sympy = latex2sympy
        _sympy_mod = sympy


def _explicit_matrix(expr: Any) -> Any:
    """Evaluate a matrix expression (``2M``, ``M^2``, ``M^{-1}``, ``MN``, ``M+N``) to one matrix."""
    sp = _sympy_mod
    if isinstance(expr, sp.MatrixBase):
        return expr
    if isinstance(expr, sp.Pow) and expr.exp.is_Integer and abs(int(expr.exp)) <= _MAX_MATRIX_POWER:
        base = _explicit_matrix(expr.base)
        return base ** int(expr.exp) if isinstance(base, sp.MatrixBase) else expr
    if isinstance(expr, (sp.MatMul, sp.Mul, sp.MatAdd, sp.Add)):
        args = [_explicit_matrix(x) for x in expr.args]
        if not any(isinstance(x, sp.MatrixBase) for x in args):
            return expr
        result = args[0]
        for x in args[1:]:
            result = result + x if isinstance(expr, (sp.MatAdd, sp.Add)) else result * x
        return result
    if isinstance(expr, sp.MatrixExpr):
        return expr.doit()
    return expr


def _to_sympy(s: str) -> Any:
    sp = _sympy_mod
    expr = _latex2sympy(s, normalization_config=_l2s_config)
    if "\\begin{" in s and isinstance(expr, sp.Basic) and not isinstance(expr, sp.MatrixBase):
        expr = _explicit_matrix(expr)
    if isinstance(expr, sp.Basic):
        i_sym = [x for x in expr.free_symbols if getattr(x, "name", None) == "i"]
        if i_sym:
            expr = expr.subs(i_sym[0], sp.I)  # MATH writes the imaginary unit as a plain i
    return expr


def _is_number(expr: Any) -> bool:
    sp = _sympy_mod
    return isinstance(expr, sp.Expr) and not expr.free_symbols


def _numeric_value(expr: Any) -> Optional[complex]:
    try:
        value = complex(_sympy_mod.N(expr, 30))
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    if not (math.isfinite(value.real) and math.isfinite(value.imag)):
        return None
    return value


def _random_points(symbols: list[Any], seed: int = 0) -> list[dict[Any, float]]:
    rng = random.Random(seed)
    return [{s: rng.uniform(0.3, 1.7) for s in symbols} for _ in range(3)]


def _eval_at(expr: Any, point: dict[Any, float]) -> Optional[complex]:
    try:
        v = complex(expr.evalf(20, subs=point))
    except (TypeError, ValueError, OverflowError, AttributeError, ZeroDivisionError):
        return None
    return v if math.isfinite(v.real) and math.isfinite(v.imag) else None


def _differs_at_random_points(x: Any, y: Any) -> bool:
    """True when ``x`` and ``y`` evaluate clearly differently at a random point (proof of ``!=``)."""
    symbols = sorted(x.free_symbols | y.free_symbols, key=str)
    for point in _random_points(symbols):
        vx, vy = _eval_at(x, point), _eval_at(y, point)
        if vx is None or vy is None:
            return False
        if not _values_close(vx, vy, exact=False):
            return True
    return False


def _exprs_equal(x: Any, y: Any) -> bool:
    sp = _sympy_mod
    if isinstance(x, sp.Rational) and isinstance(y, sp.Rational):
        return bool(x == y)
    if isinstance(x, sp.MatrixBase) or isinstance(y, sp.MatrixBase):
        if not (isinstance(x, sp.MatrixBase) and isinstance(y, sp.MatrixBase)) or x.shape != y.shape:
            return False
        return all(_exprs_equal(p, q) for p, q in zip(x, y))
    if isinstance(x, sp.Equality) and isinstance(y, sp.Equality):
        dx, dy = x.lhs - x.rhs, y.lhs - y.rhs
        return _exprs_equal(dx, dy) or _exprs_equal(dx, -dy)
    if not (isinstance(x, sp.Expr) and isinstance(y, sp.Expr)):
        return bool(x == y)
    if _is_number(x) and _is_number(y):
        vx, vy = _numeric_value(x), _numeric_value(y)
        if vx is not None and vy is not None:
            if x.has(sp.Float) or y.has(sp.Float):
                return _values_close(vx, vy, exact=False)
            # exact values (sqrt, pi, ...): 30-digit evaluations must agree far beyond REL_TOL
            return _values_close(vx, vy, exact=False, rel_tol=_EXACT_REL_TOL)
    elif _differs_at_random_points(x, y):
        return False
    return bool(sp.simplify(x - y) == 0)


def _sympy_scalar_equal(a: str, b: str) -> Optional[bool]:
    fast = _fast_scalar_equal(a, b)
    if fast is not None:
        return fast
    _load_sympy()
    pa, pb = a.endswith("%"), b.endswith("%")
    try:
        xa = _to_sympy(a[:-1] if pa else a)
        xb = _to_sympy(b[:-1] if pb else b)
    except Exception:  # noqa: BLE001 - any parse failure means "not provably equal"
        return False
    for x in _percent_candidates(xa, pa and not pb and isinstance(xa, _sympy_mod.Expr)):
        for y in _percent_candidates(xb, pb and not pa and isinstance(xb, _sympy_mod.Expr)):
            try:
                if _exprs_equal(x, y):
                    return True
            except _SoftTimeout:
                raise
            except Exception:  # noqa: BLE001 - sympy raises many types on odd input
                continue
    return False


def _constant_ratio(d1: Any, d2: Any) -> Optional[Any]:
    """``d1 / d2`` when it is a non-zero constant (``d1``, ``d2`` with variables), else ``None``."""
    sp = _sympy_mod
    symbols = sorted(d1.free_symbols | d2.free_symbols, key=str)
    if not symbols or d1 == 0 or d2 == 0:
        return None  # no variable: nothing was rearranged
    ratios = []
    for point in _random_points(symbols, seed=1):  # cheap disproof: the ratio moves
        v1, v2 = _eval_at(d1, point), _eval_at(d2, point)
        if v1 is not None and v2 is not None and abs(v2) > 1e-12:
            ratios.append(v1 / v2)
    if any(not _values_close(r, ratios[0], exact=False) for r in ratios[1:]):
        return None
    ratio = sp.cancel(sp.together(d1 / d2))
    if ratio.free_symbols:
        ratio = sp.simplify(ratio)
    if ratio.free_symbols:
        return None
    value = _numeric_value(ratio)
    if value is None or value == 0:
        return None
    return value


_math_verify: Any = None


def _load_math_verify() -> Any:
    """The ``math_verify`` module, or ``None`` when it is not installed (then the pair is wrong)."""
    global _math_verify
    if _math_verify is None:
        try:
            import math_verify
        except ImportError:
            _math_verify = False
        else:
            logging.getLogger("math_verify").setLevel(logging.ERROR)  # it warns that we pass no timeout
            _math_verify = math_verify
    return _math_verify or None


def _math_verify_same_set(pred: str, gold: str, symmetric: bool) -> bool:
    """Math-Verify's verdict on two sets of reals (intervals, unions, one-variable inequalities).

    Its signal-based timeouts are switched off (``parsing_timeout=None``, ``timeout_seconds=None``):
    this runs inside the helper, under the helper's own timer and the caller's hard deadline. Its
    rule that reads an open interval ``(a, b)`` as the pair ``{a, b}`` is not used: a finite set or
    tuple against an interval is wrong here, as everywhere in rlzoo.
    """
    mv = _load_math_verify()
    if mv is None:
        return False
    _load_sympy()
    sp = _sympy_mod
    config = [mv.LatexExtractionConfig()]
    g = [x for x in mv.parse(f"${gold}$", extraction_config=config, parsing_timeout=None) if isinstance(x, sp.Basic)]
    p = [x for x in mv.parse(f"${pred}$", extraction_config=config, parsing_timeout=None) if isinstance(x, sp.Basic)]
    if not g or not p:
        return False
    finite = (sp.FiniteSet, sp.Tuple)
    if (isinstance(g[0], finite) and isinstance(p[0], sp.Interval)) or (
        isinstance(p[0], finite) and isinstance(g[0], sp.Interval)
    ):
        return False
    return bool(mv.verify(g[:1], p[:1], timeout_seconds=None, allow_set_relation_comp=symmetric))


def _sympy_relation_equal(ops: tuple[str, ...], xs: list[str], ys: list[str]) -> bool:
    """Relations with the same signs: sides differ by a rearrangement or a constant factor."""
    _load_sympy()
    sp = _sympy_mod
    try:
        ex = [_to_sympy(x) for x in xs]
        ey = [_to_sympy(y) for y in ys]
    except Exception:  # noqa: BLE001
        return False
    if not all(isinstance(e, sp.Expr) for e in ex + ey):
        return False
    try:
        if ops in (("=",), ("\\ne",)):
            return _constant_ratio(ex[0] - ex[1], ey[0] - ey[1]) is not None
        for i in range(len(ops)):  # each link "left < right" of a chain, scaled by a positive factor
            ratio = _constant_ratio(ex[i + 1] - ex[i], ey[i + 1] - ey[i])
            if ratio is None or abs(ratio.imag) > 1e-12 or ratio.real <= 0:
                return False
        return True
    except _SoftTimeout:
        raise
    except Exception:  # noqa: BLE001 - sympy raises many types on odd input
        return False


# ----------------------------------------------------------------------------------------------
# The helper process
# ----------------------------------------------------------------------------------------------


class _SoftTimeout(BaseException):
    """Raised inside the helper by its own interval timer."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def _helper_watchdog(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _limit_memory() -> None:
    """Cap the helper's address space so a huge power raises MemoryError instead of eating RAM."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = _HELPER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, _HELPER_MEMORY_BYTES)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass


def _helper_main() -> None:
    """Entry point of the helper: JSON requests on stdin, JSON answers on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # libraries that print must not corrupt the protocol
    sys.stdout = sys.stderr
    threading.Thread(target=_helper_watchdog, args=(os.getppid(),), daemon=True).start()
    try:
        _load_sympy()
        _to_sympy("\\frac{1}{2}+x")  # warm the parser
        _load_math_verify()
    except Exception as exc:  # noqa: BLE001
        out.write(json.dumps({"ready": False, "error": repr(exc)}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    signal.signal(signal.SIGALRM, _on_alarm)
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        result: Optional[bool]
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.01, float(req["soft_timeout"])))
            try:
                result = _compare_answers(
                    req["a"], req.get("va"), req["b"], req.get("vb"), True, bool(req.get("symmetric"))
                )
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            result = None
        except Exception:  # noqa: BLE001
            result = False
        out.write(json.dumps({"id": req["id"], "result": result}) + "\n")


_BOOT = (
    "import sys, runpy\nif sys.path and sys.path[0] == '': del sys.path[0]\n"
    "runpy.run_path(sys.argv[1], run_name='__rlzoo_verifier_helper__')['_helper_main']()"
)


class _HelperTimeout(Exception):
    pass


class _Helper:
    """Client side of the persistent symbolic helper process."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.buf = b""
        self.next_id = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, os.path.abspath(__file__)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
        )
        self.buf = b""
        try:
            msg = self._read_message(time.monotonic() + _STARTUP_TIMEOUT_S)
        except _HelperTimeout:
            msg = {"error": f"no answer within {_STARTUP_TIMEOUT_S:.0f}s"}
        if not msg.get("ready"):
            self.stop()
            raise RuntimeError(f"symbolic helper failed to start: {msg.get('error')}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout:
            proc.stdout.close()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _HelperTimeout()
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("symbolic helper exited")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def compare(self, key: "_Key", timeout_s: float) -> Optional[bool]:
        """The helper's verdict on ``(a, va, b, vb, symmetric)``, or ``None`` on timeout (starts it if needed)."""
        if not self.alive():
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.next_id += 1
        req_id = self.next_id
        a, va, b, vb, symmetric = key
        req = {
            "id": req_id, "a": a, "va": va, "b": b, "vb": vb, "symmetric": symmetric,
            "soft_timeout": timeout_s * _SOFT_TIMEOUT_FRACTION,
        }
        deadline = time.monotonic() + timeout_s
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        while True:
            msg = self._read_message(deadline)
            if msg.get("id") == req_id:
                return msg["result"]


_helper_lock = threading.Lock()  # one request at a time to the helper
_stats_lock = threading.Lock()  # counters and cache; never held while waiting on the helper
_helper: Optional[_Helper] = None
_helper_disabled_until = 0.0  # after a failed start, symbolic checks are judged wrong for a while
_HELPER_RETRY_S = 30.0
_Key = tuple[str, Optional[str], str, Optional[str], bool]  # (pred, its variable, gold, its variable, symmetric)
_cache: OrderedDict[_Key, bool] = OrderedDict()
_stats = {"verify/calls": 0, "verify/timeouts": 0, "verify/symbolic": 0, "verify/helper_starts": 0}


def _reset_after_fork() -> None:
    """A forked child must not talk to (or kill) its parent's helper, nor inherit held locks."""
    global _helper_lock, _stats_lock, _helper
    _helper_lock = threading.Lock()
    _stats_lock = threading.Lock()
    _helper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def shutdown() -> None:
    """Stop the symbolic helper process (registered with ``atexit``; safe to call any time)."""
    global _helper
    helper, _helper = _helper, None
    if helper is not None:
        helper.stop()


atexit.register(shutdown)


def _count(key: str) -> None:
    with _stats_lock:
        _stats[key] += 1


def _ensure_helper() -> _Helper:
    """The running helper, started if needed (call with ``_helper_lock`` held)."""
    global _helper, _helper_disabled_until
    if _helper is None:
        _helper = _Helper()
    if not _helper.alive():
        if time.monotonic() < _helper_disabled_until:
            raise RuntimeError("symbolic helper unavailable (failed to start recently)")
        _count("verify/helper_starts")
        try:
            _helper.start()
        except Exception:
            _helper_disabled_until = time.monotonic() + _HELPER_RETRY_S
            raise
    return _helper


def warm_up() -> None:
    """Start the symbolic helper now (optional: it starts lazily on the first symbolic check)."""
    with _helper_lock:
        _ensure_helper()


def _short(s: str) -> str:
    return s if len(s) <= _LOG_EXPR_CHARS else s[:_LOG_EXPR_CHARS] + "..."


def _cache_get(key: _Key) -> Optional[bool]:
    with _stats_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    return None


def _cache_put(key: _Key, value: bool) -> None:
    with _stats_lock:
        _cache[key] = value
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _symbolic_compare(key: _Key, timeout_s: float) -> bool:
    """Ask the helper; a timeout or a helper failure counts as a wrong answer."""
    a, _, b, _, _ = key
    cached = _cache_get(key)
    if cached is not None:
        return cached
    _count("verify/symbolic")
    with _helper_lock:
        try:
            result = _ensure_helper().compare(key, timeout_s)
        except _HelperTimeout:
            result = None
            if _helper is not None:
                _helper.stop()  # kill the stuck helper; the next request starts a fresh one
        except (OSError, EOFError, RuntimeError, ValueError) as exc:
            if _helper is not None:
                _helper.stop()
            logger.error("symbolic check failed (%s) comparing %r with %r; judged wrong", exc, _short(a), _short(b))
            return False
    if result is None:
        _count("verify/timeouts")
        logger.warning(
            "verify timed out after %.1fs comparing %r with %r; judged wrong", timeout_s, _short(a), _short(b)
        )
        return False
    _cache_put(key, bool(result))
    return bool(result)


def verifier_stats(reset: bool = False) -> dict[str, int]:
    """Counters for the trainer's logs: calls, symbolic checks, timeouts, helper (re)starts.

    >>> sorted(verifier_stats())
    ['verify/calls', 'verify/helper_starts', 'verify/symbolic', 'verify/timeouts']
    """
    with _stats_lock:
        snapshot = dict(_stats)
        if reset:
            for k in _stats:
                _stats[k] = 0
    return snapshot


# ----------------------------------------------------------------------------------------------
# Public entry point
# ----------------------------------------------------------------------------------------------


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
