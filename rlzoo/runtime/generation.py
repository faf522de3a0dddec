"""Batched sampling with a KV cache: prompts in, a token-level RolloutBatch out.

Prompts are left-padded so every row's completion starts at the same column; Hugging Face
``generate`` samples G completions per prompt with the KV cache, temperature and top-p, and stops
each row at EOS (later positions are padding). The returned batch has ``loss_mask`` = 1 on the
generated tokens up to and including EOS, ``rewards`` = NaN (the data source scores them).

With ``tool_rounds > 0`` sampling is tool-integrated (:mod:`rlzoo.runtime.tools`): each row stops
at the end of a python code block, the code runs, its output block is appended (in the context,
``loss_mask`` 0) and the row continues.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlzoo.interface import Example, RolloutBatch


@dataclass
class GenerationConfig:
    """Sampling settings."""

    max_new_tokens: int = 64  # completion length cap; a row without EOS by then is cut there
    temperature: float = 1.0  # sampling temperature (0 = greedy)
    top_p: float = 1.0  # nucleus sampling mass
    batch_size: int = 256  # sequences generated at once (prompts * samples); bounds memory
    tool_rounds: int = 0  # tool-integrated rollouts: code blocks run per completion, at most (0 = off; see rlzoo.runtime.tools)
    tool_timeout_s: float = 10.0  # wall-clock limit of each program run by a tool call (the paper's 10 s)
    tool_output_max_chars: int = 512  # a tool output longer than this is cut (then "..."); tokens also count in max_new_tokens


def encode_prompts(tokenizer, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, [P, Lp] each."""
    enc = tokenizer(prompts, return_tensors="pt", padding=True, padding_side="left", add_special_tokens=False)
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def decoding_kwargs(cfg: GenerationConfig, tokenizer) -> dict:
    """``generate`` arguments for ``cfg``'s decoding: greedy at temperature 0, else sampling with
    temperature and top-p (top-k off); padding with the pad token, stopping at EOS."""
    greedy = cfg.temperature <= 0
    return {
        "do_sample": not greedy,
        "temperature": None if greedy else cfg.temperature,
        "top_p": None if greedy else cfg.top_p,
        "top_k": None,
        "pad_token_id": tokenizer.pad_token_id,
        "eos_token_id": tokenizer.eos_token_id,
    }


def completion_mask(completion_ids: torch.Tensor, eos_id: int, pad_id: int) -> torch.Tensor:
    """[N, L] 1 on generated tokens up to and including the first EOS (0 after it)."""
    is_eos = completion_ids == eos_id  # [N, L]
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # [N, L] strictly after the first EOS
    mask = ~after_eos
    if pad_id != eos_id:
        mask &= completion_ids != pad_id
    return mask.long()  # [N, L]


