"""A run: the stages of a config in order, each starting from the previous stage's weights.

Outputs in the run folder (``output_dir`` or ``runs/<name>``):
    config.yaml         the resolved config
    metrics.jsonl       one JSON object per logged step (slash-namespaced keys, plus stage/step)
    <stage>/final/      checkpoint after each stage (Hugging Face format + optimizer + RNG state)
    summary.json        {"stages": [{"name", "algorithm", "steps", "wall_seconds", "eval": {...}}]}
"""

from __future__ import annotations

import functools
import json
import random
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.config import ConfigError, algorithm_config, to_yaml
from rlzoo.interface import Algorithm, Example
from rlzoo.registry import ALGORITHMS, DATA_SOURCES, REWARDS, load_plugin
from rlzoo.runtime.checkpoint import atomic_write_text, save_checkpoint
from rlzoo.runtime.generation import encode_pairs, sample
from rlzoo.runtime.logging import MetricsLogger
from rlzoo.runtime.models import build_tiny_model, build_value_model, frozen_copy, load_pretrained
from rlzoo.runtime.trainer import Runtime, lr_lambda, resolve_loss_agg, timed, train_on_batch


def build_task(cfg: DictConfig):
    """The task object of ``cfg.task``: ``train_stream(seed)``, ``eval_examples()`` and ``corpus()``.

    ``synthetic`` is generated on the fly; ``gsm8k`` and ``math`` read jsonl files (docs/data.md).
    """
    from rlzoo.data.files import FILE_TASKS, FileTask

    try:
        if cfg.task.name == "synthetic":
            from rlzoo.data.synthetic import SyntheticTask

            return SyntheticTask(OmegaConf.to_object(cfg.task.synthetic))
        if cfg.task.name in FILE_TASKS:
            return FileTask(cfg.task.name, OmegaConf.to_object(cfg.task.files))
    except ValueError as e:
        raise ConfigError(str(e)) from None
    raise ConfigError(f"task.name: unknown task '{cfg.task.name}'; known: synthetic, {', '.join(FILE_TASKS)}")


def initial_model(cfg: DictConfig, task):
    """(model, tokenizer) the first stage starts from."""
    if cfg.model.path:
        return load_pretrained(cfg.model.path, cfg.model.gguf_file, cfg.model.dtype)
    from rlzoo.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(task.corpus(), vocab_size=cfg.model.tiny.vocab_size)
    return build_tiny_model(OmegaConf.to_object(cfg.model.tiny), tokenizer), tokenizer


def stage_task(cfg: DictConfig, name: str, stage: DictConfig, task):
    """The task a stage draws training questions from: the run's, or the run's with ``stage.task``
    merged over it (a curriculum); the held-out set is always the run's."""
    if not stage.task:
        return task
    merged = stage_task_config(cfg, name, stage)
    from rlzoo.data.synthetic import question_key

    return _HeldOutFiltered(build_task(OmegaConf.create({"task": merged})), {question_key(ex.prompt) for ex in task.eval_examples()})


def stage_task_config(cfg: DictConfig, name: str, stage: DictConfig) -> DictConfig:
    """``cfg.task`` with ``stage.task`` merged over it, validated against the task schema."""
    try:
        return OmegaConf.merge(cfg.task, stage.task)
    except Exception as e:  # omegaconf's key and type errors
        raise ConfigError(f"stages.{name}.task: {' '.join(str(e).split()[:12])}") from None


class _HeldOutFiltered:
    """A stage's task whose training stream never yields a question of the run's held-out set
    (compared without the format hint, so a question in another format is caught too)."""

    def __init__(self, task, held_out: set[str]) -> None:
        self.task, self.held_out = task, held_out

    def train_stream(self, seed: int):
        from rlzoo.data.synthetic import question_key

        return (ex for ex in self.task.train_stream(seed) if question_key(ex.prompt) not in self.held_out)


def make_reward(stage_cfg: DictConfig):
    """The stage's reward callable ``(prompt, completion, example) -> float``."""
    fn = REWARDS.get(stage_cfg.reward.name)
    kwargs = OmegaConf.to_container(stage_cfg.reward.kwargs, resolve=True)
    return functools.partial(fn, **kwargs) if kwargs else fn


def make_algorithm(cfg: DictConfig, name: str) -> Algorithm:
    cls = ALGORITHMS.get(name)
    algo = cls(algorithm_config(cfg, name, cls.Config))
    missing = [a for a in ("data_source", "needs", "loss_agg", "group_coupled", "coefficients", "prepare", "extra_loss") if not hasattr(algo, a)]
    if missing:
        raise ConfigError(f"algorithm '{name}' does not satisfy the interface: missing {', '.join(missing)}")
    return algo


