"""A 2-step smoke run of each post-DeepSeekMath variant through `rlzoo train` on the tiny model, in
bf16 autocast: the loss is finite (each variant's maths is tested in its own file; fp32 runs, 2
processes, resume and LoRA in tests/test_distributed.py and tests/test_variants_runs.py)."""

import json
import math

import pytest

from helpers import TINY_MODEL
from rlzoo.registry import register_reward


@register_reward("test_variants_len")
def _length_reward(prompt, completion, example) -> float:
    """Varies with a random model's outputs, so groups are informative: the length in characters / 50."""
    return len(completion.strip()) / 50.0


OVERLONG = "stages.rl.reward.functions=[{name: test_variants_len}, {name: overlong, kwargs: {max_length: 8, cache: 4}}]"


@pytest.mark.parametrize("name, extra", [("dr_grpo", []), ("rloo", []), ("gspo", []), ("cispo", []), ("reinforce_pp", []),
                                         ("dapo", [OVERLONG, "stages.rl.data.source_args={max_rounds: 3}"])])
def test_two_steps_train(tmp_path, name, extra):
    from rlzoo.config import load_config
    from rlzoo.train import train

    cfg = load_config(None, [
        *TINY_MODEL, "mixed_precision=bf16", f"output_dir={tmp_path}", "logging.progress=false", "eval.samples=0", "eval.max_new_tokens=4",
        "task.synthetic.eval_size=2", f"stages.rl.algorithm={name}", "stages.rl.steps=2", "stages.rl.data.prompts_per_step=4",
        "stages.rl.data.samples_per_prompt=4", "stages.rl.generation.max_new_tokens=8", "stages.rl.optim.lr=1e-2",
        "stages.rl.optim.micro_batch_size=3", "stages.rl.reward.name=test_variants_len", *extra,
    ])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "rl" and "loss/policy" in r]
    assert len(steps) == 2 and all(math.isfinite(r["loss/policy"]) for r in steps)
    print(name, [(r["reward/mean"], r["time/step"], r.get("dynamic/rounds")) for r in steps])
    if name == "dapo":  # dynamic sampling ran and logged; the shaped reward reached the batch
        assert all(1 <= r["dynamic/rounds"] <= 3 and "reward/sampled_mean" in r for r in steps)
