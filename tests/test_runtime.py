"""The shared runtime: log-prob path, sampling masks, gradient accumulation, checkpoints."""

import json

import pytest
import torch

from rlzoo.algorithms.grpo import GRPO
from rlzoo.algorithms.sft import SFT
from rlzoo.interface import RolloutBatch
from rlzoo.runtime.generation import GenerationConfig, completion_mask, encode_pairs, sample
from rlzoo.runtime.logprobs import token_logprobs
from rlzoo.runtime.trainer import split_groups, train_on_batch
from helpers import make_runtime, optim




def _batch(task, tokenizer, n=8):
    examples = task.eval_examples()[:n]
    return encode_pairs(tokenizer, examples, [ex.solution for ex in examples], "cpu")


def test_chunked_logprobs_equal_full_logits(tiny_model, task, tokenizer):
    batch = _batch(task, tokenizer)
    full = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, chunk_size=0)
    for chunk in (1, 7, 4096):
        chunked = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, chunk_size=chunk)
        torch.testing.assert_close(chunked * batch.attention_mask, full * batch.attention_mask, rtol=1e-5, atol=1e-5)


def test_chunked_logprob_gradients_equal_full(tiny_model, task, tokenizer):
    batch = _batch(task, tokenizer, 4)
    grads = []
    for chunk in (0, 5):
        tiny_model.zero_grad()
        (token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, chunk_size=chunk) * batch.loss_mask).sum().backward()
        grads.append(torch.cat([p.grad.flatten() for p in tiny_model.parameters()]))
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-6)


def test_left_padding_does_not_change_logprobs(tiny_model, task, tokenizer):
    # a row's log-probs are the same alone and in a batch where it is left-padded
    batch = _batch(task, tokenizer, 6)
    together = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask)
    for i in range(6):
        row = batch.select([i])
        keep = row.attention_mask[0].bool()
        keep_cols = keep.nonzero().squeeze(-1)
        alone = token_logprobs(tiny_model, row.input_ids[:, keep_cols], row.attention_mask[:, keep_cols])
        torch.testing.assert_close(alone[0, 1:], together[i, keep_cols][1:], rtol=1e-4, atol=1e-5)


def _sampled_groups(tiny_model, task, tokenizer, questions=3, samples=4):
    """A GRPO-like batch: ``samples`` completions of each question, two prompt widths joined by
    left padding (as batches from two generation calls are)."""
    cfg = GenerationConfig(max_new_tokens=8, temperature=1.0)
    parts = [sample(tiny_model, tokenizer, task.eval_examples()[i : i + 2], samples, cfg, seed=3, keys=[i, i + 1])
             for i in range(0, 2 * questions, 2)]
    return RolloutBatch.concat(parts, tokenizer.pad_token_id)


@pytest.mark.parametrize("chunk", [0, 5])
def test_shared_prompts_give_the_full_passs_logprobs_and_gradients(tiny_model, task, tokenizer, chunk):
    # the G rows of a question share their prompt: it is run once and its keys and values are
    # handed to each row; log-probs of the completions and the gradient equal the full pass
    batch = _sampled_groups(tiny_model, task, tokenizer)
    p = int(batch.loss_mask.bool().any(0).nonzero()[0])  # the first trained column
    weights = torch.randn(batch.loss_mask.shape, generator=torch.Generator().manual_seed(0)) * batch.loss_mask
    out, grads = [], []
    for prefix in (0, p):
        tiny_model.zero_grad()
        logp = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, chunk_size=chunk, temperature=0.7,
                              prefix_len=prefix)
        (logp * weights).sum().backward()
        out.append(logp)
        grads.append(torch.cat([q.grad.flatten() for q in tiny_model.parameters()]))
    torch.testing.assert_close(out[1] * batch.loss_mask, out[0] * batch.loss_mask, rtol=1e-5, atol=1e-5)
    assert out[1][:, :p].abs().sum() == 0  # the prompts' own log-probs are not computed
    torch.testing.assert_close(grads[1], grads[0], rtol=1e-4, atol=1e-6)


