"""Sampling whose every token depends on its own row only: the same on 1 process or 8.

Hugging Face ``generate`` samples with the global torch RNG, so a row's tokens depend on which
other rows share its batch, on the batch size and on the process count. rlzoo instead gives every
row a 32-bit **seed** (from the run seed, a key that names the question, and the sample index) and
draws its t-th token by inverse-CDF sampling with the uniform number ``u(seed, t)``, a hash of the
two (a counter-based generator, like Philox, with no state to carry or checkpoint). So

* 2 processes sample exactly the tokens 1 process samples (given the same weights), whatever the
  split of questions across ranks, the generation batch size or the order of rows;
* evaluation gives the same Pass@k and Maj@k whatever the process count;
* a resumed run samples what the uninterrupted one sampled, with no RNG state to restore.

:class:`SeededSampler` is a ``LogitsProcessor``: it divides the logits by the temperature, applies
top-p (Hugging Face's ``TopPLogitsWarper``), picks the token by inverse CDF and returns scores that
are ``-inf`` everywhere but there, so ``generate`` runs in greedy mode and takes that token. It also
records, at sampling time, the log-prob of every chosen token under ``softmax(logits / T)``: the
distribution sampled from, before top-p truncation, which is what the training log-prob path
computes (``RolloutBatch.sample_logprobs``). With ``top_p < 1`` the sampled distribution is the
truncated one: that gap is documented in docs/distributed.md. Every token of the vocabulary can
be drawn, the pad id included (with real tokenizers it is often EOS or an ordinary token);
:func:`rlzoo.runtime.generation.completion_mask` finds padding by position, not by id, so a
sampled pad stays in the completion.

Processors a model's own ``generation_config`` could add (a repetition penalty, n-gram bans) would
make the sampled distribution differ from ``logits / T``; :func:`generate` switches the common
ones off explicitly.
"""

from __future__ import annotations

import hashlib
from typing import Sequence

import torch
from transformers import LogitsProcessor, LogitsProcessorList, TopPLogitsWarper

M32 = 0xFFFFFFFF

# processors that a model's generation_config may turn on; all off, so we sample from logits / T
NEUTRAL_PROCESSORS = {"repetition_penalty": 1.0, "no_repeat_ngram_size": 0, "min_new_tokens": 0,
                      "renormalize_logits": False}


def mix_seed(*parts: int | str) -> int:
    """A 32-bit seed from any tuple of ints and strings, the same in every process and run.

    (Python's ``hash`` of a string changes between processes, so a cryptographic hash is used.)

    >>> mix_seed(0, "eval") == mix_seed(0, "eval") != mix_seed(1, "eval")
    True
    """
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=4).digest()
    return int.from_bytes(digest, "little")


def row_seeds(seed: int, keys: Sequence[int], num_samples: int) -> torch.Tensor:
    """[len(keys) * num_samples] seeds of the rows ``(key, j)``, key-major (as ``generate`` lays them out)."""
    return torch.tensor([mix_seed(seed, int(k), j) for k in keys for j in range(num_samples)], dtype=torch.long)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """A bijective 32-bit integer hash (Wellons' lowbias32) of int64 tensors holding uint32 values."""
    x = x & M32
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & M32  # products wrap in int64; the low 32 bits are exact
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & M32
    return x ^ (x >> 16)


def uniforms(seeds: torch.Tensor, counters: torch.Tensor) -> torch.Tensor:
    """[N] float64 numbers in (0, 1), one per (seed, counter) pair: the row's t-th uniform."""
    h = _hash32(seeds ^ _hash32(counters + 0x9E3779B9))  # [N]
    return (h.double() + 0.5) / 2.0**32  # [N]


