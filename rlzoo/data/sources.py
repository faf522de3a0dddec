"""Data sources: where an algorithm's (q, o) pairs come from (the paper's "data source" column).

Every source has the same signature: built from a :class:`SourceContext`, it answers
``next_batch(step) -> (RolloutBatch, metrics)``.

* ``dataset``: questions with their reference solutions (SFT's data).
* ``online``: ``samples_per_prompt`` outputs per question sampled from the *current* policy at
  every step, then scored by the reward (Online RFT, PPO, GRPO).
* ``offline``: ``samples_per_prompt`` outputs for each of ``pool_prompts`` questions sampled once,
  at the start of the stage, from the stage's initial policy (the SFT model), scored, then served
  in batches of whole groups (RFT, DPO). With ``resample_every = N`` the pool is re-sampled from
  the current policy every N steps (iterative DPO / RFT).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from itertools import islice
from typing import Callable, Iterator

import torch

from rlzoo.interface import Example, RolloutBatch
from rlzoo.registry import register_data_source


class DataError(Exception):
    """Unusable data (a missing file, a bad row); ``str()`` is one line naming file and line."""


@dataclass
class SourceContext:
    """What a data source may use.

    prompts   endless iterator of training questions (never the held-out set)
    settings  the stage's ``data`` config (DataConfig)
    encode    (examples, completions) -> RolloutBatch of given texts
    sample    (examples, n) -> RolloutBatch of n outputs per question from the current policy
    score     fills ``batch.rewards`` in place and returns reward diagnostics
    seed      seed for the source's own shuffling
    """

    prompts: Iterator[Example]
    settings: object
    encode: Callable[[list[Example], list[str]], RolloutBatch]
    sample: Callable[[list[Example], int], RolloutBatch]
    score: Callable[[RolloutBatch], dict[str, float]]
    seed: int = 0


def sample_and_score(ctx: SourceContext, examples: list[Example], n: int) -> tuple[RolloutBatch, dict[str, float]]:
    """Sample ``n`` outputs per question with the current policy and score them, timed."""
    t0 = time.perf_counter()
    batch = ctx.sample(examples, n)
    t1 = time.perf_counter()
    metrics = ctx.score(batch)
    lengths = batch.completion_lengths.float()  # [N]
    metrics.update(
        {
            "time/generate": t1 - t0,
            "time/reward": time.perf_counter() - t1,
            "completion/length_mean": float(lengths.mean()),
            "completion/length_max": float(lengths.max()),
        }
    )
    return batch, metrics


@register_data_source("dataset")
class DatasetSource:
    """Questions with their reference solutions, ``prompts_per_step`` per step."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        examples = list(islice(self.ctx.prompts, self.ctx.settings.prompts_per_step))
        missing = [ex.prompt[:60] for ex in examples if ex.solution is None]
        if missing:
            raise DataError(f"data source 'dataset' needs reference solutions; none for: {missing[0]!r}")
        return self.ctx.encode(examples, [ex.solution for ex in examples]), {}


@register_data_source("online")
class OnlineSource:
    """``samples_per_prompt`` outputs per question from the current policy, every step."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        examples = list(islice(self.ctx.prompts, self.ctx.settings.prompts_per_step))
        return sample_and_score(self.ctx, examples, self.ctx.settings.samples_per_prompt)


@register_data_source("offline")
class OfflineSource:
    """A pool sampled once from the stage's initial policy (re-sampled every ``resample_every``)."""

    def __init__(self, ctx: SourceContext) -> None:
        self.ctx = ctx
        self.pool: RolloutBatch | None = None
        self.order: list[int] = []
        self.generator = torch.Generator().manual_seed(ctx.seed)

    def _refill(self) -> dict[str, float]:
        s = self.ctx.settings
        examples = list(islice(self.ctx.prompts, s.pool_prompts))
        self.pool, metrics = sample_and_score(self.ctx, examples, s.samples_per_prompt)
        self.order = []
        return {f"pool/{k.split('/', 1)[1]}" if k.startswith("reward/") else k: v for k, v in metrics.items()}

    def next_batch(self, step: int) -> tuple[RolloutBatch, dict[str, float]]:
        s = self.ctx.settings
        metrics: dict[str, float] = {}
        if self.pool is None or (s.resample_every > 0 and step > 0 and step % s.resample_every == 0):
            metrics = self._refill()
        groups = torch.unique(self.pool.group_ids)  # [P]
        if len(self.order) < s.prompts_per_step:
            self.order += groups[torch.randperm(len(groups), generator=self.generator)].tolist()
        take, self.order = self.order[: s.prompts_per_step], self.order[s.prompts_per_step :]
        rows = torch.isin(self.pool.group_ids, torch.tensor(take, device=self.pool.group_ids.device)).nonzero().squeeze(-1)
        batch = self.pool.select(rows)
        finite = batch.rewards[~torch.isnan(batch.rewards)]
        metrics["reward/mean"] = float(finite.mean()) if len(finite) else float("nan")
        return batch, metrics
