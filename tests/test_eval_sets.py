"""Extra held-out sets (``eval.sets``), diagnostic rewards (``reward_diagnostics``) and the
budget counters, through a real tiny run."""

from __future__ import annotations

import json

import pytest

from rlzoo.config import load_config
from rlzoo.errors import ConfigError
from rlzoo.run.validate import validate
from helpers import TINY_MODEL

TINY = [*TINY_MODEL, "task.synthetic.eval_size=4", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=10",
        "logging.progress=false", "sft.steps=2", "grpo.steps=2", "grpo.eval_every=1", "grpo.data.prompts_per_step=2",
        "grpo.data.samples_per_prompt=2", "grpo.generation.max_new_tokens=10", "grpo.reward.name=rule"]
SETS = "eval.sets={shifted: {synthetic: {min_ops: 4, max_ops: 5, eval_size: 3, eval_seed: 777}}, pot: {synthetic: {eval_format: pot}}}"


def test_a_run_evaluates_every_extra_set_and_logs_diagnostics_and_budget(tmp_path):
    from rlzoo.train import train

    cfg = load_config("configs/quickstart.yaml", TINY + [SETS, f"output_dir={tmp_path}", "grpo.reward_diagnostics=[random]"])
    summary = train(cfg)
    grpo = summary["stages"][-1]["eval"]
    assert {"accuracy", "shifted/accuracy", "shifted/pass@2", "shifted/maj@2", "pot/accuracy"} <= set(grpo)
    assert grpo["shifted/num_examples"] == 3 and grpo["pot/num_examples"] == 4  # the set's own size, or the run's
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == "grpo" and "reward/mean" in r]
    assert len(steps) == 2
    for r in steps:
        assert 0.0 <= r["diag/random/mean"] <= 1.0  # logged beside reward/mean, never trained on
        assert r["data/questions"] == 2 and r["data/samples"] == 4  # 2 questions x 2 samples per step
        assert r["data/sample_tokens"] == pytest.approx(4 * r["completion/length_mean"])
    assert "eval/shifted/accuracy" in steps[0]  # at eval_every too (step 1 of 2)
    assert any("eval/shifted/accuracy" in r and r.get("stage") == "sft" for r in rows)


def test_oracle_prm_trains_grpo_with_process_supervision(tmp_path):
    from rlzoo.train import train

    cfg = load_config("configs/quickstart.yaml", TINY + [
        f"output_dir={tmp_path}", "grpo.reward.name=oracle_prm", "grpo.algorithm_args={supervision: process}",
        "grpo.reward_diagnostics=[rule]", "grpo.eval_every=0"])
    summary = train(cfg)
    assert summary["stages"][-1]["steps"] == 2
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert all("diag/rule/mean" in r for r in rows if r.get("stage") == "grpo" and "reward/mean" in r)


@pytest.mark.parametrize("override, message", [
    ("eval.sets={bad/name: {synthetic: {min_ops: 2}}}", "eval.sets: 'bad/name' is not a set name"),
    ("eval.sets={shifted: {synthetic: {min_ops: 0}}}", "eval.sets.shifted.synthetic.min_ops=0 is out of range: it must be >= 1"),
    ("eval.sets={shifted: {synthetc: {min_ops: 2}}}", "unknown config key 'eval.sets.shifted.synthetc'"),
    ("grpo.reward_diagnostics=[nope]", "stages.grpo.reward_diagnostics: unknown reward 'nope'; known: "),
    ("task.name=gsm8k", "oracle_prm grades steps with the embedded task's exact oracle"),
])
def test_config_errors_are_one_line(override, message, tmp_path):
    extra = ["grpo.reward.name=oracle_prm"] if override.startswith("task.name") else []
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace("[", r"\[")):
        validate(load_config("configs/quickstart.yaml", TINY + extra + [override]))
