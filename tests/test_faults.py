"""Faults during a run, through the real CLI: non-finite numbers never reach the weights, a bad
reward is one line, two runs never share a folder, a rerun with a typo changes nothing, and
SIGTERM or SIGINT stop after the step with a checkpoint that --resume continues exactly. A disk
that fills up is one line naming the file and the checkpoint to resume from; a damaged newest
checkpoint is named and --resume goes on from an older one; a mistake that shows only in a later
stage is fixed in the config and --resume trains only what had not started.

The faults come from tests/plugins/fault_plugin.py (an algorithm whose coefficients turn NaN,
rewards that return NaN or None) and tests/plugins/disk_plugin.py (a disk that fills up);
tests/plugins/kill_plugin.py's data sources hold a chosen batch until a file appears, or kill the
run there.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ["tests/plugins/dp_plugin.py", "tests/plugins/kill_plugin.py", "tests/plugins/fault_plugin.py",
           "tests/plugins/disk_plugin.py"]


def config(tmp: Path, stages: dict, name: str = "faults.yaml") -> Path:
    """A tiny run of ``stages`` written as YAML (JSON is YAML)."""
    cfg = {
        "name": "faults", "plugins": PLUGINS, "logging": {"progress": False},
        "model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}},
        "task": {"synthetic": {"eval_size": 4}}, "eval": {"samples": 0, "max_new_tokens": 6}, "stages": stages,
    }
    path = tmp / name
    path.write_text(json.dumps(cfg, indent=1))
    return path


SFT = {"algorithm": "sft", "steps": 3, "save_every": 1, "data": {"source": "gated_dataset", "prompts_per_step": 4},
       "optim": {"lr": 1.0e-3}}
GRPO = {"algorithm": "grpo", "steps": 2, "save_every": 1,
        "data": {"source": "gated_online", "prompts_per_step": 2, "samples_per_prompt": 4},
        "generation": {"max_new_tokens": 8}, "reward": {"name": "test_length_parity"},
        "optim": {"lr": 1.0e-3, "micro_batch_size": 4}}


def env(**extra: str) -> dict[str, str]:
    return {**os.environ, "TQDM_DISABLE": "1", **extra}


def rlzoo(*args, **extra) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "rlzoo", "train", *map(str, args)], cwd=ROOT, env=env(**extra),
                          capture_output=True, text=True, timeout=300)


def start(*args, **extra) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rlzoo", "train", *map(str, args)], cwd=ROOT, env=env(**extra),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert proc.poll() is None, f"the run ended before {what}: {proc.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def step_rows(out: Path) -> list[dict]:
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines()] if path.is_file() else []
    return [r for r in rows if "time/step" in r]


def one_error_line(proc, *, trained: bool = False) -> str:
    """The one ``rlzoo: error:`` line of a run that exited 2 without a traceback. A run refused
    before any work writes nothing else; one that ``trained`` may have logged warnings before it
    (accelerate's, at each checkpoint), but the error is its last line and its only error line."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    errors = [line for line in lines if line.startswith("rlzoo: error: ")]
    assert errors == lines[-1:] and (trained or len(lines) == 1), proc.stderr[-3000:]
    return lines[-1]


def weights(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


def assert_every_tensor_finite(out: Path) -> None:
    from safetensors.torch import load_file

    files = sorted(out.rglob("*.safetensors"))
    assert files
    for file in files:
        bad = [k for k, v in load_file(file).items() if v.is_floating_point() and not torch.isfinite(v).all()]
        assert not bad, f"{file}: non-finite {bad}"


# -- non-finite numbers ------------------------------------------------------------------------


def test_nan_coefficients_are_skipped_then_stop_the_run_and_no_checkpoint_holds_a_nan(tmp_path):
    # steps 1-2 train; from step 3 every coefficient is NaN, so its gradient is, and the step is
    # skipped; max_nonfinite_steps (3) skipped steps in a row stop the run at step 5
    stage = {**SFT, "algorithm": "nan_sft", "steps": 10, "save_total_limit": 0}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"sft": stage}), f"output_dir={out}", "algorithms.nan_sft.nan_from=3")
    line = one_error_line(proc, trained=True)
    assert "stage sft stopped at step 5: 3 steps in a row had a non-finite gradient" in line, line
    assert f"the last good checkpoint is {out / 'sft' / 'checkpoint-4'}" in line, line
    skipped = {r["step"]: r["train/skipped_nonfinite"] for r in step_rows(out)}
    assert skipped == {1: 0.0, 2: 0.0, 3: 1.0, 4: 1.0, 5: 1.0}
    assert not (out / "sft" / "final").exists()
    assert_every_tensor_finite(out)
    # a skipped step changes no weight: checkpoint 4 (after the NaN steps 3 and 4) holds step 2's
    a, b = (weights(out / "sft" / f"checkpoint-{s}") for s in (2, 4))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_a_reward_that_returns_nan_stops_the_run_with_one_line_naming_it(tmp_path):
    stage = {**GRPO, "steps": 1, "reward": {"name": "test_nan_reward"}}
    proc = rlzoo(config(tmp_path, {"grpo": stage}), f"output_dir={tmp_path / 'run'}")
    line = one_error_line(proc, trained=True)
    assert "reward 'test_nan_reward' returned nan for completion 0" in line, line


