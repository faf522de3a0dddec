"""The stop rules of the one step loop (rlzoo.run.loop.StopRules), through the real CLI: a stage
whose updates are all skipped for a non-finite gradient, in any model, stops after
``optim.max_nonfinite_steps`` steps in a row; one skipped minibatch of several does not; a
reward that skips every completion stops the stage with one line naming it. The faults come from
tests/plugins/stop_plugin.py."""

from __future__ import annotations

from test_faults import GRPO, SFT, config, one_error_line, rlzoo, step_rows

from rlzoo.run.loop import StopRules

PLUGINS = "plugins=[tests/plugins/dp_plugin.py,tests/plugins/kill_plugin.py,tests/plugins/stop_plugin.py]"


def test_a_nan_in_the_value_gradient_alone_stops_the_stage(tmp_path):
    # the policy's gradient is finite, the value model's NaN: every step is skipped whole, and
    # three in a row stop the stage (the rule used to read the averaged norms and saw a finite one)
    stage = {**GRPO, "algorithm": "nan_value_ppo", "steps": 6, "save_every": 0,
             "optim": {**GRPO["optim"], "max_nonfinite_steps": 3}}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"ppo": stage}), f"output_dir={out}", PLUGINS)
    line = one_error_line(proc, trained=True)
    assert "stage ppo stopped at step 3: 3 steps in a row had a non-finite gradient" in line, line
    rows = step_rows(out)
    assert [r["train/skipped_nonfinite"] for r in rows] == [1.0, 1.0, 1.0]
    assert all(r["optim/grad_norm"] == r["optim/grad_norm"] for r in rows)  # the policy's own norm was finite


def test_one_skipped_minibatch_of_two_does_not_stop_the_stage(tmp_path):
    # two optimizer updates a step, the second NaN: half of every step is applied, so the stage
    # trains on (averaged norms made every step look skipped and stopped it at step 3)
    stage = {**SFT, "algorithm": "nan_every_other_sft", "steps": 4, "save_every": 0,
             "optim": {"lr": 1.0e-3, "minibatches": 2, "max_nonfinite_steps": 3}}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"sft": stage}), f"output_dir={out}", PLUGINS)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = step_rows(out)
    assert [(r["train/optimizer_steps"], r["train/skipped_nonfinite"]) for r in rows] == [(2.0, 1.0)] * 4
    assert (out / "sft" / "final").is_dir()


def test_a_reward_that_skips_every_completion_stops_the_stage_naming_it(tmp_path):
    stage = {**GRPO, "steps": 6, "save_every": 0, "reward": {"name": "test_none_reward"}, "optim": {**GRPO["optim"], "max_nonfinite_steps": 2}}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"grpo": stage}), f"output_dir={out}", PLUGINS)
    line = one_error_line(proc, trained=True)
    assert ("stage grpo stopped at step 2: 2 steps in a row had nothing to train on: the reward 'test_none_reward' "
            "skipped every completion") in line, line
    assert not (out / "grpo" / "final").exists()


def test_stop_rules_by_hand(tmp_path):
    rules = StopRules("s", 2, tmp_path, reward="r")
    rules.update(1, {"train/optimizer_steps": 4.0, "train/skipped_nonfinite": 3.0})  # one update of four applied
    rules.update(2, {"train/optimizer_steps": 4.0, "train/skipped_nonfinite": 3.0})
    rules.update(3, {"train/optimizer_steps": 1.0, "train/skipped_nonfinite": 1.0, "reward/skipped_frac": 0.5})
    rules.update(4, {"train/skipped_empty": 1.0})  # nothing trained (no correct output, say): no update to skip
    rules.update(5, {"train/optimizer_steps": 1.0, "train/skipped_nonfinite": 1.0})
    try:
        rules.update(6, {"train/optimizer_steps": 2.0, "train/skipped_nonfinite": 2.0})
    except Exception as e:  # noqa: BLE001
        assert "stage s stopped at step 6: 2 steps in a row had a non-finite gradient" in str(e)
        assert "no checkpoint was written" in str(e)
    else:
        raise AssertionError("two skipped steps in a row did not stop the stage")
    never = StopRules("s", 0, tmp_path)  # max_nonfinite_steps: 0 = never
    for step in range(1, 10):
        never.update(step, {"train/optimizer_steps": 1.0, "train/skipped_nonfinite": 1.0, "reward/skipped_frac": 1.0})


