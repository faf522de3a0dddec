"""SFT: coefficient 1 makes the surrogate the paper's negative log-likelihood."""

import torch

from rlzoo.algorithms.sft import SFT
from rlzoo.interface import RolloutBatch
from rlzoo.losses import aggregate, surrogate_loss


def test_sft_gradient_equals_nll_gradient():
    torch.manual_seed(0)
    logp0 = -torch.rand(4, 5)
    mask = torch.tensor([[0, 1, 1, 1, 0], [0, 1, 0, 0, 0], [0, 1, 1, 1, 1], [0, 0, 1, 1, 0]]).float()
    batch = RolloutBatch(torch.zeros(4, 5, dtype=torch.long), torch.ones(4, 5, dtype=torch.long), mask,
                         torch.arange(4), torch.full((4,), float("nan")))
    algo = SFT(SFT.Config())
    for mode in ("seq-mean-token-mean", "token-mean"):
        logp = logp0.clone().requires_grad_(True)
        coef, _ = algo.coefficients(batch, logp.detach())
        surrogate_loss(coef, logp, mask, mode).backward()
        g = logp.grad.clone()
        logp = logp0.clone().requires_grad_(True)
        (-aggregate(logp, mask, mode)).backward()  # NLL
        torch.testing.assert_close(g, logp.grad)


def test_sft_loss_by_hand():
    # one sequence, tokens with log-probs -1 and -3: loss = (1 + 3) / 2 = 2
    logp = torch.tensor([[0.0, -1.0, -3.0]])
    mask = torch.tensor([[0.0, 1.0, 1.0]])
    assert float(surrogate_loss(torch.ones_like(logp), logp, mask, "seq-mean-token-mean")) == 2.0
