"""CISPO: coefficient vs autograd of the stop-gradient clipped-IS objective; a hand-worked case."""

import math

import pytest
import torch

from rlzoo.algorithms.cispo import CISPO
from rlzoo.losses import aggregate
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, rows_batch


def native_cispo_objective(logp, batch, low, high):
    """J = sum_{i,t} sg(clip(rho)) A log pi / sum |o| (token-mean)."""
    weight = torch.exp(logp - batch.old_logprobs).clamp(min=low, max=high).detach()
    return aggregate(weight * batch.advantages * logp, batch.loss_mask, "token-mean")


@pytest.mark.parametrize("eps_low", [None, 0.2])
def test_coefficient_gradient_equals_native_gradient(eps_low):
    algo = CISPO(CISPO.Config(clip_eps_low=eps_low, clip_eps_high=0.28))
    batch, _ = algo.prepare(make_batch(seed=6), None)
    logp0 = batch.old_logprobs + 0.5 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(7))
    low = None if eps_low is None else 1 - eps_low
    metrics = assert_coefficient_is_native_gradient(algo, batch, logp0, lambda logp: native_cispo_objective(logp, batch, low, 1.28),
                                                    algo.loss_agg)
    assert 0 < metrics["policy/clip_frac"] < 1
    # every trained token of a non-constant group keeps a gradient, clipped or not (GRPO's clip would zero some)
    live = (batch.loss_mask > 0) & (batch.advantages != 0)
    assert torch.all(algo.coefficients(batch, logp0)[0][live] != 0)


def test_hand_worked_weights():
    # group: rewards 1, 0 -> A = +-1/sqrt(2) (unbiased std sqrt(1/2), std_eps 0)
    # row 0 ratios e^0.5 = 1.6487 -> clipped to 1.28; 1.0; e^-1 = 0.3679 (no lower bound: kept)
    # row 1 ratios 1.0 -> weight 1
    algo = CISPO(CISPO.Config(std_eps=0.0))
    batch, _ = algo.prepare(rows_batch([1.0, 0.0], [0, 0]), None)
    logp = batch.old_logprobs + torch.tensor([[0.0, 0.5, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]])
    coef, metrics = algo.coefficients(batch, logp)
    a = 1 / math.sqrt(2)
    torch.testing.assert_close(coef, torch.tensor([[0.0, 1.28 * a, a, math.exp(-1) * a], [0.0, -a, -a, -a]]))
    assert metrics["policy/clip_frac"] == pytest.approx(1 / 6)
    # with eps_low 0.2 the last token's weight is floored at 0.8
    coef, _ = CISPO(CISPO.Config(clip_eps_low=0.2, std_eps=0.0)).coefficients(batch, logp)
    assert coef[0, 3].item() == pytest.approx(0.8 * a)


def test_clip_settings_are_range_checked():
    from rlzoo.config import check_hyperparameters
    from rlzoo.errors import ConfigError

    check_hyperparameters("cispo", CISPO.Config())  # null lower bound is allowed
    with pytest.raises(ConfigError, match=r"^algorithms.cispo.clip_eps_low=-0.5 is out of range"):
        check_hyperparameters("cispo", CISPO.Config(clip_eps_low=-0.5))
