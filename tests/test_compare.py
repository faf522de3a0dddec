"""``rlzoo compare`` end to end on a tiny model: shared SFT, two algorithms, report and plots."""

import json
import sys
from pathlib import Path

from rlzoo.run.compare import compare, observations
from rlzoo.config import load_config
from helpers import TINY_MODEL

TINY = [
    *TINY_MODEL,
    "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=12", "logging.progress=false",
]


def test_compare_writes_report_and_plots(tmp_path):
    cfg = load_config(Path("configs/compare.yaml"), TINY + [
        f"output_dir={tmp_path / 'runs'}", f"compare.report={tmp_path / 'report.md'}", "compare.seeds=[0]",
        "sft.steps=2", "rl.steps=2", "rl.eval_every=1", "rl.data.prompts_per_step=2", "rl.data.samples_per_prompt=2",
        "rl.data.pool_prompts=4", "rl.generation.max_new_tokens=12",
        "compare.entries=[{algorithm: grpo}, {algorithm: rft, label: rft_online, overrides: [data.source=online, optim.minibatches=2]}]",
    ])
    report = compare(cfg, "rlzoo compare configs/compare.yaml (test)")
    text = report.read_text()
    assert "| SFT (start) |" in text and "| grpo |" in text and "| rft_online |" in text
    assert "failed" not in text, text
    assert (tmp_path / "report_accuracy.png").stat().st_size > 1000
    assert (tmp_path / "report_reward.png").stat().st_size > 1000
    # every run started from the one SFT checkpoint
    for label in ("grpo", "rft_online"):
        run_cfg = (tmp_path / "runs" / label / "seed0" / "config.yaml").read_text()
        assert str(tmp_path / "runs" / "sft" / "sft" / "final") in run_cfg
    assert "data:\n      source: online" in (tmp_path / "runs" / "rft_online" / "seed0" / "config.yaml").read_text()
    # a second call reuses every finished run (same config, summary present) and rewrites the report
    # (an entry's numeric override is typed as in the stored config, so that run is reused too)
    stamps = {label: (tmp_path / "runs" / label / "seed0" / "summary.json").stat().st_mtime_ns for label in ("grpo", "rft_online")}
    compare(cfg, "rlzoo compare configs/compare.yaml (test, resumed)")
    for label, stamp in stamps.items():
        assert (tmp_path / "runs" / label / "seed0" / "summary.json").stat().st_mtime_ns == stamp, label
    assert "(test, resumed)" in report.read_text()


def test_observations_state_agreement_from_numbers():
    sft = {"eval": {"accuracy": 0.5, "pass@8": 0.8, "maj@8": 0.6}}
    run = lambda acc, p, m: [{"eval": {"accuracy": acc, "pass@8": p, "maj@8": m}}]
    results = {"rft": run(0.55, 0.8, 0.62), "online_rft": run(0.60, 0.79, 0.66), "grpo": run(0.58, 0.81, 0.70)}
    text = "\n".join(observations(sft, results))
    assert "online_rft − rft = +5.0 points; this run agrees" in text
    assert "grpo − online_rft = -2.0 points; this run does not agree" in text
    assert "(grpo): maj@8 +10.0, pass@8 +1.0 points over SFT; this run agrees" in text
    # both falling is not "RL improves Maj@K": Maj@K has to rise
    assert "(rft): maj@8 +2.0, pass@8 +0.0 points over SFT; this run agrees" in text
    worse = observations(sft, {"dpo": run(0.4, 0.6, 0.55)})
    assert any("(dpo): maj@8 -5.0, pass@8 -20.0 points over SFT; this run does not agree" in line for line in worse)
