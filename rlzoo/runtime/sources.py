"""Data sources: where an algorithm's (q, o) pairs come from (the paper's "data source" column).

Every source has the same signature: built from a :class:`SourceContext`, it answers
``next_batch(step) -> (RolloutBatch, metrics)`` with **this rank's** rows of the step's batch.

* ``dataset``: questions with their reference solutions (SFT's data).
* ``online``: ``samples_per_prompt`` outputs per question sampled from the *current* policy at
  every step, then scored by the reward (Online RFT, PPO, GRPO).
* ``offline``: ``samples_per_prompt`` outputs for each of ``pool_prompts`` questions sampled once,
  at the start of the stage, from the stage's initial policy (the SFT model), scored, then served
  in batches of whole groups (RFT, DPO). With ``resample_every = N`` the pool is re-sampled from
  the current policy every N steps (iterative DPO / RFT).
* ``dynamic``: DAPO's dynamic sampling: ``online`` rounds of ``prompts_per_step`` questions, keeping
  only informative groups (rewards not all equal), until ``prompts_per_step`` of them are kept or
  ``source_args.max_rounds`` rounds are spent.

The global batch never depends on the process count: questions come from one seeded stream that
every rank reads alike (:meth:`SourceContext.questions` keeps this rank's block of them), a
question's group id is its position in that stream, and each sample is drawn with a seed made of
that position (:mod:`rlzoo.runtime.sampling`). The offline pool is sampled in blocks, one per rank,
then gathered, so every rank holds the same pool and serves its block of each step's groups.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from itertools import islice
from types import SimpleNamespace
from typing import Any, Callable, Iterator

import torch

from rlzoo.config import AT_LEAST_1, allowed
from rlzoo.errors import DataError
from rlzoo.interface import Example, RolloutBatch
from rlzoo.registry import register_data_source
from rlzoo.runtime.distributed import Dist, MetricsReducer


@dataclass
class SourceContext:
    """What a data source may use.

    prompts   endless iterator of training questions (never the held-out set), the same on every rank
    settings  the stage's ``data`` config (DataConfig: prompts_per_step, samples_per_prompt, ...)
    args      the source's own settings: an instance of its ``Config`` dataclass filled from
              ``data.source_args`` and checked (``allowed`` ranges), or None for a source without one
    encode    (examples, completions, group ids) -> RolloutBatch of given texts
    sample    (examples, group ids, n) -> RolloutBatch of n outputs per question from the current
              policy, each row seeded by its question's group id and its sample index
    reward    the stage's reward: ``reward.score_batch(batch)`` fills ``batch.rewards`` (and, for a
              process reward, ``step_rewards`` and ``step_ends``) and returns reward diagnostics
    seed      seed for the source's own shuffling (the same on every rank)
    dist      this rank and the collectives (:class:`~rlzoo.runtime.distributed.Dist`)
    pad_token_id  for gathering batches of different widths
    diagnostics   rewards scored on the same samples but never trained on: name -> anything with
              ``score(examples, completions, completion_ids, batch=...)`` (a :class:`rlzoo.rewards.Reward`),
              logged as ``diag/<name>/mean`` (a learned reward's score beside the true accuracy)
    generated, generated_tokens  samples and completion tokens this rank generated so far (the budget)
    """

    prompts: Iterator[Example]
    settings: object
    encode: Callable[[list[Example], list[str], list[int]], RolloutBatch]
    sample: Callable[[list[Example], list[int], int], RolloutBatch]
    reward: Any
    seed: int = 0
    dist: Dist = field(default_factory=Dist)
    pad_token_id: int = 0
    position: int = 0  # questions taken from ``prompts`` so far (a question's group id is its position)
    diagnostics: dict[str, Any] = field(default_factory=dict)
    generated: int = 0
    generated_tokens: int = 0
    args: Any = None

    def questions(self, n: int) -> tuple[list[Example], list[int]]:
        """The next ``n`` questions of the stream: this rank's block of them, and their positions."""
        drawn = list(islice(self.prompts, n))
        if len(drawn) < n:
            raise DataError(f"the question stream ended after {self.position + len(drawn)} questions")
        positions = list(range(self.position, self.position + n))
        self.position += n
        block = self.dist.shard(n)
        return drawn[block], positions[block]


def sample_and_score(ctx: SourceContext, examples: list[Example], keys: list[int], n: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Sample ``n`` outputs per question with the current policy and score them, timed."""
    t0 = time.perf_counter()
    batch = ctx.sample(examples, keys, n)
    t1 = time.perf_counter()
    metrics = ctx.dist.together(lambda: ctx.reward.score_batch(batch) if len(batch) else {})  # a reward's error stops every rank alike
    metrics.update({"time/generate": t1 - t0, "time/reward": time.perf_counter() - t1})
    scored = [r for part in ctx.dist.gather(batch.rewards.tolist()) for r in part if r == r]  # every rank's; NaN: skipped
    if scored:  # what was sampled; reward/mean is logged of the rows the source returns (trained on)
        metrics["reward/sampled_mean"] = sum(scored) / len(scored)
    if len(batch):
        lengths = batch.completion_lengths.float()  # [N]
        metrics.update({"completion/length_mean": float(lengths.mean()), "completion/length_max": float(lengths.max())})
        metrics.update(tool_metrics(batch))
        metrics.update(diagnostic_metrics(ctx.diagnostics, batch))
        ctx.generated += len(batch)
        ctx.generated_tokens += int(lengths.sum())
    return batch, metrics


def diagnostic_metrics(diagnostics: dict[str, Any], batch: RolloutBatch) -> dict[str, float]:
    """``diag/<name>/mean``: the mean value each diagnostic reward gives the batch's samples
    (the ones it does not skip), which nothing trains on."""
    out = {}
    for name, reward in diagnostics.items():
        values, _ = reward.score(batch.examples, batch.completions, batch.completion_ids(), batch=batch)
        given = [v for v in values if v is not None]
        if given:
            out[f"diag/{name}/mean"] = sum(given) / len(given)
    return out


def tool_metrics(batch: RolloutBatch) -> dict[str, float]:
    """Of tool-integrated rollouts (none otherwise): ``tools/calls`` per sequence, ``tools/fail_frac``
    per call and ``time/tools``, the seconds the programs ran."""
    if "tool_calls" not in batch.extras:
        return {}
    calls = float(batch.extras["tool_calls"].sum())
    return {"tools/calls": calls / max(len(batch), 1),
            "tools/fail_frac": float(batch.extras["tool_failures"].sum()) / calls if calls else 0.0,
            "time/tools": float(batch.extras["tool_seconds"].sum())}


@register_data_source("dataset")
class DatasetSource:
    """Questions with their reference solutions, ``prompts_per_step`` per step."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        examples, keys = self.ctx.questions(self.ctx.settings.prompts_per_step)
        missing = [ex.prompt[:60] for ex in examples if ex.solution is None]
        if missing:
            raise DataError(f"data source 'dataset' needs reference solutions; none for: {missing[0]!r}")
        return self.ctx.encode(examples, [ex.solution for ex in examples], keys), {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass


@register_data_source("online")
class OnlineSource(DatasetSource):
    """``samples_per_prompt`` outputs per question from the current policy, every step."""

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        examples, keys = self.ctx.questions(self.ctx.settings.prompts_per_step)
        return sample_and_score(self.ctx, examples, keys, self.ctx.settings.samples_per_prompt)


def informative_groups(group_ids: list[int], rewards: list[float]) -> list[int]:
    """The ids, in increasing order, of the groups whose scored (non-NaN) rewards are not all equal.

    >>> informative_groups([3, 3, 5, 5, 7, 7], [1.0, 0.0, 1.0, 1.0, 0.5, float("nan")])
    [3]
    """
    seen: dict[int, set[float]] = {}
    for g, r in zip(group_ids, rewards):
        seen.setdefault(g, set()).update([r] if r == r else [])  # NaN != NaN: a skipped reward
    return sorted(g for g, values in seen.items() if len(values) > 1)


@register_data_source("dynamic")
class DynamicSource(DatasetSource):
    """DAPO's dynamic sampling (Yu et al. 2025, Sec. 3.2): a group whose rewards are all equal has
    zero advantage and teaches nothing, so it is dropped and sampling goes on (``samples_per_prompt``
    outputs for each of ``prompts_per_step`` new questions per round) until ``prompts_per_step``
    informative groups are kept, for ``max_rounds`` rounds at most (then the step trains on what it
    has). Informativeness is decided on every rank's rewards, gathered, and the first groups in
    question order are kept, so the global batch is the same whatever the process count. The
    surplus informative groups of the last round are dropped (as DAPO does)."""

    @dataclass
    class Config:
        max_rounds: int = allowed(4, AT_LEAST_1)  # sampling rounds of prompts_per_step questions per step at most

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        ctx, s = self.ctx, self.ctx.settings
        kept, chosen, sampled, reducer, times = [], [], [], MetricsReducer(), {}
        groups = informative = 0
        for rounds in range(1, ctx.args.max_rounds + 1):
            examples, keys = ctx.questions(s.prompts_per_step)
            batch, metrics = sample_and_score(ctx, examples, keys, s.samples_per_prompt)
            for k in [k for k in metrics if k.startswith("time/")]:
                times[k] = times.get(k, 0.0) + metrics.pop(k)
            reducer.add(metrics, len(batch))
            ids, rewards = [], []
            for rank_ids, rank_rewards in ctx.dist.gather((batch.group_ids.tolist(), batch.rewards.tolist())):
                ids, rewards = ids + rank_ids, rewards + rank_rewards  # every rank's rows: all ranks decide alike
            useful = informative_groups(ids, rewards)
            groups, informative = groups + len(set(ids)), informative + len(useful)
            sampled += [r for r in rewards if r == r]
            new = set(useful[: s.prompts_per_step - len(chosen)])  # the first in question order
            chosen += sorted(new)
            kept.append(batch.select([i for i, g in enumerate(batch.group_ids.tolist()) if g in new]))
            if len(chosen) >= s.prompts_per_step:
                break
        metrics = reducer.reduce(SimpleNamespace(gather=lambda values: [values]))  # over this rank's rounds, by rows
        metrics.update(times)
        metrics.update({"dynamic/rounds": float(rounds), "dynamic/groups_kept": float(len(chosen)),
                        "dynamic/informative_frac": informative / max(groups, 1),
                        "reward/sampled_mean": sum(sampled) / max(len(sampled), 1)})  # over every round
        return RolloutBatch.concat(kept, ctx.pad_token_id), metrics


@register_data_source("offline")
class OfflineSource:
    """A pool sampled once from the stage's initial policy (re-sampled every ``resample_every``),
    held whole by every rank and served in a seeded order of whole groups."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.pool: RolloutBatch | None = None
        self.order: list[int] = []  # group ids still to serve, in order
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def _refill(self) -> dict[str, float]:
        s = self.ctx.settings
        examples, keys = self.ctx.questions(s.pool_prompts)
        block, metrics = sample_and_score(self.ctx, examples, keys, s.samples_per_prompt)
        self.pool = RolloutBatch.concat(self.ctx.dist.gather(block.to("cpu")), self.ctx.pad_token_id).to(block.input_ids.device)
        self.order = []
        reducer = MetricsReducer()  # the pool's metrics over every rank's block
        reducer.add(metrics, len(block))
        metrics = reducer.reduce(self.ctx.dist)
        metrics = {f"pool/{k.split('/', 1)[1]}" if k.startswith("reward/") else k: v for k, v in metrics.items()}
        rewards = self.pool.rewards[~torch.isnan(self.pool.rewards)].double()  # [P * G] every rank's
        if len(rewards):
            metrics.update({"pool/mean": float(rewards.mean()), "pool/std": float(rewards.std()) if len(rewards) > 1 else 0.0})
        return metrics

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        s = self.ctx.settings
        metrics: dict[str, float] = {}
        if self.pool is None or (s.resample_every > 0 and step > 0 and step % s.resample_every == 0):
            metrics = self._refill()
        groups = torch.unique_consecutive(self.pool.group_ids)  # [P] in pool order
        if len(self.order) < s.prompts_per_step:
            self.order += groups[torch.randperm(len(groups), generator=self.generator)].tolist()
        take, self.order = self.order[: s.prompts_per_step], self.order[s.prompts_per_step :]
        ids = self.pool.group_ids.tolist()
        rows = [i for g in take[self.ctx.dist.shard(len(take))] for i, gi in enumerate(ids) if gi == g]  # in serving order
        return self.pool.select(rows), metrics

    def state_dict(self) -> dict[str, Any]:
        """The pool, its serving order and generator: what a resumed stage needs to go on exactly."""
        return {"pool": None if self.pool is None else self.pool.to("cpu"), "order": list(self.order),
                "generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.ctx.dist.device
        self.pool = None if state["pool"] is None else state["pool"].to(device)
        self.order = list(state["order"])
        self.generator.set_state(state["generator"])
