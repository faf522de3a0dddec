"""``rlzoo compare CONFIG``: the methods side by side, on equal terms, over several seeds.

1. The config's ``compare.sft_stage`` is trained once; its final checkpoint is the common start.
2. Every entry of ``compare.entries`` runs the ``compare.rl_stage`` stage from that checkpoint with
   its algorithm swapped in (plus the entry's overrides), once per seed in ``compare.seeds``: the
   same questions budget (steps x prompts per step), the same evaluation, the same hardware.
   An entry may first run other stages of the config in its own run (``before``: a reward model
   trained from the SFT checkpoint, which its reward names), or repeat the RL stage with its
   reward model (``iterative``). Each run is its own process, so its peak memory is its own;
   ``compare.parallel`` of them run at once.
3. Optionally (``compare.passk``), the SFT checkpoint and some entries' final checkpoints are
   sampled many times per held-out problem for Pass@K and Maj@K against K (Figure 7).
4. A Markdown report (``compare.report``) with the command that made it, tables of held-out
   greedy accuracy, Pass@k, Maj@k, the extra held-out sets (``eval.sets``) and each entry's budget
   (questions, samples, tokens, optimizer steps, wall time, peak memory), mean and std over seeds;
   plots beside it (learning curves with their spread over seeds, rollout reward, a learned
   reward's score beside the true accuracy, Pass@K and Maj@K against K); and the paper's claims
   checked against the numbers by a stated rule (:func:`claims`).
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from omegaconf import DictConfig, OmegaConf

from rlzoo.config import to_yaml
from rlzoo.errors import ConfigError, UserError
from rlzoo.runtime.checkpoint import atomic_write_text


def _stage_config(cfg: DictConfig, stage: str | list[str], overrides: dict[str, Any]) -> DictConfig:
    """A copy of ``cfg`` with only ``stage`` (or these stages, in this order), and ``overrides`` (dotted keys) applied.
    The ``compare`` section is left out: it does not change what a run trains, so adding an entry
    (or changing the report) must not make the finished runs look different."""
    one = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    one.pop("compare", None)
    one.stages = {name: one.stages[name] for name in ([stage] if isinstance(stage, str) else stage)}
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


def _run(config: DictConfig, run_dir: Path, log: Path) -> list[dict[str, Any]]:
    """Train ``config`` (whose ``output_dir`` is ``run_dir``) in a fresh process; its summary's
    stages (or ``[{"error": ...}]``).

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
    if same and (done := _finished_stages(config, run_dir)) is not None:
        return done
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
        return [{"error": f"exit {proc.returncode}: {tail[0]}"}]
    return json.loads(summary.read_text())["stages"]


def _finished_stages(config: DictConfig, run_dir: Path) -> list[dict[str, Any]] | None:
    """The summary's stages when ``run_dir`` holds a finished run (every stage summarised); else None.
    The caller has checked that the stored config is ``config``'s (:func:`_same_config`)."""
    from rlzoo.config import expand_iterative

    summary = run_dir / "summary.json"
    if not summary.is_file():
        return None
    stages = json.loads(summary.read_text())["stages"]
    return stages if len(stages) == len(expand_iterative(config).stages) else None


NOT_RUN = "not run (rlzoo compare --report-only: no finished run of this config)"  # a run's error, not a failure


def _finished(config: DictConfig, run_dir: Path, log: Path) -> list[dict[str, Any]]:
    """The summary's stages of a run of ``config`` that has finished, trained nothing; else ``[{"error": NOT_RUN}]``."""
    stored = run_dir / "config.yaml"
    if stored.is_file() and _same_config(stored, config) and (done := _finished_stages(config, run_dir)) is not None:
        return done
    return [{"error": NOT_RUN}]


def _same_config(path: Path, config: DictConfig) -> bool:
    from rlzoo.config import RunConfig

    try:
        stored = _without_removed_keys(OmegaConf.load(path), RunConfig)
    except Exception:  # a config from an incompatible version: train again
        return False
    mine = OmegaConf.merge(OmegaConf.structured(RunConfig), config)
    trained = [{k: v for k, v in OmegaConf.to_container(c, resolve=True).items() if k != "compare"} for c in (stored, mine)]
    for c in trained:  # an extra held-out set is evaluated on the finished run (_late_sets), not trained again
        c["eval"].pop("sets", None)
    return trained[0] == trained[1]


def _late_sets(config: DictConfig, run_dir: Path, stage: str, result: dict) -> dict:
    """``result`` (the summary of a finished run's ``stage``) with its ``eval`` completed for the sets
    of ``config.eval.sets`` it was not evaluated on when it trained (a set added to the comparison
    later, or changed since): the stage's final checkpoint evaluated on them now, as the run would
    have, cached in ``run_dir/late_sets.json``. So an out-of-domain set added to a finished
    comparison costs an evaluation per run, not a retraining."""
    stored_file = run_dir / "config.yaml"
    if "error" in result or not config.eval.sets or not stored_file.is_file():
        return result
    current = OmegaConf.to_container(config.eval.sets, resolve=True)
    stored = OmegaConf.to_container(OmegaConf.load(stored_file), resolve=True).get("eval", {}).get("sets") or {}
    late = [name for name in current if stored.get(name) != current[name]]
    if not late:
        return result
    cache_file = run_dir / "late_sets.json"
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    todo = [name for name in late if cache.get(name, {}).get("set") != current[name]]
    if todo:
        from rlzoo.run.evaluation import run_eval
        from rlzoo.run.factories import eval_sets, make_eval_reward
        from rlzoo.runtime.models import load_stage_result
        from rlzoo.runtime.stage import make_accelerator

        print(f"[compare] {run_dir}: evaluating {stage} on the later sets {', '.join(todo)}", flush=True)
        only = OmegaConf.create(OmegaConf.to_container(config, resolve=True))
        only.eval.sets = {name: current[name] for name in todo}
        examples = eval_sets(only)
        model, tokenizer = load_stage_result(run_dir / stage / "final")
        model.eval()
        with make_accelerator(config.mixed_precision).autocast():
            for name in todo:
                cache[name] = {"set": current[name], "eval": run_eval(config, model, tokenizer, examples[name], make_eval_reward(config))}
        atomic_write_text(cache_file, json.dumps(cache, indent=1))
    evals = {k: v for k, v in result["eval"].items() if k.split("/")[0] not in late}
    for name in late:
        evals.update({f"{name}/{k}": v for k, v in cache[name]["eval"].items()})
    return {**result, "eval": evals}


