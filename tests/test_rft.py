"""RFT / Online RFT: GC = I(o correct) makes the surrogate SFT on the correct outputs."""

import json
import math
from types import SimpleNamespace

import pytest
import torch

from rlzoo.algorithms.rft import RFT, OnlineRFT, duplicate_mask
from rlzoo.algorithms.sft import SFT
from rlzoo.config import load_config
from rlzoo.interface import RolloutBatch
from rlzoo.losses import aggregate, surrogate_loss
from rlzoo.registry import ALGORITHMS, register_reward
from rlzoo.run.factories import make_algorithm
from helpers import TINY_MODEL, assert_every_weight_moved

OFFLINE = SimpleNamespace(data_source="offline")  # what prepare reads of the runtime: the data source in use


@register_reward("test_rft_len_parity")
def len_parity(prompt, completion, example):
    """1 for a completion of even character length, else 0: marks about half of a random model's outputs correct."""
    return float(len(completion) % 2 == 0)


def make_batch(rewards, t=7, groups=None, seed=0):
    """Rows with distinct random tokens, a random completion mask (position 0 never trains)."""
    n = len(rewards)
    g = torch.Generator().manual_seed(seed)
    mask = (torch.rand(n, t, generator=g) > 0.3).float()  # [N, T]
    mask[:, 0] = 0
    mask[:, 1] = 1
    return RolloutBatch(
        input_ids=torch.randint(3, 50, (n, t), generator=g),
        attention_mask=torch.ones(n, t, dtype=torch.long),
        loss_mask=mask,
        group_ids=torch.as_tensor(groups if groups is not None else [i // 2 for i in range(n)]),
        rewards=torch.tensor(rewards, dtype=torch.float),
    )


def grad_of(loss_fn, logp0):
    logp = logp0.clone().requires_grad_(True)
    loss_fn(logp).backward()
    return logp.grad


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum"])
@pytest.mark.parametrize("cls", [RFT, OnlineRFT])
def test_rft_equals_sft_when_every_output_is_correct(mode, cls):
    batch = make_batch([1.0] * 6)
    logp0 = -torch.rand(6, 7, generator=torch.Generator().manual_seed(1)) * 3  # [N, T]
    algo = cls(cls.Config())
    prepared, metrics = algo.prepare(batch, SimpleNamespace(data_source=algo.data_source))
    assert len(prepared) == 6 and metrics["rft/correct_frac"] == 1.0 and metrics["rft/kept_frac"] == 1.0

    def rft_loss(logp):
        coef, _ = algo.coefficients(prepared, logp.detach())
        return surrogate_loss(coef, logp, prepared.loss_mask, mode)

    def sft_loss(logp):
        coef, _ = SFT(SFT.Config()).coefficients(batch, logp.detach())
        return surrogate_loss(coef, logp, batch.loss_mask, mode)

    torch.testing.assert_close(grad_of(rft_loss, logp0), grad_of(sft_loss, logp0))
    torch.testing.assert_close(grad_of(sft_loss, logp0), grad_of(lambda lp: -aggregate(lp, batch.loss_mask, mode), logp0))


def test_wrong_outputs_get_zero_gradient_when_kept():
    # rewards 1, 0, 1, 0.4, 0.6, 0 with threshold 0.5: correct rows 0, 2, 4
    batch = make_batch([1.0, 0.0, 1.0, 0.4, 0.6, 0.0])
    logp0 = -torch.rand(6, 7, generator=torch.Generator().manual_seed(2))
    algo = RFT(RFT.Config(drop_rejected=False))
    prepared, metrics = algo.prepare(batch, SimpleNamespace(data_source=algo.data_source))
    assert len(prepared) == 6 and metrics["rft/correct_frac"] == 0.5

    def loss(logp):
        coef, _ = algo.coefficients(prepared, logp.detach())
        return surrogate_loss(coef, logp, prepared.loss_mask, "seq-mean-token-mean")

    grad = grad_of(loss, logp0)
    assert torch.all(grad[[1, 3, 5]] == 0)
    # the correct rows get SFT's gradient with the normaliser N = 6 (every sampled output counts)
    sft = grad_of(lambda lp: -aggregate(lp, batch.loss_mask, "seq-mean-token-mean"), logp0)
    torch.testing.assert_close(grad[[0, 2, 4]], sft[[0, 2, 4]])


def test_dropping_wrong_outputs_is_sft_on_the_correct_ones():
    batch = make_batch([1.0, 0.0, 1.0, 0.4, 0.6, 0.0])
    algo = RFT(RFT.Config())
    prepared, metrics = algo.prepare(batch, SimpleNamespace(data_source=algo.data_source))
    torch.testing.assert_close(prepared.rewards, torch.tensor([1.0, 1.0, 0.6]))
    assert metrics["rft/kept_frac"] == 0.5
    torch.testing.assert_close(prepared.input_ids, batch.input_ids[[0, 2, 4]])
    logp0 = -torch.rand(3, 7, generator=torch.Generator().manual_seed(3))
    coef, _ = algo.coefficients(prepared, logp0)
    assert torch.equal(coef, prepared.loss_mask)  # GC = 1 on every trained token of a kept output


def test_rft_loss_by_hand():
    # row 0 correct, log-probs -1 and -3 on its two trained tokens; row 1 wrong, log-prob -5.
    logp = torch.tensor([[0.0, -1.0, -3.0], [0.0, -5.0, 0.0]])
    batch = RolloutBatch(torch.tensor([[1, 2, 3], [1, 4, 0]]), torch.ones(2, 3, dtype=torch.long),
                         torch.tensor([[0.0, 1.0, 1.0], [0.0, 1.0, 0.0]]), torch.tensor([0, 0]), torch.tensor([1.0, 0.0]))
    # kept with GC 0: (1/2) * ((1 + 3) / 2 + 0) = 1.0
    algo = RFT(RFT.Config(drop_rejected=False))
    kept, _ = algo.prepare(batch, SimpleNamespace(data_source=algo.data_source))
    assert float(surrogate_loss(algo.coefficients(kept, logp)[0], logp, kept.loss_mask, "seq-mean-token-mean")) == 1.0
    # dropped: SFT on row 0 alone, (1 + 3) / 2 = 2.0
    algo = RFT(RFT.Config())
    kept, _ = algo.prepare(batch, SimpleNamespace(data_source=algo.data_source))
    assert float(surrogate_loss(algo.coefficients(kept, logp[:1])[0], logp[:1], kept.loss_mask, "seq-mean-token-mean")) == 2.0


def test_threshold_is_strict_and_configurable():
    batch = make_batch([0.5, 0.51, 1.0, 0.0])
    assert RFT(RFT.Config()).prepare(batch, OFFLINE)[1]["rft/correct_frac"] == 0.5  # 0.5 is not > 0.5
    assert RFT(RFT.Config(threshold=0.0)).prepare(make_batch([0.5, 0.51, 1.0, 0.0]), OFFLINE)[1]["rft/correct_frac"] == 0.75


def test_dedupe_keeps_one_copy_per_question():
    # group 0: rows 0, 1 identical and correct, row 2 distinct correct, row 3 identical to 0 but wrong
    # group 1: row 4 identical to row 0 (another question: not a duplicate), row 5 correct
    batch = make_batch([1.0, 1.0, 1.0, 0.0, 1.0, 1.0], groups=[0, 0, 0, 0, 1, 1])
    batch.input_ids[[1, 3, 4]] = batch.input_ids[0].clone()
    batch.loss_mask[[1, 3, 4]] = batch.loss_mask[0].clone()
    assert duplicate_mask(batch, batch.rewards > 0.5).tolist() == [False, True, False, False, False, False]
    prepared, metrics = RFT(RFT.Config(dedupe=True)).prepare(batch, OFFLINE)
    assert metrics["rft/correct_frac"] == 5 / 6 and metrics["rft/kept_frac"] == 4 / 6
    assert prepared.group_ids.tolist() == [0, 0, 1, 1]
    # only tokens under the loss mask count: a different prompt token does not make outputs distinct
    batch.input_ids[1, 0] = batch.input_ids[0, 0] + 1
    assert duplicate_mask(batch, batch.rewards > 0.5)[1]


def test_dedupe_default_follows_the_default_data_source():
    assert RFT(RFT.Config()).dedupe(RFT.data_source) is True  # offline RFT dedups, as the paper's RFT
    assert OnlineRFT(OnlineRFT.Config()).dedupe(OnlineRFT.data_source) is False  # Online RFT: the plain I(o)
    assert RFT(RFT.Config()).dedupe("online") is False  # RFT on an online source (data.source=online) is Online RFT
    assert RFT(RFT.Config(dedupe=False)).dedupe("offline") is False
    assert OnlineRFT(OnlineRFT.Config(dedupe=True)).dedupe("online") is True


def test_online_rft_is_rft_with_an_online_source():
    assert ALGORITHMS.get("rft") is RFT and ALGORITHMS.get("online_rft") is OnlineRFT
    assert issubclass(OnlineRFT, RFT) and RFT.data_source == "offline" and OnlineRFT.data_source == "online"
    # the subclass overrides nothing but its data source
    assert set(vars(OnlineRFT)) - {"__module__", "__doc__", "__qualname__", "__firstlineno__", "__static_attributes__"} == {"data_source"}


@pytest.mark.parametrize("overrides, name, source", [
    (["grpo.algorithm=rft"], "rft", "offline"),
    (["grpo.algorithm=rft", "grpo.data.source=online"], "rft", "online"),
    (["grpo.algorithm=online_rft", "algorithms.online_rft.threshold=0.9"], "online_rft", "online"),
])
def test_config_selects_the_variant(overrides, name, source):
    cfg = load_config("configs/quickstart.yaml", overrides)
    algo = make_algorithm(cfg, cfg.stages.grpo.algorithm)
    assert (cfg.stages.grpo.data.source or algo.data_source) == source
    if name == "online_rft":
        assert algo.cfg.threshold == 0.9


def test_unscored_batch_is_an_error():
    with pytest.raises(ValueError, match="scored samples"):
        RFT(RFT.Config()).prepare(make_batch([float("nan")] * 2), OFFLINE)


def test_batch_without_correct_outputs_becomes_empty():
    prepared, metrics = RFT(RFT.Config()).prepare(make_batch([0.0] * 4), OFFLINE)
    assert len(prepared) == 0 and metrics["rft/kept_frac"] == 0.0 and metrics["rft/solved_prompt_frac"] == 0.0


SMOKE = [
    *TINY_MODEL,
    "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=8",
    "sft.steps=2", "sft.data.prompts_per_step=4", "grpo.steps=2", "grpo.data.pool_prompts=8",
    "grpo.data.prompts_per_step=4", "grpo.data.samples_per_prompt=4", "grpo.generation.max_new_tokens=8",
    "grpo.reward.name=test_rft_len_parity", "logging.progress=false",
]


@pytest.mark.parametrize("algorithm", ["rft", "online_rft"])
def test_smoke_run_trains(tmp_path, algorithm):
    from rlzoo.train import train

    cfg = load_config("configs/quickstart.yaml", SMOKE + [f"grpo.algorithm={algorithm}", f"output_dir={tmp_path}"])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["stage"] == "grpo" and "loss/policy" in r]
    assert len(steps) == 2
    assert all(math.isfinite(r["loss/policy"]) and r["rft/kept_frac"] > 0 for r in steps)
    assert_every_weight_moved(tmp_path / "sft" / "final", tmp_path / "grpo" / "final")
