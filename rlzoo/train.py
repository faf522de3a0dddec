"""A run: the stages of a config in order, each starting from the previous stage's weights.

Outputs in the run folder (``output_dir`` or ``runs/<name>``; docs/runs.md):
    config.yaml                  the resolved config
    metrics.jsonl                one JSON object per logged step (slash-namespaced keys, plus stage/step)
    <stage>/checkpoint-<step>/   resumable state every ``save_every`` steps (the newest ``save_total_limit``)
    <stage>/final/               the stage's model, a Hugging Face folder (what the next stage starts from)
    summary.json                 {"stages": [{"name", "algorithm", "steps", "wall_seconds", "eval": {...}}]}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.config import HYPERPARAMETER_KEYS, TaskConfig, algorithm_config, check_values, expand_iterative, merge_section, to_yaml
from rlzoo.errors import ConfigError, DataError, Interrupted, UserError
from rlzoo.interface import Algorithm, Example
from rlzoo.registry import ALGORITHMS, DATA_SOURCES, load_plugin
from rlzoo.runtime.checkpoint import CONFIG_NAME, atomic_write_text, read_state, write_state, written
from rlzoo.runtime.distributed import init_distributed
from rlzoo.runtime.logging import MetricsLogger
from rlzoo.runtime.model_files import check_model_folder
from rlzoo.runtime.models import build_tiny_model, load_pretrained, load_stage_result, resolve_model, save_model
from rlzoo.runtime.run_folder import RunFolder
from rlzoo.runtime.signals import stop_on_signals
from rlzoo.runtime.stage import NonfiniteGuard, build_stage, peak_memory_mb, train_step
from rlzoo.runtime.trainer import resolve_loss_agg


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
        return load_pretrained(*resolve_model(cfg.model.path, cfg.model.gguf_file), cfg.model.dtype)
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
    return merge_section(TaskConfig, [cfg.task, stage.task], f"stages.{name}.task.")


class _HeldOutFiltered:
    """A stage's task whose training stream never yields a question of the run's held-out set
    (compared without the format hint, so a question in another format is caught too)."""

    def __init__(self, task, held_out: set[str]) -> None:
        self.task, self.held_out = task, held_out

    def train_stream(self, seed: int):
        from rlzoo.data.synthetic import question_key

        return (ex for ex in self.task.train_stream(seed) if question_key(ex.prompt) not in self.held_out)


def make_reward(stage_cfg: DictConfig, run_dir: Path | None = None, stage_names: list[str] = ()):
    """The stage's :class:`rlzoo.rewards.Reward` (``reward.name`` or the weighted ``reward.functions``).

    A reward model's ``model`` that names a stage of the run means that stage's final folder."""
    from rlzoo.rewards import make_reward as build

    spec = OmegaConf.to_container(stage_cfg.reward, resolve=True)
    for f in spec.get("functions") or [spec]:
        model = (f.get("kwargs") or {}).get("model")
        if model in stage_names and run_dir is not None:
            f["kwargs"]["model"] = str(run_dir / model / "final")
    return build(spec)


def make_algorithm(cfg: DictConfig, name: str, stage: str | None = None) -> Algorithm:
    """An instance of the algorithm ``name`` with its ``algorithms.<name>`` hyperparameters (and,
    for a stage, that stage's ``algorithm_args`` over them)."""
    from dataclasses import is_dataclass

    cls = ALGORITHMS.get(name)
    config_cls = getattr(cls, "Config", None)
    if not is_dataclass(config_cls):
        raise ConfigError(f"algorithm '{name}' does not satisfy the interface: its class has no Config dataclass")
    args = (cfg.stages[stage].algorithm_args or {}) if stage is not None else {}
    token = HYPERPARAMETER_KEYS.set({key: f"stages.{stage}.algorithm_args.{key}" for key in args})
    try:
        algo = cls(algorithm_config(cfg, name, config_cls, stage))
    finally:
        HYPERPARAMETER_KEYS.reset(token)
    missing = [a for a in ("data_source", "needs", "loss_agg", "group_coupled", "coefficients", "prepare", "extra_loss") if not hasattr(algo, a)]
    if missing:
        raise ConfigError(f"algorithm '{name}' does not satisfy the interface: missing {', '.join(missing)}")
    return algo


def score_batch(reward, batch) -> dict[str, float]:
    """Fill ``batch.rewards`` with the reward of every completion; this rank's reward diagnostics.

    Rewards are computed by :class:`rlzoo.rewards.Reward` (a thread pool for a reward function that
    declares ``parallel = True``; TRL-style functions get the batch at once). Events a reward counts
    (its ``events`` attribute, see ``rlzoo.rewards.builtin.count_event``) are logged as
    ``reward/<event>_frac``; tool-integrated rollouts add ``tools/calls`` (per sequence),
    ``tools/fail_frac`` (per call) and ``time/tools``; ``reward/skipped_frac`` is the share of
    completions no function gave a value. The mean and std of the rewards are taken over every
    rank by the stage (``reward/mean``, ``reward/std``).
    """
    values, events, step_rewards, step_ends = reward.score_batch(batch)
    batch.rewards = torch.tensor([float("nan") if v is None else v for v in values], device=batch.input_ids.device,
                                 dtype=torch.float)  # [N]; NaN: skipped (every reward function said None)
    batch.step_rewards, batch.step_ends = step_rewards, step_ends  # [N, T] each, with a process reward model
    n = max(len(values), 1)
    metrics = {f"reward/{e}_frac": frac for e, frac in events.items()}
    if "tool_calls" in batch.extras:
        calls = float(batch.extras["tool_calls"].sum())
        metrics["tools/calls"] = calls / n
        metrics["tools/fail_frac"] = float(batch.extras["tool_failures"].sum()) / calls if calls else 0.0
        metrics["time/tools"] = float(batch.extras["tool_seconds"].sum())
    return metrics


def make_eval_reward(cfg: DictConfig):
    """The :class:`rlzoo.rewards.Reward` that grades held-out answers (``eval.reward``)."""
    from rlzoo.rewards import make_reward as build

    return build(cfg.eval.reward)


def run_eval(cfg: DictConfig, model, tokenizer, examples: list[Example], reward, dist=None) -> dict[str, float]:
    """The held-out evaluation of ``cfg.eval`` (sharded over the ranks of ``dist``)."""
    from rlzoo.evaluation import evaluate
    from rlzoo.runtime.sampling import mix_seed

    e = cfg.eval
    subset = examples[: e.num_examples] if e.num_examples else examples
    if cfg.task.chat_template:
        from rlzoo.data.templates import apply_chat_template

        subset = apply_chat_template(subset, tokenizer)
    return evaluate(
        model, tokenizer, subset, reward, samples=e.samples, ks=list(e.ks), temperature=e.temperature,
        top_p=e.top_p, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size, tool_rounds=e.tool_rounds,
        tool_timeout_s=e.tool_timeout_s, seed=mix_seed(cfg.seed, "eval"), dist=dist,
    )


def validate(cfg: DictConfig) -> list[tuple[str, DictConfig, Algorithm]]:
    """Everything ``rlzoo train`` checks before any work, so that a mistake costs one line and no
    trained step: every value in its range (:func:`rlzoo.config.check_values`), every named thing
    resolved (plugins, algorithms and their hyperparameters, data sources, rewards, the loss
    aggregation), settings under which an algorithm learns nothing, the task and every row of its
    files (the run's and each stage's own), the model folder and each stage's ``init``, the chat
    template, and wandb. No model or tokenizer is built. Returns the stages with their algorithms.
    """
    check_values(cfg)
    for plugin in cfg.plugins:
        load_plugin(plugin)
    stages = [(name, stage, make_algorithm(cfg, stage.algorithm, name) if stage.kind == "policy" else None)
              for name, stage in cfg.stages.items()]
    for index, (name, stage, algo) in enumerate(stages):
        if stage.kind == "reward_model":
            validate_reward_model_stage(cfg, name, stage)
            continue
        if stage.init in cfg.stages and (stage.init not in list(cfg.stages)[: list(cfg.stages).index(name)]
                                         or cfg.stages[stage.init].kind != "policy"):
            raise ConfigError(f"stages.{name}.init: '{stage.init}' is not an earlier policy stage")
        DATA_SOURCES.get(stage.data.source or algo.data_source)
        reward = make_reward(stage)
        _check_model_references(cfg, name, stage)
        if getattr(algo, "needs_step_rewards", False) and not reward.process:
            raise ConfigError(f"stages.{name}.reward: {stage.algorithm} with process supervision trains on step rewards: "
                              "use a process reward model (reward.name: prm)")
        try:
            resolve_loss_agg(algo, stage.optim.loss_agg)
        except ValueError as e:
            raise ConfigError(f"stages.{name}.{e}") from None
        _check_learns_something(name, stage, algo)
        if stage.task:
            task_cfg = stage_task_config(cfg, name, stage)
            check_values(task_cfg, f"stages.{name}.task.")
            _check_task(OmegaConf.create({"task": task_cfg}), f"stages.{name}.")
        if stage.init:
            _check_init(cfg, name, stage.init, earlier=[n for n, _, _ in stages[:index]])
    make_eval_reward(cfg)
    if cfg.mixed_precision == "fp16" and not torch.cuda.is_available():
        raise ConfigError("mixed_precision: fp16 needs a GPU (on a CPU use bf16)")
    _check_task(cfg, "")
    if cfg.model.path:
        path, gguf_file = resolve_model(cfg.model.path, cfg.model.gguf_file)  # a folder, or a model installed from PyPI
        check_model_folder(path, "model.path", gguf_file)
    elif cfg.model.gguf_file:
        raise ConfigError(f"model.gguf_file is {cfg.model.gguf_file} but model.path is not set: name the folder that holds it")
    if cfg.task.chat_template:
        _check_chat_template(cfg)
    if cfg.logging.wandb:
        _check_wandb()
    return stages


def _check_learns_something(name: str, stage: DictConfig, algo: Algorithm) -> None:
    """A stage whose algorithm would learn nothing (its declared ``min_samples_per_prompt``)."""
    need = getattr(algo, "min_samples_per_prompt", 1)
    n = stage.data.samples_per_prompt
    if n < need:
        raise ConfigError(f"stages.{name}.data.samples_per_prompt={n}: {stage.algorithm} learns nothing from fewer than "
                          f"{need} outputs per question (its min_samples_per_prompt)")
    if need > 1 and stage.generation.temperature == 0:
        raise ConfigError(f"stages.{name}.generation.temperature=0: greedy sampling makes the {n} outputs of a question "
                          f"identical, and {stage.algorithm} learns nothing from identical outputs")


def _check_task(cfg: DictConfig, where: str) -> None:
    """The task of ``cfg.task`` builds, and every row of its files parses (a problem or two of the
    synthetic task are drawn); errors name ``where`` + the key."""
    try:
        task = build_task(cfg)
        task.eval_examples()
        if hasattr(task, "train_examples"):
            task.train_examples()
        next(iter(task.train_stream(0)))
    except (ConfigError, DataError) as e:
        if not where:
            raise
        raise type(e)(f"{where}{e}" if str(e).startswith("task.") else f"{where}task: {e}") from None


def _check_init(cfg: DictConfig, name: str, init: str, earlier: list[str]) -> None:
    """A stage's ``init`` folder holds a model. An earlier stage named as ``init``, or the folder an
    earlier stage of this run writes, is not there yet (the name is checked by validate)."""
    out = Path(cfg.output_dir or f"runs/{cfg.name}").resolve()
    if init in cfg.stages or any(Path(init).expanduser().resolve() == out / e / "final" for e in earlier):
        return
    check_model_folder(init, f"stages.{name}.init")


def _check_chat_template(cfg: DictConfig) -> None:
    """``task.chat_template`` needs a tokenizer with one: the embedded tiny model's has none."""
    if not cfg.model.path:
        raise ConfigError("task.chat_template is true, but the embedded tiny model's tokenizer has no chat template "
                          "(it is for instruct models: set model.path)")
    path, gguf_file = resolve_model(cfg.model.path, cfg.model.gguf_file)
    folder = Path(path).expanduser()
    if gguf_file or any((folder / n).is_file() for n in ("chat_template.jinja", "chat_template.json")):
        return
    try:
        has = "chat_template" in json.loads((folder / "tokenizer_config.json").read_text())
    except (OSError, ValueError):
        has = False
    if not has:
        raise ConfigError(f"task.chat_template is true, but the tokenizer of {cfg.model.path} has no chat template")


def _check_wandb() -> None:
    """``logging.wandb`` can start: wandb is installed and, unless WANDB_MODE is offline, logged in."""
    import importlib.util
    import os

    if importlib.util.find_spec("wandb") is None:
        raise ConfigError("logging.wandb is true but wandb is not installed: pip install wandb")
    if os.environ.get("WANDB_MODE", "").lower() in ("offline", "disabled", "dryrun"):
        return
    import wandb

    try:
        logged_in = wandb.login(verify=False, prompt=False)
    except Exception as e:  # noqa: BLE001 - wandb's own errors (a malformed key)
        raise ConfigError(f"logging.wandb: {str(e).splitlines()[0]}; run `wandb login`, or set WANDB_MODE=offline") from None
    if not logged_in:
        raise ConfigError("logging.wandb is true but wandb has no API key: run `wandb login`, or set WANDB_MODE=offline")


def _check_model_references(cfg: DictConfig, name: str, stage: DictConfig) -> None:
    """A reward model named in a stage's reward (``kwargs.model``) is an earlier reward-model stage or a folder."""
    spec = OmegaConf.to_container(stage.reward, resolve=True)
    names = list(cfg.stages)
    for f in spec.get("functions") or [spec]:
        ref = (f.get("kwargs") or {}).get("model")
        if ref is None:
            continue
        if ref in cfg.stages:
            if ref not in names[: names.index(name)] or cfg.stages[ref].kind != "reward_model":
                raise ConfigError(f"stages.{name}.reward: model '{ref}' is not an earlier reward-model stage")
        elif not Path(ref).expanduser().is_dir():
            raise ConfigError(f"stages.{name}.reward: model {ref} is neither a reward-model stage of this run nor a folder")


def validate_reward_model_stage(cfg: DictConfig, name: str, stage: DictConfig) -> None:
    """What a reward-model stage needs: its grader, its step rule, and model references that exist."""
    from rlzoo.steps import STEP_RULES

    rm = stage.reward_model
    make_reward(stage)
    STEP_RULES.get(rm.step_rule)
    names = list(cfg.stages)
    earlier = names[: names.index(name)]
    for key, ref, kind in (("policy", rm.policy, "policy"), ("init", rm.init, "reward_model")):
        if ref is None:
            continue
        if ref in cfg.stages:
            if ref not in earlier or cfg.stages[ref].kind != kind:
                raise ConfigError(f"stages.{name}.reward_model.{key}: '{ref}' is not an earlier {kind.replace('_', '-')} stage")
        elif not Path(ref).expanduser().is_dir():
            raise ConfigError(f"stages.{name}.reward_model.{key}: {ref} is neither a stage of this run nor a folder")
    for ref in rm.replay_from:
        if ref not in earlier or cfg.stages[ref].kind != "reward_model":
            raise ConfigError(f"stages.{name}.reward_model.replay_from: '{ref}' is not an earlier reward-model stage")
    if rm.labels == "oracle" and (cfg.task.name != "synthetic"):
        raise ConfigError(f"stages.{name}.reward_model.labels: oracle step labels exist for the embedded task only (task.name: synthetic)")


def train(cfg: DictConfig, *, resume: bool = False, overwrite: bool = False) -> dict[str, Any]:
    """Run every stage of ``cfg``; returns the summary (also written to summary.json).

    The run folder (``output_dir`` or ``runs/<name>``) holds one run: a folder that holds one
    already needs ``resume`` (continue from its newest checkpoint, docs/runs.md) or ``overwrite``.
    Under ``torchrun``/``accelerate launch`` every process runs this; only the main one writes
    files, and every number it writes is reduced over all processes first. SIGINT and SIGTERM
    finish the current step, write a checkpoint and stop (:class:`rlzoo.errors.Interrupted`).
    """
    from accelerate.utils import set_seed

    run_cfg = expand_iterative(cfg)  # the stages as run; the config as stored stays as written
    stages = validate(run_cfg)
    names = [name for name, _, _ in stages]
    dist = init_distributed()
    folder = RunFolder(Path(cfg.output_dir or f"runs/{cfg.name}"), dist.is_main)
    config_yaml = to_yaml(cfg)
    point = _on_main(dist, lambda: folder.prepare(config_yaml, OmegaConf.to_container(cfg, resolve=True), names,
                                                  resume=resume, overwrite=overwrite))
    try:
        return _train(run_cfg, stages, dist, folder, config_yaml, point, set_seed)
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


def _train(cfg, stages, dist, folder, config_yaml, point, set_seed) -> dict[str, Any]:
    out = folder.path
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    set_seed(cfg.seed)
    task = build_task(cfg)
    eval_examples = task.eval_examples()
    trained = point.trained if point else []
    lm, tokenizer = (None, None) if trained else initial_model(cfg, task)
    if dist.is_main:
        if lm is not None:
            folder.check_space(checkpoint_bytes(cfg, lm))
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
    logger = started.get("logger")
    summary: dict[str, Any] = {"stages": list(point.summary) if point else []}
    evaluated = {s["name"] for s in summary["stages"]}
    global_step = 0
    names = [n for n, _, _ in stages]
    kinds = {n: s.kind for n, s, _ in stages}

    def policy_weights(index: int):
        """(lm, tokenizer) the stage at ``index`` starts from, when not in memory: the final folder of
        the last policy stage before it, or the initial model."""
        before = [n for n in names[:index] if kinds[n] == "policy"]
        return load_stage_result(out / before[-1] / "final", cfg.model.dtype) if before else initial_model(cfg, task)

    def resolve(ref: str) -> Path:
        """A model reference: an earlier stage's name means its final folder."""
        return out / ref / "final" if ref in kinds else Path(ref).expanduser()

    try:
        with stop_on_signals() as stop:
            for index, (name, stage, algo) in enumerate(stages):
                if name in trained:
                    if stage.kind == "policy":
                        lm = None  # loaded from its final folder when needed
                    if name not in evaluated:  # trained, but stopped before its evaluation
                        result = read_state(out / name / "final")["result"]
                        if stage.kind == "policy":
                            lm, tokenizer = load_stage_result(out / name / "final", cfg.model.dtype)
                            result["eval"] = evaluate_stage(cfg, lm, tokenizer, eval_examples, dist, mixed_precision=cfg.mixed_precision)
                            _log_eval(logger, name, stage.steps, result["eval"], global_step + stage.steps)
                        summary["stages"].append(result)
                        _write_summary(dist, out, summary)
                    global_step += stage.steps
                    continue
                if stage.kind == "reward_model":
                    if lm is None:
                        lm, tokenizer = policy_weights(index)
                    from rlzoo.runtime.reward_stage import run_reward_model_stage

                    held_out = eval_examples[: stage.reward_model.eval_questions]
                    if cfg.task.chat_template:
                        from rlzoo.data.templates import apply_chat_template

                        held_out = apply_chat_template(held_out, tokenizer)
                    result = run_reward_model_stage(cfg, name, index, stage, lm, tokenizer,
                                                    stage_prompts(cfg, name, index, stage, task, tokenizer), held_out,
                                                    make_reward(stage, out, names), logger, out, config_yaml, global_step,
                                                    stop, resolve)
                    _log_eval(logger, name, stage.steps, result["eval"], global_step + stage.steps)
                else:
                    if stage.init:  # a folder, or an earlier policy stage's name
                        lm, tokenizer = load_stage_result(resolve(stage.init), cfg.model.dtype)
                    elif lm is None:  # the previous stage finished in an earlier session
                        lm, tokenizer = policy_weights(index)
                    checkpoint = point.checkpoint if point and point.checkpoint and point.checkpoint.parent.name == name else None
                    result, lm = run_stage(cfg, name, index, stage, algo, lm, tokenizer, task, eval_examples, logger, out,
                                           config_yaml, global_step, checkpoint, stop, stage_base(cfg, out, index, stage, names, kinds))
                global_step += stage.steps
                summary["stages"].append(result)
                _write_summary(dist, out, summary)
    finally:
        if logger is not None:
            logger.close()
    return summary


def stage_base(cfg: DictConfig, out: Path, index: int, stage: DictConfig, names: list[str], kinds: dict[str, str]) -> dict:
    """Where the weights a stage starts from are stored: ``{"path", "gguf_file"}``, the path
    relative to the stage's final folder when it lies in the run folder (which may then move).
    A LoRA stage saves its adapters with it (rlzoo_base.json)."""
    import os

    before = [n for n in names[:index] if kinds[n] == "policy"]
    if stage.init in kinds:
        return {"path": os.path.relpath(out / stage.init / "final", out / names[index] / "final"), "gguf_file": None}
    if stage.init:
        return {"path": str(Path(stage.init).expanduser().resolve()), "gguf_file": None}
    if before:
        path = out / before[-1] / "final"
    elif cfg.model.path:
        folder, gguf_file = resolve_model(cfg.model.path, cfg.model.gguf_file)
        return {"path": str(Path(folder).expanduser().resolve()), "gguf_file": gguf_file}
    else:
        path = out / "initial"
    return {"path": os.path.relpath(path, out / names[index] / "final"), "gguf_file": None}


def _write_summary(dist, out: Path, summary: dict) -> None:
    if dist.is_main:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))


