"""Sharded training (``parallel: fsdp``, FSDP2) is exact: 2 CPU processes (torchrun, gloo) holding
each parameter, gradient and optimizer moment once take the steps 1 unsharded process takes.

* A run of five stages (SFT, GRPO with 2 updates x 2 minibatches, PPO with a value model, DPO from
  an offline pool, an outcome reward model) sharded over 2 processes ends every stage with the
  weights of the plain 1-process run, to 1e-5, samples the same batches and evaluates alike; the
  log-probs go through the chunked head, which reads the (sharded) output weight itself.
* LoRA (adapters sharded with their layers), a value model with its own adapters and gradient
  checkpointing: 2 sharded processes equal 1 plain one; FSDP on 1 process (no launcher) is the
  plain run bitwise.
* bf16 autocast: FSDP on 1 process is the plain run bitwise, KL exactly 0 at the first update.
* A process holding no question samples alone (no lockstep generation) and the run still equals 1.
* SIGKILL inside sharded stages, then ``--resume`` from the sharded checkpoints
  (torch.distributed.checkpoint), ends bitwise equal to the uninterrupted sharded run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from test_distributed import ENV, ROOT, RUN, STAGES, launch, max_diff, stage_overrides

ORM = ["stages.orm.kind=reward_model", "stages.orm.steps=2", "stages.orm.data.samples_per_prompt=2",
       "stages.orm.generation.max_new_tokens=8", "stages.orm.optim.lr=1e-3", "stages.orm.optim.micro_batch_size=3",
       "stages.orm.reward_model.type=orm", "stages.orm.reward_model.questions=4", "stages.orm.reward_model.eval_questions=3",
       "stages.orm.reward_model.batch_size=5"]


def rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


CHUNKED = ["model.logprob_chunk_size=7"]  # the chunked head (quickstart's is off), which reads lm_head's weight itself


def test_five_stages_sharded_on_two_processes_equal_one_plain_process(tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    launch(1, "-m", "rlzoo", *RUN, *ORM, *CHUNKED, f"output_dir={one}")
    launch(2, "-m", "rlzoo", *RUN, *ORM, *CHUNKED, "parallel=fsdp", f"output_dir={two}")
    for stage in (*STAGES, "orm"):
        a, b = load_file(one / stage / "final" / "model.safetensors"), load_file(two / stage / "final" / "model.safetensors")
        assert max_diff(a, b) < 1e-5, stage  # measured: 5e-7 (DPO, the last policy stage)
    assert max_diff(load_file(two / "dpo" / "final" / "model.safetensors"), load_file(two / "sft" / "final" / "model.safetensors")) > 1e-4
    rows_one, rows_two = rows(one), rows(two)
    assert [(r["stage"], r["step"]) for r in rows_one] == [(r["stage"], r["step"]) for r in rows_two]  # one line per step
    for a, b in zip(rows_one, rows_two):
        assert "dist/replica_max_diff" not in b  # no replicas to compare: each process holds its shards
        if "loss/policy" in b:
            assert b["loss/policy"] == pytest.approx(a["loss/policy"], abs=1e-5)
            for key in ("reward/mean", "pool/mean", "dpo/num_pairs"):  # the same samples: sampled from gathered weights
                assert b.get(key) == a.get(key), (key, a["stage"], a["step"])
        if "rm/loss" in b:
            assert b["rm/loss"] == pytest.approx(a["rm/loss"], abs=1e-5)
    summary_one, summary_two = (json.loads((d / "summary.json").read_text())["stages"] for d in (one, two))
    for a, b in zip(summary_one, summary_two):
        for key, value in a["eval"].items():
            assert b["eval"][key] == pytest.approx(value, abs=1e-5, nan_ok=True), (a["name"], key)
    exported = tmp_path / "exported"  # a sharded run's final folder is a plain Hugging Face folder
    subprocess.run([sys.executable, "-m", "rlzoo", "export", str(two / "dpo" / "final"), str(exported)], cwd=ROOT, env=ENV,
                   check=True, capture_output=True)
    assert max_diff(load_file(exported / "model.safetensors"), load_file(two / "dpo" / "final" / "model.safetensors")) == 0.0


def test_lora_value_model_and_checkpointing_sharded_equal_plain(tmp_path):
    run = [*RUN[:12], *CHUNKED, "model.lora.r=4", "model.gradient_checkpointing=true", "stages.sft.steps=2",
           *stage_overrides("grpo", "ppo", **{"data.samples_per_prompt": 2, "optim.minibatches": 2, "optim.micro_batch_size": 2})]
    launch(1, "-m", "rlzoo", *run, "model.share_prompts=false", f"output_dir={tmp_path / 'plain'}")  # as sharded passes run
    launch(2, "-m", "rlzoo", *run, "parallel=fsdp", f"output_dir={tmp_path / 'two'}")
    launch(1, "-m", "rlzoo", *run, "parallel=fsdp", f"output_dir={tmp_path / 'one'}")  # no launcher: a group of one
    for stage in ("sft", "grpo"):
        plain, two, one = (load_file(tmp_path / d / stage / "final" / "adapter_model.safetensors") for d in ("plain", "two", "one"))
        assert max_diff(plain, two) < 1e-5, stage
        assert all(torch.equal(plain[k], one[k]) for k in plain), stage  # FSDP on one process is the plain run
    assert (tmp_path / "two" / "grpo" / "final" / "rlzoo_base.json").is_file()  # adapters and the path of their base


def test_bf16_sharded_on_one_process_is_the_plain_run_with_kl_zero_at_first(tmp_path):
    run = [*RUN[:12], "mixed_precision=bf16", "stages.sft.steps=2", *stage_overrides("grpo", "grpo")]
    launch(1, "-m", "rlzoo", *run, "model.share_prompts=false", f"output_dir={tmp_path / 'plain'}")  # as sharded passes run
    launch(1, "-m", "rlzoo", *run, "parallel=fsdp", f"output_dir={tmp_path / 'fsdp'}")
    for stage in ("sft", "grpo"):
        a, b = (load_file(tmp_path / d / stage / "final" / "model.safetensors") for d in ("plain", "fsdp"))
        assert all(torch.equal(a[k], b[k]) for k in a), stage
    first = next(r for r in rows(tmp_path / "fsdp") if r["stage"] == "grpo")
    assert first["kl/k3"] == 0.0  # policy and sharded reference share one precision path


def test_a_process_with_no_question_samples_alone_and_sharded_equals_plain(tmp_path):
    """One question per step on 2 sharded processes: process 1 holds none, so the two call
    ``generate`` (plain and tool-integrated) a different number of times; sampling from gathered
    weights is no collective (Hugging Face's lockstep ``synced_gpus`` would deadlock here)."""
    from helpers import one_question_config

    path = one_question_config(tmp_path)
    launch(1, "-m", "rlzoo", "train", str(path), f"output_dir={tmp_path / 'one'}")
    launch(2, "-m", "rlzoo", "train", str(path), "parallel=fsdp", f"output_dir={tmp_path / 'two'}", timeout=180)
    for name in ("grpo", "rft"):
        a, b = (load_file(tmp_path / d / name / "final" / "model.safetensors") for d in ("one", "two"))
        assert max_diff(a, b) < 1e-5, name


KILL_RUN = [
    "configs/quickstart.yaml", "plugins=[tests/plugins/dp_plugin.py,tests/plugins/kill_plugin.py]", "logging.progress=false",
    "model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2",
    "task.synthetic.eval_size=4", "eval.samples=2", "eval.ks=[1,2]", "eval.max_new_tokens=6", "parallel=fsdp",
    "stages.sft.steps=2", "stages.sft.save_every=1", "stages.sft.data.source=killing_dataset", "stages.sft.data.prompts_per_step=4",
    *stage_overrides("grpo", "grpo", **{"steps": 3, "save_every": 1, "data.source": "killing_online", "data.prompts_per_step": 2,
                                        "optim.updates_per_batch": 2, "optim.minibatches": 2}),
    *stage_overrides("ppo", "ppo", **{"steps": 3, "save_every": 1, "data.source": "killing_online", "data.prompts_per_step": 2,
                                      "optim.minibatches": 2, "save_total_limit": 1}),
]


def sharded_run(out: Path, *flags: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = {**ENV, "RLZOO_TEST_KILL_AT": str(kill_at)}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlzoo",
                           "train", *KILL_RUN, f"output_dir={out}", *flags], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)


