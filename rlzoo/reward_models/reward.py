"""Learned reward models as rewards: ``reward.name: orm`` or ``prm`` (DeepSeekMath Sec. 4.1.2-4.1.3).

A reward model (:mod:`rlzoo.reward_models.model`) scores the batch's own token ids, in micro-batches
without gradients, on the device the batch is on; it is loaded once, on first use, per stage.

* ``orm``: the probability (sigmoid of the score) at each completion's last token.
* ``prm``: the probability at the end of every reasoning step (``step_rule``, :mod:`rlzoo.reward_models.steps`):
  these are the batch's step rewards (``batch.step_rewards`` at ``batch.step_ends``), which GRPO
  with ``supervision: process`` and PPO with ``supervision: process`` train on; the completion's
  own reward (for outcome supervision, logging and weighted sums) is their ``aggregate``: ``min``
  (default: a solution is as good as its worst step), ``last`` or ``prod``.

``model`` is a reward model folder or the name of an earlier reward-model stage of the run.

    reward: {name: prm, kwargs: {model: prm, step_rule: line}}

Two remedies for reward hacking (docs/reward_models.md) are options of both:

* an **ensemble**: ``model`` a list of reward models (folders or stage names, e.g. two stages
  trained on different samples); each token's probability is their ``ensemble`` (``mean``, or
  ``min``, the worst case: a sample must fool every model; Coste et al. 2023);
* **score clipping**: ``clip: [lo, hi]`` bounds every probability (a completion's value and each
  step reward), so the policy gains nothing by pushing a score past ``hi``.

    reward: {name: orm, kwargs: {model: [orm, orm_b], ensemble: min, clip: [0.0, 0.5]}}

* ``oracle_prm``: no model, the embedded task's exact step oracle
  (:func:`rlzoo.data.synthetic.step_oracle`): 1 at the end of every step on a correct path, 0 at
  every other step end; the completion's value is 1 when every step is right. It gives step
  rewards as ``prm`` does, so ``supervision: process`` trains on it: the upper bound of process
  supervision (a PRM that never errs). The embedded task only, without tool rounds.

    reward: {name: oracle_prm, kwargs: {step_rule: line}}
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlzoo.registry import register_reward

AGGREGATES = ("min", "last", "prod")
ENSEMBLES = ("mean", "min")


@dataclass
class ModelScores:
    """What a model reward gives a batch: a value per completion, and per-step rewards for a PRM.

    values        N completion rewards
    step_rewards  [N, T] each step's reward at its last token, 0 elsewhere (None for an ORM)
    step_ends     [N, T] 1.0 at each step's last token (None for an ORM)
    """

    values: list[float]
    step_rewards: torch.Tensor | None = None
    step_ends: torch.Tensor | None = None


class _ModelReward:
    """A reward model, loaded on first use, scoring whole batches (``needs_batch``)."""

    needs_batch = True
    process = False

    def __init__(self, model: str | list[str], batch_size: int = 32, dtype: str = "float32", ensemble: str = "mean",
                 clip: list[float] | None = None) -> None:
        from rlzoo.errors import ConfigError

        self.paths = [model] if isinstance(model, str) else list(model)
        if not self.paths or not all(isinstance(p, str) for p in self.paths):
            raise ConfigError(f"reward {self.name}: model must be a folder or stage name, or a list of them; got {model!r}")
        if ensemble not in ENSEMBLES:
            raise ConfigError(f"reward {self.name}: ensemble must be one of {', '.join(ENSEMBLES)}; got '{ensemble}'")
        if clip is not None and not (isinstance(clip, (list, tuple)) and len(clip) == 2 and all(isinstance(c, (int, float)) for c in clip) and 0 <= clip[0] < clip[1] <= 1):
            raise ConfigError(f"reward {self.name}: clip must be [lo, hi] with 0 <= lo < hi <= 1; got {clip!r}")
        self.batch_size, self.dtype, self.ensemble, self.clip = batch_size, dtype, ensemble, clip
        self._models: list | None = None
        self._tokenizer = None

    def _load(self, device) -> None:
        if self._models is None:
            from rlzoo.reward_models.model import load_reward_model
            from rlzoo.runtime.models import load_pretrained

            self._models = [load_reward_model(p, self.dtype).to(device).eval() for p in self.paths]
            _, self._tokenizer = load_pretrained(self.paths[0], dtype=self.dtype, tokenizer_only=True)

    def token_probs(self, batch) -> torch.Tensor:
        """[N, T] sigmoid of the reward model's score at every token (the ensemble's, clipped), in micro-batches."""
        from rlzoo.reward_models.model import token_probs

        self._load(batch.input_ids.device)
        probs = torch.stack([token_probs(m, batch.input_ids, batch.attention_mask, self.batch_size) for m in self._models])
        probs = probs.mean(0) if self.ensemble == "mean" else probs.min(0).values  # [N, T]
        return probs.clamp(*self.clip) if self.clip is not None else probs


@register_reward("orm")
class OutcomeModelReward(_ModelReward):
    """An outcome reward model: the probability it gives each completion at its last token."""

    name = "orm"

    def __call__(self, batch) -> ModelScores:
        from rlzoo.reward_models.model import outcome_scores

        return ModelScores(outcome_scores(self.token_probs(batch), batch.attention_mask).tolist())


@register_reward("prm")
class ProcessModelReward(_ModelReward):
    """A process reward model: the probability it gives each reasoning step, at the step's last token."""

    process = True

    name = "prm"

    def __init__(self, model: str | list[str], step_rule: str = "line", aggregate: str = "min", batch_size: int = 32,
                 dtype: str = "float32", ensemble: str = "mean", clip: list[float] | None = None) -> None:
        from rlzoo.errors import ConfigError
        from rlzoo.reward_models.steps import STEP_RULES

        super().__init__(model, batch_size, dtype, ensemble, clip)
        if aggregate not in AGGREGATES:
            raise ConfigError(f"reward prm: aggregate must be one of {', '.join(AGGREGATES)}; got '{aggregate}'")
        STEP_RULES.get(step_rule)
        self.step_rule, self.aggregate = step_rule, aggregate

    def __call__(self, batch) -> ModelScores:
        from rlzoo.reward_models.model import per_step, step_scores
        from rlzoo.reward_models.steps import step_end_mask

        probs = self.token_probs(batch)  # [N, T]
        ends = step_end_mask(batch, self._tokenizer, self.step_rule).to(probs.device)  # [N, T]
        step_rewards = step_scores(probs, ends)  # [N, T]
        values = []
        for steps in per_step(probs, ends):
            if not steps:
                values.append(0.0)
            elif self.aggregate == "min":
                values.append(min(steps))
            elif self.aggregate == "last":
                values.append(steps[-1])
            else:
                values.append(float(torch.tensor(steps).prod()))
        return ModelScores(values, step_rewards, ends)