def _log_eval(logger, name: str, step: int, evaluation: dict, global_step: int) -> None:
    if logger is not None:
        logger.log({"stage": name, "step": step, **{f"eval/{k}": v for k, v in evaluation.items()}}, global_step)


def checkpoint_bytes(cfg: DictConfig, lm: torch.nn.Module) -> float:
    """About how much disk the run's checkpoints take at most: per stage ``save_total_limit`` step
    checkpoints (weights and two Adam moments in fp32, twice for a stage with a value model) and
    one final model."""
    params = sum(p.numel() for p in lm.parameters())
    total = 0.0
    for stage in cfg.stages.values():
        models = 2 if stage.algorithm == "ppo" else 1
        kept = stage.save_total_limit if stage.save_every else 0
        total += params * 4 * (3 * models * (kept + 1) + 1)  # + 1 while a new checkpoint replaces an old one
    return total


def evaluate_stage(cfg, lm, tokenizer, eval_examples, dist, *, mixed_precision: str) -> dict[str, float]:
    """The held-out evaluation of a stage's final weights, under the run's autocast."""
    from rlzoo.runtime.stage import make_accelerator

    accelerator = make_accelerator(mixed_precision)
    lm.to(accelerator.device).eval()
    with accelerator.autocast():
        return run_eval(cfg, lm, tokenizer, eval_examples, make_eval_reward(cfg), dist)


