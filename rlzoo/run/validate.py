"""Everything ``rlzoo train`` checks before any work, so that a mistake costs one line and no
trained step (README, "Mistakes cost one line").
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from rlzoo.config import check_values, reward_specs, source_config
from rlzoo.errors import ConfigError, DataError, UserError, reason
from rlzoo.interface import Algorithm
from rlzoo.registry import DATA_SOURCES, load_plugin
from rlzoo.run.factories import (build_task, eval_set_task_config, make_algorithm, make_diagnostics, make_eval_reward,
                                 make_reward, stage_task_config, step_oracle)
from rlzoo.runtime.model_files import check_model_folder
from rlzoo.runtime.models import resolve_model
from rlzoo.runtime.trainer import resolve_loss_agg


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
        source = stage.data.source or algo.data_source
        source_config(source, DATA_SOURCES.get(source), stage.data.source_args, name)
        reward = make_reward(stage)
        try:
            make_diagnostics(stage)
        except UserError as e:
            raise ConfigError(f"stages.{name}.reward_diagnostics: {e}") from None
        _check_model_references(cfg, name, stage)
        if "step_rewards" in algo.needs and not reward.process:
            raise ConfigError(f"stages.{name}.reward: {stage.algorithm} with process supervision trains on step rewards: "
                              "use a process reward (reward.name: prm, or oracle_prm on the embedded task)")
        if any(f.name == "oracle_prm" for f in reward.functions) and step_oracle(cfg, stage) is None:
            raise ConfigError(f"stages.{name}.reward: oracle_prm grades steps with the embedded task's exact oracle: it needs "
                              "task.name: synthetic and generation.tool_rounds: 0")
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
    if cfg.parallel == "fsdp" and cfg.mixed_precision == "fp16":
        raise ConfigError("parallel: fsdp does not take mixed_precision: fp16 (its loss scaler does not handle sharded "
                          "gradients); use bf16")
    _check_task(cfg, "")
    for set_name in cfg.eval.sets:
        set_task = eval_set_task_config(cfg, set_name)
        check_values(set_task, f"eval.sets.{set_name}.")
        _check_task(OmegaConf.create({"task": set_task}), f"eval.sets.{set_name}.")
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
    need = algo.min_samples_per_prompt
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
        raise ConfigError(f"logging.wandb: {reason(e)}; run `wandb login`, or set WANDB_MODE=offline") from None
    if not logged_in:
        raise ConfigError("logging.wandb is true but wandb has no API key: run `wandb login`, or set WANDB_MODE=offline")


def _check_model_references(cfg: DictConfig, name: str, stage: DictConfig) -> None:
    """A reward model named in a stage's reward (``kwargs.model``) is an earlier reward-model stage or a folder."""
    names = list(cfg.stages)
    for f in reward_specs(OmegaConf.to_container(stage.reward, resolve=True)):
        refs = (f.get("kwargs") or {}).get("model")
        for ref in [refs] if isinstance(refs, str) else refs or []:  # a list: an ensemble
            if not isinstance(ref, str):
                raise ConfigError(f"stages.{name}.reward: model {ref!r} is not a folder or a stage name")
            if ref in cfg.stages:
                if ref not in names[: names.index(name)] or cfg.stages[ref].kind != "reward_model":
                    raise ConfigError(f"stages.{name}.reward: model '{ref}' is not an earlier reward-model stage")
            elif not Path(ref).expanduser().is_dir():
                raise ConfigError(f"stages.{name}.reward: model {ref} is neither a reward-model stage of this run nor a folder")


def validate_reward_model_stage(cfg: DictConfig, name: str, stage: DictConfig) -> None:
    """What a reward-model stage needs: its grader, its step rule, and model references that exist."""
    from rlzoo.reward_models.steps import STEP_RULES

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
    if rm.labels == "oracle" and step_oracle(cfg, stage) is None:
        if cfg.task.name == "synthetic":
            raise ConfigError(f"stages.{name}.reward_model.labels: oracle step labels grade reasoning steps, and with "
                              f"generation.tool_rounds={stage.generation.tool_rounds} a completion holds tool output: "
                              "use math_shepherd labels, or tool_rounds: 0")
        raise ConfigError(f"stages.{name}.reward_model.labels: oracle step labels exist for the embedded task only (task.name: synthetic)")
