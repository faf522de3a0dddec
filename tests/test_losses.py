"""Aggregation modes (hand-worked) and the surrogate's gradient."""

import pytest
import torch

from rlzoo.losses import AGG_MODES, aggregate, surrogate_loss

X = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]])
M = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 0.0]])  # |o_1| = 2, |o_2| = 1


@pytest.mark.parametrize(
    "mode, expected",
    [
        ("seq-mean-token-mean", ((1 + 2) / 2 + 4 / 1) / 2),  # 1/N sum_i 1/|o_i| sum_t
        ("seq-mean-token-sum", ((1 + 2) + 4) / 2),  # 1/N sum_i sum_t
        ("token-mean", (1 + 2 + 4) / 3),  # sum / total tokens
        ("sum", 1 + 2 + 4),
    ],
)
def test_modes_by_hand(mode, expected):
    assert float(aggregate(X, M, mode)) == pytest.approx(expected)


def test_constant_normaliser():
    # 1/N sum_i sum_t x / C with C = 4: (3 + 4) / (2 * 4)
    assert float(aggregate(X, M, "seq-mean-token-sum-norm", constant=4.0)) == pytest.approx(7 / 8)
    with pytest.raises(ValueError, match="constant"):
        aggregate(X, M, "seq-mean-token-sum-norm")


def test_unknown_mode_lists_known():
    with pytest.raises(ValueError, match="seq-mean-token-mean"):
        aggregate(X, M, "mean-of-everything")


def test_empty_sequence_does_not_divide_by_zero():
    mask = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    # the empty row contributes 0 but still counts as a sequence: ((1+2)/2 + 0) / 2
    assert float(aggregate(X, mask)) == pytest.approx(0.75)


@pytest.mark.parametrize("mode", AGG_MODES)
def test_micro_batches_sum_to_full_batch(mode):
    torch.manual_seed(0)
    x = torch.randn(8, 5)
    mask = (torch.rand(8, 5) > 0.3).float()
    mask[:, 0] = 1
    full = aggregate(x, mask, mode, constant=5.0)
    totals = {"num_seqs": 8, "num_tokens": float(mask.sum()), "constant": 5.0}
    parts = sum(aggregate(x[i : i + 1], mask[i : i + 1], mode, **totals) for i in range(8))
    assert float(parts) == pytest.approx(float(full), rel=1e-6)


def test_surrogate_gradient_is_minus_weighted_coefficient():
    # d/dlogp of -1/N sum_i 1/|o_i| sum_t c*logp  =  -c / (N |o_i|) on masked tokens
    logp = torch.randn(2, 3, requires_grad=True)
    coef = torch.tensor([[2.0, -1.0, 5.0], [3.0, 7.0, 7.0]])
    surrogate_loss(coef, logp, M, "seq-mean-token-mean").backward()
    expected = torch.tensor([[-2.0 / 4, 1.0 / 4, 0.0], [-3.0 / 2, 0.0, 0.0]])
    torch.testing.assert_close(logp.grad, expected)


def test_surrogate_refuses_coefficients_with_grad():
    logp = torch.randn(2, 3, requires_grad=True)
    with pytest.raises(ValueError, match="detached"):
        surrogate_loss(logp * 2, logp, M, "sum")