def test_shared_prompts_are_used_by_the_runtime_and_skipped_where_they_cannot_be(tiny_model, task, tokenizer, monkeypatch):
    import rlzoo.runtime.logprobs as lp

    batch = _sampled_groups(tiny_model, task, tokenizer)
    calls = []
    real = lp._shared_prefix_logprobs
    monkeypatch.setattr(lp, "_shared_prefix_logprobs", lambda *a: calls.append(a[3].shape[0]) or real(*a))
    rt = make_runtime(tiny_model, micro_batch_size=64)
    rt.policy_logprobs(batch)
    assert calls == [6]  # 24 rows, 6 distinct prompts
    calls.clear()
    distinct = _batch(task, tokenizer, 4)  # gold solutions of 4 questions: no prompt is shared
    rt.policy_logprobs(distinct)
    assert calls == []
    tiny_model.gradient_checkpointing_enable()
    try:
        rt.policy_logprobs(batch)  # no grad: nothing is recomputed, the cache is kept
        assert calls == [6]
        with torch.enable_grad():
            rt.logprobs(batch)  # a checkpointed training pass runs without a cache: the full pass
        assert calls == [6]
    finally:
        tiny_model.gradient_checkpointing_disable()


def test_completion_mask_stops_after_eos_and_at_the_generated_length():
    # eos 2, pad 0. Row 0 stops at its EOS (then generate's padding); row 1 at its first EOS; row 2
    # samples the pad id twice before its EOS: generated tokens, kept; row 3 came from a generate
    # call 3 tokens wide (its chunk), right-padded to 5 to join the batch: the padding is out.
    eos = 2
    ids = torch.tensor([[5, 6, 2, 0, 0], [5, 2, 7, 2, 0], [0, 6, 0, 2, 0], [5, 6, 7, 0, 0]])
    lengths = torch.tensor([5, 5, 5, 3])
    assert completion_mask(ids, eos, lengths).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 0], [1, 1, 1, 0, 0]]
    assert completion_mask(ids[:2], eos).tolist() == [[1, 1, 1, 0, 0], [1, 1, 0, 0, 0]]  # lengths default to L


def test_sample_shapes_and_groups(tiny_model, task, tokenizer):
    examples = task.eval_examples()[:3]
    torch.manual_seed(0)
    batch = sample(tiny_model, tokenizer, examples, 4, GenerationConfig(max_new_tokens=8, temperature=1.0))
    assert len(batch) == 12 and batch.group_ids.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert batch.loss_mask.sum(-1).max() <= 8 and batch.loss_mask.sum(-1).min() >= 1
    # the prompt part of every row carries no loss
    prompt_len = batch.input_ids.shape[1] - 8
    assert batch.loss_mask[:, :prompt_len].sum() == 0
    assert len(batch.completions) == 12 and all(isinstance(c, str) for c in batch.completions)


def assert_same_fields(empty, full):
    """``empty`` has every optional field and extra that ``full`` has, with the same dtype and rank."""
    from dataclasses import fields

    for f in fields(full):
        a, b = getattr(empty, f.name), getattr(full, f.name)
        assert (a is None) == (b is None), f.name
        if isinstance(b, torch.Tensor):
            assert (a.dtype, a.dim()) == (b.dtype, b.dim()), f.name
    assert empty.extras.keys() == full.extras.keys()
    for k, v in full.extras.items():
        assert (empty.extras[k].dtype, empty.extras[k].shape[0]) == (v.dtype, 0), k


