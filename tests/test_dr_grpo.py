"""Dr. GRPO: the preset's settings, its coefficient vs autograd of its native objective, a hand-worked case."""

import pytest
import torch

from rlzoo.algorithms.dr_grpo import DrGRPO
from rlzoo.algorithms.grpo import GRPO
from rlzoo.errors import ConfigError
from rlzoo.losses import aggregate, surrogate_loss
from rlzoo.runtime.trainer import resolve_loss_agg
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, native_grpo_objective, rows_batch


def test_preset_is_grpo_without_std_and_with_the_constant_normaliser():
    algo = DrGRPO(DrGRPO.Config())
    assert isinstance(algo, GRPO) and not algo.cfg.scale_rewards and algo.cfg.beta == 0.0
    assert algo.needs == {"old_logprobs"}  # beta 0: no reference model
    assert resolve_loss_agg(algo, None) == "seq-mean-token-sum-norm"
    with pytest.raises(ValueError, match="conflicts with the algorithm"):
        resolve_loss_agg(algo, "token-mean")
    with pytest.raises(ConfigError, match=r"^algorithms.dr_grpo.clip_eps="):
        DrGRPO(DrGRPO.Config(clip_eps=1.5))


@pytest.mark.parametrize("beta", [0.0, 0.04])
def test_coefficient_gradient_equals_native_gradient(beta):
    # native: 1/N sum_i sum_t [min(rho A, clip(rho) A) - beta k3] / C, A = r - mean (no std), C = 12
    batch = make_batch(seed=7)
    algo = DrGRPO(DrGRPO.Config(beta=beta))
    batch, _ = algo.prepare(batch, None)
    logp0 = batch.old_logprobs + 0.5 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(3))
    ratio = torch.exp(logp0 - batch.old_logprobs)
    assert (((ratio < 0.8) | (ratio > 1.2)) & (batch.loss_mask > 0)).sum() >= 5  # the clip is exercised
    assert_coefficient_is_native_gradient(
        algo, batch, logp0, lambda logp: aggregate(native_grpo_objective(logp, batch, batch.advantages, beta, 0.2, 0.2),
                                                   batch.loss_mask, "seq-mean-token-sum-norm", constant=12.0),
        algo.loss_agg, constant=12.0)


def test_advantages_by_hand():
    # group 0: rewards 1, 0, 0, 1: mean 0.5, A = r - 0.5 = 0.5, -0.5, -0.5, 0.5 (GRPO would divide by
    # the std sqrt(1/3) and give +-0.866); group 1: 0.2, 0.8: A = -0.3, 0.3
    batch, _ = DrGRPO(DrGRPO.Config()).prepare(rows_batch([1.0, 0.0, 0.0, 1.0, 0.2, 0.8], [0, 0, 0, 0, 1, 1]), None)
    torch.testing.assert_close(batch.advantages[:, 1], torch.tensor([0.5, -0.5, -0.5, 0.5, -0.3, 0.3]))
    # with 3 trained tokens each and C = 6, token t of row 0 gets gradient weight A / (N C) = 0.5 / 36
    logp = batch.old_logprobs.clone().requires_grad_(True)
    coef, _ = DrGRPO(DrGRPO.Config()).coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, "seq-mean-token-sum-norm", constant=6.0).backward()
    torch.testing.assert_close(logp.grad[0], torch.tensor([0.0, -0.5 / 36, -0.5 / 36, -0.5 / 36]))