def test_a_reward_that_fails_on_one_process_stops_every_process_with_the_same_line(tmp_path):
    import os
    import subprocess
    import sys

    from test_faults import ROOT

    stage = {**GRPO, "steps": 2, "save_every": 0, "reward": {"name": "test_fails_on_rank_1"}}
    out = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlzoo",
                           "train", str(config(tmp_path, {"grpo": stage})), f"output_dir={out}", PLUGINS],
                          cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"},
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.startswith("rlzoo: error:")]
    assert len(lines) == 2 and lines[0] == lines[1], proc.stderr[-3000:]  # the same line from both processes
    assert "reward 'test_fails_on_rank_1' raised ValueError: the grader lost its connection" in lines[0]
    assert "gloo" not in proc.stderr.lower() and "Connection closed" not in proc.stderr, proc.stderr[-3000:]


def test_a_diverging_loss_warns_or_stops(tmp_path, capsys):
    import pytest

    from rlzoo.errors import TrainingStopped

    curve = [6.2, 5.0, 4.1, 3.9, 4.5, 6.0, 8.5, 11.0, 12.5, 13.0, 13.2, 13.1]  # lr 1.0's SFT loss: 6.2 -> 13
    warn = StopRules("sft", 3, tmp_path)
    for step, loss in enumerate(curve, 1):
        warn.update(step, {"loss/policy": loss})
    warn.finish(len(curve))
    assert "rlzoo: warning: stage sft: loss/policy rose from 6.2 (first 1 steps) to 13.1 (last 1): the training diverged" \
        in capsys.readouterr().err
    stop = StopRules("sft", 3, tmp_path, on_divergence="stop")
    for step, loss in enumerate(curve, 1):
        stop.update(step, {"loss/policy": loss})
    with pytest.raises(TrainingStopped, match="stage sft stopped at step 12: loss/policy rose from 6.2"):
        stop.finish(len(curve))
    calm = StopRules("grpo", 3, tmp_path, on_divergence="stop")  # an RL loss moving around 0 is no divergence
    for step, loss in enumerate([0.01, -0.02, 0.3, 0.5, -0.1, 0.2, 0.4, 0.6, 0.2, 0.9, 0.8, 0.7], 1):
        calm.update(step, {"loss/policy": loss})
    calm.finish(12)


def test_a_learning_rate_no_adamw_run_uses_is_refused(tmp_path):
    # lr 1.0 drove an SFT loss from 6.2 to 13-32 with exit 0; AdamW moves each weight by about lr a step
    proc = rlzoo(config(tmp_path, {"sft": {**SFT, "optim": {"lr": 1.0}}}), f"output_dir={tmp_path / 'run'}")
    line = one_error_line(proc)
    assert line == "rlzoo: error: stages.sft.optim.lr=1.0 is out of range: it must be in (0, 0.1]", line


def test_a_reward_model_reward_without_its_model_names_the_key(tmp_path):
    # it was "_ModelReward.__init__() missing 1 required positional argument: 'model'"
    stage = {**GRPO, "reward": {"name": "orm"}}
    line = one_error_line(rlzoo(config(tmp_path, {"grpo": stage}), f"output_dir={tmp_path / 'run'}"))
    assert line == "rlzoo: error: reward 'orm' needs kwargs.model (its kwargs: model, batch_size, dtype, ensemble, clip)", line
