"""``rlzoo compare CONFIG``: the methods side by side, on equal terms, over several seeds.

1. The config's ``compare.sft_stage`` is trained once; its final checkpoint is the common start.
2. Every entry of ``compare.entries`` runs the ``compare.rl_stage`` stage from that checkpoint with
   its algorithm swapped in (plus the entry's overrides), once per seed in ``compare.seeds``: the
   same questions budget (steps x prompts per step), the same evaluation, the same hardware.
   Each run is its own process, so its peak memory is its own.
3. A Markdown report (``compare.report``) with the command that made it, a table of held-out
   greedy accuracy, Pass@k, Maj@k, wall time and peak memory (mean and std over seeds), plots of
   held-out accuracy and rollout reward against step (PNG beside the report), and the paper's
   observations checked against the numbers.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlzoo.config import to_yaml
from rlzoo.errors import ConfigError, UserError
from rlzoo.runtime.checkpoint import atomic_write_text


def _stage_config(cfg: DictConfig, stage: str, overrides: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with only ``stage``, and ``overrides`` (dotted keys) applied."""
    one = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    one.stages = {stage: one.stages[stage]}
    for key, value in overrides.items():
        OmegaConf.update(one, key, value, force_add=False)
    return one


def _validate(config: DictConfig, what: str) -> None:
    """What ``rlzoo train`` will check of ``config`` (:func:`rlzoo.run.validate.validate`), before the
    comparison trains anything; a user error names ``what`` (the SFT stage, or an entry)."""
    from rlzoo.config import RunConfig, merge_section
    from rlzoo.run.validate import validate

    try:
        validate(merge_section(RunConfig, [config], ""))
    except UserError as e:
        raise type(e)(f"{what}: {e}") from None


