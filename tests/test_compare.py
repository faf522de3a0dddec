"""``rlzoo compare`` end to end on a tiny model: shared SFT, two algorithms, report and plots."""

import json
import sys
from pathlib import Path

import pytest

from rlzoo.run.compare import claims, compare
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


def test_claims_state_agreement_by_the_rule_from_numbers():
    sft = {"eval": {"accuracy": 0.5, "pass@8": 0.8, "maj@8": 0.6, "shifted/accuracy": 0.2}}
    run = lambda acc, p, m, ood=0.2: {"eval": {"accuracy": acc, "pass@8": p, "maj@8": m, "shifted/accuracy": ood}}
    results = {"rft": [run(0.55, 0.8, 0.62), run(0.55, 0.8, 0.62)],
               "online_rft": [run(0.60, 0.79, 0.66), run(0.62, 0.79, 0.66)],
               "grpo": [run(0.58, 0.81, 0.70, 0.3), run(0.60, 0.81, 0.70, 0.3)],
               "ppo": [run(0.59, 0.8, 0.6), run(0.63, 0.8, 0.6)],
               "grpo_random": [run(0.5, 0.70, 0.58), run(0.5, 0.74, 0.64)]}
    budgets = {"grpo": [{"peak_memory_mb": 900.0}] * 2, "ppo": [{"peak_memory_mb": 1500.0}, {"peak_memory_mb": 1700.0}]}
    text = "\n".join(claims(sft, results, budgets, {}, ["shifted"]))
    # online_rft - rft = 0.61 - 0.55 = +6 points; se = sqrt(0.0002 / 2 + 0) = 0.01, 2 s.e. = 2 points
    assert "online_rft − rft): +6.0 points, 2 s.e. 2.0: agrees." in text
    # grpo - SFT = 0.59 - 0.5 = +9; se = sqrt(0.0002 / 2) = 0.01
    assert "(a) RL (GRPO) improves over SFT** (greedy accuracy, grpo − SFT): +9.0 points, 2 s.e. 2.0: agrees." in text
    # grpo - ppo = 0.59 - 0.61 = -2; se = sqrt(0.0002/2 + 0.0008/2) = 0.0224, 2 s.e. 4.5: within the spread
    assert "grpo − ppo): -2.0 points, 2 s.e. 4.5: within the seed spread." in text
    # memory: ppo - grpo = 1600 - 900 = 700 MB; se = sqrt(20000 / 2) = 100
    assert "GRPO needs less memory than PPO** (peak MB, ppo − grpo): +700.0 MB, 2 s.e. 200.0: agrees." in text
    # (e) at K = 8 for grpo: maj +10, pass +1, the difference +9 on both seeds (no spread)
    assert "(grpo over SFT at K=8): maj@8 +10.0, pass@8 +1.0 points; the difference +9.0, 2 s.e. 0.0: agrees." in text
    # Maj@K falling is never "RL raises Maj@K"
    assert "(ppo over SFT at K=8): maj@8 +0.0, pass@8 +0.0 points; the difference +0.0, 2 s.e. 0.0: does not agree (Maj@K does not rise)." in text
    # Pass@K falling while Maj@K moves within its spread (-2, +4: +1 +- 3 s.e.) is not "RL raises Maj@K",
    # although the difference (+8, +10) is beyond its own spread
    assert ("(grpo_random over SFT at K=8): maj@8 +1.0, pass@8 -8.0 points; the difference +9.0, 2 s.e. 2.0: "
            "within the seed spread (Maj@K does not clearly rise).") in text
    assert "on `shifted`** (greedy accuracy on shifted): +10.0 points, 2 s.e. 0.0: agrees." in text
    assert "grpo_prm" not in text  # an entry that did not run: its claims are left out