def test_a_run_that_fails_before_its_first_stage_leaves_no_run_behind(tmp_path):
    """wandb that cannot reach its server (a key, no network) stops the run with one line after
    the folder was prepared; the folder is left as the run found it, so the same command simply
    runs again once the cause is gone: no --overwrite, no half-started run to resume."""
    pytest.importorskip("wandb")
    cfg, out = config(tmp_path, {"sft": {**SFT, "steps": 1, "save_every": 0, "data": {"prompts_per_step": 4}}}), tmp_path / "run"
    offline = {"WANDB_API_KEY": "0" * 40, "WANDB_BASE_URL": "http://127.0.0.1:9", "WANDB_INIT_TIMEOUT": "2",
               "HOME": str(tmp_path), "WANDB_MODE": "online"}
    proc = rlzoo(cfg, f"output_dir={out}", "logging.wandb=true", **offline)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert proc.stderr.strip().splitlines()[-1].startswith("rlzoo: error: logging.wandb: wandb did not start")
    assert sorted(p.name for p in out.iterdir()) == ["run.lock"]
    again = rlzoo(cfg, f"output_dir={out}")
    assert again.returncode == 0, again.stderr[-3000:]
    assert (out / "sft" / "final").is_dir()


def test_a_reward_that_returns_none_skips_those_completions_and_the_run_finishes(tmp_path):
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"grpo": {**GRPO, "reward": {"name": "test_some_none_reward"}}}), f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    fractions = [r["reward/skipped_frac"] for r in step_rows(out)]
    assert len(fractions) == 2 and max(fractions) > 0 and min(fractions) < 1, fractions
    assert (out / "grpo" / "final" / "model.safetensors").is_file()


# -- one run per folder; a rerun with a typo ---------------------------------------------------


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """A run held in its first step while a second run tries the same folder; then let go."""
    tmp = tmp_path_factory.mktemp("two_runs")
    cfg, out, gate = config(tmp, {"sft": {**SFT, "steps": 2}}), tmp / "run", tmp / "go"
    first = start(cfg, f"output_dir={out}", RLZOO_TEST_GATE_AT="1", RLZOO_TEST_GATE=str(gate))
    try:
        wait_for(lambda: gate.with_name(gate.name + ".waiting").exists(), first, "the first run's first step")
        t0 = time.monotonic()
        second = rlzoo(cfg, f"output_dir={out}")
        second_seconds = time.monotonic() - t0
        held = first.poll() is None  # the first run was still in its first step when the second one answered
    finally:
        gate.touch()
        first_err = first.communicate(timeout=300)[1]
    return cfg, out, first.returncode, first_err, second, second_seconds, held


def test_a_second_run_into_a_folder_in_use_fails_at_once_and_the_first_finishes(two_runs):
    cfg, out, first_code, first_err, second, second_seconds, held = two_runs
    line = one_error_line(second)
    assert held and f"output_dir {out} is in use by a run that is still going" in line, line
    assert second_seconds < 60
    assert first_code == 0, first_err[-3000:]
    assert [r["step"] for r in step_rows(out)] == [1, 2] and (out / "summary.json").is_file()


