"""Tool-integrated rollouts (ToRA, Gou et al. 2024; DeepSeekMath's tool-integrated format).

The policy writes text and ```` ```python ```` blocks. Generation of a row stops as soon as a
python block is closed by ```` ``` ````; the block runs in the sandbox (:mod:`rlzoo.sandbox`); its
output is appended as an output block and the row continues::

    <generated text>```python\\n<code>\\n```   (policy tokens, loss_mask 1)
    \\n```output\\n<stdout>\\n```\\n                (tool tokens,   loss_mask 0, attention 1)
    <generated text> ... EOS                    (policy tokens, loss_mask 1)

The leading ``\\n`` of the output block is added only when the generated text does not already end
in one. A failed program's output block holds what it printed, then one line saying why it failed
(the exception line, e.g. ``ZeroDivisionError: division by zero``, or ``TimeoutError: ...``).

Batching. All rows advance in lock-step rounds. Round k is one ``generate`` call (split in chunks
of ``batch_size`` rows) over every row still running, each fed its own token ids (prompt,
everything generated, every output appended so far: never re-tokenised text, so the policy's
tokens stay exactly what it sampled). A custom stopping criterion stops each row on its own at the
end of its code block, at EOS or at its token budget. Then the code of every row that stopped at
a code block runs at once through :func:`rlzoo.sandbox.run_many`, its output tokens are appended,
and those rows (only those) take part in round k+1. After ``tool_rounds`` executions a row
generates once more without stopping at code blocks (a code block there is plain text), so there
are at most ``tool_rounds + 1`` generate calls.

Limits. ``max_new_tokens`` caps the whole completion, generated *and* tool tokens, so a sequence is
never longer than prompt + ``max_new_tokens``, as without tools; an output block that does not fit
is cut and ends the row. Each program gets ``tool_timeout_s`` seconds (the paper allows 10 s) and
its output text is cut to ``tool_output_max_chars`` characters (then ``...``). Each block runs on
its own: variables of earlier blocks are not kept. Identical blocks of one round run once.

:func:`generate_with_tools` returns the completion ids and masks that
:func:`rlzoo.runtime.generation.sample` turns into an ordinary :class:`~rlzoo.interface.RolloutBatch`,
so every online algorithm trains on tool-integrated rollouts unchanged. Per-row statistics travel
in ``batch.extras`` (``tool_calls``, ``tool_failures``, ``tool_seconds``); ``score_batch`` logs them
as ``tools/calls``, ``tools/fail_frac`` and ``time/tools``.
"""

from __future__ import annotations

import functools
import os
import re
import time
from dataclasses import dataclass, field

import torch
from transformers import StoppingCriteria, StoppingCriteriaList

from rlzoo.runtime.sampling import generate

CODE_BLOCK_RE = re.compile(r"```python[^\n`]*\n(.*?)```", re.DOTALL)  # a closed python block
OUTPUT_BLOCK = "```output\n{}\n```\n"


@dataclass
class _Row:
    """One sequence being generated: its prompt and what has been added after it."""

    prompt: list[int]  # prompt ids without padding
    tokens: list[int] = field(default_factory=list)  # completion so far (generated and tool tokens)
    generated: list[int] = field(default_factory=list)  # 1 per generated token, 0 per tool token
    logprobs: list[float] = field(default_factory=list)  # sampling-time log-prob per token (0 for tool tokens)
    done: bool = False
    calls: int = 0
    failures: int = 0
    seconds: float = 0.0  # this row's share of the sandbox wall time


def tool_output_text(result, max_chars: int) -> str:
    """The text of the output block of an ``ExecResult``: stdout, then the error line if it failed.

    >>> from rlzoo.sandbox import ExecResult
    >>> tool_output_text(ExecResult("5\\n", True, None), 100)
    '5'
    >>> tool_output_text(ExecResult("", False, "exit code 1: ZeroDivisionError: division by zero"), 100)
    'ZeroDivisionError: division by zero'
    """
    text = result.stdout.rstrip()
    if not result.ok:
        error = result.error or "error"
        if error.startswith("exit code") and ": " in error:
            line = error.split(": ", 1)[1]  # the program's last stderr line: its exception
        elif error == "timeout":
            line = "TimeoutError: the program took too long"
        else:
            line = f"Error: {error}"
        text = f"{text}\n{line}" if text else line
    if len(text) > max_chars:
        text = text[:max_chars] + "..."
    return text


