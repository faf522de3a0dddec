"""The things a run is made of, built from its config: the task, the first model, each stage's
algorithm, reward, question stream and base weights.

Every function reads the config and returns an object of a layer below (a task, a model, an
:class:`~rlzoo.interface.Algorithm`, a :class:`~rlzoo.rewards.Reward`); none trains anything.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterator

from omegaconf import DictConfig, OmegaConf

from rlzoo.config import HYPERPARAMETER_KEYS, TaskConfig, algorithm_config, check_hyperparameters, merge_section, reward_specs
from rlzoo.errors import ConfigError
from rlzoo.interface import Algorithm, check_algorithm
from rlzoo.registry import ALGORITHMS


def build_task(cfg: DictConfig):
    """The task object of ``cfg.task``: ``train_stream(seed)``, ``eval_examples()`` and ``corpus()``.

    ``synthetic`` is generated on the fly; ``gsm8k`` and ``math`` read their files (``task.files``),
    ``dataset`` the user's own prompt/answer file (``task.dataset``); docs/data.md.
    """
    from rlzoo.data.files import FILE_TASKS, FileTask

    try:
        if cfg.task.name == "synthetic":
            from rlzoo.data.synthetic import SyntheticTask

            return SyntheticTask(OmegaConf.to_object(cfg.task.synthetic))
        if cfg.task.name in FILE_TASKS:
            return FileTask(cfg.task.name, OmegaConf.to_object(cfg.task.files))
        if cfg.task.name == "dataset":
            from rlzoo.data.dataset import DatasetTask

            return DatasetTask(OmegaConf.to_object(cfg.task.dataset), chat_template=cfg.task.chat_template)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    raise ConfigError(f"task.name: unknown task '{cfg.task.name}'; known: synthetic, {', '.join(FILE_TASKS)}, dataset")


def eval_set_task_config(cfg: DictConfig, name: str) -> DictConfig:
    """The task of the extra held-out set ``eval.sets.<name>``: ``cfg.task`` with the set's overrides merged over it."""
    return merge_section(TaskConfig, [cfg.task, cfg.eval.sets[name]], f"eval.sets.{name}.")


def eval_sets(cfg: DictConfig) -> dict[str, list]:
    """The held-out examples of every extra set of ``eval.sets`` (out-of-domain variants of the task),
    by name; the run never trains on them (only the stage's own task feeds training)."""
    return {name: build_task(OmegaConf.create({"task": eval_set_task_config(cfg, name)})).eval_examples() for name in cfg.eval.sets}


def step_oracle(cfg: DictConfig, stage: DictConfig):
    """The task's exact step oracle, ``(example, step texts) -> verdicts``, or None when the task
    has none (only the embedded task does) or the stage's completions hold tool output
    (``generation.tool_rounds`` > 0: an output block is no reasoning step of the policy's, and the
    oracle would grade it, and every step after it, wrong)."""
    if cfg.task.name != "synthetic" or stage.generation.tool_rounds > 0:
        return None
    from rlzoo.data.synthetic import step_oracle as oracle

    return oracle


def initial_model(cfg: DictConfig, task):
    """(model, tokenizer) the first stage starts from."""
    from rlzoo.runtime.models import build_tiny_model, load_pretrained, resolve_model

    if cfg.model.path:
        return load_pretrained(*resolve_model(cfg.model.path, cfg.model.gguf_file), cfg.model.dtype)
    from rlzoo.data.tokenizer import build_tokenizer

    tokenizer = build_tokenizer(task.corpus(), vocab_size=cfg.model.tiny.vocab_size)
    return build_tiny_model(OmegaConf.to_object(cfg.model.tiny), tokenizer), tokenizer


def stage_task_config(cfg: DictConfig, name: str, stage: DictConfig) -> DictConfig:
    """``cfg.task`` with ``stage.task`` merged over it, validated against the task schema."""
    return merge_section(TaskConfig, [cfg.task, stage.task], f"stages.{name}.task.")


def stage_task(cfg: DictConfig, name: str, stage: DictConfig, task):
    """The task a stage draws training questions from: the run's, or the run's with ``stage.task``
    merged over it (a curriculum); the held-out set is always the run's."""
    if not stage.task:
        return task
    from rlzoo.data.synthetic import question_key

    merged = build_task(OmegaConf.create({"task": stage_task_config(cfg, name, stage)}))
    return _HeldOutFiltered(merged, {question_key(ex.prompt) for ex in task.eval_examples()})


class _HeldOutFiltered:
    """A stage's task whose training stream never yields a question of the run's held-out set
    (compared without the format hint, so a question in another format is caught too)."""

    def __init__(self, task, held_out: set[str]) -> None:
        self.task, self.held_out = task, held_out

    def train_stream(self, seed: int):
        from rlzoo.data.synthetic import question_key

        return (ex for ex in self.task.train_stream(seed) if question_key(ex.prompt) not in self.held_out)