@pytest.mark.parametrize("mistake", [["sft.optim.lerning_rate=1e-3"], ["--overwrite", "sft.algorithm=sfd"],
                                     ["--resume", "sft.optim.lr=2e-3"]], ids=["typo", "overwrite-typo", "resume-changed"])
def test_a_rerun_with_a_mistake_into_a_finished_run_changes_no_byte(two_runs, mistake):
    cfg, out, first_code, *_ = two_runs
    assert first_code == 0
    files = ["config.yaml", "metrics.jsonl", "summary.json", "sft/final/model.safetensors"]
    before = {f: (out / f).read_bytes() for f in files}
    one_error_line(rlzoo(cfg, f"output_dir={out}", *mistake))
    assert {f: (out / f).read_bytes() for f in files} == before


# -- SIGTERM and SIGINT ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def signal_runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("signals")
    cfg = config(tmp, {"sft": SFT, "grpo": GRPO})
    whole = tmp / "whole"
    proc = rlzoo(cfg, f"output_dir={whole}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    return tmp, cfg, whole


# the batch the run is held at when the signal comes: 2 = SFT step 2; 4 = GRPO step 1 (SFT has 3)
@pytest.mark.parametrize("signum, batch, stage, step", [(signal.SIGTERM, 2, "sft", 2), (signal.SIGINT, 4, "grpo", 1)],
                         ids=["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_the_step_with_a_checkpoint_and_resume_equals_the_uninterrupted_run(
        signal_runs, signum, batch, stage, step):
    tmp, cfg, whole = signal_runs
    out, gate = tmp / signum.name, tmp / f"go_{signum.name}"
    proc = start(cfg, f"output_dir={out}", RLZOO_TEST_GATE_AT=str(batch), RLZOO_TEST_GATE=str(gate))
    try:
        wait_for(lambda: gate.with_name(gate.name + ".waiting").exists(), proc, f"batch {batch} was asked for")
        assert len(step_rows(out)) == batch - 1
        proc.send_signal(signum)  # the run is held inside the step of that batch: it finishes the step, then stops
        gate.touch()
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    checkpoint = out / stage / f"checkpoint-{step}"
    lines = err.strip().splitlines()
    assert proc.returncode == 130 and "Traceback" not in err, err[-3000:]
    assert lines == [  # the signal is acknowledged at once; the last line names the checkpoint
        f"rlzoo: {signum.name}: finishing the current step, then saving a checkpoint (again to stop at once)",
        f"rlzoo: stopped at stage {stage} step {step}; checkpoint {checkpoint}; continue with the same command and --resume"]
    assert (checkpoint / "trainer_state.json").is_file() and not (out / "grpo" / "final").exists()

    resumed = rlzoo(cfg, f"output_dir={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for name in ("sft", "grpo"):
        a, b = weights(whole / name / "final"), weights(out / name / "final")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name  # bitwise
    drop_time = lambda rows: [{k: v for k, v in r.items() if not k.startswith("time/")} for r in rows]  # noqa: E731
    assert drop_time(step_rows(out)) == drop_time(step_rows(whole))
    assert not list(out.rglob("*.tmp"))


def test_a_reward_model_stage_with_non_finite_gradients_stops_with_one_line(tmp_path):
    """A reward-model stage skips an update whose gradient is not finite and, like a policy stage,
    stops after optim.max_nonfinite_steps of them in a row: here it starts from a reward model
    whose head holds a NaN, so every gradient is NaN."""
    from safetensors.torch import load_file, save_file

    orm = {"kind": "reward_model", "steps": 1, "data": {"samples_per_prompt": 2}, "generation": {"max_new_tokens": 6},
           "reward_model": {"type": "orm", "questions": 4, "eval_questions": 2, "batch_size": 4}}
    first = tmp_path / "first"
    proc = rlzoo(config(tmp_path, {"orm": orm}), f"output_dir={first}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    folder = first / "orm" / "final"
    weights_file = folder / "model.safetensors"
    state = load_file(weights_file)
    state["score.weight"] = torch.full_like(state["score.weight"], float("nan"))
    save_file(state, weights_file, metadata={"format": "pt"})
    broken = {**orm, "steps": 6, "reward_model": {**orm["reward_model"], "init": str(folder)}}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"orm": broken}, name="broken.yaml"), f"output_dir={out}")
    line = one_error_line(proc, trained=True)
    assert "stage orm stopped at step 3: 3 steps in a row had a non-finite gradient" in line, line
    rows = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["train/skipped_nonfinite"] for r in rows if "rm/loss" in r] == [1.0, 1.0, 1.0]
    assert not (out / "orm" / "final").exists()


