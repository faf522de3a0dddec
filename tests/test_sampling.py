"""Row-seeded sampling: the right distribution, independent of the batch, and log-probs that match
the training path at the sampling temperature."""

from __future__ import annotations

import math

import pytest
import torch

from rlzoo.config import GenerationConfig
from rlzoo.runtime.generation import encode_prompts, sample
from rlzoo.runtime.logprobs import token_logprobs
from rlzoo.runtime.sampling import SeededSampler, mix_seed, row_seeds, uniforms


def test_uniforms_are_uniform_and_depend_only_on_seed_and_counter():
    seeds = torch.tensor([mix_seed(0, i) for i in range(20000)])
    u = uniforms(seeds, torch.zeros_like(seeds))  # [20000]
    assert 0 < float(u.min()) and float(u.max()) < 1
    # ten equal bins hold 2000 each; a chi-square with 9 degrees of freedom stays below 27.9 (p = 0.001)
    counts = torch.histc(u.float(), bins=10, min=0, max=1)
    assert float(((counts - 2000) ** 2 / 2000).sum()) < 27.9
    torch.testing.assert_close(uniforms(seeds[5:7], torch.tensor([3, 3])), uniforms(seeds, torch.full_like(seeds, 3))[5:7])
    assert float(uniforms(seeds[:1], torch.tensor([1]))) != float(uniforms(seeds[:1], torch.tensor([2])))


def test_sampler_draws_from_softmax_of_logits_over_temperature():
    # one step over a 4-token vocabulary, 8000 rows: frequencies match softmax(logits / T)
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0]]).repeat(8000, 1)  # [B, V]
    sampler = SeededSampler(row_seeds(7, [0], 8000), start=1, temperature=0.7)
    out = sampler(torch.zeros(8000, 1, dtype=torch.long), logits)  # [B, V]: 0 at the chosen token, -inf elsewhere
    chosen = out.argmax(-1)
    assert torch.all(out.isinf().sum(-1) == 3)
    expected = torch.softmax(logits[0] / 0.7, -1) * 8000
    counts = torch.bincount(chosen, minlength=4).float()
    assert float(((counts - expected) ** 2 / expected).sum()) < 16.3  # chi-square, 3 dof, p = 0.001
    # the recorded log-probs are those of softmax(logits / T)
    torch.testing.assert_close(sampler.logprobs[0], torch.log_softmax(logits / 0.7, -1).gather(-1, chosen[:, None]).squeeze(-1))


def test_top_p_keeps_only_the_nucleus():
    # probabilities 0.6, 0.3, 0.07, 0.03: top_p = 0.8 keeps the first two only
    logits = torch.log(torch.tensor([[0.6, 0.3, 0.07, 0.03]])).repeat(4000, 1)
    out = SeededSampler(row_seeds(1, [0], 4000), start=1, temperature=1.0, top_p=0.8)(torch.zeros(4000, 1, dtype=torch.long), logits)
    counts = torch.bincount(out.argmax(-1), minlength=4)
    assert counts[2:].sum() == 0 and abs(float(counts[0]) / 4000 - 2 / 3) < 0.03


def test_greedy_picks_the_argmax():
    logits = torch.tensor([[0.1, 3.0, 2.0], [5.0, 0.0, 0.0]])
    out = SeededSampler(torch.tensor([1, 2]), start=1, temperature=0.0)(torch.zeros(2, 1, dtype=torch.long), logits)
    assert out.argmax(-1).tolist() == [1, 0]


def test_a_row_samples_the_same_tokens_alone_in_another_batch_or_batch_size(tiny_model, task, tokenizer):
    examples = task.eval_examples()[:4]
    cfg = GenerationConfig(max_new_tokens=10, temperature=1.0)
    together = sample(tiny_model, tokenizer, examples, 3, cfg, seed=5, keys=[10, 11, 12, 13])
    small_batches = sample(tiny_model, tokenizer, examples, 3, GenerationConfig(max_new_tokens=10, temperature=1.0, batch_size=3),
                           seed=5, keys=[10, 11, 12, 13])
    alone = sample(tiny_model, tokenizer, examples[2:3], 3, cfg, seed=5, keys=[12])
    assert together.completions == small_batches.completions
    assert together.completions[6:9] == alone.completions
    assert len(set(together.completions)) > 4  # different keys and sample indices give different samples
    other_seed = sample(tiny_model, tokenizer, examples, 3, cfg, seed=6, keys=[10, 11, 12, 13])
    assert other_seed.completions != together.completions
    assert together.group_ids.tolist() == [10] * 3 + [11] * 3 + [12] * 3 + [13] * 3


@pytest.mark.parametrize("temperature", [0.7, 1.3])
def test_sampling_time_logprobs_equal_training_logprobs_at_the_temperature(tiny_model, task, tokenizer, temperature):
    # the sampler records log softmax(logits / T) of each drawn token, from generate's KV-cached
    # steps; the training path recomputes them from the whole sequence: they agree to 1e-5
    batch = sample(tiny_model, tokenizer, task.eval_examples()[:4], 2, GenerationConfig(max_new_tokens=12, temperature=temperature))
    assert batch.temperature == temperature
    with torch.no_grad():
        recomputed = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, chunk_size=5, temperature=temperature)
        at_one = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask, temperature=1.0)
    mask = batch.loss_mask
    assert mask.sum() > 20
    torch.testing.assert_close(recomputed * mask, batch.sample_logprobs * mask, rtol=0, atol=1e-5)
    # at T = 1 the same tokens have other log-probs: the temperature is not ignored
    assert float(((at_one - recomputed) * mask).abs().max()) > 1e-2


