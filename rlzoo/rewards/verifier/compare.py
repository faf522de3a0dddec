"""The comparison of two normalised answers, tri-state: True, False, or None = "needs the symbolic step".

:func:`_compare_answers` splits both answers into :mod:`.structure` nodes and compares them node
by node: with ``symbolic=False`` by the fast rules of :mod:`.numeric` (in the caller's process),
with ``symbolic=True`` by :mod:`.symbolic` (in the helper process). A structural mismatch is
decided at once; an assignment ``y = 2x+3`` is also compared as an equation.
"""

from __future__ import annotations

from typing import Optional

from .numeric import _fast_scalar_equal
from .structure import Node, _structure
from .symbolic import _math_verify_same_set, _sympy_relation_equal, _sympy_scalar_equal


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
