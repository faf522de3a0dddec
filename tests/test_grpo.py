"""GRPO: coefficient form vs autograd of the native objective; hand-worked advantages."""

import math

import pytest
import torch

from rlzoo.algorithms.grpo import GRPO, group_advantages
from rlzoo.interface import RolloutBatch
from rlzoo.losses import aggregate, surrogate_loss


def make_batch(n=8, t=6, groups=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, t, generator=g) > 0.25).float()
    mask[:, 0] = 0  # position 0 never trains
    mask[:, 1] = 1
    return RolloutBatch(
        input_ids=torch.zeros(n, t, dtype=torch.long),
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        group_ids=torch.arange(groups).repeat_interleave(n // groups),
        rewards=torch.randint(0, 2, (n,), generator=g).float(),
        old_logprobs=-torch.rand(n, t, generator=g) * 2,
        ref_logprobs=-torch.rand(n, t, generator=g) * 2,
    )


def native_grpo_objective(logp, batch, adv, beta, eps_low, eps_high):
    """The paper's Eq. 3 per token (to maximise): min(rho A, clip(rho) A) - beta * k3."""
    ratio = torch.exp(logp - batch.old_logprobs)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - eps_low, 1 + eps_high) * adv)
    log_r = batch.ref_logprobs - logp
    k3 = torch.exp(log_r) - log_r - 1
    return surrogate - beta * k3


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
@pytest.mark.parametrize("beta", [0.0, 0.04, 0.5])
def test_coefficient_gradient_equals_native_gradient(mode, beta):
    batch = make_batch()
    algo = GRPO(GRPO.Config(beta=beta, clip_eps=0.2))
    batch, _ = algo.prepare(batch, runtime=None)
    # current log-probs away from old ones: ratios far from 1, several tokens clipped
    logp0 = batch.old_logprobs + torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(1)) * 0.5
    ratio = torch.exp(logp0 - batch.old_logprobs)
    clipped_tokens = ((ratio < 0.8) | (ratio > 1.2)) & (batch.loss_mask > 0)
    assert clipped_tokens.sum() >= 5, "the test must exercise the clip"

    logp = logp0.clone().requires_grad_(True)
    coef, metrics = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, mode).backward()
    grad_coef = logp.grad.clone()

    logp = logp0.clone().requires_grad_(True)
    objective = native_grpo_objective(logp, batch, batch.advantages, beta, 0.2, 0.2)
    (-aggregate(objective, batch.loss_mask, mode)).backward()
    torch.testing.assert_close(grad_coef, logp.grad, rtol=1e-5, atol=1e-7)
    assert 0 < metrics["policy/clip_frac"] < 1


def test_clip_higher_matches_native():
    batch = make_batch(seed=3)
    algo = GRPO(GRPO.Config(beta=0.04, clip_eps=0.2, clip_eps_high=0.28))
    batch, _ = algo.prepare(batch, None)
    logp0 = batch.old_logprobs + 0.4 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(2))
    logp = logp0.clone().requires_grad_(True)
    coef, _ = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, "seq-mean-token-mean").backward()
    g1 = logp.grad.clone()
    logp = logp0.clone().requires_grad_(True)
    (-aggregate(native_grpo_objective(logp, batch, batch.advantages, 0.04, 0.2, 0.28), batch.loss_mask)).backward()
    torch.testing.assert_close(g1, logp.grad, rtol=1e-5, atol=1e-7)


def test_on_policy_coefficient_is_the_papers_formula():
    # mu = 1: pi_old = pi_theta, ratio 1, GC = A + beta * (pi_ref / pi_theta - 1)
    batch = make_batch()
    algo = GRPO(GRPO.Config(beta=0.04))
    batch, _ = algo.prepare(batch, None)
    batch.old_logprobs = batch.old_logprobs.clone()
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    expected = batch.advantages + 0.04 * (torch.exp(batch.ref_logprobs - batch.old_logprobs) - 1)
    torch.testing.assert_close(coef, expected)


def test_group_advantages_by_hand():
    # group 0: rewards 1, 0, 0, 1 -> mean 0.5, unbiased std sqrt(1/3); group 1 constant -> 0
    rewards = torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0])
    groups = torch.tensor([0, 0, 0, 0, 1, 1, 1, 1])
    adv, degenerate = group_advantages(rewards, groups, eps=0.0)
    s = math.sqrt(1 / 3)
    torch.testing.assert_close(adv, torch.tensor([0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s, 0, 0, 0, 0]))
    assert degenerate.tolist() == [False] * 4 + [True] * 4


def test_unscaled_advantages_are_centred_rewards():
    adv, _ = group_advantages(torch.tensor([3.0, 1.0, 2.0]), torch.tensor([5, 5, 5]), scale=False)
    torch.testing.assert_close(adv, torch.tensor([1.0, -1.0, 0.0]))


def test_constant_groups_give_no_policy_gradient_and_are_counted():
    batch = make_batch()
    batch.rewards = torch.tensor([1.0, 1, 1, 1, 0, 1, 0, 0])
    algo = GRPO(GRPO.Config(beta=0.0))
    batch, metrics = algo.prepare(batch, None)
    assert metrics["grpo/zero_adv_group_frac"] == 0.5
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    assert torch.all(coef[:4] == 0) and torch.any(coef[4:] != 0)


def test_reference_needed_only_with_kl():
    assert "reference" in GRPO(GRPO.Config(beta=0.04)).needs
    assert "reference" not in GRPO(GRPO.Config(beta=0.0)).needs
