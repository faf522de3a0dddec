"""The rewards of the paper comparison's controls and bounds: ``random`` (the spurious-reward
control) and ``oracle_prm`` (the exact step oracle as a process reward)."""

from __future__ import annotations

import pytest
import torch

from rlzoo.errors import ConfigError
from rlzoo.interface import Example
from rlzoo.rewards import make_reward
from rlzoo.runtime.generation import encode_pairs


# -- random -----------------------------------------------------------------------------------------


def test_random_reward_is_a_deterministic_coin_of_probability_p():
    reward = make_reward({"name": "random", "kwargs": {"p": 0.3, "seed": 7}})
    examples = [Example(f"Q{i}", "5") for i in range(4000)]
    completions = [f" {i % 13} + 1 = x." for i in range(4000)]
    values, _ = reward.score(examples, completions)
    assert set(values) == {0.0, 1.0}
    # a Bernoulli(0.3) mean over n = 4000: std sqrt(0.3 * 0.7 / 4000) = 0.0072; 4 std = 0.029
    assert abs(sum(values) / len(values) - 0.3) < 0.029
    again, _ = make_reward({"name": "random", "kwargs": {"p": 0.3, "seed": 7}}).score(examples, completions)
    assert again == values  # the same (prompt, completion, seed): the same coin
    other, _ = make_reward({"name": "random", "kwargs": {"p": 0.3, "seed": 8}}).score(examples, completions)
    assert other != values  # another seed: other coins


def test_random_reward_ignores_correctness():
    reward = make_reward({"name": "random", "kwargs": {"p": 0.5}})
    examples = [Example(f"Q{i}", str(i)) for i in range(2000)]
    right, _ = reward.score(examples, [f" The answer is \\boxed{{{i}}}." for i in range(2000)])
    wrong, _ = reward.score(examples, [f" The answer is \\boxed{{{i + 1}}}." for i in range(2000)])
    # both near 1/2 (std of a mean of 2000 coins: 0.011), whatever the answer
    assert abs(sum(right) / 2000 - 0.5) < 0.045 and abs(sum(wrong) / 2000 - 0.5) < 0.045


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_random_reward_p_out_of_range_is_one_line(p):
    with pytest.raises(ConfigError, match=rf"reward random: p={p} is out of range: it must be in \[0, 1\]"):
        make_reward({"name": "random", "kwargs": {"p": p}})


# -- oracle_prm ------------------------------------------------------------------------------------


def test_oracle_prm_rewards_each_step_end_by_the_oracle(tokenizer):
    # 8 - 6 = 2, then 2 * 3 = 6
    ex = Example("Question: ...\nAnswer:", "6", meta={"start": 8, "steps": [("-", 6, 2), ("*", 3, 6)], "ops": 2})
    completions = [
        " 8 - 6 = 2.\n2 * 3 = 6.\nThe answer is \\boxed{6}.",  # right, right, right -> value 1
        " 8 - 6 = 2.\n2 * 3 = 7.\nThe answer is \\boxed{7}.",  # right, wrong, wrong -> value 0
        " 8 - 6 = 3.\n3 * 3 = 9.\nThe answer is \\boxed{9}.",  # wrong from the first step -> value 0
        " 8 - 6 = 2.\nThe answer is \\boxed{2}.",  # an operation skipped: right, wrong -> value 0
    ]
    batch = encode_pairs(tokenizer, [ex] * 4, completions, "cpu")
    reward = make_reward({"name": "oracle_prm"}, tokenizer)
    assert reward.process
    values, _ = reward.score(batch.examples, batch.completions, batch=batch)
    assert values == [1.0, 0.0, 0.0, 0.0]
    reward.score_batch(batch)
    per_row = [batch.step_rewards[i][batch.step_ends[i] > 0].tolist() for i in range(4)]
    assert per_row == [[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0]]
    assert torch.all(batch.step_rewards[batch.step_ends == 0] == 0)  # nothing off the step ends
    # the last step ends at the row's EOS, as a learned PRM's does
    eos = batch.input_ids == tokenizer.eos_token_id  # [N, T]
    assert torch.all(batch.step_ends[eos] == 1)
    assert batch.rewards.tolist() == values


def test_oracle_prm_needs_the_policy_tokenizer(tokenizer):
    ex = Example("Q", "6", meta={"start": 8, "steps": [("-", 6, 2)], "ops": 1})
    batch = encode_pairs(tokenizer, [ex], [" 8 - 6 = 2."], "cpu")
    with pytest.raises(ConfigError, match="oracle_prm needs the policy's tokenizer"):
        make_reward({"name": "oracle_prm"}).score_batch(batch)
