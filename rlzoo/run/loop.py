"""What every stage of a run shares: its context, the one step loop and the one final-folder writer.

A policy stage (:mod:`rlzoo.run.policy_stage`) and a reward-model stage
(:mod:`rlzoo.run.reward_model_stage`) differ in what one step does; everything around the step is
here, once:

* :class:`RunContext`  what a stage is handed instead of a dozen positional parameters: the run's
  config, folder, processes, logger, stop flag, task and held-out set;
* :func:`run_steps`    the step loop: log every ``logging.log_every`` steps, evaluate every
  ``eval_every``, apply the stop rules (:class:`StopRules`), write a step checkpoint every
  ``save_every``, and honour a stop request (SIGINT/SIGTERM) after the step in progress;
* :func:`write_final`  the stage's ``final/`` folder, written atomically by the main process.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from rlzoo.errors import Interrupted, TrainingStopped, say


@dataclass
class RunContext:
    """A run as its stages see it.

    cfg            the run config as run (iterative RL expanded)
    out            the run folder
    dist           this process and the collectives (:class:`rlzoo.runtime.distributed.Dist`)
    logger         the metrics logger (main process), else None
    config_yaml    the config as stored, written into every checkpoint and final folder
    stop           the stop flag of SIGINT/SIGTERM (:func:`rlzoo.runtime.signals.stop_on_signals`)
    task           the run's task (``train_stream``, ``eval_examples``)
    eval_examples  the held-out set
    kinds          stage name -> ``policy`` or ``reward_model``, in run order
    eval_sets      the extra held-out sets of ``eval.sets``: name -> examples (evaluated beside the main one)
    """

    cfg: Any
    out: Path
    dist: Any
    logger: Any
    config_yaml: str
    stop: Any
    task: Any
    eval_examples: list
    kinds: dict[str, str]
    eval_sets: dict[str, list] = field(default_factory=dict)

    @property
    def names(self) -> list[str]:
        return list(self.kinds)

    def resolve(self, ref: str) -> Path:
        """A model reference: an earlier stage's name means its final folder, else a folder."""
        return self.out / ref / "final" if ref in self.kinds else Path(ref).expanduser()

    def log(self, name: str, step: int, metrics: dict[str, float], global_step: int) -> None:
        if self.logger is not None:
            self.logger.log({"stage": name, "step": step, **metrics}, global_step)

    def log_eval(self, name: str, step: int, evaluation: dict[str, float], global_step: int) -> None:
        self.log(name, step, {f"eval/{k}": v for k, v in evaluation.items()}, global_step)


