"""DAPO: the preset, its coefficient vs autograd, the overlong penalty and the dynamic source by hand."""

import pytest
import torch

from rlzoo.algorithms.dapo import DAPO
from rlzoo.interface import Example, RolloutBatch
from rlzoo.losses import aggregate
from rlzoo.rewards.overlong import overlong
from rlzoo.runtime.sources import DynamicSource, SourceContext, informative_groups
from rlzoo.runtime.trainer import resolve_loss_agg
from helpers import assert_coefficient_is_native_gradient
from test_grpo import make_batch, native_grpo_objective


def test_preset():
    algo = DAPO(DAPO.Config())
    assert algo.data_source == "dynamic" and resolve_loss_agg(algo, None) == "token-mean"
    assert algo.needs == {"old_logprobs"} and (algo.cfg.clip_eps, algo.cfg.clip_eps_high) == (0.2, 0.28)


def test_coefficient_gradient_equals_native_gradient():
    # native: sum_{i,t} min(rho A, clip(rho, 0.8, 1.28) A) / sum |o|
    algo = DAPO(DAPO.Config())
    batch, _ = algo.prepare(make_batch(seed=9), None)
    logp0 = batch.old_logprobs + 0.4 * torch.randn(batch.old_logprobs.shape, generator=torch.Generator().manual_seed(9))
    ratio = torch.exp(logp0 - batch.old_logprobs)
    trained = batch.loss_mask > 0
    assert ((ratio < 0.8) & trained).any() and ((ratio > 1.28) & trained).any()  # both sides of the clip
    assert_coefficient_is_native_gradient(
        algo, batch, logp0,
        lambda logp: aggregate(native_grpo_objective(logp, batch, batch.advantages, 0.0, 0.2, 0.28), batch.loss_mask, "token-mean"),
        algo.loss_agg)


def test_overlong_penalty_by_hand():
    # L_max 20, L_cache 4: free up to 16 tokens; 17 -> -1/4, 18 -> -1/2, 20 -> -1, 25 -> -1
    assert overlong(["q"] * 6, [""] * 6, [[0] * n for n in (3, 16, 17, 18, 20, 25)], max_length=20, cache=4) == [
        0.0, 0.0, -0.25, -0.5, -1.0, -1.0]
    with pytest.raises(ValueError, match="cache=0"):
        overlong(["q"], [""], [[0]], max_length=20, cache=0)


def test_informative_groups():
    # group 1: 0.5, 0.5 (equal) | 2: 0, 1 | 4: 1, NaN (one scored) | 6: 0.2, NaN, 0.3
    nan = float("nan")
    assert informative_groups([1, 1, 2, 2, 4, 4, 6, 6, 6], [0.5, 0.5, 0, 1, 1, nan, 0.2, nan, 0.3]) == [2, 6]


class ParityReward:
    """Scores the sampled text "q<pos>-<k>": a question whose position passes ``informative`` gets
    rewards 0, 1 (sample k's parity), the others all 1 (a constant group)."""

    def __init__(self, informative=lambda pos: pos % 3 == 0):
        self.informative = informative

    def score_batch(self, batch):
        batch.rewards = torch.tensor([float(int(c.split("-")[1]) % 2) if self.informative(int(c[1:].split("-")[0])) else 1.0
                                      for c in batch.completions])
        return {"reward/raw_mean": float(batch.rewards.mean())}


def fake_ctx(prompts_per_step, max_rounds, dist=None, informative=lambda pos: pos % 3 == 0):
    def sample(examples, keys, n):
        rows = len(examples) * n
        return RolloutBatch(input_ids=torch.zeros(rows, 3, dtype=torch.long), attention_mask=torch.ones(rows, 3, dtype=torch.long),
                            loss_mask=torch.tensor([[0.0, 1, 1]] * rows), group_ids=torch.tensor(keys).repeat_interleave(n),
                            rewards=torch.full((rows,), float("nan")), completions=[f"q{k}-{j}" for k in keys for j in range(n)],
                            examples=[ex for ex in examples for _ in range(n)])

    settings = type("Data", (), {"prompts_per_step": prompts_per_step, "samples_per_prompt": 2})
    prompts = iter([Example(prompt=str(i), answer="0") for i in range(10_000)])
    ctx = SourceContext(prompts=prompts, settings=settings, encode=None, sample=sample, reward=ParityReward(informative),
                        args=DynamicSource.Config(max_rounds=max_rounds))
    if dist is not None:
        ctx.dist = dist
    return ctx


