"""Data parallel is exact: 2 CPU processes (torchrun, gloo) take the steps 1 process takes.

* ``train_on_batch`` on one fixed batch whose questions are split 5 + 1 or 6 + 0 over 2 ranks
  ends with the weights of 1 process holding the whole batch (GRPO with shuffled minibatches,
  DPO with pairs kept whole, PPO with a value model and whitening over the global batch), and
  logs the same metrics (token means weighted by tokens over micro-batches and ranks).
* A run of four stages (SFT, GRPO with 2 updates x 2 minibatches, PPO, DPO from an offline pool)
  launched as 2 processes ends every stage with the weights of the 1-process run, to 1e-5. Rollouts
  are row-seeded, so both runs sample the same completions (their reward means agree at every
  step), every step's replicas agree (``dist/replica_max_diff`` = 0), the held-out evaluation gives
  the same numbers, and only the main process writes files (one metrics line per step).
* The same with LoRA adapters, and for reward-model stages (their sampling, Math-Shepherd rollouts
  and training sharded over the processes) followed by GRPO with process supervision.
* A process may hold no question: with one question per step (GRPO, tool-integrated sampling) and
  an offline pool of one question (RFT), rank 1 samples nothing, and the run still equals 1 process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}


def launch(nproc: int, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    """``args`` as one process (``python ...``) or ``nproc`` processes under torchrun (gloo)."""
    runner = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    proc = subprocess.run([*runner, *args], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


@pytest.fixture(scope="module")
def one_process_updates(tmp_path_factory):
    out = tmp_path_factory.mktemp("one")
    launch(1, "tests/dist_worker.py", str(out), "even")
    return out


@pytest.mark.parametrize("split", ["uneven", "empty"])
def test_updates_on_a_split_batch_equal_one_process(one_process_updates, tmp_path, split):
    launch(2, "tests/dist_worker.py", str(tmp_path), split)
    from dist_worker import ALGORITHMS

    for algorithm in ALGORITHMS:
        one = torch.load(one_process_updates / f"{algorithm}.pt")
        two = torch.load(tmp_path / f"{algorithm}.pt")
        assert max_diff(one, two) < 1e-5, algorithm
        start = torch.load(one_process_updates / "start.pt")  # the updates really moved the weights
        assert max_diff({k: one[k] for k in start}, start) > 1e-4, algorithm
        # every logged mean is the same: a mean over tokens (kl/k3, policy/clip_frac, loss/value...)
        # is weighted by its tokens over micro-batches and ranks, not by rows (5 + 1 rows hold
        # different token counts); value/explained_var is a ratio of each micro-batch's
        # variances, not a mean, and depends on the split
        metrics_one, metrics_two = (json.loads((d / f"{algorithm}_metrics.json").read_text())
                                    for d in (one_process_updates, tmp_path))
        assert metrics_one.keys() == metrics_two.keys()
        for key in metrics_one.keys() - {"value/explained_var"}:
            assert metrics_two[key] == pytest.approx(metrics_one[key], rel=1e-5, abs=1e-6), (algorithm, key)
    assert json.loads((tmp_path / "grpo_metrics.json").read_text())["kl/k3"] > 0.01


def stage_overrides(name: str, algorithm: str, **kw) -> list[str]:
    common = {"steps": 2, "data.prompts_per_step": 3, "data.samples_per_prompt": 4, "generation.max_new_tokens": 10,
              "reward.name": "test_length_parity", "optim.micro_batch_size": 3, "optim.lr": 1e-3}
    return [f"stages.{name}.algorithm={algorithm}"] + [f"stages.{name}.{k}={v}" for k, v in {**common, **kw}.items()]


RUN = [
    "train", "configs/quickstart.yaml", "plugins=[tests/plugins/dp_plugin.py]", "logging.progress=false",
    "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "task.synthetic.eval_size=7", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=8",
    "stages.sft.steps=3", "stages.sft.data.prompts_per_step=5", "stages.sft.optim.micro_batch_size=2",
    *stage_overrides("grpo", "grpo", **{"optim.updates_per_batch": 2, "optim.minibatches": 2}),
    *stage_overrides("ppo", "ppo", **{"data.samples_per_prompt": 2, "optim.minibatches": 2, "optim.micro_batch_size": 2}),
    *stage_overrides("dpo", "dpo", **{"data.pool_prompts": 6, "optim.minibatches": 2, "optim.micro_batch_size": 2}),
]
STAGES = ("sft", "grpo", "ppo", "dpo")


def test_four_stages_on_two_processes_equal_one_process(tmp_path):
    from safetensors.torch import load_file

    launch(1, "-m", "rlzoo", *RUN, f"output_dir={tmp_path / 'one'}")
    launch(2, "-m", "rlzoo", *RUN, f"output_dir={tmp_path / 'two'}")
    one, two = tmp_path / "one", tmp_path / "two"
    for stage in STAGES:
        a, b = load_file(one / stage / "final" / "model.safetensors"), load_file(two / stage / "final" / "model.safetensors")
        assert max_diff(a, b) < 1e-5, stage
    rows_one = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    rows_two = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    steps = [(r["stage"], r["step"]) for r in rows_two if "loss/policy" in r]
    assert steps == [(s, i) for s in STAGES for i in range(1, {"sft": 3}.get(s, 2) + 1)]  # one line per step
    assert len(rows_one) == len(rows_two)
    for a, b in zip(rows_one, rows_two):
        assert (a["stage"], a["step"]) == (b["stage"], b["step"])
        if "loss/policy" in b:
            assert b["dist/replica_max_diff"] == 0.0 and "dist/replica_max_diff" not in a
            assert b["train/num_sequences"] == a["train/num_sequences"]
            assert b["loss/policy"] == pytest.approx(a["loss/policy"], abs=1e-5)
            for key in ("reward/mean", "pool/mean", "dpo/num_pairs"):  # the same samples on 1 and 2 processes
                assert b.get(key) == a.get(key), (key, a["stage"], a["step"])
        for key in (k for k in a if k.startswith("eval/")):
            assert b[key] == a[key], key
    assert rows_two[4]["reward/mean"] not in (0.0, 1.0)  # the reward varies: advantages are not all 0
    summary_one, summary_two = (json.loads((d / "summary.json").read_text()) for d in (one, two))
    assert [s["eval"] for s in summary_one["stages"]] == [s["eval"] for s in summary_two["stages"]]
    assert sorted(p.name for p in two.iterdir()) == sorted(p.name for p in one.iterdir())


def test_lora_and_a_value_model_with_adapters_on_two_processes_equal_one_process(tmp_path):
    # the quickstart's stages, sft and grpo, with grpo running PPO (a value model with its own adapters)
    run = [*RUN[:12], "model.lora.r=4", "stages.sft.steps=2", "stages.sft.data.prompts_per_step=5",
           *stage_overrides("grpo", "ppo", **{"data.samples_per_prompt": 2, "optim.minibatches": 2, "optim.micro_batch_size": 2})]
    from safetensors.torch import load_file

    launch(1, "-m", "rlzoo", *run, f"output_dir={tmp_path / 'one'}")
    launch(2, "-m", "rlzoo", *run, f"output_dir={tmp_path / 'two'}")
    for stage in ("sft", "grpo"):
        a = load_file(tmp_path / "one" / stage / "final" / "adapter_model.safetensors")
        b = load_file(tmp_path / "two" / stage / "final" / "adapter_model.safetensors")
        assert max_diff(a, b) < 1e-5, stage
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["dist/replica_max_diff"] == 0.0 for r in rows if "loss/policy" in r)


def test_reward_model_stages_and_process_supervision_on_two_processes_equal_one_process(tmp_path):
    """SFT, a PRM with Math-Shepherd labels (its samples and rollouts sharded over the processes
    and gathered), an ORM, then GRPO with process supervision from the PRM: the same labelled data,
    the same reward-model weights and held-out metrics, the same policy, on 1 and 2 processes."""
    import yaml
    from safetensors.torch import load_file

    rm = {"kind": "reward_model", "steps": 3, "data": {"samples_per_prompt": 2}, "generation": {"max_new_tokens": 10},
          "optim": {"lr": 1e-3, "micro_batch_size": 3}}
    cfg = {
        "name": "dp_rm", "logging": {"progress": False},
        "task": {"synthetic": {"eval_size": 5}}, "eval": {"samples": 0, "max_new_tokens": 8},
        "model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}},
        "stages": {
            "sft": {"steps": 3, "data": {"prompts_per_step": 5}, "optim": {"lr": 3e-3, "micro_batch_size": 2}},
            "prm": {**rm, "reward_model": {"type": "prm", "labels": "math_shepherd", "rollouts": 2, "questions": 5,
                                           "eval_questions": 3, "batch_size": 7}},
            "orm": {**rm, "reward_model": {"type": "orm", "questions": 5, "eval_questions": 3, "batch_size": 7}},
            "grpo": {"algorithm": "grpo", "algorithm_args": {"supervision": "process"}, "steps": 2,
                     "data": {"prompts_per_step": 3, "samples_per_prompt": 4}, "generation": {"max_new_tokens": 10},
                     "reward": {"name": "prm", "kwargs": {"model": "prm"}}, "optim": {"lr": 1e-3, "micro_batch_size": 3}},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    launch(1, "-m", "rlzoo", "train", str(path), f"output_dir={tmp_path / 'one'}")
    launch(2, "-m", "rlzoo", "train", str(path), f"output_dir={tmp_path / 'two'}")
    one, two = tmp_path / "one", tmp_path / "two"
    for stage in ("prm", "orm"):
        a, b = (torch.load(d / stage / "data.pt", weights_only=False) for d in (one, two))
        for split in ("train", "eval"):
            assert a[split].completions == b[split].completions, (stage, split)
            for key, labels in a[split].extras.items():
                assert torch.equal(labels, b[split].extras[key]), (stage, split, key)
    for stage in ("prm", "orm", "grpo"):
        a, b = load_file(one / stage / "final" / "model.safetensors"), load_file(two / stage / "final" / "model.safetensors")
        assert max_diff(a, b) < 1e-5, stage
        if stage == "grpo":  # the steps really moved the weights: the policy away from SFT's, a head away from 0
            assert max_diff(a, load_file(one / "sft" / "final" / "model.safetensors")) > 1e-4
        else:
            assert max(float(v.abs().max()) for k, v in a.items() if k.startswith("score.")) > 1e-4, stage
    summary_one, summary_two = (json.loads((d / "summary.json").read_text())["stages"] for d in (one, two))
    for a, b in zip(summary_one, summary_two):
        for key, value in a["eval"].items():
            assert b["eval"][key] == pytest.approx(value, abs=1e-5, nan_ok=True), (a["name"], key)
    rows = [json.loads(line) for line in (two / "metrics.jsonl").read_text().splitlines()]
    assert [(r["stage"], r["step"]) for r in rows if "rm/loss" in r] == [(s, i) for s in ("prm", "orm") for i in (1, 2, 3)]
    assert all(r["dist/replica_max_diff"] == 0.0 for r in rows if "loss/policy" in r)


def test_a_rank_with_no_question_takes_part_and_two_processes_equal_one(tmp_path):
    """One question per step on 2 processes: rank 1 holds none, samples an empty batch (plain and
    tool-integrated sampling, online and offline sources, held-out evaluation of one question)
    and still takes part in every collective; the weights are those of 1 process."""
    from safetensors.torch import load_file

    from helpers import one_question_config

    path = one_question_config(tmp_path)
    launch(1, "-m", "rlzoo", "train", str(path), f"output_dir={tmp_path / 'one'}")
    launch(2, "-m", "rlzoo", "train", str(path), f"output_dir={tmp_path / 'two'}")
    for name in ("grpo", "rft"):
        a, b = (load_file(tmp_path / d / name / "final" / "model.safetensors") for d in ("one", "two"))
        assert max_diff(a, b) < 1e-5, name
    rows = [json.loads(line) for line in (tmp_path / "two" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in rows if "loss/policy" in r]
    assert [(r["stage"], r["step"]) for r in trained] == [("grpo", 1), ("grpo", 2), ("rft", 1), ("rft", 2)]
    assert all(r["train/num_sequences"] > 0 and r["dist/replica_max_diff"] == 0.0 for r in trained)
