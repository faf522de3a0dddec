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

Process supervision (Sec. 4.1.3, ``supervision: process``): a process reward model scores the end
of every reasoning step (:mod:`rlzoo.reward_models.steps`, :mod:`rlzoo.reward_models`). Output i has K_i steps
ending at tokens index(1) < ... < index(K_i) with rewards r_i^index(j). All the step rewards of the
group, R = {r_i^index(j)} over its G outputs, are normalised with one mean and std, and a token's
advantage is the sum of the normalised rewards of the steps ending at or after it (its own step
and every later one):

    r~_i^index(j) = (r_i^index(j) - mean(R)) / std(R),     A_{i,t} = sum_{index(j) >= t} r~_i^index(j)

It reads ``batch.step_ends`` and ``batch.step_rewards`` ([N, T], set when a process reward model
scores the batch, ``reward.name: prm``). The coefficient is the same formula with this per-token
A. With one step per output, ending at its last token, it is outcome supervision with r_i the
step's reward.

Departures from the paper: std is the unbiased sample std (as TRL and verl compute it) plus
``std_eps``; ``scale_rewards=false`` drops the division (Dr. GRPO). A group whose rewards are all
equal (max == min; under process supervision: all its step rewards) has A = 0 exactly and
contributes no policy gradient (only the KL term); the fraction of such groups is logged as
``grpo/zero_adv_group_frac``. A skipped reward (NaN) is left out of its group's statistics.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.config import AT_LEAST_0, allowed
from rlzoo.errors import ConfigError
from rlzoo.functional import check_clip, clipped_ratio_coefficient, drop_unscored, group_sum, masked_mean
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


SUPERVISION = ("outcome", "process")


def group_advantages(rewards: torch.Tensor, group_ids: torch.Tensor, scale: bool = True, eps: float = 1e-4):
    """(r - mean_group) / (std_group + eps) per sequence, and the per-sequence "group is constant" flag.

    rewards [N] (NaN = skipped), group_ids [N] -> advantages [N], degenerate [N] bool

    A skipped reward (NaN: the reward returned None) is left out of its group's mean and std and
    gets advantage 0. A group is constant when its scored rewards are all equal (max == min, not
    std == 0: in floating point seven rewards of 0.1 have a std of about 8e-9, which the division
    would blow up to advantages of about -0.93, all of one sign); a constant group, or one with a
    single scored reward, gets exactly 0.

    >>> # group 5: 0.1 x 3 (constant, std 0 only on paper) | group 6: 2, NaN, 0 -> mean 1, std sqrt(2)
    >>> adv, constant = group_advantages(torch.tensor([.1, .1, .1, 2., float("nan"), 0.]), torch.tensor([5, 5, 5, 6, 6, 6]), eps=0)
    >>> adv, constant
    (tensor([ 0.0000,  0.0000,  0.0000,  0.7071,  0.0000, -0.7071]), tensor([ True,  True,  True, False, False, False]))
    """
    scored = ~torch.isnan(rewards)  # [N]
    r = torch.where(scored, rewards, torch.zeros_like(rewards))  # [N] skipped rewards count for nothing
    counts, index = group_sum(scored.to(r.dtype), group_ids)  # [G], [N] scored rewards per group
    mean = group_sum(r, group_ids)[0] / counts.clamp(min=1)  # [G]
    centred = torch.where(scored, r - mean[index], torch.zeros_like(r))  # [N]
    var = group_sum(centred**2, group_ids)[0] / (counts - 1).clamp(min=1)  # [G]
    std = var.sqrt()[index]  # [N]
    high = torch.where(scored, rewards, torch.full_like(rewards, -torch.inf))  # [N]
    low = torch.where(scored, rewards, torch.full_like(rewards, torch.inf))  # [N]
    top = torch.full_like(counts, -torch.inf).scatter_reduce_(0, index, high, "amax")  # [G]
    bottom = torch.full_like(counts, torch.inf).scatter_reduce_(0, index, low, "amin")  # [G]
    degenerate = ~(top > bottom)[index]  # [N] no two different scored rewards in the group
    adv = centred / (std + eps) if scale else centred  # [N]
    return torch.where(degenerate, torch.zeros_like(adv), adv), degenerate


