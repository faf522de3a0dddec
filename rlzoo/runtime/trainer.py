"""The shared runtime of one stage: every algorithm runs through this loop unchanged.

One step:
    1. the data source yields a batch (reading, or sampling + scoring: ``time/generate``, ``time/reward``)
    2. reference / old log-probs, if the algorithm needs them (``time/reference``)
    3. ``algorithm.prepare`` (advantages, pairing, filtering)
    4. ``updates_per_batch`` passes; each pass splits the batch in ``minibatches`` optimizer steps;
       each minibatch accumulates gradients over micro-batches of ``micro_batch_size`` sequences
       (``time/train``). For every micro-batch: log-probs with grad, ``coef = algorithm.
       coefficients(batch, logp.detach())``, loss ``-aggregate(coef * logp)`` normalised by the
       minibatch's totals (so accumulation equals the full minibatch exactly), plus the
       algorithm's extra loss, if any.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from rlzoo.interface import RolloutBatch
from rlzoo.losses import AGG_MODES, surrogate_loss
from rlzoo.runtime.logprobs import token_logprobs


@dataclass
class Runtime:
    """The models and settings one stage trains with (the algorithms' ``RuntimeView``)."""

    accelerator: object
    policy: torch.nn.Module
    tokenizer: object
    reference: torch.nn.Module | None = None
    value_model: torch.nn.Module | None = None
    chunk_size: int = 4096
    micro_batch_size: int = 64
    extras: dict = field(default_factory=dict)

    def logprobs(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] token log-probs of ``model`` on ``batch`` (grad follows the caller's mode)."""
        return token_logprobs(model, batch.input_ids, batch.attention_mask, chunk_size=self.chunk_size)

    @torch.no_grad()
    def logprobs_nograd(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] log-probs computed micro-batch by micro-batch without grad."""
        parts = [self.logprobs(model, micro) for micro in split_rows(batch, self.micro_batch_size)]
        return torch.cat(parts)  # [N, T]

    def policy_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] log-probs of the current policy, without grad."""
        return self.logprobs_nograd(self.policy, batch)

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        if self.value_model is None:
            raise RuntimeError("this algorithm asked for values but declared no 'value_model' in its needs")
        if torch.is_grad_enabled():
            return self.value_model(batch.input_ids, batch.attention_mask)  # [N, T]
        parts = [self.value_model(m.input_ids, m.attention_mask) for m in split_rows(batch, self.micro_batch_size)]
        return torch.cat(parts)  # [N, T]


def split_rows(batch: RolloutBatch, size: int) -> list[RolloutBatch]:
    """Consecutive sub-batches of at most ``size`` rows."""
    return [batch.select(list(range(i, min(i + size, len(batch))))) for i in range(0, len(batch), size)]


def split_groups(batch: RolloutBatch, size: int) -> list[RolloutBatch]:
    """Sub-batches of whole groups, each of at most ``size`` rows unless one group is larger."""
    pieces, current, count = [], [], 0
    for g in torch.unique_consecutive(batch.group_ids).tolist():
        rows = (batch.group_ids == g).nonzero().squeeze(-1).tolist()
        if current and count + len(rows) > size:
            pieces.append(current)
            current, count = [], 0
        current += rows
        count += len(rows)
    if current:
        pieces.append(current)
    return [batch.select(rows) for rows in pieces]


def resolve_loss_agg(algorithm, configured: str | None) -> str:
    """The aggregation mode: the algorithm's pinned one, else the configured one, else the paper's."""
    pinned = getattr(algorithm, "loss_agg", None)
    if pinned is not None and configured is not None and configured != pinned:
        raise ValueError(f"optim.loss_agg={configured} conflicts with the algorithm, whose coefficients are derived for '{pinned}'")
    mode = pinned or configured or "seq-mean-token-mean"
    if mode not in AGG_MODES:
        raise ValueError(f"optim.loss_agg: unknown mode '{mode}'; known: {', '.join(AGG_MODES)}")
    return mode


def _minibatch_orders(batch: RolloutBatch, minibatches: int, group_coupled: bool, generator: torch.Generator) -> list[list[int]]:
    """Row indices of each minibatch of one shuffled pass (whole groups when coupled)."""
    if group_coupled:
        groups = torch.unique(batch.group_ids)
        perm = groups[torch.randperm(len(groups), generator=generator)]
        chunks = perm.chunk(minibatches)
        return [torch.isin(batch.group_ids, c.to(batch.group_ids.device)).nonzero().squeeze(-1).tolist() for c in chunks]
    if minibatches == 1:
        return [list(range(len(batch)))]
    perm = torch.randperm(len(batch), generator=generator)
    return [c.tolist() for c in perm.chunk(minibatches)]


class _MeanMeter:
    """Row-weighted means of per-micro-batch diagnostics."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)

    def add(self, metrics: dict[str, float], weight: float) -> None:
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                self.sums[k] += v * weight
                self.weights[k] += weight

    def means(self) -> dict[str, float]:
        return {k: self.sums[k] / self.weights[k] for k in self.sums if self.weights[k] > 0}


def train_on_batch(
    rt: Runtime,
    algorithm,
    batch: RolloutBatch,
    optimizer: torch.optim.Optimizer,
    optim_cfg,
    loss_agg: str,
    agg_constant: float | None,
    generator: torch.Generator,
) -> dict[str, float]:
    """All policy updates on one prepared batch; returns averaged diagnostics."""
    acc = rt.accelerator
    needs = algorithm.needs
    reuse = optim_cfg.updates_per_batch > 1 or optim_cfg.minibatches > 1
    if "old_logprobs" in needs and batch.old_logprobs is None and reuse:
        batch.old_logprobs = rt.logprobs_nograd(rt.policy, batch)  # [N, T]
    splitter = split_groups if algorithm.group_coupled else split_rows
    meter = _MeanMeter()
    for _ in range(optim_cfg.updates_per_batch):
        for rows in _minibatch_orders(batch, optim_cfg.minibatches, algorithm.group_coupled, generator):
            minibatch = batch.select(rows)
            totals = {
                "num_seqs": float(len(minibatch)),
                "num_tokens": float(minibatch.loss_mask.sum()),
                "constant": agg_constant,
            }
            optimizer.zero_grad(set_to_none=True)
            micros = splitter(minibatch, optim_cfg.micro_batch_size)
            for i, micro in enumerate(micros):
                sync = acc.no_sync(rt.policy) if i < len(micros) - 1 else _nullcontext()
                with sync:
                    logp = rt.logprobs(rt.policy, micro)  # [n, T]
                    if "old_logprobs" in needs and micro.old_logprobs is None:
                        micro.old_logprobs = logp.detach()  # on-policy: pi_old = pi_theta, ratio 1
                    coef, metrics = algorithm.coefficients(micro, logp.detach())  # [n, T]
                    loss = surrogate_loss(coef, logp, micro.loss_mask, loss_agg, **totals)
                    share = len(micro) / len(minibatch)
                    acc.backward(loss)  # the policy graph is freed before the extra term is built
                    extra, extra_metrics = algorithm.extra_loss(micro, rt)
                    if extra is not None:
                        acc.backward(share * extra)
                metrics = {**metrics, **extra_metrics, "loss/policy": float(loss.detach()) / share}
                if extra is not None:
                    metrics["loss/extra"] = float(extra.detach())
                meter.add(metrics, len(micro))
            meter.add(clip_param_groups(acc, optimizer, optim_cfg.grad_clip), 1.0)
            optimizer.step()
    return meter.means()


def clip_param_groups(acc, optimizer: torch.optim.Optimizer, max_norm: float) -> dict[str, float]:
    """Clip each param group's gradient norm on its own (a value model's gradients never shrink
    the policy's step); returns the norms before clipping: ``optim/grad_norm`` for the first
    group (the policy), ``optim/grad_norm_<name>`` for the others."""
    norms = {}
    for i, group in enumerate(optimizer.param_groups):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        if max_norm > 0:
            norm = acc.clip_grad_norm_(params, max_norm)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params]))
        norms["optim/grad_norm" if i == 0 else f"optim/grad_norm_{group.get('name', i)}"] = float(norm)
    return norms


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def lr_lambda(schedule: str, warmup: int, total: int):
    """Multiplier of the peak learning rate at each step: linear warm-up, then the schedule."""
    if schedule not in ("constant", "linear", "cosine"):
        raise ValueError(f"optim.schedule: unknown schedule '{schedule}'; known: constant, linear, cosine")

    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        if schedule == "linear":
            return max(0.0, 1.0 - progress)
        if schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
        return 1.0

    return f


def timed(metrics: dict[str, float], key: str):
    """Context manager adding the elapsed seconds to ``metrics[key]``."""

    class _Timer:
        def __enter__(self):
            self.t0 = time.perf_counter()

        def __exit__(self, *exc):
            metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - self.t0
            return False

    return _Timer()
