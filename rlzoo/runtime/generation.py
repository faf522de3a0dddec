"""Batched sampling with a KV cache: prompts in, a token-level RolloutBatch out.

Prompts are left-padded so every row's completion starts at the same column; Hugging Face
``generate`` samples G completions per prompt with the KV cache, temperature and top-p, and stops
each row at EOS (later positions are padding). Each row is sampled with its own seed
(:mod:`rlzoo.runtime.sampling`), so its tokens do not depend on the other rows. The returned batch
has ``loss_mask`` = 1 on the generated tokens up to and including EOS (a pad id sampled before EOS
included: padding is found by position, :func:`completion_mask`), ``rewards`` = NaN (the data
source scores them), ``sample_logprobs`` the sampler's log-probs and ``temperature`` the
temperature every later log-prob of these tokens is taken at.

With ``tool_rounds > 0`` sampling is tool-integrated (:mod:`rlzoo.runtime.tools`): each row stops
at the end of a python code block, the code runs, its output block is appended (in the context,
``loss_mask`` 0) and the row continues.
"""

from __future__ import annotations

import torch

from rlzoo.config import GenerationConfig
from rlzoo.interface import Example, RolloutBatch
from rlzoo.runtime.sampling import generate, row_seeds




def encode_texts(tokenizer, texts: list[str], device, padding_side: str = "left") -> tuple[torch.Tensor, torch.Tensor]:
    """Padded token ids and attention mask of ``texts``, [P, L] each ([0, 0] for no text: a rank
    may hold no question)."""
    if not texts:
        empty = torch.zeros(0, 0, dtype=torch.long, device=device)
        return empty, empty.clone()
    enc = tokenizer(texts, return_tensors="pt", padding=True, padding_side=padding_side, add_special_tokens=False)
    return enc.input_ids.to(device), enc.attention_mask.to(device)


def encode_prompts(tokenizer, prompts: list[str], device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded prompt ids and mask, [P, Lp] each."""
    return encode_texts(tokenizer, prompts, device, "left")


def completion_mask(completion_ids: torch.Tensor, eos_id: int, lengths: torch.Tensor | None = None) -> torch.Tensor:
    """[N, L] 1 on generated tokens up to and including the first EOS (0 after it) and before the
    row's generated length ``lengths`` [N] (default L: the right padding that joins chunks of
    different widths is not generated).

    Padding is found by position, never by token id: a pad id sampled before EOS is a real token
    of the completion (with real tokenizers pad is often EOS itself, or an ordinary token such as
    Qwen's ``<|endoftext|>``). It stays in the loss and in attention, as ``generate`` attended it
    when it sampled the tokens after it; Hugging Face ``generate`` pads a row only after its EOS.

    >>> completion_mask(torch.tensor([[5, 0, 2, 0], [5, 6, 7, 0]]), eos_id=2, lengths=torch.tensor([4, 3]))
    tensor([[1, 1, 1, 0],
            [1, 1, 1, 0]])
    """
    is_eos = completion_ids == eos_id  # [N, L]
    after_eos = (is_eos.long().cumsum(-1) - is_eos.long()) > 0  # [N, L] strictly after the first EOS
    mask = ~after_eos  # [N, L]
    if lengths is not None:
        positions = torch.arange(completion_ids.shape[1], device=completion_ids.device)  # [L]
        mask &= positions[None, :] < lengths.to(completion_ids.device)[:, None]  # [N, L]
    return mask.long()  # [N, L]


def causal_lm(model):
    """The Hugging Face causal LM inside ``model``: through a DDP wrapper (``.module``) and the
    runtime's :class:`~rlzoo.runtime.models.LogProbModel` (``.lm``)."""
    model = getattr(model, "module", model)
    return getattr(model, "lm", model)


@torch.no_grad()
def sample(
    model,
    tokenizer,
    examples: list[Example],
    num_samples: int,
    cfg: GenerationConfig,
    *,
    seed: int = 0,
    keys: list[int] | None = None,
    group_ids: list[int] | None = None,
) -> RolloutBatch:
    """``num_samples`` completions of each example's prompt: N = len(examples) * num_samples rows.

    Rows of one example are adjacent and share a group id (``group_ids[i]``, default ``keys[i]``).
    Row ``(i, j)`` is sampled with the seed ``mix_seed(seed, keys[i], j)`` (``keys`` default to
    0, 1, ...): its tokens depend on nothing else (:mod:`rlzoo.runtime.sampling`), so a question
    sampled alone, in another batch or on another rank gets the same completion. With
    ``cfg.tool_rounds > 0`` the completions are tool-integrated (:mod:`rlzoo.runtime.tools`):
    tool output tokens are in ``input_ids`` and ``attention_mask`` but not in ``loss_mask``.
    """
    lm = causal_lm(model)
    device = next(lm.parameters()).device
    keys = list(range(len(examples))) if keys is None else list(keys)
    group_ids = keys if group_ids is None else list(group_ids)
    seeds = row_seeds(seed, keys, num_samples)  # [N]
    was_training = lm.training
    lm.eval()
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)  # [P, Lp]
    rep_prompt = prompt_ids.repeat_interleave(num_samples, dim=0)  # [N, Lp]
    rep_pmask = prompt_mask.repeat_interleave(num_samples, dim=0)  # [N, Lp]
    try:
        if cfg.tool_rounds > 0:
            from rlzoo.runtime.tools import generate_with_tools

            completion, comp_mask, gen_mask, logprobs, extras = generate_with_tools(lm, tokenizer, rep_prompt, rep_pmask, cfg, seeds)
        else:
            completion, lengths, logprobs = _generate_plain(lm, tokenizer, prompt_ids, prompt_mask, num_samples, cfg, seeds)
            comp_mask = gen_mask = completion_mask(completion, tokenizer.eos_token_id, lengths)  # [N, L]
            extras = {}
    finally:
        lm.train(was_training)
    texts = tokenizer.batch_decode(completion * comp_mask + tokenizer.pad_token_id * (1 - comp_mask), skip_special_tokens=True)
    n = len(examples) * num_samples
    zeros = torch.zeros_like(rep_pmask)  # [N, Lp]
    return RolloutBatch(
        input_ids=torch.cat([rep_prompt, completion], dim=1),  # [N, Lp + L]
        attention_mask=torch.cat([rep_pmask, comp_mask], dim=1),  # [N, Lp + L]
        loss_mask=torch.cat([zeros, gen_mask], dim=1).float(),  # [N, Lp + L]
        group_ids=torch.tensor(group_ids, dtype=torch.long, device=device).repeat_interleave(num_samples),  # [N]
        rewards=torch.full((n,), float("nan"), device=device),  # [N]
        sample_logprobs=None if logprobs is None else torch.cat([zeros.float(), logprobs * gen_mask], dim=1),  # [N, Lp + L]
        extras=extras,
        completions=texts,
        examples=[ex for ex in examples for _ in range(num_samples)],
        temperature=cfg.temperature if cfg.temperature > 0 else 1.0,
    )


