"""DPO: coefficient form vs autograd of -log sigmoid(beta * margin); pairing; a smoke run."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from rlzoo.algorithms.dpo import DPO, LOSS_AGG, pair_indices, sequence_logratio
from rlzoo.config import ConfigError, check_hyperparameters, load_config
from rlzoo.interface import RolloutBatch
from rlzoo.losses import surrogate_loss
from rlzoo.registry import register_reward
from rlzoo.runtime.trainer import resolve_loss_agg, split_groups, train_on_batch
from helpers import TINY_MODEL, make_runtime, optim, assert_every_weight_moved


@register_reward("test_dpo_len_parity")
def len_parity(prompt, completion, example):
    """1 for a completion of even character length, else 0: marks about half of a random model's outputs correct."""
    return float(len(completion) % 2 == 0)


def scored_batch(rewards, samples=4, t=10, seed=0):
    """Groups of ``samples`` rows; each row a left-padded prompt of random length, then a completion of random length."""
    n = len(rewards)
    g = torch.Generator().manual_seed(seed)
    prompt_len = torch.randint(1, 4, (n,), generator=g)  # [N]
    comp_len = torch.randint(1, 6, (n,), generator=g)  # [N]
    attention = torch.zeros(n, t, dtype=torch.long)  # [N, T]
    loss_mask = torch.zeros(n, t)  # [N, T]
    start = 4  # completions start at column 4 (prompts are left-padded to 4)
    for i in range(n):
        attention[i, start - prompt_len[i] : start + comp_len[i]] = 1
        loss_mask[i, start : start + comp_len[i]] = 1
    return RolloutBatch(
        input_ids=torch.randint(3, 50, (n, t), generator=g),
        attention_mask=attention,
        loss_mask=loss_mask,
        group_ids=torch.arange(n) // samples,
        rewards=torch.tensor(rewards, dtype=torch.float),
        ref_logprobs=-torch.rand(n, t, generator=g) * 3,
        completions=[f"c{i}" for i in range(n)],
    )


def native_dpo_loss(logp, batch, beta, normalize, eps=0.0):
    """mean over pairs of -(1-eps) log sigmoid(z) - eps log sigmoid(-z), z = beta (lr(o+) - lr(o-)); pairs are rows (2p, 2p+1)."""
    lr = sequence_logratio(logp, batch.ref_logprobs, batch.loss_mask, normalize)  # [2P]
    z = beta * (lr[0::2] - lr[1::2])  # [P]
    return (-(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)).mean()


REWARDS = [1, 0, 0, 1, 1, 1, 1, 1, 0, 1, 0, 0, 0, 0, 0, 0, 1, 0, 1, 0]  # groups 1 (all right) and 3 (all wrong) drop


@pytest.mark.parametrize("normalize", ["length", "sum"])
@pytest.mark.parametrize("pairs_per_prompt", [1, 3])
@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_coefficient_gradient_equals_native_gradient(normalize, pairs_per_prompt, eps):
    beta = 0.5
    algo = DPO(DPO.Config(beta=beta, normalize=normalize, pairs_per_prompt=pairs_per_prompt, label_smoothing=eps))
    batch, _ = algo.prepare(scored_batch(REWARDS), None)
    lengths = batch.loss_mask.sum(-1)
    assert (lengths[0::2] != lengths[1::2]).any(), "pairs must mix lengths"
    # current log-probs far from the reference, so margins are not 0
    logp0 = batch.ref_logprobs + torch.randn(batch.ref_logprobs.shape, generator=torch.Generator().manual_seed(1))

    logp = logp0.clone().requires_grad_(True)
    coef, metrics = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, algo.loss_agg).backward()
    grad_coef = logp.grad.clone()

    logp = logp0.clone().requires_grad_(True)
    native = native_dpo_loss(logp, batch, beta, normalize, eps)
    native.backward()
    torch.testing.assert_close(grad_coef, logp.grad, rtol=1e-5, atol=1e-7)
    assert metrics["dpo/loss"] == pytest.approx(float(native.detach()), rel=1e-5)