# -- a full disk, a damaged checkpoint -----------------------------------------------------------


@pytest.mark.parametrize("room, file", [(100, "metrics.jsonl"), (50_000, "sft/checkpoint-4.tmp/model.safetensors")],
                         ids=["metrics line", "checkpoint"])
def test_a_disk_that_fills_up_mid_run_is_one_line_naming_the_file_and_the_newest_checkpoint(tmp_path, room, file):
    """From SFT step 4 on, no file may grow past ``room`` bytes more than metrics.jsonl held then:
    100 bytes cut step 4's metrics line (a line is about 400), 50 kB let it in and cut the weights
    of checkpoint 4 (about 100 kB). Either way the run stops with one line, metrics.jsonl holds
    whole lines only, and --resume (with room again) goes on from checkpoint 3 to the end."""
    out = tmp_path / "run"
    cfg = config(tmp_path, {"sft": {**SFT, "steps": 6, "data": {"source": "fulldisk_dataset", "prompts_per_step": 4}}})
    proc = rlzoo(cfg, f"output_dir={out}", RLZOO_TEST_FULL_AT="4", RLZOO_TEST_FULL_ROOM=str(room),
                 RLZOO_TEST_FULL_FILE=str(out / "metrics.jsonl"))
    line = one_error_line(proc, trained=True)
    assert str(out / file) in line and f"the newest checkpoint is {out / 'sft' / 'checkpoint-3'}" in line, line
    text = (out / "metrics.jsonl").read_text()
    assert text.endswith("\n") and [json.loads(row)["step"] for row in text.splitlines()] == [1, 2, 3, 4][: 3 if room == 100 else 4]
    resumed = rlzoo(cfg, f"output_dir={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert [r["step"] for r in step_rows(out)] == [1, 2, 3, 4, 5, 6]


def test_too_little_free_space_at_start_is_said_in_sizes_that_differ(tmp_path):
    """The run's checkpoints need about 1 041 920 bytes (0.99 MB); 900 000 bytes (0.86 MB) are free.
    In whole megabytes both read "1 MB", and the line would say 1 MB is too little for 1 MB."""
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"sft": {**SFT, "steps": 1}}), f"output_dir={out}", RLZOO_TEST_FREE_BYTES="900000")
    line = one_error_line(proc)
    found = re.search(r": ([\d.]+) MB free on its disk, and this run's checkpoints need about ([\d.]+) MB", line)
    assert found and found.group(1) != found.group(2), line
    assert abs(float(found.group(1)) - 0.86) < 0.1 and abs(float(found.group(2)) - 0.99) < 0.1, line


@pytest.mark.parametrize("file", ["optimizer.bin", "model.safetensors"])
def test_resume_names_a_damaged_newest_checkpoint_and_goes_on_from_the_one_before(tmp_path, file):
    out = tmp_path / "run"
    cfg = config(tmp_path, {"sft": {**SFT, "data": {"source": "killing_dataset", "prompts_per_step": 4}}})
    killed = rlzoo(cfg, f"output_dir={out}", RLZOO_TEST_KILL_AT="3")  # inside step 3: checkpoints 1 and 2 written
    assert killed.returncode == -9, killed.stderr[-3000:]
    damaged = out / "sft" / "checkpoint-2" / file
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])  # a copy that stopped half-way
    resumed = rlzoo(cfg, f"output_dir={out}", "--resume")
    assert resumed.returncode == 0 and "Traceback" not in resumed.stderr, resumed.stderr[-3000:]
    notes = [line for line in resumed.stderr.splitlines() if str(damaged) in line]
    assert len(notes) == 1 and notes[0].startswith(f"rlzoo: {damaged} is ") \
        and notes[0].endswith(f": removed checkpoint-2; stage sft resumes from {out / 'sft' / 'checkpoint-1'}"), notes
    assert [r["step"] for r in step_rows(out)] == [1, 2, 3] and (out / "sft" / "final" / "model.safetensors").is_file()