def _without_removed_keys(stored: DictConfig, schema: type) -> DictConfig:
    """``stored`` merged over ``schema``, leaving out the keys rlzoo no longer has (a key that no
    longer exists changes nothing a run does now, e.g. ``data.max_rounds``, now
    ``data.source_args.max_rounds``); any other mismatch raises."""
    from omegaconf.errors import ConfigKeyError

    for _ in range(100):
        try:
            return OmegaConf.merge(OmegaConf.structured(schema), stored)
        except ConfigKeyError as e:
            parent, _, key = (e.full_key or "").rpartition(".")
            node = OmegaConf.select(stored, parent) if parent else stored
            if not key or node is None or key not in node:
                raise
            node.pop(key)
    raise ValueError("too many removed keys")


def _rl_parts(stages: list[str], rl_stage: str) -> list[str]:
    """The RL stage of an entry's run and its iterations (``<rl>_it2``, ...), in run order."""
    return [n for n in stages if n == rl_stage or (n.startswith(f"{rl_stage}_it") and n[len(rl_stage) + 3:].isdigit())]


def _rows(metrics_file: Path) -> list[dict]:
    return [json.loads(line) for line in metrics_file.read_text().splitlines()] if metrics_file.is_file() else []


def _curves(rows: list[dict], parts: list[str], steps: dict[str, int]) -> dict[str, list[tuple[int, float]]]:
    """The RL stage's curves against its step, the iterations of iterative RL one after another:
    held-out ``accuracy`` (and ``<set>/accuracy``), rollout ``reward``, and ``diag/<name>`` for each
    diagnostic reward. ``steps``: each RL stage's step count."""
    offsets = {name: sum(steps[p] for p in parts[:i]) for i, name in enumerate(parts)}
    curves: dict[str, list[tuple[int, float]]] = {"reward": [], "accuracy": []}
    for row in rows:
        if row.get("stage") not in offsets:
            continue
        x = offsets[row["stage"]] + row["step"]
        for key, value in row.items():
            if value is None:
                continue
            if key == "reward/mean":
                curves["reward"].append((x, value))
            elif key.startswith("eval/") and key.endswith("accuracy"):
                curves.setdefault(key[len("eval/"):], []).append((x, value))
            elif key.startswith("diag/") and key.endswith("/mean"):
                curves.setdefault(key[: -len("/mean")], []).append((x, value))
    return curves


def budget(rows: list[dict], stages: list[dict], parts: list[str]) -> dict[str, float]:
    """What an entry's RL stage spent (its iterations included): questions drawn, samples and
    completion tokens generated, optimizer updates (sums of its per-step counters), wall seconds,
    peak memory (MB), and the seconds of the run's other stages (reward models)."""
    rl = [r for r in rows if r.get("stage") in parts]
    total = lambda key: float(sum(r.get(key) or 0.0 for r in rl))
    mine = [s for s in stages if s.get("name") in parts]
    return {"questions": total("data/questions"), "samples": total("data/samples"), "tokens": total("data/sample_tokens"),
            "optimizer_steps": total("train/optimizer_steps"), "wall_seconds": sum(s.get("wall_seconds", 0.0) for s in mine),
            "peak_memory_mb": max((s.get("peak_memory_mb", 0.0) for s in mine), default=float("nan")),
            "other_seconds": sum(s.get("wall_seconds", 0.0) for s in stages if s.get("name") not in parts)}


def entry_config(cfg: DictConfig, entry: DictConfig, seed: int, run_dir: Path, checkpoint: str | None) -> DictConfig:
    """The config of one entry's run at ``seed``: its ``before`` stages, then the RL stage with the
    entry's algorithm and overrides, starting from ``checkpoint`` (the shared SFT model; None while
    validating, before it exists). A ``before`` reward-model stage samples from that checkpoint
    (unless it names its own policy); a ``before`` policy stage starts from it (unless it has an init)."""
    c = cfg.compare
    label = entry.label or entry.algorithm
    for name in entry.before:
        if name not in cfg.stages or name in (c.sft_stage, c.rl_stage):
            raise ConfigError(f"compare entry {label}: before: '{name}' is not a stage of the config other than "
                              f"'{c.sft_stage}' and '{c.rl_stage}'")
    overrides: dict[str, Any] = {"output_dir": str(run_dir), "seed": seed, f"stages.{c.rl_stage}.algorithm": entry.algorithm,
                                 f"stages.{c.rl_stage}.init": checkpoint}
    for name in entry.before:
        stage = cfg.stages[name]
        if stage.kind == "reward_model" and stage.reward_model.policy is None:
            overrides[f"stages.{name}.reward_model.policy"] = checkpoint
        elif stage.kind == "policy" and stage.init is None:
            overrides[f"stages.{name}.init"] = checkpoint
    for item in entry.overrides:
        key, _, value = item.partition("=")
        # typed as the CLI types it (2 -> int), so a finished run's stored config compares equal
        overrides[f"stages.{c.rl_stage}.{key}"] = OmegaConf.from_dotlist([f"v={value}"]).v if value else value
    if entry.iterative:
        overrides["iterative"] = {"rl_stage": c.rl_stage, **OmegaConf.to_container(entry.iterative, resolve=True)}
    return _stage_config(cfg, [*entry.before, c.rl_stage], overrides)