def _generate_plain(lm, tokenizer, prompt_ids, prompt_mask, num_samples, cfg, seeds):
    """(completion ids [N, L] right-padded, each row's generated width [N], sampling-time log-probs
    [N, L] or None), in chunks of at most ``cfg.batch_size`` rows (whole prompts)."""
    rows_per_call = max(num_samples, cfg.batch_size // num_samples * num_samples)
    prompts_per_call = max(1, rows_per_call // num_samples)
    pieces, logprobs = [prompt_ids[:0, :0]], [torch.zeros(0, 0, device=prompt_ids.device)]  # [0, 0]: no prompt, no row
    for start in range(0, len(prompt_ids), prompts_per_call):
        stop = min(start + prompts_per_call, len(prompt_ids))
        new, lp = generate(
            lm, tokenizer, prompt_ids[start:stop], prompt_mask[start:stop], seeds=seeds[start * num_samples : stop * num_samples],
            temperature=cfg.temperature, top_p=cfg.top_p, max_new_tokens=cfg.max_new_tokens, num_return_sequences=num_samples,
        )  # [p * G, L] each
        pieces.append(new)
        logprobs.append(lp)
    width = max(p.shape[1] for p in pieces)
    pad = lambda t, value: torch.nn.functional.pad(t, (0, width - t.shape[1]), value=value)
    completion = torch.cat([pad(p, tokenizer.pad_token_id) for p in pieces])  # [N, L]
    lengths = torch.tensor([p.shape[1] for p in pieces for _ in range(len(p))], dtype=torch.long, device=completion.device)  # [N]
    if any(lp is None for lp in logprobs):
        return completion, lengths, None
    return completion, lengths, torch.cat([pad(lp, 0.0) for lp in logprobs])  # [N, L]


def encode_pairs(tokenizer, examples: list[Example], completions: list[str], device, group_ids: list[int] | None = None) -> RolloutBatch:
    """A batch of given (prompt, completion) texts, e.g. SFT's gold solutions; EOS is appended.

    Each row is its own group (``group_ids``, default 0, 1, ...)."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [ex.prompt for ex in examples], device)  # [N, Lp]
    comp_ids, comp_mask = encode_texts(tokenizer, [c + tokenizer.eos_token for c in completions], device, "right")  # [N, L]
    n = len(examples)
    return RolloutBatch(
        input_ids=torch.cat([prompt_ids, comp_ids], dim=1),  # [N, Lp + L]
        attention_mask=torch.cat([prompt_mask, comp_mask], dim=1),  # [N, Lp + L]
        loss_mask=torch.cat([torch.zeros_like(prompt_mask), comp_mask], dim=1).float(),  # [N, Lp + L]
        group_ids=torch.arange(n, device=device) if group_ids is None else torch.tensor(group_ids, dtype=torch.long, device=device),  # [N]
        rewards=torch.full((n,), float("nan"), device=device),  # [N]
        completions=list(completions),
        examples=list(examples),
    )