def test_greedy_batches_take_log_probs_at_temperature_one(tiny_model, task, tokenizer):
    batch = sample(tiny_model, tokenizer, task.eval_examples()[:2], 1, GenerationConfig(max_new_tokens=6, temperature=0.0))
    assert batch.temperature == 1.0
    with torch.no_grad():
        recomputed = token_logprobs(tiny_model, batch.input_ids, batch.attention_mask)
    torch.testing.assert_close(recomputed * batch.loss_mask, batch.sample_logprobs * batch.loss_mask, rtol=0, atol=1e-5)
    assert math.isfinite(float(batch.sample_logprobs.sum()))


def with_output_bias(model, bias):
    """``model`` with its output head given a bias [V] (both ``generate`` and the training
    log-prob path read ``get_output_embeddings()``, so they see the same distribution)."""
    old = model.get_output_embeddings()
    head = torch.nn.Linear(old.in_features, old.out_features, bias=True)
    with torch.no_grad():
        head.weight.copy_(old.weight)
        head.bias.copy_(bias)
    model.set_output_embeddings(head)
    return model


def test_a_sampled_pad_token_stays_in_the_completion(tiny_model, task, tokenizer):
    # The tiny tokenizer's pad (0) is not its EOS (2). A policy may sample the pad id (with real
    # tokenizers pad is often an ordinary token): pad gets +3 on its logit, EOS +1.5, so rows hold
    # pad ids before their EOS. Those tokens were generated and attended by generate; they must be
    # in loss_mask and attention_mask, or every later token of the row shifts one position and its
    # training log-prob is no longer the sampled one. Only what follows EOS, and the right padding
    # that joins generate calls of different widths (batch_size 2: one prompt per call), is out.
    pad, eos = tokenizer.pad_token_id, tokenizer.eos_token_id
    assert pad != eos
    bias = torch.zeros(len(tokenizer))
    bias[pad], bias[eos] = 3.0, 1.5
    model = with_output_bias(tiny_model, bias)
    examples = task.eval_examples()[:4]
    batch = sample(model, tokenizer, examples, 2, GenerationConfig(max_new_tokens=12, temperature=1.0, batch_size=2))
    prompt_width = encode_prompts(tokenizer, [ex.prompt for ex in examples], "cpu")[0].shape[1]
    completion = batch.input_ids[:, prompt_width:]  # [N, L] the generated columns
    is_eos = completion == eos
    before_eos = is_eos.long().cumsum(-1) - is_eos.long() == 0  # [N, L] up to and including the first EOS
    real_after = torch.flip(torch.cummax(torch.flip((completion != pad).long(), [1]), 1).values, [1]) > 0  # [N, L] a non-pad token at or after
    sampled_pads = (completion == pad) & before_eos & real_after  # [N, L] pad ids the policy generated mid-completion
    assert sampled_pads.sum() >= 3, "the test needs pad ids sampled inside completions"
    assert torch.all(batch.loss_mask[:, prompt_width:][sampled_pads] == 1)
    assert torch.all(batch.attention_mask[:, prompt_width:][sampled_pads] == 1)
    trained = batch.loss_mask > 0  # [N, T]
    for row in range(len(batch)):
        cols = trained[row].nonzero().squeeze(-1).tolist()
        assert cols == list(range(prompt_width, prompt_width + len(cols)))  # one contiguous completion, from its start
        assert eos not in batch.input_ids[row, cols].tolist()[:-1]  # nothing after the first EOS
    stopped = [r for r in range(len(batch)) if batch.input_ids[r, trained[r]].tolist()[-1] == eos]
    assert stopped and all(batch.attention_mask[r, trained[r].nonzero().max() + 1 :].sum() == 0 for r in stopped)
    with torch.no_grad():
        recomputed = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=1.0)
    torch.testing.assert_close(recomputed * batch.loss_mask, batch.sample_logprobs * batch.loss_mask, rtol=0, atol=1e-5)


def test_prompts_prefilled_once_for_their_samples_give_the_tokens_of_a_full_prefill(tiny_model, task, tokenizer, monkeypatch):
    # with G samples per prompt, each prompt's keys and values are computed once and repeated to
    # its G rows; the same rows generated as separate prompts (no sharing) get the same tokens
    import rlzoo.runtime.sampling as sampling
    from rlzoo.runtime.sampling import generate

    prefills = []
    real = sampling._prompt_cache
    monkeypatch.setattr(sampling, "_prompt_cache", lambda m, i, a, c: prefills.append((len(i), c)) or real(m, i, a, c))

    ids, mask = encode_prompts(tokenizer, [ex.prompt for ex in task.eval_examples()[:3]], "cpu")  # left-padded
    seeds = row_seeds(5, [0, 1, 2], 4)
    args = dict(temperature=1.0, top_p=1.0, max_new_tokens=10)
    shared, lp_shared = generate(tiny_model, tokenizer, ids, mask, seeds=seeds, num_return_sequences=4, **args)
    alone, lp_alone = generate(tiny_model, tokenizer, ids.repeat_interleave(4, 0), mask.repeat_interleave(4, 0), seeds=seeds,
                               num_return_sequences=1, **args)
    assert prefills == [(3, 4)]  # 3 prompts prefilled once, for 4 samples each; none for the separate rows
    assert torch.equal(shared, alone)
    torch.testing.assert_close(lp_shared, lp_alone, rtol=1e-5, atol=1e-5)