def plan(cfg: DictConfig) -> tuple[DictConfig, list[tuple[str, int, DictConfig, Path]]]:
    """The comparison's runs, every one checked as ``rlzoo train`` checks it before anything trains:
    the SFT run's config, and ``(label, seed, config, run folder)`` of each entry's runs."""
    c = cfg.compare
    if c.sft_stage not in cfg.stages or c.rl_stage not in cfg.stages:
        raise ConfigError(f"compare needs stages '{c.sft_stage}' and '{c.rl_stage}' in 'stages'")
    if not c.entries:
        raise ConfigError("compare.entries is empty: list the algorithms to compare")
    if not c.seeds:
        raise ConfigError("compare.seeds is empty: list the seeds each entry runs with")
    from rlzoo.config import check_values

    check_values(cfg)  # compare's own section too (parallel, passk)
    labels = [e.label or e.algorithm for e in c.entries]
    if len(set(labels)) < len(labels):
        raise ConfigError(f"compare.entries: two entries are labelled '{next(x for x in labels if labels.count(x) > 1)}': give each a label")
    if unknown := [x for x in c.passk.entries if x not in labels]:
        raise ConfigError(f"compare.passk.entries: '{unknown[0]}' is not an entry's label; known: {', '.join(labels)}")
    out = Path(cfg.output_dir or f"runs/{cfg.name}")
    checkpoint = out / "sft" / c.sft_stage / "final"
    sft_config = _stage_config(cfg, c.sft_stage, {"output_dir": str(out / "sft")})
    _validate(sft_config, f"the SFT stage '{c.sft_stage}'")
    runs: list[tuple[str, int, DictConfig, Path]] = []
    for index, (entry, label) in enumerate(zip(c.entries, labels)):
        # the entry's start, the shared SFT checkpoint, is written by the comparison: validated without it
        first = (entry.seeds or c.seeds)[0]
        _validate(entry_config(cfg, entry, first, out / label / f"seed{first}", None), f"compare.entries[{index}] ({label})")
        for seed in entry.seeds or c.seeds:
            run_dir = out / label / f"seed{seed}"
            runs.append((label, seed, entry_config(cfg, entry, seed, run_dir, str(checkpoint)), run_dir))
    return sft_config, runs


def compare(cfg: DictConfig, command: str, report_only: bool = False) -> Path:
    """Run the comparison of ``cfg``; returns the report's path. With ``report_only`` nothing is
    trained: the report is written from the runs that have finished, the others listed as not run
    (a comparison stopped for lack of time still reports what it has)."""
    c = cfg.compare
    obtain = _finished if report_only else _run
    sft_config, runs = plan(cfg)
    out = Path(cfg.output_dir or f"runs/{cfg.name}")
    sft_dir = out / "sft"
    checkpoint = sft_dir / c.sft_stage / "final"
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    print(f"[compare] SFT stage '{c.sft_stage}' -> {sft_dir}", flush=True)
    sft = obtain(sft_config, sft_dir, out / "sft.log")[-1]
    if "error" in sft and report_only:
        raise UserError(f"rlzoo compare --report-only: the shared SFT run in {sft_dir} has not finished, so there is nothing to report")
    if "error" in sft:
        raise RuntimeError(f"the shared SFT stage failed: {sft['error']} (log: {out / 'sft.log'})")
    sft = _late_sets(sft_config, sft_dir, c.sft_stage, sft)

    def one(run: tuple[str, int, DictConfig, Path]) -> list[dict]:
        label, seed, config, run_dir = run
        print(f"[compare] {label} seed {seed}", flush=True)
        return obtain(config, run_dir, out / f"{label}_seed{seed}.log")

    with ThreadPoolExecutor(max_workers=c.parallel) as pool:  # each run is its own process; threads only wait
        finished = list(pool.map(one, runs))
    results: dict[str, list[dict[str, Any]]] = {}
    curves: dict[str, list[dict]] = {}
    budgets: dict[str, list[dict]] = {}
    finals: list[tuple[str, Path, dict]] = []
    for (label, seed, config, run_dir), stages in zip(runs, finished):
        ran = list(config_stage_names(config))
        parts = _rl_parts(ran, c.rl_stage)
        by_name = {s.get("name"): s for s in stages}
        final = by_name.get(parts[-1], stages[-1]) if "error" not in stages[-1] else stages[-1]
        final = _late_sets(config, run_dir, parts[-1], final)
        results.setdefault(label, []).append(final)
        finals.append((label, run_dir, final))
        rows = _rows(run_dir / "metrics.jsonl")
        steps = {name: config.stages[c.rl_stage].steps for name in parts}
        if "error" not in final:  # a run that did not finish draws no curve
            curves.setdefault(label, []).append(_curves(rows, parts, steps))
        if "error" not in final:
            budgets.setdefault(label, []).append(budget(rows, stages, parts))
    passk = pass_at_k_curves(cfg, out, checkpoint, finals, cached_only=report_only) if c.passk.samples else {}
    report = Path(c.report)
    write_report(report, cfg, command, sft, results, curves, time.perf_counter() - t0, budgets=budgets, passk=passk)
    return report


