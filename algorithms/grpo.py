"""GRPO: Group Relative Policy Optimization (DeepSeekMath Sec. 4.1, Eq. 3-4; App. A.1.6).

Paper's row:
    data source    q from the task, G outputs per q from the current policy  -> ``online``
    reward         rule (answer correctness) or a reward model              -> ``reward.name``
    gradient coef  GC(q, o, t, pi_ref) = A_hat_{i,t} + beta * (pi_ref(o_t) / pi_theta(o_t) - 1)

Outcome supervision: A_hat_{i,t} = (r_i - mean(r)) / std(r) over the G outputs of one question,
the same for every token of output i. The native objective per token, maximised, is

    min(rho * A, clip(rho, 1 - eps, 1 + eps) * A) - beta * D_KL,
    rho = pi_theta / pi_old,   D_KL = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1   (k3)

Its gradient with respect to log pi_theta(o_t) is the coefficient used here (derived for
``updates_per_batch`` mu >= 1, where rho != 1 after the first update):

    GC = A * rho * [the unclipped branch is the min] + beta * (pi_ref / pi_theta - 1)

With mu = 1 (the paper's setting) rho = 1 and no clip is active, so GC is the paper's formula.
tests/test_grpo.py checks GC against autograd of the native objective.

Departures from the paper: std is the unbiased sample std (as TRL and verl compute it) plus
``std_eps``; ``scale_rewards=false`` drops the division (Dr. GRPO). A group whose rewards are all
equal has A = 0 and contributes no policy gradient (only the KL term); the fraction of such groups
is logged as ``grpo/zero_adv_group_frac``. Process supervision needs a process reward model, which
rlzoo does not ship yet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.functional import clipped_ratio_coefficient, group_sum, masked_mean
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool = True, eps: float = 1e-4):
    """(r - mean_group) / (std_group + eps) per sequence, and the per-sequence "group is constant" flag.

    rewards [N], group_ids [N] -> advantages [N], degenerate [N] bool
    """
    counts, index = group_sum(torch.ones_like(rewards), group_ids)  # [G], [N]
    mean = group_sum(rewards, group_ids)[0] / counts  # [G]
    centred = rewards - mean[index]  # [N]
    var = group_sum(centred**2, group_ids)[0] / (counts - 1).clamp(min=1)  # [G]
    std = var.sqrt()[index]  # [N]
    degenerate = std == 0  # [N] every output of the group got the same reward
    adv = centred / (std + eps) if scale else centred  # [N]
    return torch.where(degenerate, torch.zeros_like(adv), adv), degenerate


@register_algorithm("grpo")
class GRPO(NoExtras):
    """Group-normalised outcome advantages, clipped ratio, k3 KL to the reference in the loss."""

    @dataclass
    class Config:
        """GRPO hyperparameters (the group size G is ``data.samples_per_prompt``)."""

        beta: float = 0.04  # weight of the k3 KL to the reference, in the loss (paper: 0.04)
        clip_eps: float = 0.2  # PPO-style ratio clip epsilon (active only when updates_per_batch > 1)
        clip_eps_high: Optional[float] = None  # upper clip (DAPO's clip-higher); None = clip_eps
        scale_rewards: bool = True  # divide by the group std (false = Dr. GRPO)
        std_eps: float = 1e-4  # added to the std

    data_source = "online"
    loss_agg = None
    group_coupled = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.needs = frozenset({"old_logprobs", "reference"} if cfg.beta > 0 else {"old_logprobs"})

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        scored = ~torch.isnan(batch.rewards)  # [N] a skipped completion (reward None) leaves the group and the loss
        if not bool(scored.all()):
            batch = batch.select(scored.nonzero().squeeze(-1))
        adv, degenerate = group_advantages(batch.rewards, batch.group_ids, self.cfg.scale_rewards, self.cfg.std_eps)  # [N]
        batch.advantages = adv[:, None] * batch.loss_mask  # [N, T]
        degenerate_rows, _ = group_sum(degenerate.float(), batch.group_ids)  # [G] rows of each group that are degenerate
        return batch, {
            "grpo/zero_adv_group_frac": float((degenerate_rows > 0).float().mean()),
            "grpo/adv_abs_mean": float(adv.abs().mean()),
        }

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        mask = batch.loss_mask  # [N, T]
        coef, parts = clipped_ratio_coefficient(batch.advantages, logp, batch.old_logprobs, cfg.clip_eps, cfg.clip_eps_high)  # [N, T]
        metrics = {"policy/clip_frac": masked_mean(parts["clipped"], mask), "policy/ratio_mean": masked_mean(parts["ratio"], mask)}
        if cfg.beta > 0:
            ref_ratio = torch.exp(batch.ref_logprobs - logp)  # [N, T] pi_ref / pi_theta
            coef = coef + cfg.beta * (ref_ratio - 1)  # [N, T]
            k3 = ref_ratio - (batch.ref_logprobs - logp) - 1  # [N, T]
            metrics["kl/k3"] = masked_mean(k3, mask)
        return coef.detach(), metrics