class SeededSampler(LogitsProcessor):
    """Row-seeded sampling (or greedy decoding at temperature 0) as a logits processor.

    seeds    [B] the rows' seeds (``row_seeds``), in the order of the rows ``generate`` runs
    offsets  [B] tokens each row already has in its completion before this call (tool rounds)
    start    width of the input ids passed to ``generate`` (the first new token is at ``start``)
    """

    def __init__(self, seeds: torch.Tensor, start: int, temperature: float, top_p: float = 1.0,
                 offsets: torch.Tensor | None = None) -> None:
        self.seeds = seeds.long()
        self.offsets = torch.zeros_like(self.seeds) if offsets is None else offsets.long()
        self.start = start
        self.temperature = temperature
        self.top_p = TopPLogitsWarper(top_p) if 0 < temperature and top_p < 1.0 else None
        self.logprobs: list[torch.Tensor] = []  # [B] per generated position

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        logits = scores.float()  # [B, V]
        if self.temperature <= 0:
            chosen = logits.argmax(-1, keepdim=True)  # [B, 1]
            logp = torch.log_softmax(logits, -1)  # [B, V]
        else:
            logits = logits / self.temperature  # [B, V]
            logp = torch.log_softmax(logits, -1)  # [B, V] the distribution the trainer's log-probs use
            kept = self.top_p(input_ids, logits) if self.top_p is not None else logits  # [B, V]
            probs = torch.softmax(kept.double(), -1)  # [B, V]
            cdf = probs.cumsum(-1)  # [B, V]
            counters = self.offsets.to(scores.device) + (input_ids.shape[1] - self.start)  # [B]
            u = uniforms(self.seeds.to(scores.device), counters) * cdf[:, -1]  # [B]
            chosen = torch.searchsorted(cdf, u[:, None], right=True).clamp(max=logits.shape[-1] - 1)  # [B, 1]
        self.logprobs.append(logp.gather(-1, chosen).squeeze(-1))  # [B]
        out = torch.full_like(scores, float("-inf"))  # [B, V]
        return out.scatter_(-1, chosen, 0.0)

    def sampled_logprobs(self, width: int) -> torch.Tensor | None:
        """[B, width] log-probs of the chosen tokens (0 past the recorded ones), or None if none was recorded."""
        if not self.logprobs:
            return None
        lp = torch.stack(self.logprobs, dim=1)[:, :width]  # [B, L]
        return torch.nn.functional.pad(lp, (0, width - lp.shape[1]))  # [B, width]


def generate(model, tokenizer, input_ids: torch.Tensor, attention_mask: torch.Tensor, *, seeds: torch.Tensor,
             temperature: float, top_p: float, max_new_tokens: int, num_return_sequences: int = 1,
             offsets: torch.Tensor | None = None, stopping_criteria=None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``model.generate`` with row-seeded sampling: (new tokens [B, L], sampling-time log-probs [B, L] or None).

    ``seeds`` has one entry per output row (``len(input_ids) * num_return_sequences``); the prompts are
    repeated here (greedy-mode ``generate`` takes no ``num_return_sequences``), prompt-major as
    Hugging Face lays them out.
    """
    kwargs = {"stopping_criteria": stopping_criteria} if stopping_criteria is not None else {}
    if num_return_sequences > 1:
        if input_ids.shape[1] > 1:  # each prompt's keys and values computed once, then handed to its samples
            kwargs.update(_prompt_cache(model, input_ids, attention_mask, num_return_sequences))
        input_ids = input_ids.repeat_interleave(num_return_sequences, dim=0)  # [B, start]
        attention_mask = attention_mask.repeat_interleave(num_return_sequences, dim=0)  # [B, start]
    start = input_ids.shape[1]
    sampler = SeededSampler(seeds, start, temperature, top_p, offsets)
    # synced_gpus=False: each process generates its own rows alone, with whole weights (under
    # parallel: fsdp, gathered first); Hugging Face would otherwise, for a model inside an FSDP
    # module, step every process in lockstep, a collective per token that deadlocks when the
    # processes call generate a different number of times (a process with no question)
    out = model.generate(
        input_ids=input_ids, attention_mask=attention_mask, max_new_tokens=max_new_tokens,
        do_sample=False, temperature=None, top_p=None, top_k=None,
        logits_processor=LogitsProcessorList([sampler]), pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id, synced_gpus=False, **NEUTRAL_PROCESSORS, **kwargs,
    )  # [B, start + L]
    new = out[:, start:]  # [B, L]
    return new, sampler.sampled_logprobs(new.shape[1])


def _prompt_cache(model, input_ids: torch.Tensor, attention_mask: torch.Tensor, copies: int) -> dict:
    """``{cache keyword: a KV cache}`` of every prompt but its last token, computed once per prompt
    and repeated ``copies`` times (the rows ``generate`` will run), so that the prefill of the G
    samples of a prompt is one forward, not G. ``generate`` then runs the last prompt token and
    samples on; the tokens are those of the full prefill (the logits agree up to rounding)."""
    from rlzoo.runtime.logprobs import backbone, cache_keyword, prefix_forward

    body = backbone(model)
    _, cache = prefix_forward(body, input_ids[:, :-1], attention_mask[:, :-1])  # [P, start - 1] each
    if cache is None:  # a model that gave no cache: generate prefills every row itself
        return {}
    cache.batch_repeat_interleave(copies)
    return {cache_keyword(body): cache}