@pytest.mark.parametrize("normalize", ["length", "sum"])
def test_micro_batches_of_whole_pairs_sum_to_the_full_gradient(normalize):
    algo = DPO(DPO.Config(beta=0.3, normalize=normalize, pairs_per_prompt=2))
    batch, _ = algo.prepare(scored_batch(REWARDS, seed=4), None)
    logp0 = batch.ref_logprobs + torch.randn(batch.ref_logprobs.shape, generator=torch.Generator().manual_seed(5))
    grads = []
    for size in (len(batch), 2, 4):
        logp = logp0.clone().requires_grad_(True)
        start = 0
        for micro in split_groups(batch, size):
            rows = slice(start, start + len(micro))
            start += len(micro)
            coef, _ = algo.coefficients(micro, logp[rows].detach())
            surrogate_loss(coef, logp[rows], micro.loss_mask, algo.loss_agg, num_seqs=float(len(batch))).backward()
        grads.append(logp.grad)
    torch.testing.assert_close(grads[1], grads[0])
    torch.testing.assert_close(grads[2], grads[0])


def one_pair(chosen_token_lr, rejected_token_lr):
    """A pair whose outputs have the given per-token log-ratios log pi - log pi_ref (pi_ref = 1/2 everywhere)."""
    t = 1 + max(len(chosen_token_lr), len(rejected_token_lr))
    ref = torch.full((2, t), math.log(0.5))
    logp = ref.clone()
    mask = torch.zeros(2, t)
    for row, values in enumerate((chosen_token_lr, rejected_token_lr)):
        logp[row, 1 : 1 + len(values)] += torch.tensor(values)
        mask[row, 1 : 1 + len(values)] = 1
    batch = RolloutBatch(torch.zeros(2, t, dtype=torch.long), torch.ones(2, t, dtype=torch.long), mask,
                         torch.tensor([0, 0]), torch.tensor([1.0, 0.0]), ref_logprobs=ref,
                         extras={"dpo_sign": torch.tensor([1.0, -1.0])})
    return batch, logp


def test_coefficient_by_hand():
    # beta = 0.1, lr(o+) = 0.5, lr(o-) = -0.5 (one token each, so both normalisations agree):
    #   paper's GC on o+ = beta * sigmoid(beta * (lr- - lr+)) = 0.1 * sigmoid(-0.1) = 0.1 * 0.4750208 = 0.04750208
    #   rlzoo's GC = 2 * that = 0.09500416 (the runtime averages over 2 sequences, the loss over 1 pair), - on o-
    batch, logp = one_pair([0.5], [-0.5])
    for normalize in ("length", "sum"):
        coef, m = DPO(DPO.Config(beta=0.1, normalize=normalize)).coefficients(batch, logp)
        assert coef[0, 1] == pytest.approx(2 * 0.1 * 0.4750208125, rel=1e-6)
        assert coef[1, 1] == pytest.approx(-0.09500416, rel=1e-6)
        # chosen reward beta * lr+ = 0.05, rejected -0.05, margin 0.1 > 0, loss -log sigmoid(0.1) = 0.6443967
        assert m["dpo/chosen_reward"] == pytest.approx(0.05) and m["dpo/rejected_reward"] == pytest.approx(-0.05)
        assert m["dpo/margin"] == pytest.approx(0.1) and m["dpo/accuracy"] == 1.0
        assert m["dpo/loss"] == pytest.approx(0.6443967, rel=1e-6)
        # d(native loss)/d logp(o+ token) = -beta * sigmoid(-0.1) = -0.04750208 = surrogate's -(1/N) * GC, N = 2
        lp = logp.clone().requires_grad_(True)
        surrogate_loss(coef, lp, batch.loss_mask, LOSS_AGG[normalize]).backward()
        assert lp.grad[0, 1] == pytest.approx(-0.04750208, rel=1e-6)


