"""The worked example of docs/interface.md is run as written: a plugin file taken from the doc,
trained with micro-batches that split its groups and with micro-batches that keep them whole.
Group statistics belong in ``prepare`` (whole groups); the two runs must end with the same weights."""

from __future__ import annotations

import re
from pathlib import Path

import torch

from rlzoo.config import load_config
from rlzoo.registry import register_reward

from helpers import TINY_MODEL

ROOT = Path(__file__).resolve().parents[1]


@register_reward("test_example_even_length")
def even_length(prompt, completion, example) -> float:
    """1 for a completion of even character length: about half of a random model's outputs."""
    return float(len(completion) % 2 == 0)


def doc_example(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "interface.md").read_text()
    section = text[text.index("## A worked example"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "my_algos.py"
    path.write_text(code)
    return path


def test_the_worked_example_trains_the_same_whatever_the_micro_batches(tmp_path):
    from safetensors.torch import load_file

    from rlzoo.train import train

    plugin = doc_example(tmp_path)
    finals = {}
    for micro in (3, 16):  # 3: every group of 4 is cut across micro-batches; 16: the batch in one
        out = tmp_path / f"mb{micro}"
        cfg = load_config(None, [*TINY_MODEL, f"plugins=[{plugin}]", f"output_dir={out}", "logging.progress=false",
                                 "eval.samples=0", "eval.max_new_tokens=4", "task.synthetic.eval_size=2",
                                 "stages.rl.algorithm=reinforce_baseline", "stages.rl.steps=2",
                                 "stages.rl.data.prompts_per_step=3", "stages.rl.data.samples_per_prompt=4",
                                 "stages.rl.generation.max_new_tokens=8", "stages.rl.reward.name=test_example_even_length",
                                 "stages.rl.optim.lr=1e-2", f"stages.rl.optim.micro_batch_size={micro}",
                                 "algorithms.reinforce_baseline.scale=2.0"])
        train(cfg)
        finals[micro] = load_file(out / "rl" / "final" / "model.safetensors")
        rows = (out / "metrics.jsonl").read_text()
        assert '"rb/adv_abs"' in rows
    for key in finals[3]:
        torch.testing.assert_close(finals[3][key], finals[16][key], rtol=0, atol=1e-5)  # float sums in another order
