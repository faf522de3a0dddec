"""The CLI's answers to bad input: one line, exit status 2, no traceback."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def rlzoo(*args, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "rlzoo.cli", *args], capture_output=True, text=True, cwd=ROOT,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}, timeout=120)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "configs/does_not_exist.yaml"], "config file not found: configs/does_not_exist.yaml"),
        (["train", "configs/quickstart.yaml", "sft.lerning_rate=1e-3"], "unknown config key 'stages.sft.lerning_rate'"),
        (["train", "configs/quickstart.yaml", "sft.steps=lots"], "stages.sft.steps: Value 'lots'"),
        (["train", "configs/quickstart.yaml", "grpo.algorithm=gpro"], "unknown algorithm 'gpro'; known:"),
        (["train", "configs/quickstart.yaml", "model.path=/no/such/model"], "model folder not found: /no/such/model"),
        (["eval", "/no/such/checkpoint"], "model folder not found: /no/such/checkpoint"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, message, tmp_path):
    code, out, err = rlzoo(*args, "output_dir=" + str(tmp_path / "run") if args[0] == "train" else "--samples=0", tmp_path=tmp_path)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("rlzoo: error: ") and message in lines[0], lines[0]


def test_summary_table_shows_stages_and_only_reward_shares_that_occur():
    from rlzoo.cli import format_summary

    def stage(name, acc, pot):
        return {"name": name, "algorithm": name, "steps": 10, "wall_seconds": 12.3,
                "eval": {"accuracy": acc, "num_examples": 200, "format_pot_frac": pot, "exec_fail_frac": 0.0, "pass@4": 0.5}}

    lines = format_summary({"stages": [stage("sft", 0.185, 0.0), stage("grpo", 0.39, 0.795)]}).splitlines()
    assert lines[1].split() == ["stage", "algorithm", "steps", "seconds", "accuracy", "format_pot_frac", "pass@4"]
    assert lines[3].split() == ["sft", "sft", "10", "12", "18.5", "0.0", "50.0"]
    assert lines[4].split() == ["grpo", "grpo", "10", "12", "39.0", "79.5", "50.0"]
