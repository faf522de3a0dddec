"""Reward models (rlzoo/reward_models/model.py, labels.py): the model and its file format, scores, losses and
metrics worked by hand, and Math-Shepherd labels from real rollouts of the tiny model."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from rlzoo.errors import ModelLoadError
from rlzoo.interface import Example
from rlzoo.reward_models.model import (
    accuracy, first_error_accuracy, load_reward_model, outcome_loss, outcome_scores,
    per_step, process_loss, reward_model_from_lm, roc_auc, step_accuracy, step_scores, token_scores,
)
from rlzoo.reward_models.labels import math_shepherd_labels
from rlzoo.runtime.generation import GenerationConfig, encode_pairs, sample
from rlzoo.reward_models.steps import first_error, step_end_mask


def randomise_head(rm, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        rm.score.weight.copy_(torch.randn(rm.score.weight.shape, generator=g))
        rm.score.bias.fill_(0.3)


def gold_batch(tokenizer, task, k=4):
    exs = task.eval_examples()[:k]
    return encode_pairs(tokenizer, exs, [e.solution for e in exs], "cpu")


# -- the model ------------------------------------------------------------------------------------


def test_reward_model_from_lm_copies_the_backbone_and_starts_at_zero(tiny_model, tokenizer, task):
    rm = reward_model_from_lm(tiny_model)
    assert type(rm).__name__ == "LlamaForTokenClassification" and rm.config.num_labels == 1
    batch = gold_batch(tokenizer, task)
    scores = token_scores(rm, batch.input_ids, batch.attention_mask)
    assert scores.shape == batch.input_ids.shape and torch.all(scores == 0)  # zero head: every score 0
    # the backbone computes the policy's hidden states, from a copy of its weights
    kw = dict(input_ids=batch.input_ids, attention_mask=batch.attention_mask)
    torch.testing.assert_close(rm.model(**kw).last_hidden_state, tiny_model.model(**kw).last_hidden_state)
    with torch.no_grad():
        rm.model.embed_tokens.weight.add_(1.0)
    assert not torch.equal(rm.model.embed_tokens.weight, tiny_model.model.embed_tokens.weight)


def test_save_and_load_round_trip(tiny_model, tokenizer, task, tmp_path):
    rm = reward_model_from_lm(tiny_model)
    randomise_head(rm)
    rm.save_pretrained(tmp_path / "rm")
    loaded = load_reward_model(str(tmp_path / "rm"))
    batch = gold_batch(tokenizer, task)
    with torch.no_grad():
        expected = token_scores(rm, batch.input_ids, batch.attention_mask)
        torch.testing.assert_close(token_scores(loaded, batch.input_ids, batch.attention_mask), expected)
    assert expected.abs().min() > 0


def test_load_errors_are_one_line(tiny_model, tmp_path):
    with pytest.raises(ModelLoadError, match=r"^reward model folder not found: .*nowhere$"):
        load_reward_model(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match=r"^not a Hugging Face model folder \(no config.json\): "):
        load_reward_model(str(tmp_path / "empty"))
    tiny_model.save_pretrained(tmp_path / "policy")  # a causal LM is not a reward model
    with pytest.raises(ModelLoadError) as err:
        load_reward_model(str(tmp_path / "policy"))
    assert "\n" not in str(err.value)
    assert str(err.value).startswith("not a reward model (a *ForTokenClassification model with num_labels 1): ")
    assert str(err.value).endswith("holds LlamaForCausalLM with num_labels 2")


# -- scores ---------------------------------------------------------------------------------------


def test_left_padding_changes_no_score(tiny_model, tokenizer, task):
    rm = reward_model_from_lm(tiny_model)
    randomise_head(rm)
    batch = gold_batch(tokenizer, task)  # rows of different lengths: left- and right-padded
    with torch.no_grad():
        scores = token_scores(rm, batch.input_ids, batch.attention_mask)  # [N, T]
        for i in range(len(batch)):
            real = batch.attention_mask[i].bool()
            alone = token_scores(rm, batch.input_ids[i][real][None], batch.attention_mask[i][real][None])[0]
            torch.testing.assert_close(scores[i][real], alone, rtol=1e-5, atol=1e-5)
            # more left padding changes nothing either
            ids = torch.cat([torch.full((5,), tokenizer.pad_token_id), batch.input_ids[i]])[None]
            mask = torch.cat([torch.zeros(5, dtype=torch.long), batch.attention_mask[i]])[None]
            torch.testing.assert_close(token_scores(rm, ids, mask)[0, 5:][real], scores[i][real], rtol=1e-5, atol=1e-5)


def test_outcome_and_step_scores_read_the_right_tokens(tiny_model, tokenizer, task):
    rm = reward_model_from_lm(tiny_model)
    randomise_head(rm)
    batch = gold_batch(tokenizer, task)
    with torch.no_grad():
        scores = token_scores(rm, batch.input_ids, batch.attention_mask)
    ends = step_end_mask(batch, tokenizer)
    eos = batch.input_ids == tokenizer.eos_token_id  # [N, T] each gold row ends with its EOS
    assert torch.equal(outcome_scores(scores, batch.attention_mask), scores[eos])
    by_step = step_scores(scores, ends)
    assert torch.equal(by_step[ends > 0], scores[ends > 0]) and torch.all(by_step[ends == 0] == 0)
    # the last step ends at EOS, so a PRM's last step score is the ORM reading of the same model
    assert [row[-1] for row in per_step(scores, ends)] == outcome_scores(scores, batch.attention_mask).tolist()


# -- losses ---------------------------------------------------------------------------------------


def test_outcome_loss_by_hand():
    # BCE(s, y) = softplus(s) - y * s
    #   s = 0,     y = 1:    log 2
    #   s = 2,     y = 0:    log(1 + e^2)
    #   s = log 3, y = 0.75: log 4 - 0.75 log 3      (a soft label; sigmoid(log 3) = 0.75 is its minimum)
    logits = torch.tensor([0.0, 2.0, math.log(3)], requires_grad=True)
    labels = torch.tensor([1.0, 0.0, 0.75])
    loss = outcome_loss(logits, labels)
    expected = (math.log(2) + math.log(1 + math.e**2) + math.log(4) - 0.75 * math.log(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()  # d/ds = (sigmoid(s) - y) / N: (0.5 - 1, sigmoid(2), 0) / 3
    torch.testing.assert_close(logits.grad, torch.tensor([-0.5, torch.sigmoid(torch.tensor(2.0)).item(), 0.0]) / 3)
    assert outcome_loss(logits, labels, normaliser=6).item() == pytest.approx(expected / 2, rel=1e-6)


def test_process_loss_by_hand_ignores_everything_but_step_ends():
    # three step ends: (0, 1) s=0 y=1, (0, 3) s=2 y=0, (1, 2) s=log 3 y=0.75; garbage elsewhere
    logits = torch.tensor([[50.0, 0.0, -80.0, 2.0], [1e4, 7.0, math.log(3), -3.0]], requires_grad=True)
    labels = torch.tensor([[9.0, 1.0, 0.0, 0.0], [0.0, 0.0, 0.75, 1.0]])
    ends = torch.tensor([[0.0, 1.0, 0.0, 1.0], [0.0, 0.0, 1.0, 0.0]])
    loss = process_loss(logits, labels, ends)
    expected = (math.log(2) + math.log(1 + math.e**2) + math.log(4) - 0.75 * math.log(3)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[ends == 0] == 0) and torch.isfinite(logits.grad).all()
    assert process_loss(logits, labels, torch.zeros_like(ends)).item() == 0.0  # no step end, no loss
    # a minibatch's normaliser: two halves with the global count add up to the whole
    whole = process_loss(logits, labels, ends)
    halves = sum(process_loss(logits[i : i + 1], labels[i : i + 1], ends[i : i + 1], normaliser=ends.sum()) for i in range(2))
    torch.testing.assert_close(halves, whole)


# -- metrics --------------------------------------------------------------------------------------


def test_roc_auc_by_hand():
    # positives 0.35, 0.8 vs negatives 0.1, 0.4: 0.35 > 0.1, 0.35 < 0.4, 0.8 > both: 3 of 4 pairs
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == 0.75
    assert roc_auc([0.1, 0.2, 0.3], [0, 1, 1]) == 1.0 and roc_auc([0.3, 0.2, 0.1], [0, 1, 1]) == 0.0
    # ties count half: positive 0.5 vs negatives 0.5 (tie, 1/2) and 0.2 (win): (1/2 + 1) / 2
    assert roc_auc([0.5, 0.5, 0.2], [True, False, False]) == 0.75
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1])) and math.isnan(roc_auc([0.1], [0]))
    with pytest.raises(ValueError, match="0/1"):
        roc_auc([0.1, 0.2], [0.3, 1])


def test_roc_auc_equals_the_pairwise_count():
    g = torch.Generator().manual_seed(0)
    scores = torch.randint(0, 6, (40,), generator=g).float()  # many ties
    labels = torch.rand(40, generator=g) < 0.4
    pos, neg = scores[labels], scores[~labels]
    pairs = [(p > q) + 0.5 * (p == q) for p, q in itertools.product(pos.tolist(), neg.tolist())]
    assert roc_auc(scores, labels) == pytest.approx(sum(pairs) / len(pairs))


def test_accuracies_by_hand():
    assert accuracy([0.9, 0.2, 0.5, 0.4], [1, 0, 0, 1]) == 0.5  # p >= 0.5 predicts "correct"
    # solution 1: steps 0.9 (right: label 1), 0.3 (wrong: label 1); solution 2: 0.2 (right: label 0)
    assert step_accuracy([[0.9, 0.3], [0.2]], [[True, True], [False]]) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="one prediction per oracle step"):
        step_accuracy([[0.9]], [[True, True]])
    # predicted first errors from probabilities: first step with p < 0.5
    probs = [[0.9, 0.4, 0.8], [0.7, 0.6], [0.1, 0.9]]
    predicted = [first_error([p >= 0.5 for p in ps]) for ps in probs]
    assert predicted == [1, None, 0]
    assert first_error_accuracy(predicted, [1, None, 1]) == pytest.approx(2 / 3)  # third: 0 vs oracle 1
    assert math.isnan(first_error_accuracy([], []))


# -- Math-Shepherd labels --------------------------------------------------------------------------


def test_math_shepherd_labels_from_real_rollouts(tiny_model, tokenizer, task):
    from rlzoo.rewards.builtin import rule

    exs = task.eval_examples()[:6]
    solutions = [e.solution for e in exs]
    wrong = exs[1].answer
    solutions[1] = solutions[1].replace(f"\\boxed{{{wrong}}}", f"\\boxed{{{int(wrong) + 1}}}")  # a wrong final answer
    batch = encode_pairs(tokenizer, exs, solutions, "cpu")
    ends = step_end_mask(batch, tokenizer)
    calls = []

    def sampler(examples, n):  # the real sampler of the runtime, on the tiny random policy
        calls.append(examples)
        return sample(tiny_model, tokenizer, examples, n, GenerationConfig(max_new_tokens=8), seed=0)

    def grader(examples, completions):  # the rule reward, unstubbed
        return [rule(e.prompt, c, e) for e, c in zip(examples, completions)]

    n = 4
    hard = math_shepherd_labels(batch, ends, sampler, grader, n, "hard", tokenizer=tokenizer)
    soft = math_shepherd_labels(batch, ends, sampler, grader, n, "soft", tokenizer=tokenizer)
    assert hard.shape == soft.shape == batch.input_ids.shape
    assert torch.all(hard[ends == 0] == 0) and torch.all(soft[ends == 0] == 0)
    assert torch.all((0 <= soft) & (soft <= 1)) and torch.all((soft * n).round() == soft * n)  # c / n
    assert torch.equal(hard, (soft > 0).float())  # same seeded rollouts: hard = at least one reached
    # the last step is labelled by the row's own grade: gold rows 1, the wrong final answer 0
    own = [row[-1] for row in per_step(soft, ends)]
    assert own == [rule(e.prompt, s, e) for e, s in zip(exs, solutions)] == [1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    # one sampler call per labelling, every non-final step of every row: prompt + completion prefix
    assert len(calls) == 2 and len(calls[0]) == int(ends.sum()) - len(exs)
    lines = solutions[0].split("\n")  # " 10 - 5 = 5." "5 / 5 = 1." "The answer is ..."
    assert [e.prompt for e in calls[0][:2]] == [exs[0].prompt + lines[0], exs[0].prompt + "\n".join(lines[:2])]
    assert all(e.answer == exs[0].answer for e in calls[0][:2])
    # rollouts do decide: the tiny policy's continuations reach the answer from some prefixes, not others
    values = set(soft[ends > 0].tolist())
    assert len(values - {0.0, 1.0}) > 0 and 0.0 in values


def test_each_step_label_comes_from_the_rollouts_of_its_own_prefix(tokenizer, task):
    # a scripted sampler: the n continuations of a prefix reach the gold answer in (number of
    # lines of the prefix) of them, capped at n, so every prefix has its own share c / n; labels
    # taken from another prefix's rollouts (a shifted or shuffled row) would differ
    from rlzoo.interface import RolloutBatch

    exs = task.eval_examples()[:5]
    batch = encode_pairs(tokenizer, exs, [e.solution for e in exs], "cpu")
    ends = step_end_mask(batch, tokenizer)
    n, seen = 4, []

    def sampler(queries, k):
        seen.extend(q.prompt for q in queries)
        completions = []
        for q in queries:
            lines = q.prompt.split("Answer:", 1)[1].count("\n") + 1  # lines of the prefix (the prompt ends "Answer:")
            completions += [f"\nThe answer is \\boxed{{{q.answer if j < lines else -1}}}." for j in range(k)]
        return RolloutBatch(torch.zeros(len(completions), 1, dtype=torch.long), torch.ones(len(completions), 1),
                            torch.ones(len(completions), 1), torch.zeros(len(completions)), torch.zeros(len(completions)),
                            completions=completions)

    def grader(examples, solutions):  # the last boxed number against the gold answer
        return [float(s.rsplit("\\boxed{", 1)[-1].split("}")[0] == e.answer) for e, s in zip(examples, solutions)]

    soft = math_shepherd_labels(batch, ends, sampler, grader, n, "soft", tokenizer=tokenizer)
    for i, ex in enumerate(exs):
        labels = soft[i][ends[i] > 0].tolist()
        steps = ex.meta["ops"] + 1  # one line per operation, then the answer line
        assert len(labels) == steps
        # step j's prefix holds lines 1..j: j of the 4 rollouts reach the answer; the last step is the row's own grade
        assert labels == [min(j, n) / n for j in range(1, steps)] + [1.0], (i, labels)
    assert len(seen) == sum(e.meta["ops"] for e in exs)  # one query per step but the last


def test_math_shepherd_needs_a_known_mode(tiny_model, tokenizer, task):
    batch = gold_batch(tokenizer, task, 1)
    with pytest.raises(ValueError, match="mode must be 'hard' or 'soft'; got 'mean'"):
        math_shepherd_labels(batch, step_end_mask(batch, tokenizer), None, None, 2, "mean", tokenizer=tokenizer)


def test_doctests():
    import doctest

    import rlzoo.reward_models.labels
    import rlzoo.reward_models.model

    for module in (rlzoo.reward_models.model, rlzoo.reward_models.labels):
        result = doctest.testmod(module)
        assert result.failed == 0 and result.attempted > 0


def test_an_ensemble_of_reward_models_is_their_mean_or_min_and_clip_bounds_every_score(tiny_model, tokenizer, task, tmp_path):
    from rlzoo.errors import ConfigError
    from rlzoo.rewards import make_reward

    folders = []
    for seed in (0, 1):  # two reward models that disagree
        rm = reward_model_from_lm(tiny_model)
        randomise_head(rm, seed)
        rm.save_pretrained(tmp_path / f"rm{seed}")
        tokenizer.save_pretrained(tmp_path / f"rm{seed}")
        folders.append(str(tmp_path / f"rm{seed}"))
    batch = gold_batch(tokenizer, task)

    def values(name, **kwargs):
        reward = make_reward({"name": name, "kwargs": kwargs}).functions[0].fn
        return torch.tensor(reward(batch).values)

    a, b = values("orm", model=folders[0]), values("orm", model=folders[1])
    assert not torch.allclose(a, b)
    torch.testing.assert_close(values("orm", model=folders), (a + b) / 2)
    torch.testing.assert_close(values("orm", model=folders, ensemble="min"), torch.minimum(a, b))
    lo, hi = float(a.min() + 1e-3), float(a.max() - 1e-3)
    torch.testing.assert_close(values("orm", model=folders[0], clip=[lo, hi]), a.clamp(lo, hi))
    prm = make_reward({"name": "prm", "kwargs": {"model": folders, "ensemble": "min", "clip": [0.2, 0.6]}}).functions[0].fn(batch)
    ends = prm.step_ends.bool()
    assert ends.any() and prm.step_rewards[ends].min() >= 0.2 and prm.step_rewards[ends].max() <= 0.6
    for kwargs, message in (({"ensemble": "max"}, "ensemble must be one of mean, min"), ({"clip": [0.5, 0.2]}, "clip must be"),
                            ({"clip": 0.5}, "clip must be")):
        with pytest.raises(ConfigError, match=message):
            make_reward({"name": "orm", "kwargs": {"model": folders, **kwargs}})