# -- what --overwrite and --resume may change ----------------------------------------------------


def test_overwrite_removes_what_rlzoo_wrote_and_nothing_else(tmp_path):
    out = tmp_path / "run"
    assert rlzoo(config(tmp_path, {"sft": {**SFT, "steps": 2}}), f"output_dir={out}").returncode == 0
    (out / "notes.txt").write_text("the user's notes\n")
    (out / "sft" / "plot.py").write_text("# the user's script\n")
    proc = rlzoo(config(tmp_path, {"sft": {**SFT, "steps": 1}}, name="shorter.yaml"), f"output_dir={out}", "--overwrite")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "notes.txt").read_text() == "the user's notes\n" and (out / "sft" / "plot.py").is_file()
    assert not (out / "sft" / "checkpoint-2").exists() and [r["step"] for r in step_rows(out)] == [1]


def test_a_late_mistake_is_fixed_in_the_config_and_resume_trains_only_what_had_not_started(tmp_path):
    """Some mistakes show only once an earlier stage has trained: here GRPO's reward returns NaN on
    real samples after SFT finished. With the reward fixed, --resume keeps SFT as it is and trains
    GRPO; a change to SFT, which has trained, is refused with a line naming the key."""
    out = tmp_path / "run"
    sft = {**SFT, "steps": 2}
    broken = config(tmp_path, {"sft": sft, "grpo": {**GRPO, "steps": 1, "reward": {"name": "test_nan_reward"}}}, name="broken.yaml")
    assert "reward 'test_nan_reward' returned nan" in one_error_line(rlzoo(broken, f"output_dir={out}"), trained=True)
    assert (out / "sft" / "final").is_dir() and not (out / "grpo").exists()
    sft_files = {p: p.stat().st_mtime_ns for p in (out / "sft").rglob("*")}
    fixed = config(tmp_path, {"sft": sft, "grpo": {**GRPO, "steps": 1}}, name="fixed.yaml")
    refused = one_error_line(rlzoo(fixed, f"output_dir={out}", "--resume", "sft.optim.lr=2e-3"))
    assert f"cannot resume {out} with a different config: 'stages.sft.optim.lr' differs from the run's" in refused, refused
    resumed = rlzoo(fixed, f"output_dir={out}", "--resume")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "rlzoo: resuming with a changed config (first: 'stages.grpo.reward.name')" in resumed.stderr
    assert {p: p.stat().st_mtime_ns for p in (out / "sft").rglob("*")} == sft_files  # SFT not trained again
    assert [(r["stage"], r["step"]) for r in step_rows(out)] == [("sft", 1), ("sft", 2), ("grpo", 1)]
    assert [s["name"] for s in json.loads((out / "summary.json").read_text())["stages"]] == ["sft", "grpo"]
    assert "test_length_parity" in (out / "config.yaml").read_text()  # the next --resume compares with the fixed config


def test_trl_rewards_that_return_arrays_tensors_or_numpy_numbers_train(tmp_path):
    """TRL takes any sequence of numbers from a reward function; rlzoo does too (a numpy array, a
    torch tensor, a list of numpy scalars), so TRL rewards plug in unchanged."""
    names = ("array_reward", "tensor_reward", "numpy_numbers_reward")
    stage = {**GRPO, "steps": 1, "reward": {"functions": [{"name": f"tests/plugins/numpy_rewards.py:{n}"} for n in names]}}
    out = tmp_path / "run"
    proc = rlzoo(config(tmp_path, {"grpo": stage}), f"output_dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert step_rows(out)[0]["reward/mean"] >= 0.5  # numpy_numbers_reward alone gives 0.5 to every completion