@pytest.mark.parametrize("tool_rounds", [0, 1])
def test_sample_of_no_prompt_is_an_empty_batch(tiny_model, task, tokenizer, tool_rounds):
    # a rank may hold no question (one question per step on two processes): sampling nothing gives
    # a batch of 0 rows with the fields and extras a batch of sampled rows has (it used to raise
    # IndexError in the tokenizer), which gathers and concatenates with the other ranks' batches
    cfg = GenerationConfig(max_new_tokens=6, temperature=1.0, tool_rounds=tool_rounds)
    empty = sample(tiny_model, tokenizer, [], 3, cfg, seed=1, keys=[])
    full = sample(tiny_model, tokenizer, task.eval_examples()[:1], 3, cfg, seed=1, keys=[7])
    assert len(empty) == 0 and empty.input_ids.shape == (0, 0) and empty.completions == [] and empty.examples == []
    assert_same_fields(empty, full)
    joined = RolloutBatch.concat([empty, full], tokenizer.pad_token_id)
    assert torch.equal(joined.input_ids, full.input_ids) and joined.group_ids.tolist() == [7, 7, 7]
    pairs = encode_pairs(tokenizer, [], [], "cpu", group_ids=[])
    assert len(pairs) == 0 and pairs.group_ids.dtype == torch.long
    assert_same_fields(pairs, _batch(task, tokenizer, 2))


def _grads_after(model, algo, batch, micro, mode):
    model.zero_grad()
    rt = make_runtime(model, micro_batch_size=micro)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.0)
    cfg = optim(updates_per_batch=1, minibatches=1, micro_batch_size=micro, grad_clip=0.0)
    train_on_batch(rt, algo, batch, optimizer, cfg, mode, 40.0, torch.Generator().manual_seed(0))
    return torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("mode", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_one_by_eight_equals_eight_by_one(tiny_model, task, tokenizer, mode):
    batch = _batch(task, tokenizer, 8)
    full = _grads_after(tiny_model, SFT(SFT.Config()), batch, 8, mode)
    accumulated = _grads_after(tiny_model, SFT(SFT.Config()), batch, 1, mode)
    torch.testing.assert_close(full, accumulated, rtol=1e-4, atol=1e-7)


def test_grpo_accumulation_equals_full_batch(tiny_model, task, tokenizer):
    torch.manual_seed(0)
    batch = sample(tiny_model, tokenizer, task.eval_examples()[:2], 4, GenerationConfig(max_new_tokens=6))
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 0, 0, 1])
    algo = GRPO(GRPO.Config(beta=0.0))
    batch.old_logprobs = make_runtime(tiny_model).policy_logprobs(batch)  # as the stage fills pi_old
    batch, _ = algo.prepare(batch, None)
    full = _grads_after(tiny_model, algo, batch, 8, "seq-mean-token-mean")
    accumulated = _grads_after(tiny_model, algo, batch, 3, "seq-mean-token-mean")
    torch.testing.assert_close(full, accumulated, rtol=1e-4, atol=1e-7)


def test_split_groups_keeps_groups_whole(task, tokenizer):
    batch = _batch(task, tokenizer, 6)
    batch.group_ids = torch.tensor([0, 0, 1, 1, 2, 2])
    pieces = split_groups(batch, 3)
    assert [p.group_ids.tolist() for p in pieces] == [[0, 0], [1, 1], [2, 2]]


def test_publish_replaces_a_folder_and_recover_undoes_a_crash_at_any_point(tmp_path):
    from rlzoo.runtime.checkpoint import checkpoints, prune, publish, recover, temporary

    final = tmp_path / "final"
    for version in ("one", "two"):
        tmp = temporary(final)
        (tmp / "weights").write_text(version)
        publish(tmp, final)
    assert (final / "weights").read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    # killed between the two renames: only final.old exists; killed while writing: a .tmp is left
    final.rename(tmp_path / "final.old")
    (tmp_path / "checkpoint-7.tmp").mkdir()
    recover(tmp_path)
    assert (final / "weights").read_text() == "two" and sorted(p.name for p in tmp_path.iterdir()) == ["final"]
    for step in (3, 10, 7):
        (tmp_path / f"checkpoint-{step}").mkdir()
    assert [s for s, _ in checkpoints(tmp_path)] == [3, 7, 10]  # by step, not by name
    prune(tmp_path, 2)
    assert [s for s, _ in checkpoints(tmp_path)] == [7, 10]


