"""The GPU path (``pytest -m gpu``; skipped without CUDA; scripts/gpu_check.sh runs it on a lent GPU).

The same code as on the CPU: bf16 autocast for policy and reference with KL 0 at step 1, fp16 with
its loss scaler unscaled once per optimizer step over two stages, sampling-time log-probs equal to
the training path's in fp32, and the CUDA peak memory of a PPO step against a GRPO step.
"""

from __future__ import annotations

import json

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_bf16_grpo_step_runs_policy_and_reference_in_bf16_with_kl_zero():
    from test_stage import _record_linear_dtypes, make_stage
    from rlzoo.runtime.stage import train_step

    st = make_stage("mixed_precision=bf16")
    assert st.accelerator.device.type == "cuda"
    policy, reference = [], []
    _record_linear_dtypes(st.lm, policy)
    _record_linear_dtypes(st.rt.reference, reference)
    metrics = train_step(st)
    assert set(policy) == {torch.bfloat16} and set(reference) == {torch.bfloat16}
    assert metrics["kl/k3"] == 0.0 and metrics["policy/ratio_mean"] == 1.0
    print(f"bf16 GRPO step on {torch.cuda.get_device_name()}: {metrics['time/step']:.3f} s, kl/k3 {metrics['kl/k3']}")


def test_fp16_two_stages_unscale_once_per_step(tmp_path, monkeypatch):
    from accelerate import Accelerator

    from rlzoo.config import load_config
    from rlzoo.train import train
    from helpers import TINY_MODEL

    calls = []
    original = Accelerator.unscale_gradients
    monkeypatch.setattr(Accelerator, "unscale_gradients", lambda self, optimizer=None: (calls.append(id(optimizer)), original(self, optimizer))[1])
    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "mixed_precision=fp16", "task.synthetic.eval_size=8", "eval.samples=2", "eval.ks=[1,2]",
        "sft.steps=3", "grpo.steps=2", "grpo.data.prompts_per_step=4", "grpo.data.samples_per_prompt=4",
        f"output_dir={tmp_path}", "logging.progress=false",
    ])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "loss/policy" in line]
    assert len(rows) == 5 and all("optim/fp16_overflow_steps" in r for r in rows)
    assert len(calls) == 5 and len(set(calls[:3])) == 1 and len(set(calls[3:])) == 1 and calls[0] != calls[3]


def test_sampling_time_logprobs_equal_training_logprobs_in_fp32_on_gpu(tiny_model, task, tokenizer):
    from rlzoo.config import GenerationConfig
    from rlzoo.runtime.generation import sample
    from rlzoo.runtime.logprobs import token_logprobs

    torch.backends.cuda.matmul.allow_tf32 = False
    model = tiny_model.cuda()
    batch = sample(model, tokenizer, task.eval_examples()[:8], 4, GenerationConfig(max_new_tokens=16, temperature=0.7))
    with torch.no_grad():
        recomputed = token_logprobs(model, batch.input_ids, batch.attention_mask, temperature=0.7)
    diff = float(((recomputed - batch.sample_logprobs) * batch.loss_mask).abs().max())
    print(f"sampling-time vs training log-probs at T=0.7 on {torch.cuda.get_device_name()}: max diff {diff:.2e}")
    assert diff < 1e-4


def test_ppo_step_needs_more_gpu_memory_than_a_grpo_step():
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "benchmarks/memory.py", "--device", "cuda", "--json"], cwd=root,
                         capture_output=True, text=True, check=True).stdout
    print(out)
    results = json.loads(out.strip().splitlines()[-1])
    assert results["ppo"]["gpu_delta"] > results["grpo"]["gpu_delta"]
