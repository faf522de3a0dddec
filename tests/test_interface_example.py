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
        # float sums in another order, and prompts run once per micro-batch that holds them (1e-6
        # per pass, grown by lr 1e-2); a group statistic in coefficients() differs by 0.027
        torch.testing.assert_close(finals[3][key], finals[16][key], rtol=0, atol=5e-5)


def doc_source_example(tmp_path: Path) -> Path:
    text = (ROOT / "docs" / "interface.md").read_text()
    section = text[text.index("## Writing a data source"):]
    code = re.findall(r"```python\n(.*?)```", section, re.S)[1]  # the first block is the protocol
    (tmp_path / "my_sources.py").write_text(code)
    # a second plugin file that imports a file beside it, as docs/interface.md ("Plugin files") promises
    (tmp_path / "spread.py").write_text("def spread(text):\n    return len(text.strip()) % 5 / 4.0\n")
    (tmp_path / "my_rewards.py").write_text(
        "from rlzoo.registry import register_reward\nfrom spread import spread\n\n\n"
        "@register_reward('test_source_spread')\ndef spread_reward(prompt, completion, example):\n    return spread(completion)\n")
    return tmp_path


def test_the_data_source_example_keeps_the_most_spread_outputs_and_two_processes_equal_one(tmp_path):
    import json
    import os
    import subprocess
    import sys

    from safetensors.torch import load_file

    folder = doc_source_example(tmp_path)
    args = [*TINY_MODEL, f"plugins=[{folder / 'my_sources.py'},{folder / 'my_rewards.py'}]", "logging.progress=false",
            "eval.samples=0", "eval.max_new_tokens=4", "task.synthetic.eval_size=2", "stages.rl.algorithm=grpo",
            "stages.rl.data.source=max_variance", "stages.rl.data.source_args.keep=3", "stages.rl.steps=2",
            "stages.rl.data.prompts_per_step=3", "stages.rl.data.samples_per_prompt=6", "stages.rl.generation.max_new_tokens=8",
            "stages.rl.reward.name=test_source_spread", "stages.rl.optim.lr=1e-3", "stages.rl.optim.micro_batch_size=4"]
    from rlzoo.config import to_yaml

    (tmp_path / "run.yaml").write_text(to_yaml(load_config(None, args)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}
    finals, rows = {}, {}
    for n in (1, 2):
        runner = [sys.executable] if n == 1 else [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
        out = tmp_path / f"p{n}"
        proc = subprocess.run([*runner, "-m", "rlzoo", "train", str(tmp_path / "run.yaml"), f"output_dir={out}"], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-2000:]
        finals[n] = load_file(out / "rl" / "final" / "model.safetensors")
        rows[n] = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if '"loss/policy"' in line]
    for key in finals[1]:
        torch.testing.assert_close(finals[1][key], finals[2][key], rtol=0, atol=1e-5)
    for a, b in zip(rows[1], rows[2]):
        assert a["train/num_sequences"] == b["train/num_sequences"] <= 9  # 3 questions x keep 3
        assert a["reward/sampled_mean"] == b["reward/sampled_mean"] and a["reward/mean"] == b["reward/mean"]


def test_source_args_are_checked_against_the_source_config(tmp_path):
    import pytest

    from rlzoo.errors import ConfigError
    from rlzoo.run.validate import validate

    folder = doc_source_example(tmp_path)
    base = [*TINY_MODEL, f"plugins=[{folder / 'my_sources.py'}]", "stages.rl.algorithm=grpo", "stages.rl.data.source=max_variance"]
    with pytest.raises(ConfigError, match=r"^stages.rl.data.source_args.keep=0 is out of range"):
        validate(load_config(None, [*base, "stages.rl.data.source_args.keep=0"]))
    with pytest.raises(ConfigError, match=r"^unknown config key 'stages.rl.data.source_args.kep'"):
        validate(load_config(None, [*base, "stages.rl.data.source_args.kep=2"]))
    with pytest.raises(ConfigError, match=r"^stages.rl.data.source_args.keep: data source 'online' takes no settings"):
        validate(load_config(None, [*TINY_MODEL, "stages.rl.algorithm=grpo", "stages.rl.data.source_args.keep=2"]))


BAD_ALGORITHM = '''
from dataclasses import dataclass

import torch

from rlzoo.interface import NoExtras
from rlzoo.registry import register_algorithm


@register_algorithm("baseline_in_coefficients")
class BaselineInCoefficients(NoExtras):
    """The mistake the docs warn about: a baseline over the rows coefficients() happens to see."""

    @dataclass
    class Config:
        pass

    data_source, needs, loss_agg, group_coupled, min_samples_per_prompt = "online", frozenset(), None, False, 2

    def __init__(self, cfg):
        self.cfg = cfg

    def coefficients(self, batch, logp):
        adv = batch.rewards - batch.rewards.mean()  # [n]: the mean of whatever rows share the micro-batch
        return adv[:, None] * batch.loss_mask, {}
'''


def test_coefficients_that_read_other_rows_of_the_micro_batch_stop_the_run_in_one_line(tmp_path):
    import pytest

    from rlzoo.errors import ConfigError
    from rlzoo.train import train

    plugin = tmp_path / "bad_algo.py"
    plugin.write_text(BAD_ALGORITHM)
    cfg = load_config(None, [*TINY_MODEL, f"plugins=[{plugin}]", f"output_dir={tmp_path / 'run'}", "logging.progress=false",
                             "eval.samples=0", "eval.max_new_tokens=4", "task.synthetic.eval_size=2",
                             "stages.rl.algorithm=baseline_in_coefficients", "stages.rl.steps=1",
                             "stages.rl.data.prompts_per_step=2", "stages.rl.data.samples_per_prompt=4",
                             "stages.rl.generation.max_new_tokens=8", "stages.rl.reward.name=test_example_even_length"])
    with pytest.raises(ConfigError, match=r"^algorithm .*coefficients\(\) of a row depend on the other rows of its micro-batch"):
        train(cfg)