def test_final_model_folder_loads_back_the_same_model(tiny_model, tokenizer, tmp_path):
    from rlzoo.runtime.models import load_stage_result, save_model

    save_model(tiny_model, tokenizer, tmp_path)
    model, tok = load_stage_result(tmp_path)
    ids = torch.tensor([[1, 5, 6, 7]])
    torch.testing.assert_close(model(ids).logits, tiny_model(ids).logits, rtol=0, atol=0)
    assert tok.padding_side == "left" and tok.pad_token_id == tokenizer.pad_token_id


class _Ranks:
    """A stand-in for Dist whose ``gather`` returns each simulated rank's reducer values, in rank order."""

    def __init__(self, reducers):
        self.reducers = reducers

    def gather(self, obj):
        return [dict(r.values) for r in self.reducers]


def test_token_means_do_not_depend_on_micro_batches_or_processes(tiny_model, task, tokenizer):
    # kl/k3 is a mean over trained tokens. Rows of very different lengths (1 to 12 completion
    # tokens) make a row-weighted average of per-micro-batch means differ from it: micro-batches
    # of 4 + 2 rows with token counts a, b and means m_a, m_b give (4 m_a + 2 m_b) / 6 instead of
    # (a m_a + b m_b) / (a + b). Expected: sum over trained tokens of
    #     k3 = pi_ref / pi_theta - log(pi_ref / pi_theta) - 1
    # divided by their number, from one full-batch pass.
    from rlzoo.runtime.distributed import MetricsReducer
    from rlzoo.runtime.models import frozen_copy

    examples = task.eval_examples()[:6]
    completions = ["1", "12 + 3 = 15 so the answer is 15", "7", "2 * 4", "a long answer: 9 - 2 = 7 and 7 + 1 = 8", "3"]
    batch = encode_pairs(tokenizer, examples, completions, "cpu", group_ids=[0, 0, 0, 1, 1, 1])
    lengths = batch.loss_mask.sum(-1)
    assert float(lengths.max()) >= 4 * float(lengths.min())
    batch.rewards = torch.tensor([1.0, 0, 0, 1, 0, 0.5])
    reference = frozen_copy(tiny_model)
    with torch.no_grad():  # the policy away from its reference: k3 > 0 and different on every token
        for p in tiny_model.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=torch.Generator().manual_seed(3)))
    algo = GRPO(GRPO.Config(beta=0.04))
    rt = make_runtime(tiny_model, reference=reference)
    batch.ref_logprobs = rt.reference_logprobs(batch)
    batch, _ = algo.prepare(batch, None)
    with torch.no_grad():
        log_r = batch.ref_logprobs - rt.policy_logprobs(batch)  # [N, T] log pi_ref / pi_theta
    k3 = (log_r.exp() - log_r - 1) * batch.loss_mask
    expected = float(k3.sum() / batch.loss_mask.sum())
    per_row = k3.sum(-1) / lengths
    assert abs(float(per_row.mean()) - expected) > 1e-3 * expected  # the row mean would be visibly off

    def train_metrics(part, micro):
        cfg = optim(updates_per_batch=1, minibatches=1, micro_batch_size=micro, grad_clip=0.0)
        means, rows, _ = train_on_batch(make_runtime(tiny_model, reference=reference), algo, part,
                                        torch.optim.SGD(tiny_model.parameters(), lr=0.0), cfg, "seq-mean-token-mean", None,
                                        torch.Generator().manual_seed(0))
        return means, rows

    for micro in (6, 4, 1):  # one micro-batch; 4 + 2 rows; one row each
        means, _ = train_metrics(batch, micro)
        assert means["kl/k3"] == pytest.approx(expected, rel=1e-5), micro
    # two processes holding rows 0-1 and 2-5: the reduction over ranks weights by tokens, not rows
    reducers = [MetricsReducer(), MetricsReducer()]
    for reducer, rows in zip(reducers, ([0, 1], [2, 3, 4, 5])):
        reducer.add(*train_metrics(batch.select(rows), 3))
    assert reducers[0].reduce(_Ranks(reducers))["kl/k3"] == pytest.approx(expected, rel=1e-5)
