"""Layer 3: sympy with rlzoo's rules, and Math-Verify for sets of reals (runs in the helper process only).

Scalars, matrices and matrix expressions are parsed with ``latex2sympy2_extended`` and compared
numerically or by ``simplify``; equations and inequalities match up to a (positive) constant
factor; :func:`_math_verify_same_set` asks Math-Verify whether an inequality and an interval or
union are one set. sympy and Math-Verify are imported on first use, so importing this module is
cheap; only the helper process (:mod:`.helper`) calls into it, under its timer, which raises
:class:`_SoftTimeout` through this code.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Any, Optional

from .numeric import _EXACT_REL_TOL, _fast_scalar_equal, _percent_candidates, _values_close


class _SoftTimeout(BaseException):
    """Raised inside the helper by its own interval timer."""


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