def stage_prompts(cfg: DictConfig, name: str, index: int, stage: DictConfig, task, tokenizer) -> Iterator:
    """The training questions of the stage at ``index``: one seeded stream, the same on every
    process, through the model's chat template when ``task.chat_template`` is on."""
    prompts = stage_task(cfg, name, stage, task).train_stream((cfg.seed + index) * 1000)
    if cfg.task.chat_template:
        from rlzoo.data.templates import chat_stream

        prompts = chat_stream(prompts, tokenizer)
    return prompts


def held_out(cfg: DictConfig, examples: list, tokenizer, limit: int | None = None) -> list:
    """The first ``limit`` held-out examples (all when None), through the chat template when on."""
    subset = examples[:limit] if limit else examples
    if cfg.task.chat_template:
        from rlzoo.data.templates import apply_chat_template

        subset = apply_chat_template(subset, tokenizer)
    return subset


def make_reward(stage_cfg: DictConfig, run_dir: Path | None = None, stage_names: list[str] = (), tokenizer=None):
    """The stage's :class:`rlzoo.rewards.Reward` (``reward.name`` or the weighted ``reward.functions``).

    A reward model's ``model`` that names a stage of the run means that stage's final folder;
    ``tokenizer`` is the policy's, for the rewards that read its tokens as text (``oracle_prm``)."""
    from rlzoo.rewards import make_reward as build

    spec = OmegaConf.to_container(stage_cfg.reward, resolve=True)
    for f in reward_specs(spec):
        model = (f.get("kwargs") or {}).get("model")
        if run_dir is not None and model is not None:  # a name, or a list of them (an ensemble)
            resolved = [str(run_dir / m / "final") if m in stage_names else m for m in ([model] if isinstance(model, str) else model)]
            f["kwargs"]["model"] = resolved[0] if isinstance(model, str) else resolved
    return build(spec, tokenizer)


def make_diagnostics(stage_cfg: DictConfig, tokenizer=None) -> dict:
    """The stage's diagnostic rewards (``reward_diagnostics``), name -> :class:`rlzoo.rewards.Reward`:
    scored on the stage's samples and logged, never trained on."""
    from rlzoo.rewards import make_reward as build

    return {name: build(name, tokenizer) for name in stage_cfg.reward_diagnostics}


def make_eval_reward(cfg: DictConfig):
    """The :class:`rlzoo.rewards.Reward` that grades held-out answers (``eval.reward``)."""
    from rlzoo.rewards import make_reward as build

    return build(cfg.eval.reward)


def make_algorithm(cfg: DictConfig, name: str, stage: str | None = None) -> Algorithm:
    """An instance of the algorithm ``name`` with its ``algorithms.<name>`` hyperparameters (and,
    for a stage, that stage's ``algorithm_args`` over them), checked against the interface."""
    cls = ALGORITHMS.get(name)
    args = (cfg.stages[stage].algorithm_args or {}) if stage is not None else {}
    token = HYPERPARAMETER_KEYS.set({key: f"stages.{stage}.algorithm_args.{key}" for key in args})
    try:
        config = algorithm_config(cfg, name, check_algorithm(name, cls), stage)
        check_hyperparameters(name, config)  # the allowed values its Config declares, a plugin's too
        algo = cls(config)
    finally:
        HYPERPARAMETER_KEYS.reset(token)
    check_algorithm(name, algo)
    return algo


def stage_base(cfg: DictConfig, out: Path, index: int, stage: DictConfig, kinds: dict[str, str]) -> dict[str, Any]:
    """Where the weights a stage starts from are stored: ``{"path", "gguf_file"}``, the path
    relative to the stage's final folder when it lies in the run folder (which may then move).
    A LoRA stage saves its adapters with it (rlzoo_base.json)."""
    from rlzoo.runtime.models import resolve_model

    names = list(kinds)
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


def checkpoint_bytes(cfg: DictConfig, lm, algorithms: list[Algorithm | None]) -> float:
    """About how much disk the run's checkpoints take at most: per stage ``save_total_limit`` step
    checkpoints (weights and two Adam moments in fp32, twice for a stage whose algorithm trains a
    value model) and one final model. ``algorithms``: each stage's, None for a reward-model stage."""
    params = sum(p.numel() for p in lm.parameters())
    total = 0.0
    for stage, algo in zip(cfg.stages.values(), algorithms):
        models = 2 if algo is not None and "value_model" in algo.needs else 1
        kept = stage.save_total_limit if stage.save_every else 0
        total += params * 4 * (3 * models * (kept + 1) + 1)  # + 1 while a new checkpoint replaces an old one
    return total