def config_stage_names(config: DictConfig) -> list[str]:
    """The stages a run of ``config`` runs, iterative RL written out."""
    from rlzoo.config import expand_iterative

    return list(expand_iterative(config).stages)


def pass_at_k_curves(cfg: DictConfig, out: Path, checkpoint: Path, finals: list[tuple[str, Path, dict]],
                     cached_only: bool = False) -> dict[str, list[dict[str, float]]]:
    """Figure 7: Pass@K and Maj@K (every K of ``compare.passk.ks``) of the SFT checkpoint (``"SFT"``)
    and of the final checkpoint of each run of the entries in ``compare.passk.entries`` (``finals``:
    label, run folder, final RL stage result of every run), one list per label
    (one result per seed). Each checkpoint is evaluated by ``rlzoo eval`` in its own process
    (``compare.parallel`` at once), from one set of ``samples`` samples per problem that every K
    reads; a result is kept beside its checkpoint (``passk.json``) and reused while the settings
    and the weights are the same (``cached_only``: only those are read, nothing is evaluated)."""
    c = cfg.compare
    p = c.passk
    settings = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    settings.eval.samples, settings.eval.ks, settings.eval.temperature = p.samples, list(p.ks), p.temperature
    settings.eval.num_examples = p.num_examples or cfg.eval.num_examples
    settings.eval.sets = {}
    settings.stages = {c.sft_stage: settings.stages[c.sft_stage]}
    yaml = out / "passk.yaml"
    atomic_write_text(yaml, to_yaml(settings))
    jobs = [("SFT", checkpoint)] + [(label, run_dir / final["name"] / "final") for label, run_dir, final in finals
                                     if label in p.entries and "error" not in final]

    def evaluate(job: tuple[str, Path]) -> tuple[str, dict | None]:
        label, folder = job
        weights = folder / "model.safetensors"
        key = {"eval": OmegaConf.to_container(settings.eval), "task": OmegaConf.to_container(settings.task),
               "weights": weights.stat().st_mtime_ns if weights.is_file() else None}
        cached = folder / "passk.json"
        if cached.is_file() and _same_passk_key(json.loads(cached.read_text()).get("key"), key):
            return label, json.loads(cached.read_text())["result"]
        if cached_only:
            return label, None
        print(f"[compare] Pass@K of {label}: {folder}", flush=True)
        args = [sys.executable, "-m", "rlzoo.cli", "eval", str(folder), "--config", str(yaml)]
        if cfg.threads:
            args += ["--threads", str(cfg.threads)]
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ, "TQDM_DISABLE": "1"})
        if proc.returncode != 0:
            print(f"[compare] Pass@K of {label} failed: {(proc.stderr.strip().splitlines() or ['?'])[-1]}", flush=True)
            return label, None
        result = json.loads(proc.stdout[proc.stdout.index("{"):])
        atomic_write_text(cached, json.dumps({"key": key, "result": result}, indent=2))
        return label, result

    with ThreadPoolExecutor(max_workers=c.parallel) as pool:
        done = list(pool.map(evaluate, jobs))
    curves: dict[str, list[dict[str, float]]] = {}
    for label, result in done:
        if result is not None:
            curves.setdefault(label, []).append(result)
    return curves


def _same_passk_key(stored: dict | None, key: dict) -> bool:
    """Whether a cached Pass@K result was made with these settings and weights: the stored ``eval``
    and ``task`` sections are read over today's schema first, so a key rlzoo added since (with its
    default) does not make the result stale."""
    from rlzoo.config import EvalConfig, TaskConfig

    if not stored or stored.get("weights") != key["weights"]:
        return False
    try:
        return all(OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), stored[part]), resolve=True)
                   == OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(schema), key[part]), resolve=True)
                   for part, schema in (("eval", EvalConfig), ("task", TaskConfig)))
    except Exception:  # noqa: BLE001 - a key from an incompatible version: evaluate again
        return False


