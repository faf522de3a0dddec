"""Building blocks that several algorithms' coefficients share, written once.

* :func:`masked_mean` for diagnostics over trained tokens: a :class:`TokenMean`, which carries its
  token count, so that every reduction of it (over micro-batches, over processes) weights it by
  tokens;
* :func:`drop_unscored`, the rows of a batch whose reward was skipped (NaN) removed;
* :func:`group_sum`, the one group reduction (GRPO's group statistics, DPO's pairs, RFT's solved
  questions);
* :func:`clipped_ratio_coefficient`, the derivative of PPO's clipped surrogate with respect to
  log pi_theta (GRPO and PPO), with DAPO's clip-higher, and :func:`check_clip`, its settings'
  ranges.
"""

from __future__ import annotations

import torch
from torch import Tensor


class TokenMean(float):
    """A mean over tokens that carries the number of tokens it averages (``tokens``).

    It is a float everywhere a float is read (logs, arithmetic: the result of arithmetic is a
    plain float). The reductions of diagnostics (the trainer's over micro-batches,
    :class:`~rlzoo.runtime.distributed.MetricsReducer`'s over processes) weight a TokenMean by
    its ``tokens`` instead of by rows, so a mean over tokens is the same whatever the split of
    the batch into micro-batches and processes.

    >>> m = TokenMean(0.5, 4.0)
    >>> m == 0.5, m.tokens
    (True, 4.0)
    """

    tokens: float

    def __new__(cls, value: float, tokens: float) -> "TokenMean":
        out = super().__new__(cls, value)
        out.tokens = float(tokens)
        return out

    def __reduce__(self):  # pickled (gathered over processes) with its token count
        return TokenMean, (float(self), self.tokens)


def masked_mean(x: Tensor, mask: Tensor) -> TokenMean:
    """Mean of ``x`` [N, T] over the entries where ``mask`` [N, T] is 1 (0 when there are none),
    carrying the number of those entries (:class:`TokenMean`)."""
    tokens = mask.sum()
    return TokenMean(float((x * mask).sum() / tokens.clamp(min=1)), float(tokens))


def drop_unscored(batch):
    """``batch`` without the rows whose reward is NaN (a skipped completion: the reward returned
    None), which then leave the group statistics and the loss; the batch itself when none is."""
    scored = ~torch.isnan(batch.rewards)  # [N]
    return batch if bool(scored.all()) else batch.select(scored.nonzero().squeeze(-1))


def group_sum(values: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor]:
    """Per-group sums of ``values`` [N] and each row's group index.

    group ids are any integers (a question's stream position); groups are numbered 0..G-1 in
    increasing id order. Returns ``sums`` [G] and ``index`` [N] (``sums[index]`` is each row's
    group sum).

    >>> group_sum(torch.tensor([1.0, 2.0, 3.0]), torch.tensor([7, 9, 7]))
    (tensor([4., 2.]), tensor([0, 1, 0]))
    """
    _, index = torch.unique(group_ids, return_inverse=True)  # [N]
    num_groups = int(index.max()) + 1 if len(index) else 0
    sums = torch.zeros(num_groups, dtype=values.dtype, device=values.device).index_add_(0, index, values)  # [G]
    return sums, index


def clipped_ratio_coefficient(adv: Tensor, logp: Tensor, old_logp: Tensor, eps_low: float,
                              eps_high: float | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """d/d log pi_theta of ``min(rho * A, clip(rho, 1 - eps_low, 1 + eps_high) * A)``, per token.

    rho = pi_theta / pi_old. The unclipped term's derivative is rho * A; the clipped term's is
    rho * A inside the clip range and 0 outside. The min takes the unclipped term unless the
    clipped one is strictly smaller, so

        GC = A * rho * [rho * A <= clip(rho) * A]

    adv, logp, old_logp [N, T] -> coef [N, T], and ``ratio`` / ``clipped`` [N, T] (1.0 where the
    clipped term was taken) for diagnostics. ``eps_high`` None means ``eps_low`` (symmetric clip).
    """
    ratio = torch.exp(logp - old_logp)  # [N, T]
    clipped = ratio.clamp(1 - eps_low, 1 + (eps_low if eps_high is None else eps_high))  # [N, T]
    active = (ratio * adv <= clipped * adv).to(ratio.dtype)  # [N, T] the unclipped branch is the min
    return adv * ratio * active, {"ratio": ratio, "clipped": 1 - active}


def check_clip(algorithm: str, eps_low: float, eps_high: float | None) -> None:
    """``algorithms.<algorithm>.clip_eps`` in (0, 1) (the lower clip 1 - eps stays a positive
    ratio) and ``clip_eps_high``, when set, at least ``clip_eps`` (DAPO's clip-higher widens the
    upper side only); a one-line ConfigError otherwise."""
    from rlzoo.config import Range, check_range
    from rlzoo.errors import ConfigError

    check_range(f"algorithms.{algorithm}.clip_eps", eps_low, Range(0, 1, lo_open=True, hi_open=True))
    if eps_high is not None and not eps_high >= eps_low:
        raise ConfigError(f"algorithms.{algorithm}.clip_eps_high={eps_high!r} is less than clip_eps={eps_low!r} "
                          "(clip-higher only widens the upper side; null = clip_eps)")
