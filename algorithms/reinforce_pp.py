"""REINFORCE++: REINFORCE with global advantage normalisation (Hu 2025, "REINFORCE++", Sec. 3).

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1):
    data source    q from the task, outputs from the current policy (any number per q)  -> ``online``
    reward         rule or model, with PPO's per-token KL penalty folded in (no value model):
                   r_t = -beta * (log pi_old(o_t) - log pi_ref(o_t)) + [t = last] * r(q, o)   (k1)
    gradient coef  GC = A_t * rho * [unclipped],   A_t = normalise_batch(sum_{s >= t} gamma^(s-t) r_s)
                   the return-to-go of the shaped rewards, whitened over the **whole batch** (every
                   process's tokens), not over a group: no group baseline, no critic

The return is GAE with V = 0 and lambda = 1 (``gae`` of algorithms/ppo.py), and the normalisation is
PPO's whitening (``whiten``) with the statistics summed over processes (``runtime.reduce_sum``), so
2 processes give what 1 gives. The native objective per token is PPO's clipped surrogate
min(rho A, clip(rho) A), whose derivative with respect to log pi_theta is
``clipped_ratio_coefficient`` (derived in algorithms/ppo.py); on-policy rho = 1 and GC = A_t.
tests/test_reinforce_pp.py checks GC against autograd with ratios != 1, and the returns by hand.

Departures from the paper: as PPO here, the KL penalty is the k1 estimate with pi_old the sampling
policy, computed once per batch in ``prepare``; ``whiten_advantages: false`` skips the
normalisation (for checking the returns; the paper always normalises).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.algorithms.ppo import gae, kl_shaped_rewards, whiten
from rlzoo.config import AT_LEAST_0, UNIT, allowed
from rlzoo.functional import check_clip, clipped_ratio_coefficient, drop_unscored, masked_mean
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


@register_algorithm("reinforce_pp")
class ReinforcePP(NoExtras):
    """Returns of KL-shaped token rewards, normalised over the global batch; clipped ratio."""

    @dataclass
    class Config:
        """REINFORCE++ hyperparameters."""

        beta: float = allowed(0.01, AT_LEAST_0)  # k1 KL penalty per token, in the reward; 0 = no reference model
        gamma: float = allowed(1.0, UNIT)  # discount of the return-to-go (paper: 1)
        clip_eps: float = 0.2  # ratio clip epsilon (active only when a batch is reused)
        clip_eps_high: Optional[float] = None  # upper clip; None = clip_eps
        whiten_advantages: bool = True  # normalise over the global batch (the paper: always)

    data_source = "online"
    loss_agg = None
    group_coupled = False

    def __init__(self, cfg: Config) -> None:
        check_clip("reinforce_pp", cfg.clip_eps, cfg.clip_eps_high)
        self.cfg = cfg
        self.needs = frozenset({"old_logprobs"} | ({"reference"} if cfg.beta > 0 else set()))

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        cfg = self.cfg
        batch = drop_unscored(batch)
        if batch.old_logprobs is None:  # the KL-shaped rewards read log pi_old now, before any update
            batch.old_logprobs = runtime.policy_logprobs(batch)  # [N, T]
        mask = batch.loss_mask  # [N, T]
        kl = (batch.old_logprobs - batch.ref_logprobs) * mask if cfg.beta > 0 else torch.zeros_like(mask)  # [N, T] k1
        rewards = kl_shaped_rewards(batch.rewards, kl, mask, cfg.beta)  # [N, T]
        returns = gae(rewards, torch.zeros_like(rewards), mask, cfg.gamma, 1.0)  # [N, T] sum_{s>=t} gamma^(s-t) r_s
        batch.advantages = whiten(returns, mask, reduce_sum=runtime.reduce_sum) if cfg.whiten_advantages else returns  # [N, T]
        return batch, {"kl/reward_kl": masked_mean(kl, mask), "reinforce_pp/return_mean": masked_mean(returns, mask)}

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        coef, parts = clipped_ratio_coefficient(batch.advantages, logp, batch.old_logprobs, self.cfg.clip_eps, self.cfg.clip_eps_high)  # [n, T]
        mask = batch.loss_mask  # [n, T]
        return coef.detach(), {"policy/clip_frac": masked_mean(parts["clipped"], mask), "policy/ratio_mean": masked_mean(parts["ratio"], mask)}