def _mean_std(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    if not values:
        return "n/a"
    mean = statistics.fmean(values) * scale
    if len(values) == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {statistics.stdev(values) * scale:.{digits}f}"


def _metric(runs: list[dict], key: str) -> list[float]:
    return [r["eval"][key] for r in runs if "eval" in r and key in r["eval"]]


def write_report(report: Path, cfg: DictConfig, command: str, sft: dict, results: dict, curves: dict, seconds: float, *,
                 budgets: dict | None = None, passk: dict | None = None) -> None:
    """The Markdown report and its plots."""
    report.parent.mkdir(parents=True, exist_ok=True)
    from rlzoo.run.evaluation import shown_metrics

    evals = [sft["eval"]] + [r["eval"] for runs in results.values() for r in runs if "eval" in r]
    keys = [k for k in shown_metrics(evals) if k in sft["eval"] and "/" not in k]
    sets = list(cfg.eval.sets)
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
        f"{rl.data.prompts_per_step} questions, seeds {list(cfg.compare.seeds)} (unless an entry names its own). Held-out set: "
        f"{sft['eval'].get('num_examples')} problems of task `{cfg.task.name}`; Pass@k and Maj@k from "
        f"{cfg.eval.samples} samples per problem at temperature {cfg.eval.temperature}. Metrics in %, "
        f"mean ± std over seeds; time in seconds and peak memory in MB (peak RSS on CPU, CUDA max "
        f"allocated on GPU) of the RL stage alone. Training time of all runs together: "
        f"{(sft['wall_seconds'] + _trained_seconds(results, budgets or {})) / 60:.0f} min.",
        "",
        "| method | " + " | ".join(keys) + " | wall s | peak MB |",
        "|---|" + "---:|" * (len(keys) + 2),
        f"| SFT (start) | " + " | ".join(f"{100 * sft['eval'][k]:.1f}" for k in keys)
        + f" | {sft['wall_seconds']:.0f} | {sft.get('peak_memory_mb', float('nan')):.0f} |",
    ]
    for label, runs in results.items():
        ok = [r for r in runs if "error" not in r]
        cells = [_mean_std(_metric(ok, k), 100) for k in keys]
        spent = (budgets or {}).get(label) or [{"wall_seconds": r["wall_seconds"], "peak_memory_mb": r.get("peak_memory_mb", float("nan"))}
                                                for r in ok]  # every iteration of iterative RL
        wall = _mean_std([b["wall_seconds"] for b in spent], digits=0)
        mem = _mean_std([b["peak_memory_mb"] for b in spent], digits=0)
        unrun = sum(r.get("error") == NOT_RUN for r in runs)  # --report-only: not finished yet
        failed = len(runs) - len(ok) - unrun
        own = next((list(e.seeds) for e in cfg.compare.entries if (e.label or e.algorithm) == label and e.seeds), None)
        note = ", ".join(([f"seeds {own}"] if own else []) + ([f"{failed} failed"] if failed else [])
                         + ([f"{unrun} of {len(runs)} seeds not run"] if unrun else []))
        lines.append(f"| {label}{f' ({note})' if note else ''} | " + " | ".join(cells) + f" | {wall} | {mem} |")
    errors = [(label, r["error"]) for label, runs in results.items() for r in runs if r.get("error", NOT_RUN) != NOT_RUN]
    if errors:
        lines += ["", "Failed runs:", ""] + [f"- {label}: {err}" for label, err in errors]
    if sets:
        lines += ["", "## Out of domain", "", "Greedy accuracy (%) on held-out sets no stage trained on (`eval.sets`): "
                  + "; ".join(f"`{name}`: {_describe(cfg.eval.sets[name])}" for name in sets) + ".", "",
                  "| method | main | " + " | ".join(sets) + " |", "|---|" + "---:|" * (len(sets) + 1),
                  "| SFT (start) | " + " | ".join(f"{100 * sft['eval'][k]:.1f}" if k in sft["eval"] else "n/a"
                                                  for k in ["accuracy"] + [f"{n}/accuracy" for n in sets]) + " |"]
        for label, runs in results.items():
            ok = [r for r in runs if "error" not in r]
            lines.append(f"| {label} | " + " | ".join(_mean_std(_metric(ok, k), 100) for k in ["accuracy"] + [f"{n}/accuracy" for n in sets]) + " |")
    if budgets:
        lines += ["", "## Budgets", "",
                  "What each method's RL stage spent per seed (mean over seeds): questions drawn, outputs sampled and their "
                  "tokens, optimizer updates, wall time (± std), peak memory (± std; the run's process, its reward-model "
                  "stages included), and the seconds of the run's other stages (reward models trained first, or between "
                  "iterations).", "",
                  "| method | questions | samples | tokens | optimizer steps | RL wall s | other stages s | peak MB |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|"]
        for label, items in budgets.items():
            mean = lambda key: statistics.fmean(b[key] for b in items)
            lines.append(f"| {label} | {mean('questions'):.0f} | {mean('samples'):.0f} | {mean('tokens'):.0f} | "
                         f"{mean('optimizer_steps'):.0f} | {_mean_std([b['wall_seconds'] for b in items], digits=0)} | "
                         f"{mean('other_seconds'):.0f} | {_mean_std([b['peak_memory_mb'] for b in items], digits=0)} |")
    if passk:
        lines += ["", *passk_table(passk, cfg.compare.passk)]
    for section in (iterative_table(cfg, curves), hacking_table(curves)):
        lines += ["", *section] if section else []
    lines += ["", *claims(sft, results, budgets or {}, passk or {}, sets), ""]
    plots = plot_curves(report, curves, start_accuracy=sft["eval"]["accuracy"])
    plots += plot_hacking(report, curves)
    plots += plot_passk(report, passk or {})
    lines += [f"![{name}]({path.name})" for name, path in plots]
    atomic_write_text(report, "\n".join(lines) + "\n")


def _trained_seconds(results: dict, budgets: dict) -> float:
    """Seconds every entry's runs trained, their reward-model stages included (from the budgets where known)."""
    return sum(sum(b["wall_seconds"] + b["other_seconds"] for b in budgets[label]) if label in budgets
               else sum(r.get("wall_seconds", 0) for r in runs) for label, runs in results.items())


def _describe(overrides: Any) -> str:
    """A set's task overrides in one line (``synthetic.min_ops=4, ...``)."""
    flat = OmegaConf.to_container(OmegaConf.create(overrides)) if overrides else {}

    def walk(d: dict, prefix: str = "") -> list[str]:
        return [item for k, v in d.items() for item in (walk(v, f"{prefix}{k}.") if isinstance(v, dict) else [f"{prefix}{k}={v}"])]

    return ", ".join(walk(flat)) or "the main task"


