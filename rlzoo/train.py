"""A run: the stages of a config in order, each starting from the previous stage's weights.

This is the run loop alone: set up (validate, the run folder, the task, the first model, the
logger), then train each stage (:mod:`rlzoo.run.policy_stage`, :mod:`rlzoo.run.reward_model_stage`)
or skip it when an earlier session finished it, and save the summary after each.

Outputs in the run folder (``output_dir`` or ``runs/<name>``; docs/runs.md):
    config.yaml                  the resolved config
    metrics.jsonl                one JSON object per logged step (slash-namespaced keys, plus stage/step)
    <stage>/checkpoint-<step>/   resumable state every ``save_every`` steps (the newest ``save_total_limit``)
    <stage>/final/               the stage's model, a Hugging Face folder (what the next stage starts from)
    summary.json                 {"stages": [{"name", "algorithm", "steps", "wall_seconds", "eval": {...}}]}
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.config import expand_iterative, to_yaml
from rlzoo.errors import UserError
from rlzoo.run.evaluation import evaluate_stage
from rlzoo.run.factories import build_task, checkpoint_bytes, eval_sets, initial_model
from rlzoo.run.loop import RunContext
from rlzoo.run.policy_stage import run_policy_stage
from rlzoo.run.reward_model_stage import run_reward_model_stage
from rlzoo.run.validate import validate
from rlzoo.runtime.checkpoint import atomic_write_text, read_state, written
from rlzoo.runtime.distributed import init_distributed
from rlzoo.runtime.logging import MetricsLogger
from rlzoo.runtime.models import load_stage_result, save_model
from rlzoo.runtime.run_folder import RunFolder
from rlzoo.runtime.signals import stop_on_signals


def train(cfg: DictConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage of ``cfg``; returns the summary (also written to summary.json).

    The run folder (``output_dir`` or ``runs/<name>``) holds one run: a folder that holds one
    already needs ``resume`` (continue from its newest checkpoint, docs/runs.md) or ``overwrite``.
    Under ``torchrun``/``accelerate launch`` every process runs this; only the main one writes
    files, and every number it writes is reduced over all processes first. SIGINT and SIGTERM
    finish the current step, write a checkpoint and stop (:class:`rlzoo.errors.Interrupted`).
    """
    run_cfg = expand_iterative(cfg)  # the stages as run; the config as stored stays as written
    stages = validate(run_cfg)
    names = [name for name, _, _ in stages]
    dist = init_distributed()
    folder = RunFolder(Path(cfg.output_dir or f"runs/{cfg.name}"), dist.is_main)
    config_yaml = to_yaml(cfg)
    point = _on_main(dist, lambda: folder.prepare(config_yaml, OmegaConf.to_container(cfg, resolve=True), names,
                                                  resume=resume, overwrite=overwrite))
    try:
        return _train(run_cfg, stages, dist, folder, config_yaml, point)
    except UserError:
        if point is None and dist.is_main:
            folder.discard_unstarted(names)
        raise
    finally:
        folder.release()


def _on_main(dist, fn):
    """``fn()`` on the main process; its result, or its user error, on every process."""
    result, error = None, None
    if dist.is_main:
        try:
            result = fn()
        except UserError as e:
            error = e
    result, error = dist.gather((result, error))[0]
    if error is not None:
        raise error
    return result


def _train(cfg: DictConfig, stages: list, dist, folder: RunFolder, config_yaml: str, point) -> dict[str, Any]:
    from accelerate.utils import set_seed

    out = folder.path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    task = build_task(cfg)
    trained = point.trained if point else []
    lm, tokenizer = (None, None) if trained else initial_model(cfg, task)
    if dist.is_main:
        if lm is not None:
            folder.check_space(checkpoint_bytes(cfg, lm, [algo for _, _, algo in stages]))
        if point is not None:
            folder.truncate_metrics(point, [name for name, _, _ in stages])
        if cfg.model.lora.r > 0 and not cfg.model.path and lm is not None:  # LoRA stages keep adapters: their base must be a folder
            with written(out / "initial") as tmp:
                save_model(lm, tokenizer, tmp)
    dist.barrier()
    started: dict[str, MetricsLogger] = {}

    def start_logger() -> None:
        started["logger"] = MetricsLogger(out, wandb=cfg.logging.wandb, project=cfg.logging.project, name=cfg.name,
                                          config=OmegaConf.to_container(cfg, resolve=True))

    _on_main(dist, start_logger)  # wandb that does not start stops every process with the same line
    summary: dict[str, Any] = {"stages": list(point.summary) if point else []}
    evaluated = {s["name"] for s in summary["stages"]}
    global_step = 0
    try:
        with stop_on_signals() as stop:
            ctx = RunContext(cfg, out, dist, started.get("logger"), config_yaml, stop, task, task.eval_examples(),
                             {name: stage.kind for name, stage, _ in stages}, eval_sets(cfg))
            for index, (name, stage, algo) in enumerate(stages):
                if name in trained:  # finished in an earlier session
                    if stage.kind == "policy":
                        lm = None  # loaded from its final folder when needed
                    if name not in evaluated:  # trained, but stopped before its evaluation
                        result = read_state(out / name / "final")["result"]
                        if stage.kind == "policy":
                            lm, tokenizer = load_stage_result(out / name / "final", cfg.model.dtype)
                            result["eval"] = evaluate_stage(cfg, lm, tokenizer, ctx.eval_examples, dist, ctx.eval_sets)
                            ctx.log_eval(name, stage.steps, result["eval"], global_step + stage.steps)
                        summary["stages"].append(result)
                        _write_summary(dist, out, summary)
                    global_step += stage.steps
                    continue
                if stage.kind == "policy" and stage.init:  # a folder, or an earlier policy stage's name
                    lm, tokenizer = load_stage_result(ctx.resolve(stage.init), cfg.model.dtype)
                elif lm is None:  # the policy the stage starts from finished in an earlier session
                    lm, tokenizer = _policy_weights(ctx, index)
                if stage.kind == "reward_model":
                    result = run_reward_model_stage(ctx, index, name, stage, lm, tokenizer, global_step=global_step)
                else:
                    checkpoint = point.checkpoint if point and point.checkpoint and point.checkpoint.parent.name == name else None
                    result, lm = run_policy_stage(ctx, index, name, stage, algo, lm, tokenizer, global_step=global_step,
                                                  checkpoint=checkpoint)
                global_step += stage.steps
                summary["stages"].append(result)
                _write_summary(dist, out, summary)
    finally:
        if started.get("logger") is not None:
            started["logger"].close()
    return summary


def _policy_weights(ctx: RunContext, index: int):
    """(lm, tokenizer) the stage at ``index`` starts from, when not in memory: the final folder of
    the last policy stage before it, or the initial model."""
    before = [n for n in ctx.names[:index] if ctx.kinds[n] == "policy"]
    return load_stage_result(ctx.out / before[-1] / "final", ctx.cfg.model.dtype) if before else initial_model(ctx.cfg, ctx.task)


def _write_summary(dist, out: Path, summary: dict) -> None:
    if dist.is_main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