def process_advantages(step_rewards: torch.Tensor, step_ends: torch.Tensor, group_ids: torch.Tensor,
                       loss_mask: torch.Tensor, scale: bool = True, eps: float = 1e-4):
    """Process-supervised advantages per token, and the per-sequence "group is constant" flag.

    Every step reward of a group is normalised with the group's one mean and (unbiased) std over
    all its step rewards (:func:`group_advantages` on the flat list of steps, so the same rule as
    outcome supervision); a token's advantage sums the normalised rewards of the steps ending at
    or after it:

        A_{i,t} = sum_{index(j) >= t} (r_i^index(j) - mean(R)) / (std(R) + eps)

    step_rewards [N, T] (read at step ends), step_ends [N, T] (1.0 at each step's last token),
    group_ids [N], loss_mask [N, T] -> advantages [N, T] (0 off trained tokens), degenerate [N]
    bool (the row's group has no two different step rewards, or no step at all: A = 0).

    >>> # one group: output 0 steps end at tokens 1, 2 (rewards 1, 0); output 1 at token 2 (reward 1/2)
    >>> # mean 1/2, std 1/2: r~ = 1, -1 | 0; output 0 tokens: 1 + (-1), -1
    >>> ends = torch.tensor([[0., 1., 1.], [0., 0., 1.]])
    >>> process_advantages(torch.tensor([[0., 1., 0.], [0., 0., .5]]), ends, torch.tensor([4, 4]), torch.tensor([[0., 1., 1.], [0., 1., 1.]]), eps=0)[0]
    tensor([[ 0.,  0., -1.],
            [ 0.,  0.,  0.]])
    """
    is_end = step_ends > 0  # [N, T]
    rows = is_end.nonzero()[:, 0]  # [S] the row of every step end
    normed_steps, constant_steps = group_advantages(step_rewards[is_end], group_ids[rows], scale, eps)  # [S], [S]
    normed = torch.zeros_like(step_rewards)  # [N, T]
    normed[is_end] = normed_steps.to(normed.dtype)
    adv = normed.flip(-1).cumsum(-1).flip(-1)  # [N, T] sum over the steps ending at t or later
    live = torch.zeros(len(group_ids), device=step_rewards.device).index_add_(0, rows, (~constant_steps).float())  # [N]
    live_in_group, index = group_sum(live, group_ids)  # [G], [N]
    return adv * loss_mask, live_in_group[index] == 0


@register_algorithm("grpo")
class GRPO(NoExtras):
    """Group-normalised outcome advantages, clipped ratio, k3 KL to the reference in the loss."""

    @dataclass
    class Config:
        """GRPO hyperparameters (the group size G is ``data.samples_per_prompt``)."""

        beta: float = allowed(0.04, AT_LEAST_0)  # weight of the k3 KL to the reference, in the loss (paper: 0.04)
        clip_eps: float = 0.2  # PPO-style ratio clip epsilon (active only when updates_per_batch > 1)
        clip_eps_high: Optional[float] = None  # upper clip (DAPO's clip-higher); None = clip_eps
        scale_rewards: bool = True  # divide by the group std (false = Dr. GRPO)
        std_eps: float = allowed(1e-4, AT_LEAST_0)  # added to the std
        supervision: str = allowed("outcome", choices=SUPERVISION)  # "outcome": one reward per output; "process": per-step rewards of a PRM

    name = "grpo"  # the key of its config section in error messages (a preset subclass sets its own)
    data_source = "online"
    loss_agg = None
    group_coupled = False
    min_samples_per_prompt = 2  # one output per question is its own group mean: every advantage is 0

    def __init__(self, cfg: Config) -> None:
        check_clip(self.name, cfg.clip_eps, cfg.clip_eps_high)
        self.cfg = cfg
        needs = {"old_logprobs"} | ({"reference"} if cfg.beta > 0 else set())
        self.needs = frozenset(needs | ({"step_rewards"} if cfg.supervision == "process" else set()))  # process: a PRM's step rewards

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        batch = drop_unscored(batch)  # a skipped completion (reward None) leaves the group and the loss
        cfg = self.cfg
        metrics = {}
        if cfg.supervision == "process":
            if batch.step_rewards is None or batch.step_ends is None:
                raise ConfigError(f"algorithms.{self.name}.supervision: process needs step rewards: "
                                  "use a process reward model (reward.name: prm)")
            batch.advantages, degenerate = process_advantages(
                batch.step_rewards, batch.step_ends, batch.group_ids, batch.loss_mask, cfg.scale_rewards, cfg.std_eps
            )  # [N, T], [N]
            metrics["grpo/adv_abs_mean"] = masked_mean(batch.advantages.abs(), batch.loss_mask)
            metrics["grpo/steps_mean"] = float(batch.step_ends.sum(-1).mean())
        else:
            adv, degenerate = group_advantages(batch.rewards, batch.group_ids, cfg.scale_rewards, cfg.std_eps)  # [N]
            batch.advantages = adv[:, None] * batch.loss_mask  # [N, T]
            metrics["grpo/adv_abs_mean"] = float(adv.abs().mean())
        degenerate_rows, _ = group_sum(degenerate.float(), batch.group_ids)  # [G] rows of each group that are degenerate
        metrics["grpo/zero_adv_group_frac"] = float((degenerate_rows > 0).float().mean())
        return batch, metrics

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