def score_batch(reward, batch) -> dict[str, float]:
    """Fill ``batch.rewards`` with the reward of every completion; reward diagnostics.

    Rewards are computed by :func:`rlzoo.rewards.reward_values` (a thread pool for a reward that
    declares ``parallel = True``, a plain loop otherwise; results in order). Events a reward counts
    (its ``events`` attribute, see ``rlzoo.rewards.builtin.count_event``) are logged as
    ``reward/<event>_frac``; tool-integrated rollouts add ``tools/calls`` (per sequence),
    ``tools/fail_frac`` (per call) and ``time/tools``.
    """
    from rlzoo.rewards import reward_values_and_events

    values, events = reward_values_and_events(reward, batch.examples, batch.completions)
    batch.rewards = torch.tensor(values, device=batch.input_ids.device)  # [N]
    n = max(len(values), 1)
    metrics = {"reward/mean": float(batch.rewards.mean()), "reward/std": float(batch.rewards.std()) if len(values) > 1 else 0.0}
    metrics.update({f"reward/{e}_frac": frac for e, frac in events.items()})
    if "tool_calls" in batch.extras:
        calls = float(batch.extras["tool_calls"].sum())
        metrics["tools/calls"] = calls / n
        metrics["tools/fail_frac"] = float(batch.extras["tool_failures"].sum()) / calls if calls else 0.0
        metrics["time/tools"] = float(batch.extras["tool_seconds"].sum())
    return metrics


def run_eval(cfg: DictConfig, model, tokenizer, examples: list[Example], reward) -> dict[str, float]:
    from rlzoo.evaluation import evaluate

    e = cfg.eval
    subset = examples[: e.num_examples] if e.num_examples else examples
    if cfg.task.chat_template:
        from rlzoo.data.templates import apply_chat_template

        subset = apply_chat_template(subset, tokenizer)
    return evaluate(
        model, tokenizer, subset, reward, samples=e.samples, ks=list(e.ks), temperature=e.temperature,
        top_p=e.top_p, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size,
    )


