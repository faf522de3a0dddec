"""Layer 1 of the verifier: which string of a completion is its final answer (no sympy).

:func:`extract_answer` takes it from the last ``\\boxed{}``, the last answer phrase (English,
French, German, Spanish, Russian, Chinese), GSM8K's last ``#### N``, a program's last ``output``
block, the whole text when it is a bare answer, or else the last number of prose (or the ``$...$``
span holding it); the package docstring gives the rules. Pure string work, microseconds a call.
The brace matcher, math-delimiter stripper and ``\\text{}`` pattern are also used by
:mod:`.normalize`.
"""

from __future__ import annotations

import re
from typing import Optional

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