def test_length_and_sum_normalisation_by_hand():
    # o+ has token log-ratios 0.2 and 0.8: mean 0.5, sum 1.0; o- has -0.5 on one token.
    batch, logp = one_pair([0.2, 0.8], [-0.5])
    _, m = DPO(DPO.Config(beta=1.0, normalize="length")).coefficients(batch, logp)
    assert m["dpo/margin"] == pytest.approx(1.0)  # 0.5 - (-0.5)
    _, m = DPO(DPO.Config(beta=1.0, normalize="sum")).coefficients(batch, logp)
    assert m["dpo/margin"] == pytest.approx(1.5)  # 1.0 - (-0.5)


def test_boundaries():
    # policy = reference: z = 0, sigmoid(0) = 1/2, GC = +/- 2 * beta / 2 = +/- beta; accuracy counts margin > 0 only
    batch, logp = one_pair([0.0, 0.0], [0.0])
    coef, m = DPO(DPO.Config(beta=0.1)).coefficients(batch, logp)
    assert coef[0, 1] == pytest.approx(0.1) and coef[1, 1] == pytest.approx(-0.1)
    assert m["dpo/accuracy"] == 0.0 and m["dpo/loss"] == pytest.approx(math.log(2))
    # a pair already far apart (z = 0.1 * 200 = 20): GC = 2 * 0.1 * sigmoid(-20) ~ 4e-10, nearly no push
    batch, logp = one_pair([100.0], [-100.0])
    coef, _ = DPO(DPO.Config(beta=0.1)).coefficients(batch, logp)
    assert 0 < float(coef[0, 1]) < 1e-9
    # label smoothing eps = 0.1 at z = 0: (1 - eps) / 2 - eps / 2 = 0.4, GC = 2 * beta * 0.4 = 0.08
    batch, logp = one_pair([0.0], [0.0])
    coef, _ = DPO(DPO.Config(beta=0.1, label_smoothing=0.1)).coefficients(batch, logp)
    assert coef[0, 1] == pytest.approx(0.08)


def test_prepare_pairs_correct_with_wrong_of_the_same_question():
    # group 0: rewards 1 0 0 1; group 1: all correct (dropped); group 2: all wrong (dropped);
    # group 3: wrong, correct, unscored (NaN is neither), wrong
    rewards = [1, 0, 0, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 1, float("nan"), 0]
    batch = scored_batch(rewards)
    algo = DPO(DPO.Config(pairs_per_prompt=3))
    out, m = algo.prepare(batch, None)
    # group 0: o+ rows [0, 3], o- rows [1, 2] -> pairs (0,1), (3,2), (0,2); group 3: o+ [13], o- [12, 15] -> (13,12), (13,15)
    assert out.completions == ["c0", "c1", "c3", "c2", "c0", "c2", "c13", "c12", "c13", "c15"]
    assert out.group_ids.tolist() == [0, 0, 1, 1, 2, 2, 9, 9, 10, 10]  # pair m of question g: g * pairs_per_prompt + m
    assert out.extras["dpo_sign"].tolist() == [1, -1] * 5
    assert out.rewards.tolist() == [1, 0] * 5
    torch.testing.assert_close(out.ref_logprobs[6], batch.ref_logprobs[13])  # per-row tensors travel with the row
    assert m == {"dpo/num_pairs": 5.0, "dpo/num_dropped_groups": 2.0, "dpo/dropped_group_frac": 0.5}
    # default: one pair per question
    out, m = DPO(DPO.Config()).prepare(scored_batch(rewards), None)
    assert out.completions == ["c0", "c1", "c13", "c12"] and m["dpo/num_pairs"] == 2.0


def test_prepare_with_no_usable_group_gives_an_empty_batch():
    out, m = DPO(DPO.Config()).prepare(scored_batch([1, 1, 0, 0], samples=2), None)
    assert len(out) == 0 and m["dpo/num_pairs"] == 0.0 and m["dpo/num_dropped_groups"] == 2.0


