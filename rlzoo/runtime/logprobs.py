"""The single token log-prob path, shared by SFT, every RL algorithm, the reference and evaluation.

``token_logprobs`` returns log pi(x_t | x_<t) for every position of a left-padded batch without
materialising a [N, T, V] log-softmax: the backbone's hidden states go through the output layer in
chunks of rows, and each chunk's log-prob is ``logit[target] - logsumexp(logits)``. Under autograd
each chunk is checkpointed, so only the hidden states are kept for backward and the chunk's logits
are recomputed there: peak memory grows with ``chunk_size * V`` instead of ``N * T * V``.

Assumption: the model is a Hugging Face causal LM whose logits are ``lm_head(hidden)`` (true of
Llama, Qwen, Mistral, GPT-2...). Models that post-process logits (Gemma's soft-capping) should set
``chunk_size=0``, which runs the plain forward and takes log-probs from its logits.

With ``prefix_len`` (what the runtime passes: the first column any row trains on), the prompt
columns are not scored, and a prompt that several rows share (the G samples of one question) is
run once, its keys and values gathered to each of its rows.

Under autocast (``mixed_precision: bf16``) the backbone and the head's matmul run in bf16; the
log-softmax is taken in fp32.
"""

from __future__ import annotations

import inspect

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.utils.checkpoint import checkpoint


def backbone(lm: torch.nn.Module) -> torch.nn.Module:
    """The transformer of a causal LM, without its output head (through a peft wrapper too)."""
    return lm.get_decoder() if hasattr(lm, "get_decoder") else lm.base_model


def position_ids_from_mask(attention_mask: Tensor) -> Tensor:
    """[N, T] positions that ignore left padding, as Hugging Face generation computes them."""
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)  # [N, T]


def _chunk_logprobs(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    logits = F.linear(hidden, weight, bias).float()  # [M, V]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [M]
    return picked - torch.logsumexp(logits, dim=-1)  # [M]


def token_logprobs(
    model: torch.nn.Module,
    input_ids: Tensor,
    attention_mask: Tensor,
    *,
    chunk_size: int = 4096,
    temperature: float = 1.0,
    prefix_len: int = 0,
) -> Tensor:
    """[N, T] log-prob of each token given the tokens before it; column 0 is 0.

    ``model`` is the Hugging Face causal LM itself; the runtime calls this inside the forward of
    :class:`rlzoo.runtime.models.LogProbModel`, so that DDP, FSDP and autocast see every pass.
    ``temperature`` divides the logits (the sampling temperature, for the log-probs of sampled
    tokens to be those of the distribution they were drawn from).

    ``prefix_len = P > 1`` says that no log-prob before column P is wanted (they come back 0): the
    columns before P hold prompts, which rows of one group share. Each distinct prefix is then run
    once, and its keys and values are handed to the rows that share it (a KV cache, gathered by
    row), so the G samples of a question pay for their prompt once, in the forward and, under
    autograd, in the backward (its gradient is the sum over the rows, as it is when every row runs
    the prompt itself). Equal to the full pass up to floating-point rounding. Without sharing (every
    prefix distinct), or with grad under gradient checkpointing (which runs without a cache), the
    full pass runs.
    """
    n, t = input_ids.shape
    p = prefix_len
    checkpointed = torch.is_grad_enabled() and _checkpointed(model)  # recomputed in backward: no cache to hand on
    if 1 < p < t and not checkpointed and bool(attention_mask[:, p - 1].all()):
        head = torch.cat([input_ids[:, :p], attention_mask[:, :p].to(input_ids.dtype)], dim=1)  # [N, 2P]
        unique, rows = torch.unique(head, dim=0, return_inverse=True)  # [U, 2P], [N]
        if len(unique) < n:
            logp = _shared_prefix_logprobs(model, input_ids, attention_mask, unique, rows, chunk_size, temperature)
            if logp is not None:
                return logp
    position_ids = position_ids_from_mask(attention_mask)  # [N, T]
    targets = input_ids[:, 1:]  # [N, T-1]
    if chunk_size <= 0:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logp = _logits_logprobs(logits[:, :-1], targets, temperature)  # [N, T-1]
    else:
        hidden = backbone(model)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state[:, :-1]  # [N, T-1, H]
        logp = _head_logprobs(model, hidden, targets, chunk_size, temperature)  # [N, T-1]
    return F.pad(logp, (1, 0))  # [N, T]


def _logits_logprobs(logits: Tensor, targets: Tensor, temperature: float) -> Tensor:
    """[N, L] log-probs of ``targets`` [N, L] under ``logits`` [N, L, V] / temperature, in fp32."""
    logits = logits.float() / temperature  # [N, L, V]
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, L]
    return picked - torch.logsumexp(logits, dim=-1)  # [N, L]