class _StopAtCodeBlock(StoppingCriteria):
    """Per-row stop: at the end of the round's first closed python block, or at the row's budget.

    ``stop_len[r]`` records how many new tokens row r had when its block closed. Only rows whose
    last token contains a backtick are decoded, so the check is cheap.
    """

    def __init__(self, tokenizer, start: int, budgets: torch.Tensor, stop_at_code: bool, tick_ids: torch.Tensor):
        self.tokenizer = tokenizer
        self.start = start
        self.budgets = budgets  # [B] tokens each row may still add
        self.stop_at_code = stop_at_code
        self.tick_ids = tick_ids
        self.stop_len: dict[int, int] = {}

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        new = input_ids.shape[1] - self.start
        done = self.budgets <= new  # [B]
        if self.stop_at_code:
            ticks = torch.isin(input_ids[:, -1], self.tick_ids.to(input_ids.device))  # [B]
            for r in ticks.nonzero().flatten().tolist():
                if r not in self.stop_len and CODE_BLOCK_RE.search(self.tokenizer.decode(input_ids[r, self.start :])):
                    self.stop_len[r] = new
            if self.stop_len:
                done[list(self.stop_len)] = True
        return done


@functools.lru_cache(maxsize=8)
def _tick_ids(tokenizer) -> torch.Tensor:
    """Ids of the tokens whose text contains a backtick (computed once per tokenizer)."""
    texts = tokenizer.batch_decode([[i] for i in range(len(tokenizer))])
    return torch.tensor([i for i, t in enumerate(texts) if "`" in t], dtype=torch.long)


def _generate_round(model, tokenizer, rows: list[_Row], cfg, stop_at_code: bool, seeds: torch.Tensor) -> list[tuple[list[int], list[float], bool]]:
    """One generate call over ``rows`` (their ``seeds``): for each, (new tokens, their sampling-time
    log-probs, stopped at a closed code block)."""
    device = next(model.parameters()).device
    pad = tokenizer.pad_token_id
    seqs = [r.prompt + r.tokens for r in rows]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([[pad] * (width - len(s)) + s for s in seqs], device=device)  # [B, W] left-padded
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in seqs], device=device)  # [B, W]
    budgets = torch.tensor([cfg.max_new_tokens - len(r.tokens) for r in rows], device=device)  # [B]
    offsets = torch.tensor([len(r.tokens) for r in rows])  # [B] the row's token counter continues across rounds
    stop = _StopAtCodeBlock(tokenizer, width, budgets, stop_at_code, _tick_ids(tokenizer))
    new_ids, logprobs = generate(
        model, tokenizer, ids, mask, seeds=seeds, offsets=offsets, temperature=cfg.temperature, top_p=cfg.top_p,
        max_new_tokens=int(budgets.max()), stopping_criteria=StoppingCriteriaList([stop]),
    )  # [B, L] each
    if logprobs is None:  # a generate that ran no logits processor
        logprobs = torch.zeros(new_ids.shape)
    results = []
    for j, (new, lp) in enumerate(zip(new_ids.tolist(), logprobs.tolist())):
        keep = int(budgets[j])
        if j in stop.stop_len:
            keep, at_code = min(keep, stop.stop_len[j]), True
        else:
            at_code = False
            if tokenizer.eos_token_id in new[:keep]:
                keep = new.index(tokenizer.eos_token_id) + 1
        results.append((new[:keep], lp[:keep], at_code))
    return results