def stage_prompts(cfg, name: str, index: int, stage, task, tokenizer):
    """The training questions of the stage at ``index``: one seeded stream, the same on every
    process, through the model's chat template when ``task.chat_template`` is on."""
    prompts = stage_task(cfg, name, stage, task).train_stream((cfg.seed + index) * 1000)
    if cfg.task.chat_template:
        from rlzoo.data.templates import chat_stream

        prompts = chat_stream(prompts, tokenizer)
    return prompts


def run_stage(cfg, name, index, stage, algo, lm, tokenizer, task, eval_examples, logger, out, config_yaml,
              global_step, checkpoint, stop, base) -> tuple[dict[str, Any], torch.nn.Module]:
    """Train ``lm`` for one stage (from ``checkpoint`` if given); its summary entry and the trained LM."""
    from tqdm.auto import tqdm

    from rlzoo.runtime.sampling import mix_seed

    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
    seed = cfg.seed + index
    st = build_stage(name, stage, algo, lm, tokenizer, stage_prompts(cfg, name, index, stage, task, tokenizer), model_cfg=cfg.model, mixed_precision=cfg.mixed_precision,
                     seed=seed, sample_seed=mix_seed(cfg.seed, index, "rollouts"), reward=make_reward(stage, out, list(cfg.stages)),
                     score=score_batch)
    st.global_step = global_step
    if checkpoint is not None:
        st.load(checkpoint)
    dist, device = st.dist, st.accelerator.device
    eval_reward = make_eval_reward(cfg)
    bar = tqdm(total=stage.steps, initial=st.step, desc=f"{name} ({stage.algorithm})",
               disable=not (cfg.logging.progress and dist.is_main), dynamic_ncols=True)
    guard = NonfiniteGuard(name, stage.optim.max_nonfinite_steps, out / name)
    while st.step < stage.steps:
        metrics = train_step(st)
        step = st.step
        all_skipped = bool(metrics.get("train/skipped_nonfinite", 0)) and "optim/grad_norm" in metrics \
            and all(not math.isfinite(v) for k, v in metrics.items() if k.startswith("optim/grad_norm"))
        if stage.eval_every and step % stage.eval_every == 0 and step < stage.steps:
            evaluation = st.autocast(run_eval, cfg, st.lm, tokenizer, eval_examples, eval_reward, dist)
            metrics.update({f"eval/{k}": v for k, v in evaluation.items()})
        if logger is not None and step % cfg.logging.log_every == 0:
            logger.log({"stage": name, "step": step, **metrics}, st.global_step)
        bar.update(1)
        bar.set_postfix({k.split("/")[-1]: f"{metrics[k]:.3f}" for k in ("reward/mean", "loss/policy") if k in metrics})
        guard.update(step, all_skipped)
        if stage.save_every and step % stage.save_every == 0:
            st.save(out / name, stage.save_total_limit, config_yaml)
        if stop.requested(dist):
            if not (stage.save_every and step % stage.save_every == 0):
                st.save(out / name, stage.save_total_limit, config_yaml)
            raise Interrupted(f"stopped at stage {name} step {step}; checkpoint {out / name / f'checkpoint-{step}'}; "
                              "continue with the same command and --resume")
    bar.close()
    result = {"name": name, "algorithm": stage.algorithm, "steps": stage.steps, "wall_seconds": round(st.seconds_trained, 2),
              "peak_memory_mb": round(peak_memory_mb(device), 1)}
    save_final(st, out / name / "final", tokenizer, config_yaml, result, base)  # before the evaluation: a trained stage is never lost
    eval_metrics = st.autocast(run_eval, cfg, st.lm, tokenizer, eval_examples, eval_reward, dist)
    _log_eval(logger, name, stage.steps, eval_metrics, st.global_step)
    return {**result, "eval": eval_metrics}, st.close()


def save_final(st, folder: Path, tokenizer, config_yaml: str, result: dict, base: dict) -> None:
    """The main process writes the stage's final model folder (a LoRA stage: its adapters and
    where their base is); the others wait for it."""
    if st.dist.is_main:
        with written(folder) as tmp:
            save_model(st.lm, tokenizer, tmp, base)
            (tmp / CONFIG_NAME).write_text(config_yaml)
            write_state(tmp, {"stage": st.name, "step": st.step, "global_step": st.global_step, "result": result})
    st.dist.barrier()
