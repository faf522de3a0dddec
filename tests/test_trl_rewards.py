"""TRL-style reward functions plug in unchanged: named as file.py:function, called once per batch
with prompts, completions, completion_ids and the examples' columns; None skips a completion;
several functions are weighted."""

from __future__ import annotations

import json

import pytest
import torch

from rlzoo.interface import Example
from rlzoo.rewards import RewardError, make_reward

PLUGIN = "tests/plugins/trl_rewards.py"
GOLD = Example("Q: 2 + 3?", "5", " 2 + 3 = 5.\\nThe answer is \\\\boxed{5}.", meta={"format": "cot", "ops": 1})


def test_a_trl_function_gets_the_batch_and_the_columns():
    from rlzoo.registry import load_plugin

    reward = make_reward({"name": f"{PLUGIN}:recording_reward"})
    examples = [GOLD, Example("Q2", "7", None, meta={"level": 3})]
    values, events = reward.score(examples, ["a", "b"], [[1, 2], [3]])
    seen = load_plugin(PLUGIN).SEEN
    assert values == [0.5, 0.5] and events["skipped"] == 0.0
    assert seen["prompts"] == ["Q: 2 + 3?", "Q2"] and seen["completions"] == ["a", "b"] and seen["completion_ids"] == [[1, 2], [3]]
    cols = seen["columns"]
    assert cols["answer"] == ["5", "7"] and cols["solution"] == [GOLD.solution, None]
    assert cols["format"] == ["cot", None] and cols["ops"] == [1, None] and cols["level"] == [None, 3]


def test_none_skips_and_weights_sum_the_functions_that_gave_a_value():
    reward = make_reward({"functions": [{"name": f"{PLUGIN}:accuracy_reward", "weight": 1.0},
                                        {"name": f"{PLUGIN}:format_reward", "weight": 0.25}]})
    completions = ["so \\boxed{5}", "so \\boxed{6}", "no box"]
    values, events = reward.score([GOLD] * 3, completions)
    # accuracy: 1, 0, None; format: 1, 1, 0 -> 1 + 0.25, 0 + 0.25, 0.25 * 0 (accuracy skipped, format not)
    assert values == [1.25, 0.25, 0.0] and events["skipped"] == 0.0
    alone = make_reward({"name": f"{PLUGIN}:accuracy_reward"})
    values, events = alone.score([GOLD] * 3, completions)
    assert values == [1.0, 0.0, None] and events["skipped"] == pytest.approx(1 / 3)


@pytest.mark.parametrize("returned, message", [
    ([1.0], "returned 1 values for 2 completions"),
    ([1.0, float("nan")], "returned nan for completion 1"),
    ([1.0, "yes"], "returned str for completion 1"),
])
def test_a_reward_that_returns_garbage_is_one_line_naming_it(returned, message):
    from rlzoo.rewards import Reward, RewardFunction

    reward = Reward([RewardFunction("bad", lambda prompts, completions, **kw: returned)])
    with pytest.raises(RewardError, match=message) as e:
        reward.score([GOLD] * 2, ["a", "b"])
    assert "reward 'bad'" in str(e.value) and "\n" not in str(e.value)


def test_trl_rewards_train_grpo_end_to_end_and_skipped_completions_are_counted(tmp_path):
    from rlzoo.config import load_config
    from rlzoo.train import train
    from helpers import TINY_MODEL

    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "task.synthetic.eval_size=4", "eval.samples=0", "eval.max_new_tokens=8", "sft.steps=2",
        "grpo.steps=2", "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=4", "grpo.generation.max_new_tokens=12",
        f"grpo.reward.functions=[{{name: '{PLUGIN}:accuracy_reward'}}, {{name: '{PLUGIN}:format_reward', weight: 0.5}}]",
        f"output_dir={tmp_path}", "logging.progress=false",
    ])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r["stage"] == "grpo" and "loss/policy" in r]
    assert len(grpo) == 2 and all("reward/skipped_frac" in r for r in grpo)