def _head_logprobs(model: torch.nn.Module, hidden: Tensor, targets: Tensor, chunk_size: int, temperature: float) -> Tensor:
    """[N, L] log-probs of ``targets`` from the hidden states [N, L, H] before them, through the
    output layer ``chunk_size`` rows at a time (each chunk checkpointed under autograd)."""
    head = model.get_output_embeddings()
    weight = head.weight if temperature == 1.0 else head.weight / temperature  # [V, H]
    bias = head.bias if head.bias is None or temperature == 1.0 else head.bias / temperature
    n, t, h = hidden.shape
    flat_hidden = hidden.reshape(n * t, h)  # [N*L, H]
    flat_targets = targets.reshape(n * t)  # [N*L]
    pieces = []
    for start in range(0, n * t, chunk_size):
        args = (flat_hidden[start : start + chunk_size], weight, bias, flat_targets[start : start + chunk_size])
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(*args))
    return torch.cat(pieces).reshape(n, t)  # [N, L]


def _shared_prefix_logprobs(model: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, prefixes: Tensor,
                            rows: Tensor, chunk_size: int, temperature: float) -> Tensor | None:
    """[N, T] log-probs of columns P.. (0 before) with each of the U distinct ``prefixes`` (their
    ids then their mask, [U, 2P]) run once; ``rows`` [N] is the prefix of each row. None when the
    model gave no cache (the caller then runs the full pass)."""
    t = input_ids.shape[1]
    p = prefixes.shape[1] // 2
    plain = chunk_size <= 0  # the whole LM and its logits, else the backbone and the chunked head
    runner = model if plain else backbone(model)
    out, cache = prefix_forward(runner, prefixes[:, :p], prefixes[:, p:].to(attention_mask.dtype),
                                **({"logits_to_keep": 1} if plain else {}))
    if cache is None:
        return None
    cache.batch_select_indices(rows)  # every row gets its prefix's keys and values
    position_ids = position_ids_from_mask(attention_mask)  # [N, T]
    rest = runner(input_ids=input_ids[:, p:], attention_mask=attention_mask, position_ids=position_ids[:, p:],
                  use_cache=True, cache_position=torch.arange(p, t, device=input_ids.device),
                  **{cache_keyword(backbone(model)): cache})
    targets = input_ids[:, p:]  # [N, T-P]
    if plain:
        logits = torch.cat([out.logits[:, -1:][rows], rest.logits[:, :-1]], dim=1)  # [N, T-P, V]
        logp = _logits_logprobs(logits, targets, temperature)  # [N, T-P]
    else:
        hidden = torch.cat([out.last_hidden_state[:, -1:][rows], rest.last_hidden_state[:, :-1]],
                           dim=1)  # [N, T-P, H]: the states before tokens P..T-1
        logp = _head_logprobs(model, hidden, targets, chunk_size, temperature)  # [N, T-P]
    return F.pad(logp, (p, 0))  # [N, T]


def prefix_forward(runner: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, **kwargs):
    """(output, KV cache or None) of a cached forward of left-padded prefixes through ``runner``
    (a causal LM or its backbone): what the shared-prompt pass and generation's prefill start from."""
    out = runner(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask),
                 use_cache=True, **kwargs)
    return out, cache_of(out)


def cache_keyword(body: torch.nn.Module) -> str:
    """The keyword a model's forward takes a KV cache by: ``cache`` (transformers 5) or ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


def cache_of(out):
    """The KV cache a forward returned (``cache`` in transformers 5, ``past_key_values`` before), or None."""
    cache = out.get("cache")
    return out.get("past_key_values") if cache is None else cache


def _checkpointed(model: torch.nn.Module) -> bool:
    """Whether the model recomputes activations in backward (it then runs without a KV cache)."""
    flag = getattr(model, "is_activation_checkpointing", None)  # transformers 5; is_gradient_checkpointing before
    return bool(getattr(model, "is_gradient_checkpointing", False) if flag is None else flag)