def test_sharded_run_killed_and_resumed_equals_the_uninterrupted_run(tmp_path):
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    proc = sharded_run(whole)
    assert proc.returncode == 0, proc.stderr[-3000:]
    # batches: sft 1, sft 2, grpo 1, grpo 2 -> killed at 4 (GRPO step 2, its step-1 checkpoint sharded);
    # the resume counts afresh: grpo 2, grpo 3, ppo 1, ppo 2 -> killed at 4 (PPO step 2); then the end
    assert sharded_run(broken, kill_at=4).returncode != 0
    assert (broken / "grpo" / "checkpoint-1" / "sharded" / ".metadata").is_file() and not (broken / "grpo" / "final").exists()
    assert sharded_run(broken, "--resume", kill_at=4).returncode != 0
    assert (broken / "grpo" / "final").exists() and not (broken / "ppo" / "final").exists()
    proc = sharded_run(broken, "--resume")
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("sft", "grpo", "ppo"):
        a, b = (load_file(d / name / "final" / "model.safetensors") for d in (whole, broken))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # bitwise
    strip = lambda rs: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rs]  # noqa: E731
    assert strip(rows(broken)) == strip(rows(whole))
    assert not list(broken.rglob("*.tmp")) and not list(broken.rglob("*.old"))


def test_a_model_without_decoder_layers_cannot_be_sharded():
    from rlzoo.errors import ConfigError
    from rlzoo.runtime.sharding import shard

    with pytest.raises(ConfigError) as e:
        shard(torch.nn.Sequential(torch.nn.Linear(2, 2)), torch.device("cpu"), "policy")
    assert str(e.value).startswith("parallel: fsdp shards a model layer by layer") and "\n" not in str(e.value)
