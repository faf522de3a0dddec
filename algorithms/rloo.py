"""RLOO: REINFORCE Leave-One-Out (Kool et al. 2019; Ahmadian et al. 2024, "Back to Basics", Sec. 3.2).

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1):
    data source    as GRPO: q from the task, k outputs per q from the current policy  -> ``online``
    reward         as GRPO: rule (answer correctness) or a reward model
    gradient coef  GC = A_i * rho * [unclipped],   A_i = r_i - 1/(k-1) sum_{j != i} r_j
                   the baseline of output i is the mean reward of the *other* outputs of its
                   question (unbiased: it does not depend on o_i), not divided by any std

Since sum_{j != i} r_j = k mean(r) - r_i, the leave-one-out advantage is the centred reward scaled
by k / (k - 1):   A_i = r_i - (k mean(r) - r_i) / (k - 1) = k / (k - 1) * (r_i - mean(r)).
It is a statistic of the whole group, so it is computed in ``prepare`` (a question's outputs are
never split there) and read per row in ``coefficients`` (right for any micro-batching).

The native objective per token, maximised, is PPO's clipped surrogate min(rho A, clip(rho) A); its
derivative with respect to log pi_theta is ``clipped_ratio_coefficient`` (algorithms/ppo.py
derives it). With one update per batch (the paper's on-policy REINFORCE) rho = 1 and GC = A_i,
the REINFORCE coefficient. tests/test_rloo.py checks GC against autograd with ratios != 1.

Departures from the paper: Ahmadian et al. subtract a sequence-level KL to the reference from the
reward; this file has no KL term (add one with a reward, or use GRPO's ``beta``). The ratio and
clip are TRL's RLOOTrainer's, active only when a batch is reused (``updates_per_batch`` > 1). The
paper's REINFORCE sums token log-probs (``optim.loss_agg: seq-mean-token-sum``); the aggregation is
left to ``optim.loss_agg`` (default: DeepSeekMath's seq-mean-token-mean). A skipped reward (None)
leaves the batch first, so k counts the scored outputs; a group with one scored output, or whose
rewards are all equal, gets A = 0 exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.algorithms.grpo import group_advantages
from rlzoo.functional import check_clip, clipped_ratio_coefficient, drop_unscored, group_sum, masked_mean
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


def leave_one_out_advantages(rewards: torch.Tensor, group_ids: torch.Tensor) -> torch.Tensor:
    """r_i minus the mean of the other rewards of its group, = k / (k-1) * (r_i - mean), per row.

    rewards [N] (all scored), group_ids [N] -> advantages [N]; 0 in a group of one or of equal rewards.

    >>> # group 0: 1, 0, 0, 1 -> 1 - (0+0+1)/3 = 2/3, 0 - 2/3, ... | group 1: 3, 1 -> 3 - 1 = 2, -2
    >>> leave_one_out_advantages(torch.tensor([1., 0., 0., 1., 3., 1.]), torch.tensor([0, 0, 0, 0, 1, 1]))
    tensor([ 0.6667, -0.6667, -0.6667,  0.6667,  2.0000, -2.0000])
    """
    counts, index = group_sum(torch.ones_like(rewards), group_ids)  # [G], [N] outputs per group
    centred, _ = group_advantages(rewards, group_ids, scale=False)  # [N] r - mean, exactly 0 in constant groups
    k = counts[index]  # [N]
    return centred * k / (k - 1).clamp(min=1)  # [N]


@register_algorithm("rloo")
class RLOO(NoExtras):
    """Leave-one-out baseline, REINFORCE coefficient (clipped ratio when a batch is reused)."""

    @dataclass
    class Config:
        """RLOO hyperparameters (the group size k is ``data.samples_per_prompt``)."""

        clip_eps: float = 0.2  # ratio clip epsilon (active only when a batch is reused)
        clip_eps_high: Optional[float] = None  # upper clip; None = clip_eps

    data_source = "online"
    needs = frozenset({"old_logprobs"})
    loss_agg = None
    group_coupled = False
    min_samples_per_prompt = 2  # one output has no other outputs to be its baseline

    def __init__(self, cfg: Config) -> None:
        check_clip("rloo", cfg.clip_eps, cfg.clip_eps_high)
        self.cfg = cfg

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        batch = drop_unscored(batch)  # a skipped completion leaves its group's baseline and the loss
        adv = leave_one_out_advantages(batch.rewards, batch.group_ids)  # [N] whole groups here
        batch.advantages = adv[:, None] * batch.loss_mask  # [N, T]
        return batch, {"rloo/adv_abs_mean": float(adv.abs().mean())}

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        coef, parts = clipped_ratio_coefficient(batch.advantages, logp, batch.old_logprobs, self.cfg.clip_eps, self.cfg.clip_eps_high)  # [n, T]
        mask = batch.loss_mask  # [n, T]
        return coef.detach(), {"policy/clip_frac": masked_mean(parts["clipped"], mask), "policy/ratio_mean": masked_mean(parts["ratio"], mask)}