def test_paper_compare_parallel_before_stages_iterative_budgets_and_passk(tmp_path):
    # configs/compare_paper.yaml shrunk: two runs at once; an entry that trains its ORM first and
    # iterates (RL, ORM retrained, RL again); Pass@K of the SFT and GRPO checkpoints
    cfg = load_config(Path("configs/compare_paper.yaml"), TINY + [
        "eval.max_new_tokens=8", "eval.sets.shifted.synthetic.eval_size=2", "eval.sets.pot.synthetic.eval_size=2",
        "eval.sets.longer.synthetic.eval_size=2",
        f"output_dir={tmp_path / 'runs'}", f"compare.report={tmp_path / 'paper.md'}", "compare.seeds=[0]", "compare.parallel=2",
        "sft.steps=2", "rl.steps=2", "rl.eval_every=1", "rl.data.prompts_per_step=2", "rl.data.samples_per_prompt=2",
        "rl.generation.max_new_tokens=8", "orm.steps=1", "orm.reward_model.questions=2", "orm.reward_model.eval_questions=2",
        "orm.data.samples_per_prompt=2", "orm.generation.max_new_tokens=8",
        "compare.passk={samples: 4, ks: [1, 2, 4], entries: [grpo], num_examples: 3}",
        "compare.entries=[{algorithm: grpo}, {algorithm: grpo, label: grpo_orm, before: [orm], "
        "iterative: {iterations: 2, reward_model_stage: orm, replay: 0.5}, "
        "overrides: ['reward={name: orm, kwargs: {model: orm}}', 'reward_diagnostics=[rule]']}, "
        "{algorithm: grpo, label: grpo_4, overrides: [steps=4]}, {algorithm: rloo}]",  # as many steps as the iterations; a variant
    ])
    report = compare(cfg, "rlzoo compare configs/compare_paper.yaml (test)")
    text = report.read_text()
    assert "failed" not in text, text
    runs = tmp_path / "runs"
    stages = [s["name"] for s in json.loads((runs / "grpo_orm" / "seed0" / "summary.json").read_text())["stages"]]
    assert stages == ["orm", "rl", "orm_it1", "rl_it2", "orm_it2"]
    assert str(runs / "sft" / "sft" / "final") in (runs / "grpo_orm" / "seed0" / "config.yaml").read_text()  # the ORM samples the SFT model
    # the budget table: 2 steps x 2 questions x 2 samples per RL stage; the iterative entry ran two
    assert "| grpo | 4 | 8 |" in text and "| grpo_orm | 8 | 16 |" in text
    assert "## Out of domain" in text and "| shifted | longer | pot |" in text
    assert "## Pass@K and Maj@K (Figure 7)" in text and "| SFT |" in text
    assert "(a) RL (GRPO) improves over SFT" in text and "(e) RL raises Maj@K more than Pass@K** (grpo over SFT at K=4)" in text
    for png in ("accuracy", "reward", "hacking", "passk"):
        assert (tmp_path / f"paper_{png}.png").stat().st_size > 1000, png
    assert json.loads((runs / "sft" / "sft" / "final" / "passk.json").read_text())["result"]["pass@4"] >= 0
    assert "\n| rloo | " in text  # a later variant is an entry like any other
    figure6 = text[text.index("## Iterative RL (Figure 6)"):]
    assert "| iteration 0 (step 2) | iteration 1 (step 4) |" in figure6  # the grpo_4 run is the same-steps baseline
    assert "\n| grpo_orm | " in figure6 and "\n| grpo_4 | " in figure6 and "\n| grpo | " not in figure6.split("##")[1]
    hacking = text[text.index("## Learned rewards under pressure"):]
    assert "\n| grpo_orm | rule | " in hacking
    # an out-of-domain set added to the finished comparison: every run is evaluated on it, none trained again
    summaries = {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")}
    cfg.eval.sets["reworded"] = {"synthetic": {"wording": "other", "eval_size": 2}}
    text = compare(cfg, "rlzoo compare configs/compare_paper.yaml (test, a set added)").read_text()
    assert {p: p.stat().st_mtime_ns for p in runs.rglob("summary.json")} == summaries
    assert "| shifted | longer | pot | reworded |" in text and "failed" not in text
    assert len(list(runs.rglob("late_sets.json"))) == 1 + 4  # the SFT run and every entry's
    row = next(line for line in text.splitlines() if line.startswith("| grpo_orm | ") and line.count("|") == 7)
    assert "n/a" not in row


@pytest.mark.parametrize("override, message", [
    ("compare.parallel=0", "compare.parallel=0 is out of range: it must be >= 1"),
    ("compare.passk={samples: 4, ks: [1, 8]}", r"compare.passk.ks: \[1, 8\]: every K must be in \[1, samples=4\]"),
    ("compare.passk.entries=[gpro]", "compare.passk.entries: 'gpro' is not an entry's label; known: grpo, rft, online_rft, dpo, ppo"),
    ("compare.entries=[{algorithm: grpo, before: [rm]}]", "compare entry grpo: before: 'rm' is not a stage of the config"),
    ("compare.entries=[{algorithm: grpo}, {algorithm: grpo}]", "compare.entries: two entries are labelled 'grpo'"),
    ("compare.entries=[{algorithm: grpo, overrides: ['reward={name: orm, kwargs: {model: orm}}']}]",
     r"compare.entries\[0\] \(grpo\): stages.rl.reward: model orm is neither a reward-model stage of this run nor a folder"),
])
def test_paper_config_errors_are_one_line(override, message):
    from rlzoo.errors import ConfigError
    from rlzoo.run.compare import plan

    with pytest.raises(ConfigError, match=message):
        plan(load_config(Path("configs/compare_paper.yaml"), TINY + [override]))


def test_a_finished_run_is_the_same_run_after_a_key_was_removed_or_the_compare_section_changed(tmp_path):
    from omegaconf import OmegaConf

    from rlzoo.config import RunConfig, to_yaml
    from rlzoo.run.compare import _same_config

    config = OmegaConf.merge(OmegaConf.structured(RunConfig), {"stages": {"rl": {"algorithm": "grpo", "steps": 3}}})
    stored = OmegaConf.to_container(config)
    stored["stages"]["rl"]["data"]["max_rounds"] = 4  # a key an earlier rlzoo had
    stored["compare"]["seeds"] = [7]  # the comparison around the run, not the run
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(OmegaConf.create(stored)))
    assert _same_config(path, config)
    stored["stages"]["rl"]["steps"] = 4  # a change to what the run trains
    path.write_text(to_yaml(OmegaConf.create(stored)))
    assert not _same_config(path, config)