def _run(config: DictConfig, run_dir: Path, log: Path) -> dict[str, Any]:
    """Train ``config`` (whose ``output_dir`` is ``run_dir``) in a fresh process; its summary (or the error).

    A run whose folder already holds the same config and a summary is reused, not trained again;
    one that holds the same config but stopped early is continued (``--resume``); any other is
    trained anew (``--overwrite``). So an interrupted comparison goes on where it stopped. "The
    same" is judged after merging the stored config over the current schema, so keys added to
    rlzoo since (with their defaults) do not force a re-run. The config file given to
    ``rlzoo train`` is written beside the log.
    """
    stored = run_dir / "config.yaml"
    summary = run_dir / "summary.json"
    same = stored.is_file() and _same_config(stored, config)
    if same and summary.is_file() and len(json.loads(summary.read_text())["stages"]) == len(config.stages):
        return json.loads(summary.read_text())["stages"][-1]
    path = log.with_suffix(".yaml")
    atomic_write_text(path, to_yaml(config))
    flags = ["--resume"] if same else ["--overwrite"] if stored.is_file() else []
    for attempt in (flags, ["--overwrite"]):
        with log.open("w") as f:
            proc = subprocess.run([sys.executable, "-m", "rlzoo.cli", "train", str(path), *attempt], stdout=f,
                                  stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
        if not (proc.returncode != 0 and attempt == ["--resume"] and "nothing to resume" in log.read_text()):
            break  # a resume with no checkpoint to resume from is started over
    if proc.returncode != 0 or not summary.is_file():
        tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
        return {"error": f"exit {proc.returncode}: {tail[0]}"}
    return json.loads(summary.read_text())["stages"][-1]


def _same_config(path: Path, config: DictConfig) -> bool:
    from rlzoo.config import RunConfig

    try:
        stored = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
    except Exception:  # a config from an incompatible version: train again
        return False
    return OmegaConf.to_container(stored, resolve=True) == OmegaConf.to_container(config, resolve=True)


def _curves(metrics_file: Path) -> dict[str, list[tuple[int, float]]]:
    curves: dict[str, list[tuple[int, float]]] = {"reward": [], "accuracy": []}
    if not metrics_file.is_file():
        return curves
    for line in metrics_file.read_text().splitlines():
        row = json.loads(line)
        if row.get("reward/mean") is not None:
            curves["reward"].append((row["step"], row["reward/mean"]))
        if row.get("eval/accuracy") is not None:
            curves["accuracy"].append((row["step"], row["eval/accuracy"]))
    return curves


def compare(cfg: DictConfig, command: str) -> Path:
    """Run the comparison of ``cfg``; returns the report's path."""
    c = cfg.compare
    if c.sft_stage not in cfg.stages or c.rl_stage not in cfg.stages:
        raise ConfigError(f"compare needs stages '{c.sft_stage}' and '{c.rl_stage}' in 'stages'")
    if not c.entries:
        raise ConfigError("compare.entries is empty: list the algorithms to compare")
    if not c.seeds:
        raise ConfigError("compare.seeds is empty: list the seeds each entry runs with")
    out = Path(cfg.output_dir or f"runs/{cfg.name}")
    sft_dir = out / "sft"
    checkpoint = sft_dir / c.sft_stage / "final"
    sft_config = _stage_config(cfg, c.sft_stage, {"output_dir": str(sft_dir)})
    _validate(sft_config, f"the SFT stage '{c.sft_stage}'")
    runs: list[tuple[str, int, DictConfig, Path]] = []  # (label, seed, config, run folder), all checked before any trains
    for index, entry in enumerate(c.entries):
        label = entry.label or entry.algorithm
        for seed in c.seeds:
            run_dir = out / label / f"seed{seed}"
            overrides = {"output_dir": str(run_dir), "seed": seed, f"stages.{c.rl_stage}.algorithm": entry.algorithm,
                         f"stages.{c.rl_stage}.init": str(checkpoint)}
            for item in entry.overrides:
                key, _, value = item.partition("=")
                # typed as the CLI types it (2 -> int), so a finished run's stored config compares equal
                overrides[f"stages.{c.rl_stage}.{key}"] = OmegaConf.from_dotlist([f"v={value}"]).v if value else value
            runs.append((label, seed, _stage_config(cfg, c.rl_stage, overrides), run_dir))
        # the entry's init, the shared SFT checkpoint, is written below: validated without it
        _validate(_stage_config(runs[-1][2], c.rl_stage, {f"stages.{c.rl_stage}.init": None}), f"compare.entries[{index}] ({label})")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    print(f"[compare] SFT stage '{c.sft_stage}' -> {sft_dir}", flush=True)
    sft = _run(sft_config, sft_dir, out / "sft.log")
    if "error" in sft:
        raise RuntimeError(f"the shared SFT stage failed: {sft['error']} (log: {out / 'sft.log'})")

    results: dict[str, list[dict[str, Any]]] = {}
    curves: dict[str, list[dict]] = {}
    for label, seed, config, run_dir in runs:
        print(f"[compare] {label} seed {seed}", flush=True)
        result = _run(config, run_dir, out / f"{label}_seed{seed}.log")
        results.setdefault(label, []).append(result)
        curves.setdefault(label, []).append(_curves(run_dir / "metrics.jsonl"))
    report = Path(c.report)
    write_report(report, cfg, command, sft, results, curves, time.perf_counter() - t0)
    return report


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _metric(runs: list[dict], key: str) -> list[float]:
    return [r["eval"][key] for r in runs if "eval" in r and key in r["eval"]]


def write_report(report: Path, cfg: DictConfig, command: str, sft: dict, results: dict, curves: dict, seconds: float) -> None:
    """The Markdown report and its two plots."""
    report.parent.mkdir(parents=True, exist_ok=True)
    from rlzoo.run.evaluation import shown_metrics

    keys = [k for k in shown_metrics([sft["eval"]] + [r["eval"] for runs in results.values() for r in runs if "eval" in r]) if k in sft["eval"]]
    rl = cfg.stages[cfg.compare.rl_stage]
    lines = [
        "# Comparison of the methods on equal terms",
        "",
        "Generated by `rlzoo compare`; do not edit by hand. Command:",
        "",
        f"    {command}",
        "",
        f"Every method starts from the same SFT checkpoint (stage `{cfg.compare.sft_stage}`, "
        f"{sft['steps']} steps) and runs stage `{cfg.compare.rl_stage}` for {rl.steps} steps of "
        f"{rl.data.prompts_per_step} questions, seeds {list(cfg.compare.seeds)}. Held-out set: "
        f"{sft['eval'].get('num_examples')} problems of task `{cfg.task.name}`; Pass@k and Maj@k from "
        f"{cfg.eval.samples} samples per problem at temperature {cfg.eval.temperature}. Metrics in %, "
        f"mean ± std over seeds; time in seconds and peak memory in MB (peak RSS on CPU, CUDA max "
        f"allocated on GPU) of the RL stage alone. Training time of all runs together: "
        f"{(sft['wall_seconds'] + sum(r.get('wall_seconds', 0) for runs in results.values() for r in runs)) / 60:.0f} min.",
        "",
        "| method | " + " | ".join(keys) + " | wall s | peak MB |",
        "|---|" + "---:|" * (len(keys) + 2),
        f"| SFT (start) | " + " | ".join(f"{100 * sft['eval'][k]:.1f}" for k in keys)
        + f" | {sft['wall_seconds']:.0f} | {sft.get('peak_memory_mb', float('nan')):.0f} |",
    ]
    for label, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        cells = [_mean_std(_metric(ok, k), 100) for k in keys]
        wall = _mean_std([r["wall_seconds"] for r in ok], digits=0)
        mem = _mean_std([r.get("peak_memory_mb", float("nan")) for r in ok], digits=0)
        failed = len(runs) - len(ok)
        lines.append(f"| {label}{f' ({failed} failed)' if failed else ''} | " + " | ".join(cells) + f" | {wall} | {mem} |")
    errors = [(label, r["error"]) for label, runs in results.items() for r in runs if "error" in r]
    if errors:
        lines += ["", "Failed runs:", ""] + [f"- {label}: {err}" for label, err in errors]
    lines += ["", *observations(sft, results), ""]
    plots = plot_curves(report, curves, start_accuracy=sft["eval"]["accuracy"])
    lines += [f"![{name}]({path.name})" for name, path in plots]
    atomic_write_text(report, "\n".join(lines) + "\n")


def _avg(results: dict, label: str, key: str) -> float | None:
    values = _metric([r for r in results.get(label, []) if "error" not in r], key)
    return statistics.fmean(values) if values else None


def observations(sft: dict, results: dict) -> list[str]:
    """The paper's claims (DeepSeekMath Sec. 5.2) next to what these numbers say.

    "RL improves Maj@K but not Pass@K" counts as agreeing only when Maj@K rises over the SFT start
    and by more than Pass@K does.
    """
    out = ["## The paper's observations, checked", ""]

    def diff(a: str, b: str, key: str = "accuracy") -> float | None:
        x, y = _avg(results, a, key), _avg(results, b, key)
        return None if x is None or y is None else 100 * (x - y)

    checks = [
        ("online_rft", "rft", "Online RFT beats RFT (sampling from the current policy helps, more so later in training)"),
        ("grpo", "online_rft", "GRPO beats Online RFT (graded coefficients, penalising wrong outputs, help)"),
    ]
    for a, b, claim in checks:
        d = diff(a, b)
        if d is None:
            continue
        verdict = "agrees" if d > 0 else "does not agree"
        out.append(f"- *{claim}*: greedy accuracy {a} − {b} = {d:+.1f} points; this run {verdict}.")
    pass_keys = sorted(k for k in sft["eval"] if k.startswith("pass@"))
    maj_keys = sorted(k for k in sft["eval"] if k.startswith("maj@"))
    if pass_keys and maj_keys:
        pk, mk = pass_keys[-1], maj_keys[-1]
        for label in results:
            p, m = _avg(results, label, pk), _avg(results, label, mk)
            if p is None or m is None:
                continue
            dp, dm = 100 * (p - sft["eval"][pk]), 100 * (m - sft["eval"][mk])
            verdict = "agrees" if dm > 0 and dm > dp else "does not agree"
            out.append(f"- *RL improves Maj@K but not Pass@K* ({label}): {mk} {dm:+.1f}, {pk} {dp:+.1f} points "
                       f"over SFT; this run {verdict}.")
    return out


def plot_curves(report: Path, curves: dict, start_accuracy: float | None = None) -> list[tuple[str, Path]]:
    """Held-out accuracy and rollout reward against step, mean over seeds; PNGs beside the report.

    Accuracy curves start at step 0 from the shared SFT checkpoint's accuracy."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for key, title in (("accuracy", "held-out greedy accuracy"), ("reward", "rollout reward (mean)")):
        fig, ax = plt.subplots(figsize=(6, 4))
        drawn = False
        for label, runs in curves.items():
            by_step: dict[int, list[float]] = {}
            for run in runs:
                for step, value in run[key]:
                    by_step.setdefault(step, []).append(value)
            if not by_step:
                continue
            if key == "accuracy" and start_accuracy is not None:
                by_step[0] = [start_accuracy]
            steps = sorted(by_step)
            values = [statistics.fmean(by_step[s]) for s in steps]
            if key == "reward" and len(values) > 10:
                window = max(1, len(values) // 20)
                values = [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]
            ax.plot(steps, values, label=label, marker="o" if key == "accuracy" else None)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("RL step")
        ax.set_ylabel(title)
        ax.legend()
        ax.grid(alpha=0.3)
        path = report.with_name(f"{report.stem}_{key}.png")
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        made.append((title, path))
    return made
