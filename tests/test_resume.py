"""A run killed with SIGKILL at any step, then resumed with --resume, ends bitwise equal to the
uninterrupted run: SFT, GRPO with 2 updates x 2 minibatches, PPO (a value model) and DPO (an
offline pool), one stage after the other, killed once inside each of them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def stage(name: str, algorithm: str, source: str, **kw) -> list[str]:
    common = {"steps": 3, "save_every": 1, "data.source": f"killing_{source}", "data.prompts_per_step": 2,
              "data.samples_per_prompt": 4, "generation.max_new_tokens": 10, "reward.name": "test_length_parity",
              "optim.micro_batch_size": 4, "optim.lr": 1e-3}
    return [f"stages.{name}.algorithm={algorithm}"] + [f"stages.{name}.{k}={v}" for k, v in {**common, **kw}.items()]


RUN = [
    "configs/quickstart.yaml", "plugins=[tests/plugins/dp_plugin.py,tests/plugins/kill_plugin.py]", "logging.progress=false",
    "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "task.synthetic.eval_size=4", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=6",
    "stages.sft.steps=3", "stages.sft.save_every=1", "stages.sft.data.source=killing_dataset", "stages.sft.data.prompts_per_step=4",
    *stage("grpo", "grpo", "online", **{"optim.updates_per_batch": 2, "optim.minibatches": 2}),
    *stage("ppo", "ppo", "online", **{"optim.minibatches": 2, "save_total_limit": 1}),
    *stage("dpo", "dpo", "offline", **{"data.pool_prompts": 4}),
]
STAGES = ("sft", "grpo", "ppo", "dpo")


def rlzoo(out: Path, *flags: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {**os.environ, "RLZOO_TEST_KILL_AT": str(kill_at), "TQDM_DISABLE": "1"}
    return subprocess.run([sys.executable, "-m", "rlzoo", "train", *RUN, f"output_dir={out}", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def metric_rows(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]


def test_killed_in_every_stage_and_resumed_equals_the_uninterrupted_run(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert rlzoo(whole).returncode == 0
    # every stage has 3 steps and a checkpoint after each. The first run is killed at its 2nd batch
    # (SFT step 2); a resume counts batches afresh: sft 2, sft 3, grpo 1, grpo 2 -> killed at 4 (GRPO
    # step 2); grpo 2, grpo 3, ppo 1, ppo 2, ppo 3 -> at 5 (PPO step 3); ppo 3, dpo 1, dpo 2 -> at 3
    # (DPO step 2, its offline pool in the checkpoint); the last resume finishes
    kills = [2, 4, 5, 3]
    proc = rlzoo(broken, kill_at=kills[0])
    assert proc.returncode == -9, proc.stderr[-2000:]
    stopped_in = set()
    for kill_at in kills[1:] + [0]:
        proc = rlzoo(broken, "--resume", kill_at=kill_at)
        if kill_at:
            assert proc.returncode == -9, proc.stderr[-2000:]
            stopped_in.add(next(s for s in STAGES if not (broken / s / "final").exists()))
        else:
            assert proc.returncode == 0, proc.stderr[-2000:]
    assert stopped_in == {"grpo", "ppo", "dpo"}  # a kill landed inside each RL stage (and one in SFT)
    for name in STAGES:
        a, b = weights(whole / name / "final"), weights(broken / name / "final")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # bitwise
    # every (stage, step) logged exactly once, with the numbers of the uninterrupted run
    assert metric_rows(broken) == metric_rows(whole)
    a, b = (json.loads((d / "summary.json").read_text())["stages"] for d in (whole, broken))
    assert [s["eval"] for s in a] == [s["eval"] for s in b]
    assert [p.name for p in sorted((broken / "ppo").iterdir())] == ["checkpoint-3", "final"]  # save_total_limit 1
    assert not list(broken.rglob("*.tmp")) and not list(broken.rglob("*.old"))


def test_resume_refuses_a_change_to_a_started_stage_and_a_folder_without_a_checkpoint(tmp_path):
    out = tmp_path / "run"
    assert rlzoo(out, kill_at=2).returncode == -9  # in SFT step 2: SFT has started, GRPO, PPO and DPO have not
    proc = subprocess.run([sys.executable, "-m", "rlzoo", "train", *RUN, f"output_dir={out}", "stages.sft.optim.lr=0.05",
                           "stages.grpo.optim.lr=0.05", "--resume"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().splitlines() == [
        f"rlzoo: error: cannot resume {out} with a different config: 'stages.sft.optim.lr' differs from the run's "
        "(--resume may change only stages that have not started, eval, logging and output_dir)"]
    logging_only = rlzoo(out, "--resume", "logging.log_every=1")  # logging may change
    assert logging_only.returncode == 0, logging_only.stderr[-2000:]
    empty = tmp_path / "never"
    proc = rlzoo(empty, "--resume")
    assert proc.returncode == 2 and "nothing to resume" in proc.stderr and not empty.exists()  # nothing created


def test_a_lora_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    lora = ["model.lora.r=4", "stages.dpo.steps=1", "stages.ppo.steps=1"]
    def run(out, *flags, kill_at=0):
        env = {**os.environ, "RLZOO_TEST_KILL_AT": str(kill_at), "TQDM_DISABLE": "1"}
        return subprocess.run([sys.executable, "-m", "rlzoo", "train", *RUN, *lora, f"output_dir={out}", *flags], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=300)

    whole, broken = tmp_path / "whole", tmp_path / "broken"
    assert run(whole).returncode == 0
    assert run(broken, kill_at=5).returncode == -9  # sft 1-3, grpo 1, grpo 2: killed in GRPO step 2
    assert not (broken / "grpo" / "final").exists()
    proc = run(broken, "--resume")
    assert proc.returncode == 0, proc.stderr[-2000:]
    from safetensors.torch import load_file

    for name in STAGES:
        a = load_file(whole / name / "final" / "adapter_model.safetensors")
        b = load_file(broken / name / "final" / "adapter_model.safetensors")
        assert all(torch.equal(a[k], b[k]) for k in a), name
    assert metric_rows(broken) == metric_rows(whole)
