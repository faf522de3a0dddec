"""The later variants under the runtime's guarantees, end to end: DAPO (its dynamic source decides
on every process's rewards, its overlong shaping) then GSPO, with LoRA adapters, launched as 2
processes equal 1 process, and a run killed (SIGKILL) inside the DAPO stage and resumed equals the
uninterrupted one bitwise. (Each variant's update on a batch split over 2 processes equals 1
process in tests/test_distributed.py; bf16 runs in tests/test_variants_smoke.py.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
COMMON = {"steps": 3, "save_every": 1, "data.prompts_per_step": 3, "data.samples_per_prompt": 4,
          "generation.max_new_tokens": 10, "optim.micro_batch_size": 5, "optim.lr": 1e-3}
RUN = [
    "configs/quickstart.yaml", "plugins=[tests/plugins/dp_plugin.py,tests/plugins/kill_plugin.py]", "logging.progress=false",
    "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "model.lora.r=4", "task.synthetic.eval_size=4", "eval.samples=0", "eval.max_new_tokens=6", "stages.sft.steps=1",
    "stages.sft.data.prompts_per_step=4",
    "stages.grpo.algorithm=dapo", "stages.grpo.data.source=killing_dynamic", "stages.grpo.data.source_args.max_rounds=3",
    "stages.grpo.reward.functions=[{name: test_length_parity}, {name: overlong, kwargs: {max_length: 10, cache: 4}}]",
    *[f"stages.grpo.{k}={v}" for k, v in COMMON.items()],
    "stages.gspo.algorithm=gspo", "stages.gspo.reward.name=test_length_parity", *[f"stages.gspo.{k}={v}" for k, v in COMMON.items()],
]


def rlzoo(nproc: int, out: Path, *flags: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    runner = [sys.executable] if nproc == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                  f"--nproc_per_node={nproc}"]
    env = {**os.environ, "RLZOO_TEST_KILL_AT": str(kill_at), "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run([*runner, "-m", "rlzoo", "train", *RUN, f"output_dir={out}", *flags], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def final(out: Path, stage: str) -> dict:
    from safetensors.torch import load_file

    folder = out / stage / "final"
    return load_file(next(p for p in (folder / "adapter_model.safetensors", folder / "model.safetensors") if p.is_file()))


def steps(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "dist/", "system/"))} for r in rows if "loss/policy" in r]


def test_dapo_and_gspo_with_lora_on_two_processes_and_killed_then_resumed_equal_one_uninterrupted_process(tmp_path):
    one, two, broken = tmp_path / "one", tmp_path / "two", tmp_path / "broken"
    for nproc, out in ((1, one), (2, two)):
        proc = rlzoo(nproc, out)
        assert proc.returncode == 0, proc.stderr[-3000:]
    # batches: sft 1, dapo 1 (its rounds are one batch), dapo 2 -> killed in DAPO's second step
    assert rlzoo(1, broken, kill_at=3).returncode == -9
    proc = rlzoo(1, broken, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for stage in ("grpo", "gspo"):
        a, b, c = final(one, stage), final(two, stage), final(broken, stage)
        assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5, stage
        assert all(torch.equal(a[k], c[k]) for k in a), stage  # bitwise after the resume
    rows_one, rows_two, rows_broken = steps(one), steps(two), steps(broken)
    assert rows_broken == rows_one
    assert [(r["stage"], r["step"]) for r in rows_two] == [(r["stage"], r["step"]) for r in rows_one]
    for a, b in zip(rows_one, rows_two):  # the same samples kept: rounds, groups and rewards agree
        for key in ("dynamic/rounds", "dynamic/groups_kept", "reward/mean", "reward/sampled_mean", "train/num_sequences"):
            assert a.get(key) == b.get(key), (key, a["stage"], a["step"])
    dapo = [r for r in rows_one if r["stage"] == "grpo"]
    assert all(r["dynamic/rounds"] >= 1 and r["dynamic/groups_kept"] >= 1 for r in dapo)