class StopRules:
    """Stops a stage that has stopped learning, with one line naming why (``optim.max_nonfinite_steps``
    steps in a row; 0 = never):

    * every optimizer update of the step was skipped for a non-finite gradient (a NaN in any
      model's gradient, the value model's included; a step with several minibatches counts when
      all of them were skipped), read from ``train/optimizer_steps`` and ``train/skipped_nonfinite``;
    * the reward skipped every completion of the step (``reward/skipped_frac`` = 1: nothing to
      train on), or of an offline pool (``pool/skipped_frac`` = 1, at once: the pool is all there is).

    The line names the stage, the step and its last good checkpoint in ``stage_dir`` (a stage
    without step checkpoints: ``checkpoints=False``).
    """

    def __init__(self, name: str, limit: int, stage_dir: Path, *, reward: str = "", checkpoints: bool = True,
                 on_divergence: str = "warn", loss: str = "loss/policy") -> None:
        self.name, self.limit, self.stage_dir, self.reward = name, limit, Path(stage_dir), reward
        self.hint = " (save_every)" if checkpoints else ""
        self.nonfinite = self.empty = 0
        self.on_divergence, self.loss, self.losses = on_divergence, loss, []

    def update(self, step: int, metrics: dict[str, float]) -> None:
        if metrics.get(self.loss) is not None and math.isfinite(metrics[self.loss]):
            self.losses.append(metrics[self.loss])
        updates = metrics.get("train/optimizer_steps", 0.0)
        skipped = updates > 0 and metrics.get("train/skipped_nonfinite", 0.0) >= updates
        self.nonfinite = self.nonfinite + 1 if skipped else 0
        self.empty = self.empty + 1 if metrics.get("reward/skipped_frac") == 1.0 else 0
        if metrics.get("pool/skipped_frac") == 1.0:
            self._stop(step, f"the reward '{self.reward}' skipped every completion of the offline pool (it returned None "
                             "for all of them): there is nothing to train on")
        if not self.limit:
            return
        if self.nonfinite >= self.limit:
            self._stop(step, f"{self.nonfinite} steps in a row had a non-finite gradient and were skipped (learning rate too high?)")
        if self.empty >= self.limit:
            self._stop(step, f"{self.empty} steps in a row had nothing to train on: the reward '{self.reward}' skipped every "
                             "completion (it returned None for all of them)")

    def finish(self, step: int) -> None:
        """At the end of the stage: a loss whose mean over the last tenth of the logged steps is
        more than twice, and more than 1 above, its mean over the first tenth has diverged (a
        learning rate too high drives an SFT loss of 6 to 13-32). ``on_divergence``: ``warn``
        prints one line, ``stop`` stops the run with it (the final folder is not written), ``off``."""
        n = max(len(self.losses) // 10, 1)
        if self.on_divergence == "off" or len(self.losses) < 10:
            return
        first, last = sum(self.losses[:n]) / n, sum(self.losses[-n:]) / n
        if last > first + max(1.0, abs(first)):
            why = (f"{self.loss} rose from {first:.3g} (first {n} steps) to {last:.3g} (last {n}): "
                   "the training diverged (learning rate too high?)")
            if self.on_divergence == "stop":
                self._stop(step, why)
            say(f"rlzoo: warning: stage {self.name}: {why}; optim.on_divergence=stop makes this an error")

    def _stop(self, step: int, why: str) -> None:
        from rlzoo.runtime.checkpoint import checkpoints

        saved = checkpoints(self.stage_dir)
        keep = f"the last good checkpoint is {saved[-1][1]}" if saved else f"no checkpoint was written{self.hint}"
        raise TrainingStopped(f"stage {self.name} stopped at step {step}: {why}; {keep}")


def run_steps(ctx: RunContext, name: str, label: str, *, done: int, steps: int, global_step: int,
              step: Callable[[], dict[str, float]], rules: StopRules, stopped: Callable[[int], str],
              save: Callable[[int], None] | None = None, save_every: int = 0,
              evaluate: Callable[[], dict[str, float]] | None = None, eval_every: int = 0) -> None:
    """Steps ``done + 1`` .. ``steps`` of stage ``name``: ``step()`` does one and returns its metrics
    (the same on every process); ``global_step`` is the run's step count before the stage.

    After each step: held-out metrics every ``eval_every`` steps before the last (``evaluate``),
    a log line every ``logging.log_every``, the stop rules, a step checkpoint every ``save_every``
    (``save(step)``), and a stop request, which writes a checkpoint unless one was just written
    and raises :class:`rlzoo.errors.Interrupted` with ``stopped(step)``.
    """
    from tqdm.auto import tqdm

    cfg = ctx.cfg
    bar = tqdm(total=steps, initial=done, desc=label, disable=not (cfg.logging.progress and ctx.dist.is_main), dynamic_ncols=True)
    for s in range(done + 1, steps + 1):
        metrics = step()
        if evaluate is not None and eval_every and s % eval_every == 0 and s < steps:
            metrics.update({f"eval/{k}": v for k, v in evaluate().items()})
        if s % cfg.logging.log_every == 0:
            ctx.log(name, s, metrics, global_step + s)
        bar.update(1)
        bar.set_postfix({k.split("/")[-1]: f"{metrics[k]:.3f}" for k in ("reward/mean", "loss/policy", "rm/loss") if k in metrics})
        rules.update(s, metrics)
        saved = save is not None and save_every > 0 and s % save_every == 0
        if saved:
            save(s)
        if ctx.stop.requested(ctx.dist):
            if save is not None and not saved:
                save(s)
            raise Interrupted(stopped(s))
    bar.close()
    if ctx.dist.is_main or rules.on_divergence == "stop":
        rules.finish(steps)


def write_final(ctx: RunContext, name: str, save: Callable[[Path], None], state: dict[str, Any]) -> None:
    """The main process writes ``<run>/<name>/final`` atomically: ``save(folder)`` writes the model,
    then the config and the stage's state (``trainer_state.json``: step, global step, result); the
    other processes wait for it. A crash leaves the previous folder, or none, never half of one."""
    from rlzoo.runtime.checkpoint import CONFIG_NAME, write_state, written

    if ctx.dist.is_main:
        with written(ctx.out / name / "final") as tmp:
            save(tmp)
            (tmp / CONFIG_NAME).write_text(ctx.config_yaml)
            write_state(tmp, state)
    ctx.dist.barrier()