def test_report_only_trains_nothing_and_lists_what_did_not_run(tmp_path):
    import pytest

    from rlzoo.errors import UserError

    base = TINY + [f"output_dir={tmp_path / 'runs'}", f"compare.report={tmp_path / 'report.md'}", "compare.seeds=[0, 1]",
                   "sft.steps=2", "rl.steps=2", "rl.data.prompts_per_step=2", "rl.data.samples_per_prompt=2",
                   "rl.generation.max_new_tokens=8"]
    with pytest.raises(UserError, match="--report-only: the shared SFT run .* has not finished"):
        compare(load_config(Path("configs/compare.yaml"), base), "(test)", report_only=True)
    compare(load_config(Path("configs/compare.yaml"), base + ["compare.entries=[{algorithm: grpo, seeds: [0]}]"]), "(test)")
    summaries = {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("summary.json")}
    cfg = load_config(Path("configs/compare.yaml"), base + ["compare.entries=[{algorithm: grpo}, {algorithm: rft, seeds: [0]}]"])
    text = compare(cfg, "rlzoo compare configs/compare.yaml --report-only (test)", report_only=True).read_text()
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "runs").rglob("summary.json")} == summaries  # nothing trained
    assert "| grpo (1 of 2 seeds not run) |" in text and "| rft (seeds [0], 1 of 1 seeds not run) |" in text
    assert "failed" not in text  # not run yet is not a failure