def test_pair_indices():
    # the first min(a, b) pairs use each output once; then distinct combinations, at most a * b
    assert pair_indices(3, 2, 2) == [(0, 0), (1, 1)]
    for a, b in [(1, 1), (2, 3), (3, 2), (4, 4), (1, 5)]:
        pairs = pair_indices(a, b, 100)
        assert len(pairs) == a * b and len(set(pairs)) == a * b
        first = pairs[: min(a, b)]
        assert len({i for i, _ in first}) == len({j for _, j in first}) == min(a, b)


def test_declarations_and_config_errors():
    assert DPO(DPO.Config(normalize="length")).loss_agg == "seq-mean-token-mean"
    assert DPO(DPO.Config(normalize="sum")).loss_agg == "seq-mean-token-sum"
    algo = DPO(DPO.Config())
    assert algo.needs == {"reference"} and algo.group_coupled and algo.data_source == "offline"
    with pytest.raises(ValueError, match="conflicts"):
        resolve_loss_agg(algo, "token-mean")
    for bad in ({"normalize": "mean"}, {"pairs_per_prompt": 0}, {"label_smoothing": 0.5}):
        with pytest.raises(ConfigError, match=f"algorithms.dpo.{next(iter(bad))}"):
            check_hyperparameters("dpo", DPO.Config(**bad))  # what the run checks before building it




def test_runtime_accumulation_equals_full_batch(tiny_model, task, tokenizer):
    # through the real trainer: micro-batches of 2 rows (one pair) give the full batch's gradient
    from rlzoo.runtime.generation import GenerationConfig, sample
    from rlzoo.runtime.models import frozen_copy

    torch.manual_seed(0)
    reference = frozen_copy(tiny_model)
    with torch.no_grad():
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # policy != reference: margins are not 0
    batch = sample(tiny_model, tokenizer, task.eval_examples()[:3], 4, GenerationConfig(max_new_tokens=6))
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 1, 1, 0, 1, 1, 1, 1])
    algo = DPO(DPO.Config(beta=0.5, pairs_per_prompt=2, normalize="sum"))
    rt = make_runtime(tiny_model, tokenizer, reference=reference)
    batch.ref_logprobs = rt.reference_logprobs(batch)
    batch, m = algo.prepare(batch, rt)
    assert m["dpo/num_pairs"] == 4.0
    grads = []
    for micro in (len(batch), 2):
        tiny_model.zero_grad()
        cfg = optim(updates_per_batch=1, minibatches=1, micro_batch_size=micro, grad_clip=0.0)
        train_on_batch(rt, algo, batch, torch.optim.SGD(tiny_model.parameters(), lr=0.0), cfg, algo.loss_agg, None,
                       torch.Generator().manual_seed(0))
        grads.append(torch.cat([p.grad.flatten() for p in tiny_model.parameters()]))
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-7)


SMOKE = [
    *TINY_MODEL,
    "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=8",
    "sft.steps=2", "sft.data.prompts_per_step=4", "grpo.algorithm=dpo", "grpo.steps=2", "grpo.data.pool_prompts=8",
    "grpo.data.prompts_per_step=4", "grpo.data.samples_per_prompt=4", "grpo.generation.max_new_tokens=8",
    "grpo.reward.name=test_dpo_len_parity", "logging.progress=false",
]


@pytest.mark.parametrize("extra", [[], ["algorithms.dpo.normalize=sum", "grpo.data.resample_every=1"]], ids=["offline", "iterative-sum"])
def test_smoke_run_trains(tmp_path, extra):
    from rlzoo.train import train

    train(load_config("configs/quickstart.yaml", SMOKE + extra + [f"output_dir={tmp_path}"]))
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r["stage"] == "grpo" and "loss/policy" in r]
    assert len(steps) == 2
    assert all(math.isfinite(r["loss/policy"]) and math.isfinite(r["dpo/loss"]) and r["dpo/num_pairs"] > 0 for r in steps)
    assert steps[0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-5)  # step 1: policy = reference, z = 0
    if extra:
        assert all("pool/mean" in r for r in steps)  # re-sampled at every step
    assert_every_weight_moved(tmp_path / "sft" / "final", tmp_path / "grpo" / "final")
