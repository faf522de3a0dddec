"""GSPO: Group Sequence Policy Optimization (Zheng et al. 2025, Qwen team, Sec. 4, Eq. 5-7).

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1):
    data source    as GRPO: q from the task, G outputs per q from the current policy  -> ``online``
    reward         as GRPO: rule (answer correctness) or a reward model
    gradient coef  GC_{i,t} = A_i * s_i * [the unclipped branch is the min]   (same for every token of o_i)
                   with a *sequence-level*, length-normalised importance ratio instead of GRPO's
                   per-token one, clipped per sequence, and no KL term

The ratio of output i is the geometric mean of its tokens' ratios,

    s_i = (pi_theta(o_i) / pi_old(o_i))^(1/|o_i|) = exp(1/|o_i| sum_t (log pi_theta(o_t) - log pi_old(o_t)))

and the native objective, maximised, is one clipped term per sequence averaged over the sequences:

    J = 1/N sum_i min(s_i A_i, clip(s_i, 1 - eps_low, 1 + eps_high) A_i),   A_i = GRPO's (r_i - mean) / std

Its derivative with respect to log pi_theta(o_t) of output i: ds_i / d log pi(o_t) = s_i / |o_i|, and
the clipped branch is constant outside the clip range, so

    dJ / d log pi(o_t) = 1/N * 1/|o_i| * A_i * s_i * [s_i A_i <= clip(s_i) A_i]

which is exactly the gradient of the runtime's ``seq-mean-token-mean`` loss 1/N sum_i 1/|o_i| sum_t
GC * log pi with GC = A_i s_i [unclipped]: the aggregation the coefficient is derived for, so it is
pinned (``loss_agg``). (Under ``seq-mean-token-sum`` the same gradient is GC = A_i s_i [.] / |o_i|.)
With one update per batch s_i = 1, nothing is clipped and GC = A_i. tests/test_gspo.py checks GC
against autograd of J with ratios != 1 and clipped sequences.

A_i is a group statistic: it is computed in ``prepare`` on whole groups and stored per row
(``extras["seq_advantages"]``); s_i is a statistic of one row, which a micro-batch always holds whole.

Departures from the paper: none in the objective (GSPO has no KL term). Defaults are the paper's
clip range (3e-4, 4e-4); the std is GRPO's unbiased std plus ``std_eps``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlzoo.algorithms.grpo import group_advantages
from rlzoo.config import AT_LEAST_0, allowed
from rlzoo.functional import check_clip, clipped_ratio_coefficient, drop_unscored
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


@register_algorithm("gspo")
class GSPO(NoExtras):
    """GRPO's advantages with a length-normalised sequence ratio, clipped per sequence."""

    @dataclass
    class Config:
        """GSPO hyperparameters (the group size G is ``data.samples_per_prompt``)."""

        clip_eps: float = 3e-4  # lower clip of the sequence ratio (paper: 3e-4)
        clip_eps_high: float = 4e-4  # upper clip of the sequence ratio (paper: 4e-4)
        std_eps: float = allowed(1e-4, AT_LEAST_0)  # added to the group std

    data_source = "online"
    needs = frozenset({"old_logprobs"})
    loss_agg = "seq-mean-token-mean"  # GC = A s [.] is the gradient of J under 1/N sum_i 1/|o_i| sum_t
    group_coupled = False
    min_samples_per_prompt = 2  # one output per question is its own group mean

    def __init__(self, cfg: Config) -> None:
        check_clip("gspo", cfg.clip_eps, cfg.clip_eps_high)
        self.cfg = cfg

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        batch = drop_unscored(batch)
        adv, _ = group_advantages(batch.rewards, batch.group_ids, True, self.cfg.std_eps)  # [N] whole groups here
        batch.extras["seq_advantages"] = adv  # [N]
        batch.advantages = adv[:, None] * batch.loss_mask  # [N, T]
        return batch, {"gspo/adv_abs_mean": float(adv.abs().mean())}

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        mask = batch.loss_mask  # [n, T]
        log_s = ((logp - batch.old_logprobs) * mask).sum(-1) / mask.sum(-1).clamp(min=1)  # [n] log s_i
        adv = batch.extras["seq_advantages"]  # [n]
        coef, parts = clipped_ratio_coefficient(adv[:, None], log_s[:, None], torch.zeros_like(log_s[:, None]),
                                                self.cfg.clip_eps, self.cfg.clip_eps_high)  # [n, 1] A s [unclipped]
        return (coef * mask).detach(), {"policy/clip_frac": float(parts["clipped"].mean()),  # share of sequences
                                        "gspo/seq_ratio_mean": float(parts["ratio"].mean())}
