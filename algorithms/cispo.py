"""CISPO: Clipped IS-weight Policy Optimization (MiniMax-M1, MiniMax 2025, Sec. 3.1, Eq. 4-5).

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1):
    data source    as GRPO: q from the task, G outputs per q from the current policy  -> ``online``
    reward         as GRPO: rule (answer correctness) or a reward model
    gradient coef  GC_{i,t} = sg(clip(rho_t, 1 - eps_low, 1 + eps_high)) * A_i,   rho_t = pi_theta / pi_old
                   the importance weight is clipped, not the update: every token keeps a gradient
                   (PPO/GRPO's clip zeroes the gradient of a token outside the range), and no KL term

The native objective, maximised, is REINFORCE with a clipped, stop-gradient importance weight,
normalised by the batch's tokens:

    J = 1 / sum_i |o_i| * sum_i sum_t sg(clip(rho_{i,t})) * A_i * log pi_theta(o_t)

The weight is a constant of the gradient, so dJ / d log pi(o_t) = sg(clip(rho_t)) A_i / sum |o|: the
coefficient above under ``token-mean``, the aggregation the paper's J uses (pinned). On-policy
rho = 1 and GC = A_i. tests/test_cispo.py checks GC against autograd of J with ratios != 1.

A_i is GRPO's group-normalised reward, computed in ``prepare`` on whole groups.

Departures from the paper: the paper's optional token mask M_{i,t} (its unified form with PPO's
trust region) is not implemented; ``clip_eps_low`` null is the paper's "no lower bound" (it sets
eps_low large and tunes only eps_high); the default eps_high 0.28 is DAPO's clip-higher value, a
starting point, not the paper's (which is not given).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.algorithms.grpo import group_advantages
from rlzoo.config import AT_LEAST_0, POSITIVE, UNIT, allowed
from rlzoo.functional import drop_unscored, masked_mean
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


@register_algorithm("cispo")
class CISPO(NoExtras):
    """GRPO's advantages times a clipped, stop-gradient importance weight on every token."""

    @dataclass
    class Config:
        """CISPO hyperparameters (the group size G is ``data.samples_per_prompt``)."""

        clip_eps_low: Optional[float] = allowed(None, UNIT)  # weight floor 1 - eps_low; null = no lower bound (the paper)
        clip_eps_high: float = allowed(0.28, POSITIVE)  # weight ceiling 1 + eps_high (the one the paper tunes)
        std_eps: float = allowed(1e-4, AT_LEAST_0)  # added to the group std

    data_source = "online"
    needs = frozenset({"old_logprobs"})
    loss_agg = "token-mean"  # J's normaliser: every token of the batch weighs the same
    group_coupled = False
    min_samples_per_prompt = 2  # one output per question is its own group mean

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        batch = drop_unscored(batch)
        adv, _ = group_advantages(batch.rewards, batch.group_ids, True, self.cfg.std_eps)  # [N] whole groups here
        batch.advantages = adv[:, None] * batch.loss_mask  # [N, T]
        return batch, {"cispo/adv_abs_mean": float(adv.abs().mean())}

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg, mask = self.cfg, batch.loss_mask  # [n, T]
        ratio = torch.exp(logp - batch.old_logprobs)  # [n, T]
        low = None if cfg.clip_eps_low is None else 1 - cfg.clip_eps_low
        weight = ratio.clamp(min=low, max=1 + cfg.clip_eps_high)  # [n, T] sg(clip(rho))
        return (weight * batch.advantages).detach(), {
            "policy/ratio_mean": masked_mean(ratio, mask),
            "policy/clip_frac": masked_mean((weight != ratio).float(), mask),  # tokens whose weight was clipped (they keep a gradient)
        }
