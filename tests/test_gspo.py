"""GSPO: coefficient vs autograd of the sequence-level clipped objective; a hand-worked case."""

import math

import pytest
import torch

from rlzoo.algorithms.gspo import GSPO
from rlzoo.runtime.trainer import resolve_loss_agg
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, rows_batch


def native_gspo_objective(logp, batch, eps_low, eps_high):
    """J = 1/N sum_i min(s_i A_i, clip(s_i) A_i), s_i = exp(mean_t (logp - old)) over o_i's tokens."""
    mask = batch.loss_mask
    s = torch.exp(((logp - batch.old_logprobs) * mask).sum(-1) / mask.sum(-1))
    adv = batch.extras["seq_advantages"]
    return torch.minimum(s * adv, s.clamp(1 - eps_low, 1 + eps_high) * adv).mean()


@pytest.mark.parametrize("eps", [(3e-4, 4e-4), (0.05, 0.1)])
def test_coefficient_gradient_equals_native_gradient(eps):
    algo = GSPO(GSPO.Config(clip_eps=eps[0], clip_eps_high=eps[1]))
    batch, _ = algo.prepare(make_batch(n=12, groups=3, seed=1), None)
    logp0 = batch.old_logprobs + 0.15 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(5))
    metrics = assert_coefficient_is_native_gradient(algo, batch, logp0, lambda logp: native_gspo_objective(logp, batch, *eps),
                                                    algo.loss_agg)
    assert 0 < metrics["policy/clip_frac"] < 1  # some sequences clipped, some not
    assert resolve_loss_agg(algo, None) == "seq-mean-token-mean"


def test_hand_worked_sequence_ratio_and_clip():
    # group 0: rewards 1, 0: mean 0.5, unbiased std sqrt(0.25 + 0.25) = sqrt(1/2), so
    # A = +-0.5 / sqrt(1/2) = +-1/sqrt(2) (std_eps 0); 3 trained tokens each.
    # row 0 log-ratios 0.3, 0, 0 -> log s = 0.1, s = e^0.1 = 1.105 > 1 + 0.1: A > 0, clipped -> GC = 0
    # row 1 log-ratios 0.03 each  -> s = e^0.03 = 1.0305 inside [0.95, 1.1] -> GC = -1.0305 / sqrt(2)
    batch = rows_batch([1.0, 0.0], [0, 0])
    algo = GSPO(GSPO.Config(clip_eps=0.05, clip_eps_high=0.1, std_eps=0.0))
    batch, _ = algo.prepare(batch, None)
    logp = batch.old_logprobs + torch.tensor([[0.0, 0.3, 0.0, 0.0], [0.0, 0.03, 0.03, 0.03]])
    coef, metrics = algo.coefficients(batch, logp)
    a = 1 / math.sqrt(2)
    torch.testing.assert_close(coef, torch.tensor([[0.0] * 4, [0.0] + [-a * math.exp(0.03)] * 3]))
    assert metrics["policy/clip_frac"] == 0.5


def test_on_policy_coefficient_is_the_group_advantage():
    algo = GSPO(GSPO.Config())
    batch, _ = algo.prepare(make_batch(), None)
    coef, _ = algo.coefficients(batch, batch.old_logprobs)
    torch.testing.assert_close(coef, batch.advantages)
