"""A policy stage (``kind: policy``): an algorithm trains the policy through the shared runtime.

:func:`rlzoo.runtime.stage.build_stage` makes the stage's models, optimizer and data source;
each step is :func:`rlzoo.runtime.stage.train_step`; around it the run's step loop
(:func:`rlzoo.run.loop.run_steps`) logs, evaluates every ``eval_every``, applies the stop rules,
writes step checkpoints and honours stop requests. The trained model's ``final/`` folder is
written before its held-out evaluation, so a trained stage is never lost.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from rlzoo.interface import Algorithm
from rlzoo.run.evaluation import run_evals
from rlzoo.run.factories import make_diagnostics, make_eval_reward, make_reward, stage_base, stage_prompts
from rlzoo.run.loop import RunContext, StopRules, run_steps, write_final


def run_policy_stage(ctx: RunContext, index: int, name: str, stage: DictConfig, algo: Algorithm, lm: torch.nn.Module, tokenizer, *,
                     global_step: int, checkpoint: Path | None) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train ``lm`` for the stage at ``index`` (from its step ``checkpoint`` if given); returns the
    stage's summary entry and the trained LM. ``global_step``: the run's steps before the stage."""
    from rlzoo.runtime.models import checksum, save_model
    from rlzoo.runtime.sampling import mix_seed
    from rlzoo.runtime.stage import build_stage, peak_memory_mb, train_step

    cfg, out = ctx.cfg, ctx.out
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    reward = make_reward(stage, out, ctx.names, tokenizer)
    start = checksum(lm)
    st = build_stage(name, stage, algo, lm, tokenizer, stage_prompts(cfg, name, index, stage, ctx.task, tokenizer),
                     model_cfg=cfg.model, mixed_precision=cfg.mixed_precision, seed=cfg.seed + index,
                     sample_seed=mix_seed(cfg.seed, index, "rollouts"), reward=reward,
                     diagnostics=make_diagnostics(stage, tokenizer), parallel=cfg.parallel)
    st.global_step = global_step
    if checkpoint is not None:
        st.load(checkpoint)
    eval_reward = make_eval_reward(cfg)

    def evaluate() -> dict[str, float]:
        with st.gathered():  # sharded: each process evaluates its block with the whole weights
            return st.autocast(run_evals, cfg, st.lm, tokenizer, ctx.eval_examples, ctx.eval_sets, eval_reward, ctx.dist)

    run_steps(ctx, name, f"{name} ({stage.algorithm})", done=st.step, steps=stage.steps, global_step=global_step,
              step=lambda: train_step(st), rules=StopRules(name, stage.optim.max_nonfinite_steps, out / name, reward=reward.name,
                              on_divergence=stage.optim.on_divergence),
              save=lambda step: st.save(out / name, stage.save_total_limit, ctx.config_yaml), save_every=stage.save_every,
              evaluate=evaluate, eval_every=stage.eval_every,
              stopped=lambda step: f"stopped at stage {name} step {step}; checkpoint {out / name / f'checkpoint-{step}'}; "
                                   "continue with the same command and --resume")
    result = {"name": name, "algorithm": stage.algorithm, "steps": stage.steps, "wall_seconds": round(st.seconds_trained, 2),
              "peak_memory_mb": round(peak_memory_mb(st.accelerator.device), 1)}
    base = stage_base(cfg, out, index, stage, ctx.kinds)
    trained_lm = st.plain_lm()  # sharded: gathered by every process before the main one writes it
    write_final(ctx, name, lambda folder: save_model(trained_lm, tokenizer, folder, base),
                {"stage": name, "step": st.step, "global_step": st.global_step, "result": result})
    evaluation = evaluate()
    ctx.log_eval(name, stage.steps, evaluation, st.global_step)
    trained = st.close()  # a LoRA policy merged: the weights the next stage starts from
    return {**result, "eval": evaluation, "checksum": {"start": start, "final": checksum(trained)}}, trained