def passk_table(passk: dict, settings: DictConfig) -> list[str]:
    """Figure 7's numbers: Pass@K and Maj@K (%) for each K, mean over seeds."""
    ks = list(settings.ks)
    lines = ["## Pass@K and Maj@K (Figure 7)", "",
             f"{settings.samples} samples per held-out problem at temperature {settings.temperature}, one set of samples "
             "read for every K (unbiased Pass@K; Maj@K over disjoint votes of K). Mean over seeds, in %.", "",
             "| checkpoint | " + " | ".join(f"pass@{k}" for k in ks) + " | " + " | ".join(f"maj@{k}" for k in ks) + " |",
             "|---|" + "---:|" * (2 * len(ks))]
    for label, items in passk.items():
        cell = lambda key: f"{100 * statistics.fmean(r[key] for r in items):.1f}" if all(key in r for r in items) else "n/a"
        lines.append(f"| {label} | " + " | ".join(cell(f"pass@{k}") for k in ks) + " | " + " | ".join(cell(f"maj@{k}") for k in ks) + " |")
    return lines


def _avg(results: dict, label: str, key: str) -> float | None:
    values = _metric([r for r in results.get(label, []) if "error" not in r], key)
    return statistics.fmean(values) if values else None


def difference(a: list[float], b: list[float]) -> tuple[float, float]:
    """mean(a) - mean(b) and its standard error over seeds, sqrt(var(a)/n_a + var(b)/n_b) (a list
    of one value has no spread: the shared SFT checkpoint is one model).

    >>> difference([3.0, 5.0], [1.0])   # 4 - 1; var(a) = 2, se = sqrt(2 / 2)
    (3.0, 1.0)
    """
    var = lambda x: statistics.variance(x) / len(x) if len(x) > 1 else 0.0
    return statistics.fmean(a) - statistics.fmean(b), math.sqrt(var(a) + var(b))


def verdict(d: float, se: float) -> str:
    """The rule every claim is held to: a difference ``d`` in the claimed direction agrees when it
    exceeds twice its standard error ``se`` over seeds, disagrees when it is more than that in the
    other direction, and is within the seed spread otherwise.

    >>> verdict(5.0, 2.0), verdict(3.0, 2.0), verdict(-5.0, 2.0), verdict(0.5, 0.0)
    ('agrees', 'within the seed spread', 'does not agree', 'agrees')
    """
    if d > 2 * se and d > 0:
        return "agrees"
    if d < -2 * se and d < 0:
        return "does not agree"
    return "within the seed spread"


# The paper's claims checked (DeepSeekMath Sec. 5.2 and the seed's report), by entry label:
# (id, claim, better, worse, metric). "SFT" is the shared start.
CLAIMS = [
    ("a", "RL (GRPO) improves over SFT", "grpo", "SFT", "accuracy"),
    ("b", "online beats offline: Online RFT over RFT", "online_rft", "rft", "accuracy"),
    ("c", "GRPO matches or beats PPO", "grpo", "ppo", "accuracy"),
    ("d", "process supervision beats outcome supervision: GRPO+PRM over GRPO+ORM", "grpo_prm", "grpo_orm", "accuracy"),
    ("d", "the exact step oracle bounds process supervision: GRPO+oracle PRM over GRPO+PRM", "grpo_oracle_prm", "grpo_prm", "accuracy"),
    ("f", "a random reward does not match the real one: GRPO (rule) over GRPO (random)", "grpo", "grpo_random", "accuracy"),
    ("h", "iterative RL beats a fixed reward model at equal RL steps: GRPO+ORM iterative over GRPO+ORM for as many steps",
     "grpo_orm_iterative", "grpo_orm_120", "accuracy"),
    ("i", "remedy: a stronger KL term helps a learned reward: GRPO+ORM with beta 0.2 over beta 0.04", "grpo_orm_kl", "grpo_orm", "accuracy"),
    ("i", "remedy: a reward model trained on 3x the questions helps", "grpo_orm_more", "grpo_orm", "accuracy"),
    ("i", "remedy: an ensemble of two reward models (worst case) helps", "grpo_orm_ensemble", "grpo_orm", "accuracy"),
    ("i", "remedy: clipping the reward model's score helps", "grpo_orm_clip", "grpo_orm", "accuracy"),
]


def _at(runs: list[dict], key: str, step: int) -> list[float]:
    """Each seed's value of curve ``key`` at ``step`` (seeds without one left out)."""
    return [v for run in runs for x, v in run.get(key, []) if x == step]