def train(cfg: DictConfig) -> dict[str, Any]:
    """Run every stage of ``cfg``; returns the summary (also written to summary.json)."""
    from accelerate import Accelerator
    from accelerate.utils import set_seed

    for plugin in cfg.plugins:
        load_plugin(plugin)
    out = Path(cfg.output_dir or f"runs/{cfg.name}")
    out.mkdir(parents=True, exist_ok=True)
    config_yaml = to_yaml(cfg)
    atomic_write_text(out / "config.yaml", config_yaml)
    # validate every stage before any work starts
    stages = [(name, stage, make_algorithm(cfg, stage.algorithm)) for name, stage in cfg.stages.items()]
    for name, stage, algo in stages:
        DATA_SOURCES.get(stage.data.source or algo.data_source)
        make_reward(stage)
        if stage.task:
            stage_task_config(cfg, name, stage)
        try:
            resolve_loss_agg(algo, stage.optim.loss_agg)
            lr_lambda(stage.optim.schedule, 0, 1)
        except ValueError as e:
            raise ConfigError(f"stages.{name}.{e}") from None

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    accelerator = Accelerator(mixed_precision=cfg.mixed_precision)
    set_seed(cfg.seed)
    task = build_task(cfg)
    policy, tokenizer = initial_model(cfg, task)
    eval_examples = task.eval_examples()
    logger = MetricsLogger(out, wandb=cfg.logging.wandb, project=cfg.logging.project, name=cfg.name,
                           config=OmegaConf.to_container(cfg, resolve=True))
    summary: dict[str, Any] = {"stages": []}
    global_step = 0
    try:
        for index, (name, stage, algo) in enumerate(stages):
            if stage.init:
                policy, tokenizer = load_pretrained(stage.init, dtype=cfg.model.dtype)
            result, global_step = run_stage(cfg, name, stage, algo, policy, tokenizer, task, eval_examples,
                                            accelerator, logger, out, config_yaml, global_step, seed=cfg.seed + index)
            summary["stages"].append(result)
            atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    finally:
        logger.close()
    return summary


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated on a GPU (reset per stage), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def run_stage(cfg, name, stage, algo, policy, tokenizer, task, eval_examples, accelerator, logger, out,
              config_yaml, global_step, seed) -> tuple[dict[str, Any], int]:
    """Train ``policy`` in place for one stage; returns its summary entry and the global step."""
    from rlzoo.data.sources import SourceContext
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    if accelerator.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(accelerator.device)
    reward = make_reward(stage)
    ocfg = stage.optim
    policy.train()
    reference = frozen_copy(policy) if "reference" in algo.needs else None
    value_model = build_value_model(policy) if "value_model" in algo.needs else None
    param_groups = [{"params": [p for p in policy.parameters() if p.requires_grad], "lr": ocfg.lr}]
    if value_model is not None:
        param_groups.append({"params": list(value_model.parameters()), "lr": ocfg.value_lr or ocfg.lr, "name": "value"})
    optimizer = torch.optim.AdamW(param_groups, betas=tuple(ocfg.betas), weight_decay=ocfg.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda(ocfg.schedule, ocfg.warmup_steps, stage.steps))
    policy, optimizer = accelerator.prepare(policy, optimizer)
    if value_model is not None:
        value_model = accelerator.prepare(value_model)
    if reference is not None:
        reference = reference.to(accelerator.device)
    rt = Runtime(accelerator, policy, tokenizer, reference, value_model, cfg.model.logprob_chunk_size, ocfg.micro_batch_size)
    device = accelerator.device
    stream_seed = seed * 1000 + accelerator.process_index
    prompts = stage_task(cfg, name, stage, task).train_stream(stream_seed)
    if cfg.task.chat_template:
        from rlzoo.data.templates import chat_stream

        prompts = chat_stream(prompts, tokenizer)
    ctx = SourceContext(
        prompts=prompts,
        settings=stage.data,
        encode=lambda exs, comps: encode_pairs(tokenizer, exs, comps, device),
        sample=lambda exs, n: sample(policy, tokenizer, exs, n, stage.generation),
        score=lambda batch: score_batch(reward, batch),
        seed=stream_seed,
    )
    algo.data_source = stage.data.source or algo.data_source  # the instance sees the source it runs on
    source = DATA_SOURCES.get(algo.data_source)(ctx)
    loss_agg = resolve_loss_agg(algo, ocfg.loss_agg)
    agg_constant = ocfg.loss_agg_constant or float(stage.generation.max_new_tokens)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(range(stage.steps), desc=f"{name} ({stage.algorithm})", disable=not cfg.logging.progress, dynamic_ncols=True)
    random.seed(seed)
    for step in bar:
        metrics: dict[str, float] = {}
        t0 = time.perf_counter()
        batch, source_metrics = source.next_batch(step)
        metrics.update(source_metrics)
        metrics["time/data"] = time.perf_counter() - t0 - metrics.get("time/generate", 0.0) - metrics.get("time/reward", 0.0)
        with timed(metrics, "time/reference"):
            if reference is not None:
                batch.ref_logprobs = rt.logprobs_nograd(reference, batch)  # [N, T]
        with timed(metrics, "time/prepare"):
            batch, prep_metrics = algo.prepare(batch, rt)
        metrics.update(prep_metrics)
        if len(batch) == 0:
            metrics["train/skipped"] = 1.0
        else:
            with timed(metrics, "time/train"):
                metrics.update(train_on_batch(rt, algo, batch, optimizer, ocfg, loss_agg, agg_constant, generator))
        scheduler.step()
        global_step += 1
        metrics.update({"optim/lr": scheduler.get_last_lr()[0], "train/sequences": float(len(batch)),
                        "time/step": time.perf_counter() - t0})
        if stage.eval_every and (step + 1) % stage.eval_every == 0 and step + 1 < stage.steps:
            evaluation = run_eval(cfg, policy, tokenizer, eval_examples, REWARDS.get(cfg.eval.reward))
            metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
        if (step + 1) % cfg.logging.log_every == 0:
            logger.log({"stage": name, "step": step + 1, **metrics}, global_step)
        bar.set_postfix({k.split("/")[-1]: f"{metrics[k]:.3f}" for k in ("reward/mean", "loss/policy") if k in metrics})
        if stage.save_every and (step + 1) % stage.save_every == 0:
            save_checkpoint(out / name / "latest", policy, tokenizer, optimizer=optimizer, config_yaml=config_yaml,
                            state={"stage": name, "step": step + 1, "global_step": global_step})
    bar.close()
    train_seconds = time.perf_counter() - t_start
    policy.eval()
    eval_metrics = run_eval(cfg, policy, tokenizer, eval_examples, REWARDS.get(cfg.eval.reward))
    logger.log({"stage": name, "step": stage.steps, **{f"eval/{k}": v for k, v in eval_metrics.items()}}, global_step)
    save_checkpoint(out / name / "final", policy, tokenizer, optimizer=optimizer, config_yaml=config_yaml,
                    state={"stage": name, "step": stage.steps, "global_step": global_step})
    result = {"name": name, "algorithm": stage.algorithm, "steps": stage.steps, "wall_seconds": round(train_seconds, 2),
              "peak_memory_mb": round(peak_memory_mb(device), 1), "eval": eval_metrics}
    return result, global_step

