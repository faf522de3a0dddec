"""Layer 2, shapes: a normalised answer as a tree of tuples, intervals, sets, unions, matrices, relations.

:func:`_structure` splits a string at top-level commas, ``\\cup`` and relation signs into
:data:`Node` tuples; relations are written left to right (``7 \\ge y`` is ``y \\le 7``), and
``x=1, x=2`` lists 1 and 2. Pure string work: the leaves stay strings for :mod:`.compare`.
"""

from __future__ import annotations

import re
from typing import Optional

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