def test_dynamic_source_keeps_sampling_until_enough_informative_groups():
    # 4 questions a round, positions 0, 3, 6, 9, ... informative: round 1 (0-3) has 0, 3; round 2
    # (4-7) has 6; round 3 (8-11) has 9 -> 4 groups after 3 rounds, 8 rows.
    source = DynamicSource(fake_ctx(4, max_rounds=10))
    batch, metrics = source.next_batch(0)
    assert sorted(set(batch.group_ids.tolist())) == [0, 3, 6, 9] and len(batch) == 8
    assert metrics["dynamic/rounds"] == 3 and metrics["dynamic/groups_kept"] == 4
    assert metrics["dynamic/informative_frac"] == pytest.approx(4 / 12)
    assert metrics["reward/sampled_mean"] == pytest.approx((24 - 4) / 24)  # 4 zeros among 24 rewards
    assert source.ctx.position == 12
    # the surplus is dropped: the next step starts at question 12 (informative: 12, 15, 18, 21)
    batch, _ = source.next_batch(1)
    assert sorted(set(batch.group_ids.tolist())) == [12, 15, 18, 21]


def test_dynamic_source_stops_at_max_rounds():
    batch, metrics = DynamicSource(fake_ctx(4, max_rounds=2)).next_batch(0)
    assert sorted(set(batch.group_ids.tolist())) == [0, 3, 6] and metrics["dynamic/rounds"] == 2


class ThreadRank:
    """One of two ranks run as threads: ``shard`` and ``gather`` as :class:`rlzoo.runtime.distributed.Dist`'s."""

    def __init__(self, rank, slots, barrier):
        from rlzoo.runtime.distributed import Dist

        self.rank, self.world, self.slots, self.barrier = rank, 2, slots, barrier
        self.shard = Dist.shard.__get__(self)

    def gather(self, obj):
        self.slots[self.rank] = obj
        self.barrier.wait()
        out = list(self.slots)
        self.barrier.wait()
        return out

    def together(self, fn):
        return fn()


@pytest.mark.parametrize("per_step", [3, 5])
def test_dynamic_source_two_processes_serve_the_one_process_batch(per_step):
    # informative: positions = 0 or 2 (mod 7), and multiples of 5 -> rounds with surplus groups
    # (the first ones in question order are kept). Two ranks hold disjoint blocks whose union is
    # the one-process batch (in the trainer's canonical order, by group id), step after step.
    import threading

    informative = lambda pos: pos % 7 in (0, 2) or pos % 5 == 0  # noqa: E731
    one = DynamicSource(fake_ctx(per_step, 10, informative=informative))
    slots, barrier = [None, None], threading.Barrier(2)
    ranks = [DynamicSource(fake_ctx(per_step, 10, ThreadRank(r, slots, barrier), informative)) for r in (0, 1)]
    for step in range(3):
        expected, metrics = one.next_batch(step)
        out = [None, None]
        threads = [threading.Thread(target=lambda r=r: out.__setitem__(r, ranks[r].next_batch(step))) for r in (0, 1)]
        [t.start() for t in threads]
        [t.join() for t in threads]
        ids = torch.cat([out[0][0].group_ids, out[1][0].group_ids])
        order = torch.sort(ids, stable=True).indices  # the trainer's canonical order: by group id
        assert ids[order].tolist() == expected.group_ids.tolist() and len(set(ids.tolist())) == per_step
        torch.testing.assert_close(torch.cat([out[0][0].rewards, out[1][0].rewards])[order], expected.rewards)
        assert out[0][1]["dynamic/rounds"] == out[1][1]["dynamic/rounds"] == metrics["dynamic/rounds"]


def test_dynamic_source_takes_the_first_in_question_order():
    # 4 questions a round, need 1: questions 0 and 3 are informative in round 1; only 0 is kept
    batch, metrics = DynamicSource(fake_ctx(1, max_rounds=3)).next_batch(0)
    assert batch.group_ids.tolist() == [0, 0] and metrics["dynamic/rounds"] == 1