@torch.no_grad()
def generate_with_tools(model, tokenizer, prompt_ids: torch.Tensor, prompt_mask: torch.Tensor, cfg, seeds: torch.Tensor):
    """Tool-integrated completions of N left-padded prompts (one row each; repeat for G samples).

    ``seeds`` [N] are the rows' sampling seeds (:mod:`rlzoo.runtime.sampling`); a row's token
    counter runs on across rounds, so its tokens do not depend on how rounds are batched.
    Returns ``(completion [N, L], attention [N, L], generated [N, L], logprobs [N, L], extras)``:
    completion ids right-padded with pad, 1 on every real completion token, 1 on the tokens the
    policy generated (tool output is 0), their sampling-time log-probs (0 on tool tokens), and
    per-row ``tool_calls`` / ``tool_failures`` / ``tool_seconds`` [N].
    """
    from rlzoo.sandbox import run_many

    device = prompt_ids.device
    rows = [_Row(prompt=ids[m.bool()].tolist()) for ids, m in zip(prompt_ids, prompt_mask)]
    workers = max(2, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)
    for round_index in range(cfg.tool_rounds + 1):
        active = [i for i, r in enumerate(rows) if not r.done]
        if not active:
            break
        starts = {i: len(rows[i].tokens) for i in active}
        for c in range(0, len(active), cfg.batch_size):
            chunk = active[c : c + cfg.batch_size]
            results = _generate_round(model, tokenizer, [rows[i] for i in chunk], cfg, round_index < cfg.tool_rounds, seeds[chunk])
            for i, (new, lp, at_code) in zip(chunk, results):
                row = rows[i]
                row.tokens += new
                row.generated += [1] * len(new)
                row.logprobs += lp
                row.done = not at_code or len(row.tokens) >= cfg.max_new_tokens
        pending = [i for i in active if not rows[i].done]
        if not pending:
            break
        texts = [tokenizer.decode(rows[i].tokens[starts[i] :]) for i in pending]
        codes = [CODE_BLOCK_RE.search(t).group(1) for t in texts]
        unique = list(dict.fromkeys(codes))  # the G samples of a prompt often write the same block
        t0 = time.perf_counter()
        ran = dict(zip(unique, run_many(unique, timeout_s=cfg.tool_timeout_s, max_workers=workers)))
        results = [ran[code] for code in codes]
        share = (time.perf_counter() - t0) / len(pending)
        for i, text, result in zip(pending, texts, results):
            row = rows[i]
            block = ("" if text.endswith("\n") else "\n") + OUTPUT_BLOCK.format(tool_output_text(result, cfg.tool_output_max_chars))
            room = cfg.max_new_tokens - len(row.tokens)
            out_ids = tokenizer(block, add_special_tokens=False).input_ids[:room]
            row.tokens += out_ids
            row.generated += [0] * len(out_ids)
            row.logprobs += [0.0] * len(out_ids)
            row.done = len(out_ids) >= room  # no room left to go on
            row.calls += 1
            row.failures += not result.ok
            row.seconds += share
    width = max([len(r.tokens) for r in rows] + [0])

    def padded(values: list[list], pad_value, dtype=torch.long) -> torch.Tensor:
        rows = [v + [pad_value] * (width - len(v)) for v in values]
        return torch.tensor(rows, dtype=dtype, device=device).reshape(len(rows), width)  # [N, L] ([0, 0] for no row)

    completion = padded([r.tokens for r in rows], tokenizer.pad_token_id)  # [N, L]
    attention = padded([[1] * len(r.tokens) for r in rows], 0)  # [N, L]
    generated = padded([r.generated for r in rows], 0)  # [N, L]
    logprobs = padded([r.logprobs for r in rows], 0.0, torch.float)  # [N, L]
    extras = {
        "tool_calls": torch.tensor([r.calls for r in rows], dtype=torch.long, device=device),  # [N]
        "tool_failures": torch.tensor([r.failures for r in rows], dtype=torch.long, device=device),  # [N]
        "tool_seconds": torch.tensor([r.seconds for r in rows], dtype=torch.float, device=device),  # [N]
    }
    return completion, attention, generated, logprobs, extras