@register_reward("oracle_prm")
class OracleProcessReward:
    """The exact step oracle as a process reward: each step end's reward is the oracle's verdict on
    the solution up to there (:func:`rlzoo.reward_models.labels.oracle_labels`), 1.0 or 0.0; the
    completion's value is 1.0 when every step is right (it has at least one). Built with the
    policy's tokenizer (``needs_tokenizer``), which puts the steps on the batch's tokens.

    For the problem 8 - 6 = 2, 2 * 3 = 6 and the line rule::

        ' 8 - 6 = 2.\\n2 * 3 = 6.\\nThe answer is \\\\boxed{6}.'   step rewards 1, 1, 1   value 1
        ' 8 - 6 = 2.\\n2 * 3 = 7.\\nThe answer is \\\\boxed{7}.'   step rewards 1, 0, 0   value 0
    """

    needs_batch = True
    process = True
    needs_tokenizer = True

    def __init__(self, tokenizer=None, step_rule: str = "line") -> None:
        from rlzoo.reward_models.steps import STEP_RULES

        STEP_RULES.get(step_rule)
        self.tokenizer, self.step_rule = tokenizer, step_rule

    def __call__(self, batch) -> ModelScores:
        from rlzoo.data.synthetic import step_oracle
        from rlzoo.errors import ConfigError
        from rlzoo.reward_models.labels import oracle_labels
        from rlzoo.reward_models.steps import batch_steps, end_mask

        if self.tokenizer is None:
            raise ConfigError("reward oracle_prm needs the policy's tokenizer: build it through rlzoo.rewards.make_reward(spec, tokenizer)")
        rows = batch_steps(batch, self.tokenizer, self.step_rule)
        ends = end_mask(batch, rows)  # [N, T]
        step_rewards = oracle_labels(batch, rows, step_oracle)  # [N, T] 1.0 at a right step's end
        right = (step_rewards * ends).sum(-1)  # [N]
        values = [float(n > 0 and r == n) for r, n in zip(right.tolist(), ends.sum(-1).tolist())]
        return ModelScores(values, step_rewards, ends)
