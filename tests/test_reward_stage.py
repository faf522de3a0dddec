"""Reward-model stages, reward models as rewards, process supervision through the runtime, and
iterative RL (DeepSeekMath Sec. 4.1.2-4.1.4), on the tiny model."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from rlzoo.config import expand_iterative, load_config
from rlzoo.errors import ConfigError
from rlzoo.registry import register_reward

ROOT = Path(__file__).resolve().parents[1]


@register_reward("test_mentions_seven")
def mentions_seven(prompt, completion, example) -> float:
    """1.0 when the completion contains the digit 7."""
    return float("7" in completion)


@register_reward("test_short")
def short(prompt, completion, example) -> float:
    """1.0 when the completion ended (EOS) within 12 characters: a signal a tiny reward model can learn."""
    return float(len(completion) <= 12)


BASE = {
    "name": "rm_test", "logging": {"progress": False},
    "task": {"synthetic": {"max_value": 50, "eval_size": 16}},
    "model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}},
    "eval": {"samples": 0, "max_new_tokens": 16},
}


def config(tmp_path: Path, stages: dict, **extra) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({**BASE, **extra, "stages": stages}, sort_keys=False))  # stages run in file order
    return path


def rm_stage(kind: str = "orm", **kw) -> dict:
    stage = {"kind": "reward_model", "steps": 30, "data": {"samples_per_prompt": 4}, "generation": {"max_new_tokens": 16},
             "optim": {"lr": 3e-3, "micro_batch_size": 16},
             "reward_model": {"type": kind, "questions": 32, "eval_questions": 16, "batch_size": 32}}
    for key, value in kw.items():
        section, _, field = key.partition(".")
        if field:
            stage.setdefault(section, {})[field] = value
        else:
            stage[key] = value
    return stage


def test_an_outcome_reward_model_learns_its_labels_and_is_a_reward(tmp_path):
    from rlzoo.reward_models.model import load_reward_model
    from rlzoo.rewards import make_reward
    from rlzoo.train import train

    sft = {"steps": 20, "data": {"prompts_per_step": 16}, "optim": {"lr": 3e-3}}  # enough to write numbers
    orm = rm_stage("orm", **{"reward.name": "test_short", "steps": 80, "generation.max_new_tokens": 32, "reward_model.questions": 128})
    cfg = load_config(config(tmp_path, {"sft": sft, "orm": orm}),
                      [f"output_dir={tmp_path / 'run'}"])
    summary = train(cfg)
    orm = summary["stages"][1]
    assert orm["kind"] == "reward_model" and orm["data"]["train"] == 128 * 4 and orm["data"]["held_out"] == 16 * 4
    assert 0.05 < orm["eval"]["rm/positive_frac"] < 0.95, orm["eval"]  # both labels occur
    assert orm["eval"]["rm/auc"] > 0.8, orm["eval"]  # held-out questions: the model learned the signal
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines() if "rm/loss" in line]
    assert len(rows) == 80 and rows[-1]["rm/loss"] < rows[0]["rm/loss"]
    final = tmp_path / "run" / "orm" / "final"
    assert load_reward_model(str(final)).config.num_labels == 1
    # the policy did not change: a later stage starts from sft's weights (checked by the resume test);
    # as a reward the model gives each completion a probability
    from rlzoo.config import GenerationConfig
    from rlzoo.runtime.generation import sample
    from rlzoo.runtime.models import load_stage_result

    lm, tok = load_stage_result(tmp_path / "run" / "sft" / "final")
    from rlzoo.data.synthetic import SyntheticTask
    from rlzoo.config import SyntheticConfig

    batch = sample(lm, tok, SyntheticTask(SyntheticConfig(max_value=50, eval_size=4)).eval_examples(), 4, GenerationConfig(max_new_tokens=16))
    reward = make_reward({"name": "orm", "kwargs": {"model": str(final)}})
    reward.score_batch(batch)
    values, step_rewards = batch.rewards.tolist(), batch.step_rewards
    assert step_rewards is None and all(0 < v < 1 for v in values)
    assert len(set(round(v, 6) for v in values)) > 1


def test_process_rewards_combine_as_the_weighted_sum_with_outcome_rewards_on_the_last_step(tiny_model, task, tokenizer, tmp_path):
    from rlzoo.config import GenerationConfig
    from rlzoo.reward_models.model import reward_model_from_lm
    from rlzoo.rewards import make_reward
    from rlzoo.runtime.generation import sample

    rm = reward_model_from_lm(tiny_model)
    with torch.no_grad():
        rm.score.weight.normal_(0, 1.0)  # a head that is not zero, so scores differ between tokens
    rm.save_pretrained(tmp_path / "prm")
    tokenizer.save_pretrained(tmp_path / "prm")
    batch = sample(tiny_model, tokenizer, task.eval_examples()[:3], 2, GenerationConfig(max_new_tokens=20))
    prm = make_reward({"name": "prm", "kwargs": {"model": str(tmp_path / "prm"), "step_rule": "sentence", "aggregate": "last"}})
    prm.score_batch(batch)
    values, step_rewards, ends = batch.rewards.tolist(), batch.step_rewards, batch.step_ends
    assert ends.sum() >= len(batch) and torch.all((step_rewards > 0) <= (ends > 0))  # rewards only at step ends
    last = ends * (ends.cumsum(-1) == ends.sum(-1, keepdim=True)).float()
    torch.testing.assert_close(torch.tensor(values), (step_rewards * last).sum(-1))  # aggregate last = the last step's
    both = make_reward({"functions": [{"name": "prm", "weight": 0.5, "kwargs": {"model": str(tmp_path / "prm"), "step_rule": "sentence",
                                                                                "aggregate": "last"}},
                                      {"name": "test_mentions_seven", "weight": 2.0}]})
    both.score_batch(batch)
    values2, step_rewards2 = batch.rewards.tolist(), batch.step_rewards
    sevens = torch.tensor([float("7" in c) for c in batch.completions])
    torch.testing.assert_close(step_rewards2, 0.5 * step_rewards + 2.0 * sevens[:, None] * last)  # outcome on the last step
    torch.testing.assert_close(torch.tensor(values2), 0.5 * torch.tensor(values) + 2.0 * sevens)


def test_grpo_with_process_supervision_trains_on_a_prm_through_the_runtime(tmp_path):
    from rlzoo.train import train

    stages = {
        "sft": {"steps": 20, "data": {"prompts_per_step": 16}, "optim": {"lr": 3e-3}},
        "prm": rm_stage("prm", **{"reward_model.labels": "oracle", "reward_model.step_rule": "sentence", "steps": 5}),
        "grpo": {"algorithm": "grpo", "steps": 2, "data": {"prompts_per_step": 2, "samples_per_prompt": 4},
                 "generation": {"max_new_tokens": 16}, "optim": {"lr": 1e-3},
                 "reward": {"name": "prm", "kwargs": {"model": "prm", "step_rule": "sentence"}},
                 "algorithm_args": {"supervision": "process"}},
    }
    summary = train(load_config(config(tmp_path, stages), [f"output_dir={tmp_path / 'run'}"]))
    prm = summary["stages"][1]
    assert {"rm/step_accuracy", "rm/oracle_step_accuracy", "rm/first_error_accuracy"} <= set(prm["eval"])
    # the saved labels, read at the step ends, are the oracle's verdicts on each step's own text,
    # computed here again from the completions (a label moved to another step would differ)
    from rlzoo.data.synthetic import step_oracle
    from rlzoo.reward_models.steps import split_steps

    data = torch.load(tmp_path / "run" / "prm" / "data.pt", weights_only=False)["train"]
    checked = 0
    for i in range(len(data)):
        labels = data.extras["rm_labels"][i][data.step_ends[i] > 0].tolist()
        verdicts = [float(v) for v in step_oracle(data.examples[i], split_steps(data.completions[i], "sentence"))]
        if len(verdicts) == len(labels):  # no step merged into another (tokens shared across a step boundary)
            assert labels == verdicts, (data.completions[i], labels, verdicts)
            checked += 1
    assert checked >= 0.9 * len(data)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    grpo = [r for r in rows if r["stage"] == "grpo" and "loss/policy" in r]
    assert len(grpo) == 2 and all(r["grpo/steps_mean"] >= 1 for r in grpo) and any(r["grpo/adv_abs_mean"] > 0 for r in grpo)


def test_process_supervision_without_a_process_reward_is_refused(tmp_path):
    from rlzoo.run.validate import validate

    stages = {"grpo": {"algorithm": "grpo", "algorithm_args": {"supervision": "process"}}}
    with pytest.raises(ConfigError, match="stages.grpo.reward: grpo with process supervision trains on step rewards"):
        validate(load_config(config(tmp_path, stages)))
    stages = {"grpo": {"algorithm": "grpo", "reward": {"name": "prm", "kwargs": {"model": "later"}}},
              "later": rm_stage("prm")}
    with pytest.raises(ConfigError, match="model 'later' is not an earlier reward-model stage"):
        validate(load_config(config(tmp_path, stages)))
    gsm8k = load_config(config(tmp_path, {"prm": rm_stage("prm", **{"reward_model.labels": "oracle"})}), ["task.name=gsm8k"])
    with pytest.raises(ConfigError, match="oracle step labels exist for the embedded task only"):
        validate(gsm8k)
    tools = load_config(config(tmp_path, {"prm": rm_stage("prm", **{"reward_model.labels": "oracle", "generation.tool_rounds": 1})}))
    with pytest.raises(ConfigError, match=r"stages.prm.reward_model.labels: oracle step labels grade reasoning steps, and with "
                                          r"generation.tool_rounds=1 a completion holds tool output"):
        validate(tools)


def test_oracle_labels_are_read_at_the_end_of_the_steps_each_end_closes(tokenizer):
    # a tool's output block has no generated token: its lines merge into the step before them,
    # so the first step end closes four lines; every end takes the verdict of the last line it closes
    from rlzoo.interface import Example
    from rlzoo.reward_models.labels import oracle_labels
    from rlzoo.reward_models.steps import batch_steps, decode_with_offsets
    from rlzoo.runtime.generation import encode_pairs

    completion = " 8 - 6 = 2.\n```output\n2\n```\n2 * 3 = 6.\nThe answer is 6."
    output = (completion.index("```output"), completion.index("2 * 3"))  # the characters of the output block
    batch = encode_pairs(tokenizer, [Example("Q", "6")], [completion], "cpu")
    first = int(batch.loss_mask[0].nonzero()[0])
    _, char_ends = decode_with_offsets(tokenizer, batch.input_ids[0, first:].tolist())
    starts = [0] + char_ends[:-1]
    for k, (a, b) in enumerate(zip(starts, char_ends)):
        if a >= output[0] and b <= output[1]:
            batch.loss_mask[0, first + k] = 0.0  # tool output is not trained on
    rows = batch_steps(batch, tokenizer, "line")
    texts = [rows[0].text[a:b] for a, b in rows[0].spans]
    assert texts == ["8 - 6 = 2.", "```output", "2", "```", "2 * 3 = 6.", "The answer is 6."]
    assert [span for _, span in rows[0].ends] == [3, 4, 5]  # line 1 closes lines 1-4 (the output block)
    verdicts = [True, False, True, False, True, False]  # any verdicts: each end must get the one of its last line
    labels = oracle_labels(batch, rows, lambda ex, steps: verdicts[: len(steps)])
    assert [labels[0, column].item() for column, _ in rows[0].ends] == [0.0, 1.0, 0.0]
    assert float(labels.sum()) == 1.0  # nothing anywhere else


def test_iterative_rl_expands_into_alternating_rl_and_reward_model_stages(tmp_path):
    stages = {"sft": {"steps": 1}, "prm": rm_stage("prm"),
              "grpo": {"algorithm": "grpo", "reward": {"name": "prm", "kwargs": {"model": "prm"}}}, "after": {"steps": 1}}
    cfg = load_config(config(tmp_path, stages, iterative={"iterations": 3, "rl_stage": "grpo", "reward_model_stage": "prm"}))
    run = expand_iterative(cfg)
    assert list(run.stages) == ["sft", "prm", "grpo", "prm_it1", "grpo_it2", "prm_it2", "grpo_it3", "prm_it3", "after"]
    assert list(cfg.stages) == ["sft", "prm", "grpo", "after"]  # the config as written is unchanged
    assert run.stages.grpo_it2.reward.kwargs.model == "prm_it1" and run.stages.grpo_it3.reward.kwargs.model == "prm_it2"
    assert run.stages.prm_it2.reward_model.init == "prm_it1" and list(run.stages.prm_it2.reward_model.replay_from) == ["prm", "prm_it1"]
    assert run.stages.prm_it1.reward_model.replay == 0.1 and run.stages.prm.reward_model.replay == 0.0
    bad = load_config(config(tmp_path, {**stages, "grpo": {"algorithm": "grpo"}},
                             iterative={"iterations": 2, "rl_stage": "grpo", "reward_model_stage": "prm"}))
    with pytest.raises(ConfigError, match="does not use the model of 'prm'"):
        expand_iterative(bad)
    # a misspelt stage name is an error whatever the number of iterations
    for key, value, message in (("rl_stage", "grpoo", "iterative.rl_stage: 'grpoo' is not a policy stage"),
                                ("reward_model_stage", "pmr", "iterative.reward_model_stage: 'pmr' is not a reward-model stage")):
        one = load_config(config(tmp_path, stages, iterative={"iterations": 1, "rl_stage": "grpo", "reward_model_stage": "prm",
                                                             key: value}))
        with pytest.raises(ConfigError, match=message):
            expand_iterative(one)
    assert expand_iterative(load_config(config(tmp_path, stages, iterative={"iterations": 1, "rl_stage": "grpo",
                                                                          "reward_model_stage": "prm"}))).stages.keys() == cfg.stages.keys()


def test_iterative_rl_runs_and_a_reward_model_stage_killed_mid_training_resumes_exactly(tmp_path):
    stages = {
        "sft": {"steps": 3},
        "prm": rm_stage("prm", **{"reward_model.labels": "oracle", "steps": 60, "reward_model.questions": 8}),
        "ppo": {"algorithm": "ppo", "steps": 1, "data": {"prompts_per_step": 2, "samples_per_prompt": 2},
                "generation": {"max_new_tokens": 16}, "reward": {"name": "prm", "kwargs": {"model": "prm"}},
                "algorithm_args": {"supervision": "process"}},
    }
    path = config(tmp_path, stages, iterative={"iterations": 2, "rl_stage": "ppo", "reward_model_stage": "prm"})
    run = lambda out, *flags: [sys.executable, "-m", "rlzoo", "train", str(path), f"output_dir={out}", *flags]
    env = {**os.environ, "TQDM_DISABLE": "1"}
    whole = subprocess.run(run(tmp_path / "whole"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert whole.returncode == 0, whole.stderr[-2000:]
    summary = json.loads((tmp_path / "whole" / "summary.json").read_text())["stages"]
    assert [s["name"] for s in summary] == ["sft", "prm", "ppo", "prm_it1", "ppo_it2", "prm_it2"]
    assert summary[3]["data"]["replayed"] > 0 and summary[1]["data"]["replayed"] == 0
    # kill the first run while its first reward model trains (its labelled data already saved)
    out = tmp_path / "broken"
    proc = subprocess.Popen(run(out), cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 200
    while time.time() < deadline:
        metrics = out / "metrics.jsonl"
        if (out / "prm" / "data.pt").exists() and metrics.exists() and '"rm/loss"' in metrics.read_text():
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "prm" / "final").exists()
    data_stamp = (out / "prm" / "data.pt").stat().st_mtime_ns
    resumed = subprocess.run(run(out, "--resume"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert (out / "prm" / "data.pt").stat().st_mtime_ns == data_stamp  # the sampling was not redone
    from safetensors.torch import load_file

    # each RL stage starts from the current policy and resets its reference to it (its KL at the
    # first step is exactly 0); each reward-model stage samples the current policy
    checks = {s["name"]: s["checksum"] for s in summary}
    assert checks["prm"]["policy"] == checks["sft"]["final"] == checks["ppo"]["start"]
    assert checks["prm_it1"]["policy"] == checks["ppo"]["final"] == checks["ppo_it2"]["start"] != checks["ppo"]["start"]
    assert checks["prm_it2"]["policy"] == checks["ppo_it2"]["final"]
    rows = [json.loads(line) for line in (tmp_path / "whole" / "metrics.jsonl").read_text().splitlines()]
    first = {r["stage"]: r for r in rows if r.get("step") == 1 and "kl/reward_kl" in r}
    assert first["ppo"]["kl/reward_kl"] == 0.0 and first["ppo_it2"]["kl/reward_kl"] == 0.0
    for name in ("prm", "ppo", "prm_it1", "ppo_it2", "prm_it2"):
        file = "adapter_model.safetensors" if (tmp_path / "whole" / name / "final" / "adapter_model.safetensors").exists() else "model.safetensors"
        a, b = load_file(tmp_path / "whole" / name / "final" / file), load_file(out / name / "final" / file)
        assert all(torch.equal(a[k], b[k]) for k in a), name
