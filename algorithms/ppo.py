"""PPO: Proximal Policy Optimization with a learned value model (DeepSeekMath Sec. 4.1, Eq. 1-2; App. A.1.5).

Paper's row:
    data source    q from the task, o from the current policy          -> ``online``
                   (``data.samples_per_prompt`` outputs per q; 1 is the classic setting)
    reward         model (or rule), with a per-token KL penalty to the reference folded in:
                   r_t = -beta * (log pi_old(o_t) - log pi_ref(o_t)) + [t = last] * r(q, o)   (Eq. 2)
    gradient coef  GC(q, o, t) = A_t, the GAE advantage of a learned value model V_psi

The native objective per token, maximised (Eq. 1), is

    min(rho * A_t, clip(rho, 1 - eps, 1 + eps) * A_t),   rho = pi_theta(o_t) / pi_old(o_t)

Its derivative with respect to log pi_theta(o_t) is the coefficient used here (derived for
``optim.updates_per_batch`` x ``optim.minibatches`` > 1, where rho != 1 after the first update):

    d/d log pi [rho A] = rho A;   d/d log pi [clip(rho) A] = rho A inside [1-eps, 1+eps], 0 outside
    GC = A_t * rho * [rho * A_t <= clip(rho) * A_t]      (the unclipped branch is the min)

Inside the clip range both branches are equal and both give rho * A; outside it the min picks the
clipped (constant) branch exactly when the update would move further in A's direction, and the
gradient is 0. With one update per batch rho = 1 and GC = A_t, the paper's formula.
tests/test_ppo.py checks GC against autograd of the native objective.

Advantages (Generalised Advantage Estimation, Schulman et al. 2016) over completion tokens only:

    delta_t = r_t + gamma * V(s_{t+1}) - V(s_t),   A_t = delta_t + gamma * lam * A_{t+1},
    V(s_{T+1}) = 0 after the last completion token,   returns R_t = A_t + V(s_t)

Token alignment. ``RolloutBatch`` position t holds the quantity of token ``input_ids[:, t]`` given
the tokens before it. The value model's output at position t has read ``input_ids[:, :t+1]``, so
it is the value of the state *after* token t, i.e. of the state in which token t+1 is chosen. The
value of the state s_t in which token t is chosen is therefore the raw output at t - 1:
``state_values`` shifts the value model's output right by one, and from then on every tensor
(values, rewards, advantages, returns) is aligned with ``input_ids`` and ``loss_mask``. Tokens
with ``loss_mask`` 0 between completion tokens (tool output) are not actions: the recursion steps
over them, so V(s_{t+1}) is the value at the next trained token.

Value loss (a separate named term, ``extra_loss``), the clipped form of PPO implementations:

    L_V = vf_coef * mean_t 0.5 * max((V - R)^2, (clip(V, V_old - eps_v, V_old + eps_v) - R)^2)

a mean over the completion tokens of the whole minibatch (every micro-batch's, every rank's: the
runtime aggregates the per-token term). The value model is a separate copy of the policy's backbone with a scalar
head (rlzoo.runtime.models.ValueModel) trained with ``optim.value_lr``.

Departures from the paper:
- The KL penalty is the single-sample estimate log(pi_old / pi_ref) with pi_old the sampling-time
  policy (= pi_theta when the sample was drawn), computed once per batch as is standard.
- The reward is the rule reward by default (``reward.name``); a learned outcome or process reward
  model (``reward.name: orm`` or ``prm``, trained in a reward-model stage, :mod:`rlzoo.reward_models`)
  plugs in the same way. With ``supervision: process`` each step's PRM reward sits on the step's
  last token in place of the outcome score on the last token.
- The value model starts from the policy's weights with a zero-initialised head (the paper does
  not say how its critic is initialised; it is not copied from a reward model, which a rule
  reward would not have).
- Advantages are whitened (masked mean/std over the batch) unless ``whiten_advantages=false``;
  value-loss clipping (``value_clip_eps``) is an implementation detail of PPO codebases, not in the
  paper. Neither is in Eq. 1-2.
- With ``beta = 0`` no reference model is built (``needs`` drops "reference").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F

from rlzoo.config import AT_LEAST_0, POSITIVE, UNIT, allowed
from rlzoo.functional import check_clip, clipped_ratio_coefficient, drop_unscored, masked_mean
from rlzoo.interface import RolloutBatch
from rlzoo.registry import register_algorithm


def state_values(raw: torch.Tensor) -> torch.Tensor:
    """Value-model output [N, T] -> V(s_t) aligned with input_ids: position t gets the output at t - 1.

    raw[:, t] has read tokens 0..t, so it is the value of the state that chooses token t + 1.
    """
    return F.pad(raw[:, :-1], (1, 0))  # [N, T]


def kl_shaped_rewards(scores: torch.Tensor, kl: torch.Tensor, mask: torch.Tensor, beta: float) -> torch.Tensor:
    """Per-token rewards of Eq. 2: -beta * kl on every trained token, the score added on the last one.

    scores [N], kl [N, T] (log pi_old - log pi_ref), mask [N, T] -> rewards [N, T] (0 off the mask)
    """
    t = mask.shape[1]
    positions = torch.arange(t, device=mask.device, dtype=mask.dtype)  # [T]
    last = (mask * (positions + 1)).argmax(-1)  # [N] index of the last trained token
    is_last = F.one_hot(last, t).to(mask.dtype) * mask  # [N, T]
    return (-beta * kl + scores[:, None] * is_last) * mask  # [N, T]


def gae(rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float, lam: float) -> torch.Tensor:
    """Generalised advantage estimates over the trained tokens of each row, right to left.

    rewards, values, mask [N, T] (aligned with input_ids) -> advantages [N, T] (0 off the mask).
    Untrained positions are stepped over: they neither discount nor reset the recursion.
    """
    n, t = rewards.shape
    advantages = torch.zeros_like(rewards)  # [N, T]
    next_value = torch.zeros(n, dtype=rewards.dtype, device=rewards.device)  # [N] V(s_{t+1}), 0 past the end
    next_adv = torch.zeros_like(next_value)  # [N] A_{t+1}
    for i in reversed(range(t)):
        m = mask[:, i] > 0  # [N]
        delta = rewards[:, i] + gamma * next_value - values[:, i]  # [N]
        adv = delta + gamma * lam * next_adv  # [N]
        advantages[:, i] = torch.where(m, adv, torch.zeros_like(adv))
        next_value = torch.where(m, values[:, i], next_value)  # [N]
        next_adv = torch.where(m, adv, next_adv)  # [N]
    return advantages


def whiten(x: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8, reduce_sum=None) -> torch.Tensor:
    """(x - mean) / (std + eps) with mean and (unbiased) std over the masked entries; 0 off the mask.

    ``reduce_sum`` (``runtime.reduce_sum``) sums the statistics over every rank, so the whitening
    uses the global batch's mean and std whatever the process count. The statistics are taken in
    float64, where the mean of equal float32 values is exact: a batch whose advantages are all
    equal (equal scores, V = 0 and lam = 1 at the first step) whitens to exactly 0. In float32 the
    mean of 35 values of 0.7 is one ulp off, the std is ~6e-8, and every token would get about
    0.85 in size, all of one sign: a spurious gradient (GRPO's constant groups had the same defect).
    """
    reduce_sum = reduce_sum or (lambda t: t)
    x64, m64 = x.double(), mask.double()  # [N, T] each
    count, total = reduce_sum(torch.stack([m64.sum(), (x64 * m64).sum()])).unbind()
    mean = total / count.clamp(min=1.0)
    var = reduce_sum((((x64 - mean) * m64) ** 2).sum()) / (count - 1).clamp(min=1.0)
    return ((x64 - mean) / (var.sqrt() + eps) * m64).to(x.dtype)  # [N, T]


@register_algorithm("ppo")
class PPO:
    """GAE advantages of a learned value model, clipped ratio, KL to the reference in the reward."""

    @dataclass
    class Config:
        """PPO hyperparameters (epochs and minibatches are ``optim.updates_per_batch`` / ``optim.minibatches``)."""

        beta: float = allowed(0.04, AT_LEAST_0)  # KL penalty coefficient in the per-token reward (Eq. 2); 0 = no reference model
        gamma: float = allowed(1.0, UNIT)  # discount of GAE
        lam: float = allowed(0.95, UNIT)  # GAE lambda (1 = Monte Carlo returns minus values)
        clip_eps: float = 0.2  # ratio clip epsilon of the policy surrogate
        clip_eps_high: Optional[float] = None  # upper clip (DAPO's clip-higher); None = clip_eps
        value_clip_eps: float = allowed(0.2, POSITIVE)  # clip of the value prediction around the old value
        vf_coef: float = allowed(0.1, AT_LEAST_0)  # weight of the value loss in the total loss
        whiten_advantages: bool = True  # normalise advantages by their masked mean/std over the batch
        supervision: str = allowed("outcome", choices=("outcome", "process"))  # outcome: the reward on the last token; process: a PRM's step rewards on each step's last token

    data_source = "online"
    loss_agg = None
    group_coupled = False
    min_samples_per_prompt = 1

    def __init__(self, cfg: Config) -> None:
        check_clip("ppo", cfg.clip_eps, cfg.clip_eps_high)
        self.cfg = cfg
        needs = {"old_logprobs", "value_model"} | ({"reference"} if cfg.beta > 0 else set())
        self.needs = frozenset(needs | ({"step_rewards"} if cfg.supervision == "process" else set()))  # process: a PRM's step rewards

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        cfg = self.cfg
        batch = drop_unscored(batch)  # a skipped completion (reward None) leaves the batch
        if batch.old_logprobs is None:  # the KL-shaped rewards read log pi_old now, before any update
            batch.old_logprobs = runtime.policy_logprobs(batch)  # [N, T]
        mask = batch.loss_mask  # [N, T]
        with torch.no_grad():
            values = state_values(runtime.values(batch)).float() * mask  # [N, T] V(s_t)
        if cfg.beta > 0:
            kl = (batch.old_logprobs - batch.ref_logprobs) * mask  # [N, T] log pi_old / pi_ref
        else:
            kl = torch.zeros_like(mask)  # [N, T]
        if cfg.supervision == "process":  # each step's reward on its last token, the KL penalty on every token
            rewards = (-cfg.beta * kl + batch.step_rewards * batch.step_ends) * mask  # [N, T]
        else:
            rewards = kl_shaped_rewards(batch.rewards, kl, mask, cfg.beta)  # [N, T]
        advantages = gae(rewards, values, mask, cfg.gamma, cfg.lam)  # [N, T]
        returns = (advantages + values) * mask  # [N, T]
        if cfg.whiten_advantages:
            advantages = whiten(advantages, mask, reduce_sum=runtime.reduce_sum)  # [N, T] over the global batch
        batch.advantages = advantages
        batch.extras["values"] = values
        batch.extras["returns"] = returns
        return batch, {
            "kl/reward_kl": masked_mean(kl, mask),
            "reward/score_mean": float(batch.rewards.mean()),
            "reward/total_mean": float(rewards.sum(-1).mean()),
            "value/old_mean": masked_mean(values, mask),
            "ppo/return_mean": masked_mean(returns, mask),
        }

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        mask = batch.loss_mask  # [N, T]
        coef, parts = clipped_ratio_coefficient(batch.advantages, logp, batch.old_logprobs, cfg.clip_eps, cfg.clip_eps_high)  # [N, T]
        log_ratio = logp - batch.old_logprobs  # [N, T]
        return coef.detach(), {
            "policy/clip_frac": masked_mean(parts["clipped"], mask),
            "policy/ratio_mean": masked_mean(parts["ratio"], mask),
            "ppo/approx_kl": masked_mean(torch.expm1(log_ratio) - log_ratio, mask),  # k3 of KL(pi_old || pi_theta)
        }

    def extra_loss(self, batch: RolloutBatch, runtime) -> tuple[torch.Tensor, dict[str, float]]:
        """The clipped value loss per token, [n, T], weighted by ``vf_coef`` (the runtime averages
        it over the minibatch's trained tokens, every rank's)."""
        cfg = self.cfg
        mask = batch.loss_mask  # [n, T]
        values = state_values(runtime.values(batch)).float()  # [n, T] with grad
        old, returns = batch.extras["values"], batch.extras["returns"]  # [n, T] each
        clipped = old + (values - old).clamp(-cfg.value_clip_eps, cfg.value_clip_eps)  # [n, T]
        err, err_clipped = (values - returns) ** 2, (clipped - returns) ** 2  # [n, T] each
        per_token = 0.5 * torch.maximum(err, err_clipped)  # [n, T]
        v = values.detach()  # [n, T]
        return cfg.vf_coef * per_token, {
            "loss/value": masked_mean(per_token.detach(), mask),
            "value/mean": masked_mean(v, mask),
            "value/clip_frac": masked_mean((err_clipped > err).float(), mask),
            "value/explained_var": explained_variance(v, returns, mask),
        }


def explained_variance(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> float:
    """1 - Var(target - pred) / Var(target) over the masked entries; NaN when Var(target) is 0."""
    count = mask.sum().clamp(min=1.0)

    def var(x: torch.Tensor) -> torch.Tensor:
        mean = (x * mask).sum() / count
        return (((x - mean) * mask) ** 2).sum() / count

    total = var(target)
    return float("nan") if float(total) <= 1e-12 else float(1 - var(target - pred) / total)