def hacking_table(curves: dict) -> list[str]:
    """Reward hacking, measured: for each entry trained on one reward while a diagnostic (the rule)
    graded the same samples, the training reward and the true accuracy of the samples over the
    first and the last tenth of the RL steps (mean over seeds). A training reward that rises while
    the true accuracy does not is the reward model being exploited."""
    rows = []
    for label, runs in curves.items():
        keys = sorted({k for run in runs for k in run if k.startswith("diag/")})
        steps = sorted({x for run in runs for x, _ in run.get("reward", [])})
        if not keys or not steps:
            continue
        tenth = max(1, len(steps) // 10)
        first, last = set(steps[:tenth]), set(steps[-tenth:])

        def mean(key: str, window: set) -> float:
            values = [v for run in runs for x, v in run.get(key, []) if x in window]
            return statistics.fmean(values) if values else float("nan")

        r0, r1 = mean("reward", first), mean("reward", last)
        for key in keys:
            t0, t1 = mean(key, first), mean(key, last)
            rows.append(f"| {label} | {key[len('diag/'):]} | {r0:.3f} → {r1:.3f} ({r1 - r0:+.3f}) | "
                        f"{100 * t0:.1f} → {100 * t1:.1f} ({100 * (t1 - t0):+.1f}) |")
    if not rows:
        return []
    return ["## Learned rewards under pressure", "",
            "The training reward (a reward model's score, or a random coin) against the true accuracy of the same samples "
            "(`reward_diagnostics`: the rule, never trained on), mean of the first and of the last tenth of the RL steps, "
            "over seeds. A training reward that rises while the accuracy of the samples does not is reward hacking; the "
            "remedies' entries (`grpo_orm_*`) change one thing each against `grpo_orm` (claims (i) below).", "",
            "| method | graded by | training reward, first → last tenth | true accuracy of the samples %, first → last tenth |",
            "|---|---|---:|---:|", *rows]


def iterative_table(cfg: DictConfig, curves: dict) -> list[str]:
    """Figure 6: each iterative entry's held-out accuracy at the end of every iteration, beside the
    entries trained for as many RL steps in one go (a reward model never retrained), mean ± std."""
    lines = []
    for entry in cfg.compare.entries:
        if not entry.iterative:
            continue
        label = entry.label or entry.algorithm
        runs = curves.get(label, [])
        iterations = int(entry.iterative.get("iterations", 1))
        total = max((x for run in runs for x, _ in run.get("accuracy", [])), default=0)
        if not total or iterations < 2:
            continue
        ends = [total * (k + 1) // iterations for k in range(iterations)]
        same = [other for other, r in curves.items() if other != label
                and max((x for run in r for x, _ in run.get("accuracy", [])), default=0) == total]
        lines += ["| method | " + " | ".join(f"iteration {k} (step {x})" for k, x in enumerate(ends)) + " |",
                  "|---|" + "---:|" * len(ends)]
        for name in [label, *same]:
            lines.append(f"| {name} | " + " | ".join(_mean_std(_at(curves[name], "accuracy", x), 100) for x in ends) + " |")
    if not lines:
        return []
    return ["## Iterative RL (Figure 6)", "",
            "Held-out greedy accuracy (%) at the end of each iteration: the RL stage run again from the current policy "
            "(its reference reset to it) after the reward model kept training on the current policy's samples (10% "
            "replay of its earlier data), against the same number of RL steps with the first reward model kept.", "",
            *lines]


def claims(sft: dict, results: dict, budgets: dict, passk: dict, sets: list[str]) -> list[str]:
    """Each of the paper's claims next to the numbers, judged by :func:`verdict`: the difference
    in the claimed direction (points of accuracy, or MB), twice its standard error over seeds, and
    agrees / does not agree / within the seed spread. A claim whose entries did not run is left out.

    (e) "RL raises Maj@K, not Pass@K" reads Figure 7 (``passk``) at its largest K, or the main
    evaluation's largest k without it: per seed, the Maj@K gain over SFT minus the Pass@K gain,
    and Maj@K must itself rise beyond the seed spread."""
    out = ["## The paper's claims, checked", "",
           "Rule: a claim agrees when the difference in its direction is more than twice its standard error over seeds "
           "(sqrt(var_a/n_a + var_b/n_b); the SFT start is one model, without spread), does not agree when it is more "
           "than that the other way, and is within the seed spread otherwise.", ""]
    ok = lambda label: [r for r in results.get(label, []) if "error" not in r]

    def values(label: str, key: str) -> list[float]:
        if label == "SFT":
            return [sft["eval"][key]] if key in sft["eval"] else []
        return _metric(ok(label), key)

    def line(tag: str, claim: str, a: list[float], b: list[float], what: str, scale: float = 100.0, unit: str = "points",
             single: bool = False) -> None:
        d, se = difference(a, b)
        judged = "one seed, no spread to judge it by" if single else verdict(d, se)
        out.append(f"- **({tag}) {claim}** ({what}): {scale * d:+.1f} {unit}, 2 s.e. {2 * scale * se:.1f}: {judged}.")

    for tag, claim, better, worse, key in CLAIMS:
        a, b = values(better, key), values(worse, key)
        if a and b:
            single = any(len(x) == 1 for x, label in ((a, better), (b, worse)) if label != "SFT")  # an entry run on one seed
            line(tag, claim, a, b, f"greedy accuracy, {better} − {worse}", single=single)
        if tag == "c" and budgets.get("grpo") and budgets.get("ppo"):
            line("c", "GRPO needs less memory than PPO", [x["peak_memory_mb"] for x in budgets["ppo"]],
                 [x["peak_memory_mb"] for x in budgets["grpo"]], "peak MB, ppo − grpo", scale=1.0, unit="MB")
    if passk.get("SFT"):  # Figure 7's samples
        base = passk["SFT"][0]
        measured = {label: items for label, items in passk.items() if label != "SFT"}
    else:  # the main evaluation's
        base = sft["eval"]
        measured = {label: [r["eval"] for r in ok(label)] for label in results}
    ks = sorted(int(key.split("@")[1]) for key in base if key.startswith("maj@") and f"pass@{key.split('@')[1]}" in base)
    for label, runs in measured.items() if ks else ():
        k = ks[-1]
        runs = [r for r in runs if f"maj@{k}" in r and f"pass@{k}" in r]
        if not runs:
            continue
        gains = [(r[f"maj@{k}"] - base[f"maj@{k}"]) - (r[f"pass@{k}"] - base[f"pass@{k}"]) for r in runs]
        maj = statistics.fmean(r[f"maj@{k}"] for r in runs) - base[f"maj@{k}"]
        pas = statistics.fmean(r[f"pass@{k}"] for r in runs) - base[f"pass@{k}"]
        d, se = difference(gains, [0.0])
        rise = verdict(*difference([r[f"maj@{k}"] - base[f"maj@{k}"] for r in runs], [0.0]))
        judged = (verdict(d, se) if rise == "agrees"  # Maj@K must itself rise beyond the spread
                  else "does not agree (Maj@K does not rise)" if maj <= 0 or rise == "does not agree"
                  else "within the seed spread (Maj@K does not clearly rise)")
        out.append(f"- **(e) RL raises Maj@K more than Pass@K** ({label} over SFT at K={k}): maj@{k} {100 * maj:+.1f}, "
                   f"pass@{k} {100 * pas:+.1f} points; the difference {100 * d:+.1f}, 2 s.e. {200 * se:.1f}: {judged}.")
    for name in sets:
        a, b = values("grpo", f"{name}/accuracy"), values("SFT", f"{name}/accuracy")
        if a and b:
            line("g", f"gains carry out of domain: GRPO over SFT on `{name}`", a, b, f"greedy accuracy on {name}")
    return out


def _spread(runs: list[dict], key: str, start: float | None = None) -> tuple[list[int], list[float], list[float]]:
    """Steps, mean and std over seeds of the curve ``key`` (``start``: the value at step 0)."""
    by_step: dict[int, list[float]] = {}
    for run in runs:
        for step, value in run.get(key, []):
            by_step.setdefault(step, []).append(value)
    if by_step and start is not None:
        by_step[0] = [start]
    steps = sorted(by_step)
    return (steps, [statistics.fmean(by_step[s]) for s in steps],
            [statistics.stdev(by_step[s]) if len(by_step[s]) > 1 else 0.0 for s in steps])


def _smooth(values: list[float]) -> list[float]:
    window = max(1, len(values) // 20)
    return [statistics.fmean(values[max(0, i - window + 1) : i + 1]) for i in range(len(values))]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, report: Path, suffix: str, title: str, made: list) -> None:
    path = report.with_name(f"{report.stem}_{suffix}.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    _pyplot().close(fig)
    made.append((title, path))


def plot_curves(report: Path, curves: dict, start_accuracy: float | None = None) -> list[tuple[str, Path]]:
    """Held-out accuracy (Figure 5) and rollout reward against step, mean over seeds with the
    spread (± std) shaded; PNGs beside the report. Accuracy curves start at step 0 from the
    shared SFT checkpoint's accuracy."""
    plt = _pyplot()
    made: list = []
    for key, title in (("accuracy", "held-out greedy accuracy"), ("reward", "rollout reward (mean)")):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        drawn = False
        for label, runs in curves.items():
            steps, mean, std = _spread(runs, key, start_accuracy if key == "accuracy" else None)
            if not steps:
                continue
            if key == "reward" and len(mean) > 10:
                mean, std = _smooth(mean), _smooth(std)
            line, = ax.plot(steps, mean, label=label, marker="o" if key == "accuracy" else None, markersize=3)
            if any(std):
                ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                                color=line.get_color(), alpha=0.15)
            drawn = True
        if not drawn:
            plt.close(fig)
            continue
        ax.set_xlabel("RL step")
        ax.set_ylabel(title)
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
        _save(fig, report, key, title, made)
    return made


def plot_hacking(report: Path, curves: dict) -> list[tuple[str, Path]]:
    """For each entry that logged a diagnostic reward (``reward_diagnostics``): its training
    reward's mean (a learned reward model's score) and each diagnostic's (the true accuracy of the
    same samples) against step, mean over seeds. A widening gap is reward hacking."""
    plt = _pyplot()
    hacked = {label: runs for label, runs in curves.items() if any(k.startswith("diag/") for run in runs for k in run)}
    if not hacked:
        return []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, runs in hacked.items():
        steps, mean, _ = _spread(runs, "reward")
        line, = ax.plot(steps, _smooth(mean), label=f"{label}: training reward")
        for key in sorted({k for run in runs for k in run if k.startswith("diag/")}):
            steps, mean, _ = _spread(runs, key)
            ax.plot(steps, _smooth(mean), linestyle="--", color=line.get_color(), label=f"{label}: {key[len('diag/'):]} (diagnostic)")
    ax.set_xlabel("RL step")
    ax.set_ylabel("mean over the step's samples")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    made: list = []
    _save(fig, report, "hacking", "training reward vs true accuracy of the same samples", made)
    return made


def plot_passk(report: Path, passk: dict) -> list[tuple[str, Path]]:
    """Figure 7: Pass@K and Maj@K against K (log axis) of each evaluated checkpoint, mean over seeds."""
    if not passk:
        return []
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 4), sharey=True)
    for ax, kind in zip(axes, ("pass", "maj")):
        for label, items in passk.items():
            ks = sorted(int(k.split("@")[1]) for k in items[0] if k.startswith(f"{kind}@"))
            ax.plot(ks, [100 * statistics.fmean(r[f"{kind}@{k}"] for r in items) for k in ks], marker="o", markersize=3, label=label)
            ax.set_xscale("log", base=2)
        ax.set_xlabel("K")
        ax.set_title(f"{kind.capitalize()}@K")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out accuracy (%)")
    axes[0].legend(fontsize=7)
    made: list = []
    _save(fig, report, "passk", "Pass@K and Maj@K against K", made)
    return made
