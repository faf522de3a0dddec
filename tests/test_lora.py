"""LoRA through peft: only adapters train, the reference is the policy with its adapters off (no
copy), the value model gets adapters of its own, and a LoRA stage's folder (adapters + where their
base is) loads, chains into the next stage and exports merged."""

from __future__ import annotations

import json

import pytest
import torch

from rlzoo.runtime.stage import train_step
from test_stage import make_stage


def _state(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_a_lora_grpo_step_changes_only_adapter_weights_and_the_reference_is_the_base():
    st = make_stage("model.lora.r=4", "grpo.optim.lr=1e-2", "grpo.optim.warmup_steps=0")
    lm = st.lm
    assert st.rt.reference is None and st.rt.reference_is_base  # no second copy of the weights
    trainable = {n for n, p in lm.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n for n in trainable)
    # a fixed batch; before any update the adapters are zero (B = 0), so the policy is the base model
    from rlzoo.config import GenerationConfig
    from rlzoo.runtime.generation import sample

    batch = sample(lm, st.rt.tokenizer, [next(st.ctx.prompts) for _ in range(3)], 2, GenerationConfig(max_new_tokens=8))
    base_logprobs = st.rt.policy_logprobs(batch)
    before = _state(lm)
    metrics = train_step(st)
    assert metrics["kl/k3"] == 0.0  # the first update is on the base exactly
    after = _state(lm)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed) and any("lora_B" in k for k in changed)
    # after the update: adapters off gives the untouched base, adapters on a different policy
    torch.testing.assert_close(st.rt.reference_logprobs(batch), base_logprobs, rtol=0, atol=1e-6)
    assert float((st.rt.policy_logprobs(batch) - base_logprobs).abs().max()) > 1e-4


def test_ppo_value_model_has_its_own_adapters():
    st = make_stage("model.lora.r=4", "grpo.algorithm=ppo")
    value = st.rt.value_model
    trainable = {n for n, p in value.named_parameters() if p.requires_grad}
    assert trainable == {n for n in trainable if "lora_" in n or n.startswith("head.")}
    assert {"head.weight", "head.bias"} <= trainable
    policy_params = {id(p) for p in st.lm.parameters()}
    assert not any(id(p) in policy_params for p in value.parameters())  # a copy: nothing shared with the policy
    metrics = train_step(st)
    assert "loss/value" in metrics and metrics["optim/grad_norm_value"] > 0


def test_lora_stages_chain_resume_point_and_export_merged(tmp_path):
    from rlzoo.config import load_config
    from rlzoo.runtime.models import load_stage_result
    from rlzoo.train import train
    from helpers import TINY_MODEL

    cfg = load_config("configs/quickstart.yaml", [
        *TINY_MODEL, "model.lora.r=4", "task.synthetic.eval_size=4", "eval.samples=0", "eval.max_new_tokens=4",
        "sft.steps=3", "sft.optim.warmup_steps=0", "grpo.steps=2", "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=4",
        "grpo.generation.max_new_tokens=8", "grpo.reward.name=test_stage_length", "grpo.optim.warmup_steps=0",
        f"output_dir={tmp_path / 'run'}", "logging.progress=false",
    ])
    train(cfg)
    run = tmp_path / "run"
    sft, grpo = run / "sft" / "final", run / "grpo" / "final"
    assert (sft / "adapter_model.safetensors").is_file() and not (sft / "model.safetensors").exists()
    assert json.loads((grpo / "rlzoo_base.json").read_text())["path"] == "../../sft/final"
    assert json.loads((sft / "rlzoo_base.json").read_text())["path"] == "../../initial"
    # the chain initial -> sft adapters (merged) -> grpo adapters (merged) loads as one plain model
    lm, tok = load_stage_result(grpo)
    assert not hasattr(lm, "peft_config")
    import shutil
    import subprocess
    import sys

    moved = tmp_path / "moved"
    shutil.move(str(run), str(moved))  # relative base paths: the run folder may move
    out = tmp_path / "export"
    proc = subprocess.run([sys.executable, "-m", "rlzoo", "export", str(moved / "grpo" / "final"), str(out), "--merge"],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    from transformers import AutoModelForCausalLM

    exported = AutoModelForCausalLM.from_pretrained(out)
    ids = torch.tensor([[1, 5, 6, 7, 8]])
    torch.testing.assert_close(exported(ids).logits, lm(ids).logits, rtol=0, atol=1e-5)
    sft_lm, _ = load_stage_result(moved / "sft" / "final")
    assert float((sft_lm(ids).logits - lm(ids).logits).abs().max()) > 0  # grpo's adapters are in
