"""The one surrogate loss and its aggregation modes.

Every algorithm's policy gradient is the gradient of

    L = -aggregate(coef * logp, loss_mask, mode)

with ``coef`` detached: d L / d logp[i, t] = -coef[i, t] * w[i, t], where the weight w is fixed by
the aggregation mode. The modes (verl's ``loss_agg_mode`` names, where they exist):

    seq-mean-token-mean   1/N sum_i 1/|o_i| sum_t x[i,t]   the DeepSeekMath paper's form (default)
    seq-mean-token-sum    1/N sum_i sum_t x[i,t]           summed over tokens (DPO's summed ratio)
    seq-mean-token-sum-norm 1/N sum_i sum_t x[i,t] / C     constant normaliser C (Dr. GRPO)
    token-mean            sum_{i,t} x[i,t] / sum_i |o_i|   every token of the batch weighs the same
    sum                   sum_{i,t} x[i,t]                 no normalisation

When a batch is split into micro-batches for gradient accumulation, pass the whole batch's
``num_seqs`` and ``num_tokens`` so that the sum of the micro-batch losses equals the loss of the
whole batch exactly (tests/test_losses.py checks 1 x 8 against 8 x 1).
"""

from __future__ import annotations

import torch
from torch import Tensor

AGG_MODES = (
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "token-mean",
    "sum",
)


def aggregate(
    x: Tensor,
    mask: Tensor,
    mode: str = "seq-mean-token-mean",
    *,
    num_seqs: float | None = None,
    num_tokens: float | None = None,
    constant: float | None = None,
) -> Tensor:
    """Reduce per-token values ``x`` [N, T] under ``mask`` [N, T] to a scalar by ``mode``.

    ``num_seqs`` / ``num_tokens`` default to this batch's counts; give the full batch's counts
    when ``x`` is one micro-batch of it. ``constant`` is the normaliser of
    ``seq-mean-token-sum-norm`` (required there).

    >>> x = torch.tensor([[1., 1., 0.], [3., 0., 0.]]); m = torch.tensor([[1., 1., 0.], [1., 0., 0.]])
    >>> float(aggregate(x, m))          # (1/2) * ((1+1)/2 + 3/1)
    2.0
    >>> float(aggregate(x, m, "token-mean"))  # (1+1+3)/3
    1.6666666666666667
    """
    mask = mask.to(x.dtype)  # [N, T]
    masked = x * mask  # [N, T]
    n = float(x.shape[0]) if num_seqs is None else float(num_seqs)
    if mode == "seq-mean-token-mean":
        lengths = mask.sum(-1).clamp(min=1.0)  # [N]
        return (masked.sum(-1) / lengths).sum() / n
    if mode == "seq-mean-token-sum":
        return masked.sum() / n
    if mode == "seq-mean-token-sum-norm":
        if constant is None:
            raise ValueError("aggregation 'seq-mean-token-sum-norm' needs a constant normaliser")
        return masked.sum() / (n * constant)
    if mode == "token-mean":
        tokens = mask.sum() if num_tokens is None else torch.as_tensor(float(num_tokens))
        return masked.sum() / tokens.clamp(min=1.0)
    if mode == "sum":
        return masked.sum()
    raise ValueError(f"unknown aggregation mode '{mode}'; known: {', '.join(AGG_MODES)}")


def surrogate_loss(coef: Tensor, logp: Tensor, mask: Tensor, mode: str, **normalisers: float | None) -> Tensor:
    """``-aggregate(coef * logp)`` with ``coef`` [N, T] detached: the single policy loss.

    Its gradient with respect to the parameters is the paper's unified form
    ``-sum_{i,t} w[i,t] * GC[i,t] * grad log pi(o_t)``, with w the mode's weight.
    """
    if coef.requires_grad:
        raise ValueError("gradient coefficients must be detached (they are constants of the loss)")
    return -aggregate(coef * logp, mask, mode, **normalisers)  # scalar
