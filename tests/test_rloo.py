"""RLOO: leave-one-out advantages by hand, coefficient vs autograd of the native objective."""

import doctest

import pytest
import torch

import rlzoo.algorithms.rloo
from rlzoo.algorithms.rloo import RLOO, leave_one_out_advantages
from rlzoo.losses import aggregate
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, native_grpo_objective, rows_batch


def test_leave_one_out_by_hand():
    # group 4: 0.2, 0.5, 0.8 -> 0.2 - (0.5+0.8)/2 = -0.45, 0.5 - 0.5 = 0, 0.8 - 0.35 = 0.45
    # group 9: seven rewards of 0.1 (constant) -> exactly 0, not a float residue
    adv = leave_one_out_advantages(torch.tensor([0.2, 0.5, 0.8] + [0.1] * 7), torch.tensor([4] * 3 + [9] * 7))
    torch.testing.assert_close(adv[:3], torch.tensor([-0.45, 0.0, 0.45]))
    assert torch.all(adv[3:] == 0)


def test_loop_definition_on_random_groups():
    g = torch.Generator().manual_seed(0)
    rewards, groups = torch.rand(12, generator=g), torch.tensor([0] * 5 + [1] * 3 + [2] * 4)
    expected = torch.stack([rewards[i] - rewards[(groups == groups[i]) & (torch.arange(12) != i)].mean() for i in range(12)])
    torch.testing.assert_close(leave_one_out_advantages(rewards, groups), expected)


def test_skipped_rewards_leave_the_baseline():
    # group 0: 1, None, 0, 0.5 -> scored 1, 0, 0.5: A = 1 - 0.25, 0 - 0.75, 0.5 - 0.5
    batch, _ = RLOO(RLOO.Config()).prepare(rows_batch([1.0, float("nan"), 0.0, 0.5, 0.3, float("nan")], [0, 0, 0, 0, 1, 1]), None)
    torch.testing.assert_close(batch.advantages[:, 1], torch.tensor([0.75, -0.75, 0.0, 0.0]))  # group 1: one scored, 0


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "seq-mean-token-sum"])
def test_coefficient_gradient_equals_native_gradient(mode):
    # native: min(rho A, clip(rho) A) with the leave-one-out A (GRPO's surrogate without the KL)
    batch, _ = RLOO(RLOO.Config()).prepare(make_batch(seed=2), None)
    logp0 = batch.old_logprobs + 0.5 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(4))
    metrics = assert_coefficient_is_native_gradient(
        RLOO(RLOO.Config()), batch, logp0,
        lambda logp: aggregate(native_grpo_objective(logp, batch, batch.advantages, 0.0, 0.2, 0.2), batch.loss_mask, mode), mode)
    assert 0 < metrics["policy/clip_frac"] < 1


def test_on_policy_coefficient_is_the_advantage():
    batch, _ = RLOO(RLOO.Config()).prepare(make_batch(), None)
    coef, _ = RLOO(RLOO.Config()).coefficients(batch, batch.old_logprobs)
    torch.testing.assert_close(coef, batch.advantages)


def test_doctests():
    result = doctest.testmod(rlzoo.algorithms.rloo)
    assert result.failed == 0 and result.attempted > 0