@torch.no_grad()
def sample(
    model,
    tokenizer,
    examples: list[Example],
    num_samples: int,
    cfg: GenerationConfig,
    *,
    group_offset: int = 0,
) -> RolloutBatch:
    """``num_samples`` completions of each example's prompt: N = len(examples) * num_samples rows.

    Rows of one example are adjacent and share ``group_ids`` (offset by ``group_offset``). With
    ``cfg.tool_rounds > 0`` the completions are tool-integrated (:mod:`rlzoo.runtime.tools`): tool
    output tokens are in ``input_ids`` and ``attention_mask`` but not in ``loss_mask``.
    """
    unwrapped = getattr(model, "module", model)
    device = next(unwrapped.parameters()).device
    was_training = unwrapped.training
    unwrapped.eval()
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)  # [P, Lp]
    rep_prompt = prompt_ids.repeat_interleave(num_samples, dim=0)  # [N, Lp]
    rep_pmask = prompt_mask.repeat_interleave(num_samples, dim=0)  # [N, Lp]
    if getattr(cfg, "tool_rounds", 0) > 0:
        from rlzoo.runtime.tools import generate_with_tools

        completion, comp_mask, gen_mask, extras = generate_with_tools(unwrapped, tokenizer, rep_prompt, rep_pmask, cfg)  # [N, L] x3
        if was_training:
            unwrapped.train()
        return _rollout_batch(tokenizer, examples, num_samples, group_offset, rep_prompt, rep_pmask, completion,
                              comp_mask, gen_mask, extras)
    rows_per_call = max(num_samples, cfg.batch_size // num_samples * num_samples)
    prompts_per_call = max(1, rows_per_call // num_samples)
    pieces = []
    for start in range(0, len(examples), prompts_per_call):
        ids = prompt_ids[start : start + prompts_per_call]
        mask = prompt_mask[start : start + prompts_per_call]
        out = unwrapped.generate(
            input_ids=ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens, num_return_sequences=num_samples,
            **decoding_kwargs(cfg, tokenizer),
        )  # [p * G, Lp + L]
        pieces.append(out[:, ids.shape[1] :])
    width = max(p.shape[1] for p in pieces)
    completion = torch.cat(
        [torch.nn.functional.pad(p, (0, width - p.shape[1]), value=tokenizer.pad_token_id) for p in pieces]
    )  # [N, L]
    comp_mask = completion_mask(completion, tokenizer.eos_token_id, tokenizer.pad_token_id)  # [N, L]
    if was_training:
        unwrapped.train()
    return _rollout_batch(tokenizer, examples, num_samples, group_offset, rep_prompt, rep_pmask, completion,
                          comp_mask, comp_mask, {})


def _rollout_batch(tokenizer, examples, num_samples, group_offset, rep_prompt, rep_pmask, completion, comp_mask,
                   gen_mask, extras) -> RolloutBatch:
    """The batch of prompts [N, Lp] and completions [N, L]: ``comp_mask`` marks real completion
    tokens (attention), ``gen_mask`` the generated ones (loss)."""
    device = rep_prompt.device
    texts = tokenizer.batch_decode(completion * comp_mask + tokenizer.pad_token_id * (1 - comp_mask), skip_special_tokens=True)
    n = len(examples) * num_samples
    return RolloutBatch(
        input_ids=torch.cat([rep_prompt, completion], dim=1),  # [N, Lp + L]
        attention_mask=torch.cat([rep_pmask, comp_mask], dim=1),  # [N, Lp + L]
        loss_mask=torch.cat([torch.zeros_like(rep_pmask), gen_mask], dim=1).float(),  # [N, Lp + L]
        group_ids=torch.arange(len(examples), device=device).repeat_interleave(num_samples) + group_offset,  # [N]
        rewards=torch.full((n,), float("nan"), device=device),  # [N]
        extras=extras,
        completions=texts,
        examples=[ex for ex in examples for _ in range(num_samples)],
    )


def encode_pairs(tokenizer, examples: list[Example], completions: list[str], device) -> RolloutBatch:
    """A batch of given (prompt, completion) texts, e.g. SFT's gold solutions; EOS is appended."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)  # [N, Lp]
    enc = tokenizer(
        [c + tokenizer.eos_token for c in completions],
        return_tensors="pt",
        padding=True,
        padding_side="right",
        add_special_tokens=False,
    )
    comp_ids, comp_mask = enc.input_ids.to(device), enc.attention_mask.to(device)  # [N, L]
    n = len(examples)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, comp_ids], dim=1),  # [N, Lp + L]
        attention_mask=torch.cat([prompt_mask, comp_mask], dim=1),  # [N, Lp + L]
        loss_mask=torch.cat([torch.zeros_like(prompt_mask), comp_mask], dim=1).float(),  # [N, Lp + L]
        group_ids=torch.arange(n, device=device),  # [N]
        rewards=torch.full((n,), float("nan"), device=device),  # [N]
        completions=list(completions),
        examples=list(examples),
    )
