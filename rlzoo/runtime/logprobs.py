"""The single token log-prob path, shared by SFT, every RL algorithm, the reference and evaluation.

``token_logprobs`` returns log pi(x_t | x_<t) for every position of a left-padded batch without
materialising a [N, T, V] log-softmax: the backbone's hidden states go through the output layer in
chunks of rows, and each chunk's log-prob is ``logit[target] - logsumexp(logits)``. Under autograd
each chunk is checkpointed, so only the hidden states are kept for backward and the chunk's logits
are recomputed there: peak memory grows with ``chunk_size * V`` instead of ``N * T * V``.

Assumption: the model is a Hugging Face causal LM whose logits are ``lm_head(hidden)`` (true of
Llama, Qwen, Mistral, GPT-2...). Models that post-process logits (Gemma's soft-capping) should set
``chunk_size=0``, which runs the plain forward and takes log-probs from its logits.

Under autocast (``mixed_precision: bf16``) the backbone and the head's matmul run in bf16; the
log-softmax is taken in fp32.
"""

from __future__ import annotations

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
) -> Tensor:
    """[N, T] log-prob of each token given the tokens before it; column 0 is 0.

    ``model`` is the Hugging Face causal LM itself; the runtime calls this inside the forward of
    :class:`rlzoo.runtime.models.LogProbModel`, so that DDP, FSDP and autocast see every pass.
    ``temperature`` divides the logits (the sampling temperature, for the log-probs of sampled
    tokens to be those of the distribution they were drawn from).
    """
    position_ids = position_ids_from_mask(attention_mask)  # [N, T]
    targets = input_ids[:, 1:]  # [N, T-1]
    if chunk_size <= 0:
        logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids).logits
        logits = logits[:, :-1].float() / temperature  # [N, T-1, V]
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # [N, T-1]
        logp = picked - torch.logsumexp(logits, dim=-1)  # [N, T-1]
    else:
        hidden = backbone(model)(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids
        ).last_hidden_state[:, :-1]  # [N, T-1, H]
        head = model.get_output_embeddings()
        weight = head.weight if temperature == 1.0 else head.weight / temperature  # [V, H]
        bias = head.bias if head.bias is None or temperature == 1.0 else head.bias / temperature
        n, t, h = hidden.shape
        flat_hidden = hidden.reshape(n * t, h)  # [N*(T-1), H]
        flat_targets = targets.reshape(n * t)  # [N*(T-1)]
        pieces = []
        for start in range(0, n * t, chunk_size):
            args = (flat_hidden[start : start + chunk_size], weight, bias, flat_targets[start : start + chunk_size])
            if torch.is_grad_enabled():
                pieces.append(checkpoint(_chunk_logprobs, *args, use_reentrant=False))
            else:
                pieces.append(_chunk_logprobs(*args))
        logp = torch.cat(pieces).reshape(n, t)  # [N, T-1]
    return F.pad(logp, (1, 0))  # [N, T]
