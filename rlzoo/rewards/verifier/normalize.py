"""Layer 2, strings: the canonical form of an extracted answer (no sympy).

:func:`normalize_answer` rewrites spellings (``\\dfrac``, ``\\left``, spacing, units in
``\\text{}``, degrees, ``\\$``, thousands separators, one spelling per relation sign, "1 or 2"
-> ``1,2``) and drops a left side (``x = 3`` -> ``3``, ``(x, y) = (1, 2)`` -> ``(1,2)``);
:func:`_normalize` also returns the dropped variable, so that ``y = 2x+3`` can still be compared
as an equation.
"""

from __future__ import annotations

import re
from typing import Optional

from .extract import _TEXT_CMD_RE, _match_brace, _strip_math_delims

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
