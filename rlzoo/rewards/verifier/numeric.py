"""Layer 2, scalars: plain numbers read exactly, the tolerances, and the fast verdict on two scalars.

A plain number (integer, decimal, scientific, ``a/b``, ``\\frac{a}{b}``, mixed, repeating
decimal, percent) becomes a :class:`fractions.Fraction`; exact values must be equal exactly, a
decimal side brings the relative tolerance ``REL_TOL`` (absolute ``ABS_TOL`` near 0).
:func:`_fast_scalar_equal` decides two scalar strings when they are numbers, words or numerals
with a base subscript, and says ``None`` ("ask sympy") otherwise. No sympy.
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Any, Optional

REL_TOL = 1e-6
ABS_TOL = 1e-9
_EXACT_REL_TOL = 1e-20  # for exact irrational values evaluated to 30 digits
_EXACT_ABS_TOL = 1e-25
_REL_TOL_FRACTION = Fraction(REL_TOL)
_ABS_TOL_FRACTION = Fraction(ABS_TOL)

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
