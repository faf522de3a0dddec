"""REINFORCE++: returns of KL-shaped rewards by hand, global whitening, coefficient vs autograd."""

import pytest
import torch

from rlzoo.algorithms.reinforce_pp import ReinforcePP
from rlzoo.losses import aggregate
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, native_grpo_objective


class OneProcess:
    """``prepare``'s runtime view of one process: reduce_sum is the identity."""

    def reduce_sum(self, values):
        return values


def test_returns_by_hand():
    # one row, tokens 1-3 trained, score 1, beta 0.1, k1 = old - ref = 0.2, 0, -0.1 (token 3 last)
    # r = -0.02, 0, 0.01 + 1 = 1.01 -> returns (gamma 1) 0.99, 1.01, 1.01
    # gamma 0.5: 1.01; 0 + 0.5 * 1.01 = 0.505; -0.02 + 0.5 * 0.505 = 0.2325
    batch = make_batch(n=1, t=4, groups=1)
    batch.loss_mask = torch.tensor([[0.0, 1, 1, 1]])
    batch.rewards = torch.tensor([1.0])
    batch.old_logprobs = torch.tensor([[0.0, -1.0, -1.0, -1.0]])
    batch.ref_logprobs = torch.tensor([[0.0, -1.2, -1.0, -0.9]])
    for gamma, expected in ((1.0, [0.0, 0.99, 1.01, 1.01]), (0.5, [0.0, 0.2325, 0.505, 1.01])):
        algo = ReinforcePP(ReinforcePP.Config(beta=0.1, gamma=gamma, whiten_advantages=False))
        out, metrics = algo.prepare(batch, OneProcess())
        torch.testing.assert_close(out.advantages, torch.tensor([expected]))
    assert metrics["kl/reward_kl"] == pytest.approx(0.1 / 3)


def test_advantages_are_normalised_over_the_whole_batch():
    batch, _ = ReinforcePP(ReinforcePP.Config()).prepare(make_batch(seed=3), OneProcess())
    adv = batch.advantages[batch.loss_mask > 0].double()
    assert abs(float(adv.mean())) < 1e-6 and float(adv.std()) == pytest.approx(1.0, abs=1e-4)


def test_two_processes_whiten_like_one():
    # Two "processes" (threads) each prepare half of the batch; their reduce_sum adds both halves'
    # statistics, as an all-reduce does. Together they must equal the whole batch on one process.
    import threading

    batch = make_batch(seed=4)
    whole, _ = ReinforcePP(ReinforcePP.Config()).prepare(batch, OneProcess())
    halves = [batch.select(list(range(3))), batch.select(list(range(3, 8)))]  # uneven, like uneven ranks
    slots, barrier, out = [None, None], threading.Barrier(2), [None, None]

    class Rank:
        def __init__(self, rank):
            self.rank = rank

        def reduce_sum(self, values):
            slots[self.rank] = values
            barrier.wait()
            total = slots[0] + slots[1]
            barrier.wait()
            return total

    def run(rank):
        out[rank] = ReinforcePP(ReinforcePP.Config()).prepare(halves[rank], Rank(rank))[0].advantages

    threads = [threading.Thread(target=run, args=(r,)) for r in (0, 1)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    torch.testing.assert_close(torch.cat(out), whole.advantages)


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean"])
def test_coefficient_gradient_equals_native_gradient(mode):
    algo = ReinforcePP(ReinforcePP.Config(clip_eps=0.2, clip_eps_high=0.28))
    batch, _ = algo.prepare(make_batch(seed=5), OneProcess())
    logp0 = batch.old_logprobs + 0.5 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(8))
    metrics = assert_coefficient_is_native_gradient(
        algo, batch, logp0,
        lambda logp: aggregate(native_grpo_objective(logp, batch, batch.advantages, 0.0, 0.2, 0.28), batch.loss_mask, mode), mode)
    assert 0 < metrics["policy/clip_frac"] < 1


def test_needs():
    assert ReinforcePP(ReinforcePP.Config()).needs == {"old_logprobs", "reference"}
    assert ReinforcePP(ReinforcePP.Config(beta=0.0)).needs == {"old_logprobs"}
