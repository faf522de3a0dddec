"""Reasoning steps: where a completion's steps are, in characters and in tokens.

A process reward model scores the end of every reasoning step (DeepSeekMath Sec. 4.1.3,
Math-Shepherd); process-supervised GRPO sums the normalised rewards of the steps ending at or after
a token. Both need the step ends of a completion as token positions. This module finds them:

* a **step rule** (a name in :data:`STEP_RULES`) maps a text to one ``(start, end)`` character span
  per step (``end`` exclusive; leading and trailing whitespace are not part of a step):

  - ``line`` (the default): one step per non-empty line;
  - ``paragraph``: one step per block of lines separated by blank lines;
  - ``sentence``: a step ends at ``.``, ``!`` or ``?`` followed by whitespace or the end of the
    text, or at a newline (so ``2.5`` does not end a step);

* :func:`step_end_mask` puts those spans on the tokens of a :class:`~rlzoo.interface.RolloutBatch`:
  1.0 at the last token of each step.

>>> step_spans(" 8 - 6 = 2.\\n2 * 3 = 6.\\n\\nThe answer is \\\\boxed{6}.")
[(1, 11), (12, 22), (24, 48)]
>>> split_steps("Add 2.5 to 3. We get 5.5! Done", "sentence")
['Add 2.5 to 3.', 'We get 5.5!', 'Done']
>>> split_steps("a\\nb\\n\\nc", "paragraph")
['a\\nb', 'c']

Register another rule with ``@register_step_rule("name")`` on a function ``text -> list[(start,
end)]`` (spans in order, not overlapping); an unknown name fails with the list of known ones.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

from rlzoo.registry import Registry

if TYPE_CHECKING:  # keep `import rlzoo.reward_models.steps` free of torch at import time
    from torch import Tensor

    from rlzoo.interface import RolloutBatch

Span = tuple[int, int]
STEP_RULES: Registry[Callable[[str], list[Span]]] = Registry("step rule")
register_step_rule = STEP_RULES.register


def _pieces(text: str, terminator: re.Pattern) -> list[Span]:
    """The spans of the pieces of ``text`` that end where ``terminator`` matches (the match is
    part of the piece before it), each stripped of surrounding whitespace; empty pieces dropped."""
    spans, start = [], 0
    for m in terminator.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        stripped = piece.strip()
        if stripped:
            lead = len(piece) - len(piece.lstrip())
            out.append((a + lead, a + lead + len(stripped)))
    return out


_LINE_END = re.compile(r"\n")
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n")  # a line holding nothing but whitespace
_SENTENCE_END = re.compile(r"[.!?](?=\s|\Z)|\n")


@register_step_rule("line")
def line_steps(text: str) -> list[Span]:
    """One step per non-empty line (the default rule).

    >>> line_steps(" 8 - 6 = 2.\\n\\n2 * 3 = 6.\\n")
    [(1, 11), (13, 23)]
    """
    return _pieces(text, _LINE_END)


@register_step_rule("paragraph")
def paragraph_steps(text: str) -> list[Span]:
    """One step per paragraph: lines separated by one or more blank lines.

    >>> paragraph_steps("a\\nb\\n \\nc")
    [(0, 3), (6, 7)]
    """
    return _pieces(text, _BLANK_LINE)


@register_step_rule("sentence")
def sentence_steps(text: str) -> list[Span]:
    """A step ends at ``.``, ``!`` or ``?`` followed by whitespace or the end, or at a newline.

    >>> sentence_steps("x = 2.5. So y = 3\\nDone")
    [(0, 8), (9, 17), (18, 22)]
    """
    return _pieces(text, _SENTENCE_END)


def step_spans(text: str, rule: str = "line") -> list[Span]:
    """The ``(start, end)`` character span of each step of ``text`` under the named ``rule``."""
    return STEP_RULES.get(rule)(text)


def split_steps(text: str, rule: str = "line") -> list[str]:
    """The text of each step of ``text`` under ``rule`` (what :func:`step_spans` delimits)."""
    return [text[a:b] for a, b in step_spans(text, rule)]


def first_error(labels: Sequence[bool]) -> int | None:
    """The index of the first step labelled wrong (falsy), or None when every step is right.

    A solution's first error is what a process reward model is asked to find (ProcessBench,
    PRM800K): for predicted step probabilities ``p``, ``first_error([x >= 0.5 for x in p])``.

    >>> first_error([True, True, False, False]), first_error([True, True]), first_error([])
    (2, None, None)
    """
    return next((j for j, ok in enumerate(labels) if not ok), None)


# -- from characters to tokens ---------------------------------------------------------------------


def decode_with_offsets(tokenizer, ids: Sequence[int]) -> tuple[str, list[int]]:
    """The text of ``ids`` (special tokens skipped) and, per token, how many characters of that text
    are complete once that token is read: ``text[:ends[k]]`` is the decoded prefix ``ids[:k+1]``.

    Tokens are decoded incrementally, as streaming detokenisers do (vLLM, TGI): each token is
    decoded together with the tokens read just before it (a context that keeps the leading space
    some tokenizers strip from a text's start) and only the new characters are kept. So a token
    may hold several characters, or none: EOS, or a byte that starts a multi-byte character (the
    character is complete at the token that ends it). Linear in ``len(ids)``. If the pieces do not
    add up to the text decoded at once (a tokenizer whose decoding is not local), each prefix is
    decoded in full instead.

    >>> # tok: the embedded byte-level BPE tokenizer; "é" is two byte tokens
    >>> # decode_with_offsets(tok, tok.encode(" 2é.")) -> (" 2é.", [1, 2, 2, 3, 4])
    """
    decode = lambda part: tokenizer.decode(part, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    ids = list(ids)
    text = decode(ids)
    out, ends = "", []
    prefix, read = 0, 0  # ids[prefix:read] were decoded already and give the context of new tokens
    for k in range(len(ids)):
        before = decode(ids[prefix:read])
        after = decode(ids[prefix : k + 1])
        if len(after) > len(before) and after.startswith(before) and not after.endswith("\ufffd"):
            out += after[len(before):]
            prefix, read = read, k + 1
        ends.append(len(out))
    if out == text:
        return text, ends
    ends = [len(_common_prefix(decode(ids[: k + 1]), text)) for k in range(len(ids))]  # quadratic fallback
    for k in range(1, len(ends)):
        ends[k] = max(ends[k], ends[k - 1])
    return text, ends


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n].removesuffix("\ufffd")


def step_end_tokens(spans: Sequence[Span], char_ends: Sequence[int], generated: Sequence[bool]) -> list[int]:
    """Token indices of the step ends of one completion (:func:`step_ends` without which spans
    each end closes).

    >>> # " 1.\\n2." as tokens ' ', '1', '.', '\\n', '2', '.', EOS; all generated
    >>> step_end_tokens([(1, 3), (4, 6)], [1, 2, 3, 4, 5, 6, 6], [True] * 7)
    [2, 6]
    """
    return [k for k, _ in step_ends(spans, char_ends, generated)]


def step_ends(spans: Sequence[Span], char_ends: Sequence[int], generated: Sequence[bool]) -> list[tuple[int, int]]:
    """The step ends of one completion: ``(token index, index of the last span it closes)``.

    spans      the steps' character spans in the completion text (:func:`step_spans`)
    char_ends  per completion token, the characters complete once it is read (:func:`decode_with_offsets`)
    generated  per completion token, True for a policy token (loss_mask 1), False for tool output

    A step's tokens run from the token that completes its first character to the one that
    completes its last. The step ends at the last generated token among them (its last token,
    unless that is tool output); a step with no generated token (a line of a tool's output block),
    or one whose last generated token already ends the step before it, has no end of its own: it
    merges into the step before it, and that end closes both (its span index is the later one).
    The last step always ends at the last generated token (its EOS when it has one), which also
    gathers any text after it; a completion with generated tokens but no step (blank text, or
    only EOS) is one step ending there, closing no span (index -1). Sorted, without repeats;
    empty when nothing was generated. A label per span (an exact oracle's) is therefore read at
    an end as the label of the last span it closes: the solution so far, up to that span.

    >>> step_ends([(1, 3), (4, 6)], [1, 2, 3, 4, 5, 6, 6], [True] * 7)
    [(2, 0), (6, 1)]
    >>> step_ends([(1, 3), (4, 6)], [1, 2, 3, 4, 5, 6, 6], [True, True, True, False, False, False, True])  # line 2 is tool output
    [(6, 1)]
    >>> step_ends([], [0, 0], [True, True])  # only EOS: one step, closing no span
    [(1, -1)]
    """
    gen = [k for k, g in enumerate(generated) if g]
    if not gen:
        return []
    ends: list[list[int]] = []
    for index, (start, end) in enumerate(spans):
        first = bisect.bisect_right(char_ends, start)  # the token completing character `start`
        last = min(bisect.bisect_left(char_ends, end), len(char_ends) - 1)  # ... character `end - 1`
        k = next((k for k in range(last, first - 1, -1) if generated[k]), None)
        if k is not None and (not ends or k > ends[-1][0]):
            ends.append([k, index])
        elif ends:
            ends[-1][1] = index  # merged into the step before it
    if ends:
        ends[-1] = [gen[-1], len(spans) - 1]
    else:
        ends = [[gen[-1], len(spans) - 1]]
    return [(k, index) for k, index in ends]


@dataclass
class RowSteps:
    """The reasoning steps of one row of a batch.

    first  the column of the row's first completion token
    text   the decoded completion (tool output included, special tokens skipped)
    spans  the steps' character spans in ``text``
    ends   ``(column, last span index)`` of each step end (:func:`step_ends`, columns of the batch)
    """

    first: int
    text: str
    spans: list[Span]
    ends: list[tuple[int, int]]


def batch_steps(batch: "RolloutBatch", tokenizer, rule: str = "line") -> list[RowSteps | None]:
    """Each row's :class:`RowSteps` (None for a row with no generated token).

    A row's completion runs from its first trained token (loss_mask 1; the prompt before it is
    left-padded) to its last real token (attention_mask 1; padding after it). Its text is the
    decoded completion, split by ``rule``; each step is put on a token by :func:`step_ends`,
    which keeps every step end on a generated token (loss_mask 1) and ends the last step at the
    last generated token.
    """
    spans_of = STEP_RULES.get(rule)
    generated = (batch.loss_mask > 0).cpu()  # [N, T]
    real = (batch.attention_mask > 0).cpu()  # [N, T]
    ids = batch.input_ids.cpu()  # [N, T]
    rows: list[RowSteps | None] = []
    for i in range(len(batch)):
        trained = generated[i].nonzero().flatten()
        if len(trained) == 0:
            rows.append(None)
            continue
        first, last = int(trained[0]), int(real[i].nonzero().flatten()[-1])
        text, char_ends = decode_with_offsets(tokenizer, ids[i, first : last + 1].tolist())
        spans = spans_of(text)
        ends = step_ends(spans, char_ends, generated[i, first : last + 1].tolist())
        rows.append(RowSteps(first, text, spans, [(first + k, index) for k, index in ends]))
    return rows


def end_mask(batch: "RolloutBatch", rows: list[RowSteps | None]) -> "Tensor":
    """[N, T] float: 1.0 at every step end of ``rows`` (:func:`batch_steps`)."""
    import torch

    mask = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)  # [N, T]
    for i, row in enumerate(rows):
        for column, _ in row.ends if row is not None else ():
            mask[i, column] = 1.0
    return mask


def step_end_mask(batch: "RolloutBatch", tokenizer, rule: str = "line") -> "Tensor":
    """[N, T] float: 1.0 at the last token of each reasoning step of each row's completion.

    A row's completion runs from its first trained token (loss_mask 1; the prompt before it is
    left-padded) to its last real token (attention_mask 1; padding after it). Its text is the
    decoded completion (tool output included, special tokens skipped), split by ``rule``; each
    step is put on a token by :func:`step_end_tokens`, which keeps every step end on a generated
    token (loss_mask 1) and ends the last step at the last generated token. Rows with no
    generated token have no step end.

    For the embedded task with the ``line`` rule::

        completion  ' 8 - 6 = 2.\\n2 * 3 = 6.\\nThe answer is \\\\boxed{6}.' EOS
        step ends   the '.' of line 1, the '.' of line 2, and EOS (the last step ends there)
    """
    return end_mask(batch, batch_steps(batch, tokenizer, rule))
