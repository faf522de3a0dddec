"""Policy updates on one prepared batch: the single surrogate loss, exact under data parallel.

``train_on_batch`` runs ``updates_per_batch`` passes over the batch; each pass splits the *global*
batch (every rank's rows) into ``minibatches`` optimizer steps by one seeded permutation that is the
same on every rank, so the minibatches are the ones a single process would form. Each rank
accumulates gradients over micro-batches of ``micro_batch_size`` of its own rows of a minibatch.
For every micro-batch: log-probs with grad through the wrapped model, ``coef =
algorithm.coefficients(micro, logp.detach())``, loss ``-aggregate(coef * logp)`` normalised by the
minibatch's totals over all ranks, times the world size (DDP averages gradients; the sum is
wanted), then the algorithm's extra per-token loss (a token mean over the minibatch). A rank
holding no row of a minibatch takes part in the gradient all-reduce with a zero loss.

After the micro-batches: gradients are unscaled once (fp16), each parameter group is clipped on
its own, and a step whose gradient norm is not finite is not applied (``train/skipped_nonfinite``).
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Callable, ContextManager

import torch

from rlzoo.functional import TokenMean
from rlzoo.interface import RolloutBatch
from rlzoo.losses import AGG_MODES, aggregate, surrogate_loss
from rlzoo.runtime.distributed import Dist, metric_weight


@dataclass
class Runtime:
    """The models one stage trains with, and what algorithms may use of them (``RuntimeView``).

    policy      the prepared :class:`~rlzoo.runtime.models.LogProbModel` (DDP-wrapped on several ranks)
    reference   a frozen LogProbModel (not prepared: no DDP, not checkpointed), run under the
                policy's autocast by ``reference_logprobs``, or None
    value_model the prepared value model, or None
    """

    accelerator: object
    policy: torch.nn.Module
    tokenizer: object = None
    reference: torch.nn.Module | None = None
    value_model: torch.nn.Module | None = None
    micro_batch_size: int = 64
    dist: Dist | None = None
    reference_is_base: bool = False  # a LoRA policy: the reference is the policy with its adapters off (no copy)
    data_source: str = "dataset"  # the stage's data source (RuntimeView.data_source)
    rows_checked: bool = False  # check_rows_independent has run for this stage's algorithm
    sharded: bool = False  # parallel: fsdp: policy, reference and value model are FSDP2-sharded, not prepared by accelerate

    def __post_init__(self) -> None:
        if self.dist is None:
            self.dist = Dist()

    # -- log-probs and values ------------------------------------------------------------------

    def logprobs(self, batch: RolloutBatch, model: torch.nn.Module | None = None) -> torch.Tensor:
        """[N, T] token log-probs of ``model`` (default: the policy) at the batch's temperature;
        grad follows the caller's mode. Columns that are padding in every row are not computed, nor
        are those before the first trained token of any row (0 there): the prompts, each computed
        once for the rows that share it (:func:`~rlzoo.runtime.logprobs.token_logprobs`)."""
        model = self.policy if model is None else model
        lo, hi = _real_columns(batch.attention_mask)
        prefix = _real_columns(batch.loss_mask)[0] - lo  # the first column any row trains on (0: none does)
        logp = model(batch.input_ids[:, lo:hi], batch.attention_mask[:, lo:hi], batch.temperature, max(prefix, 0))  # [N, hi - lo]
        return torch.nn.functional.pad(logp, (lo, batch.input_ids.shape[1] - hi))  # [N, T]

    @torch.no_grad()
    def logprobs_nograd(self, model: torch.nn.Module, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] log-probs micro-batch by micro-batch without grad, through the unwrapped model
        (no DDP collective, the same autocast)."""
        model = getattr(model, "module", model)
        parts = [self.logprobs(micro, model) for micro in split_rows(batch, self.micro_batch_size)]
        return torch.cat(parts) if parts else torch.zeros_like(batch.loss_mask)  # [N, T]

    def policy_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] log-probs of the current policy, without grad."""
        return self.logprobs_nograd(self.policy, batch)

    def reference_logprobs(self, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] log-probs of the frozen reference, under the policy's autocast, without grad: a
        frozen copy, or, for a LoRA policy, the policy itself with its adapters switched off."""
        if self.reference_is_base:
            with getattr(self.policy, "module", self.policy).lm.disable_adapter():
                return self.logprobs_nograd(self.policy, batch)
        with self.accelerator.autocast():
            return self.logprobs_nograd(self.reference, batch)

    def values(self, batch: RolloutBatch) -> torch.Tensor:
        """[N, T] value-model outputs: with grad through the wrapped model when grad is enabled,
        else micro-batched without grad."""
        if self.value_model is None:
            raise RuntimeError("this algorithm asked for values but declared no 'value_model' in its needs")
        if torch.is_grad_enabled():
            return self.value_model(batch.input_ids, batch.attention_mask)  # [N, T]
        model = getattr(self.value_model, "module", self.value_model)
        parts = [model(m.input_ids, m.attention_mask) for m in split_rows(batch, self.micro_batch_size)]
        return torch.cat(parts) if parts else torch.zeros_like(batch.loss_mask)  # [N, T]

    def reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """``values`` summed elementwise over every rank (for global batch statistics)."""
        return self.dist.sum(values.detach().cpu()).to(values.dtype).to(values.device)

    # -- distribution --------------------------------------------------------------------------

    def gathered(self, *models: torch.nn.Module | None):
        """A block in which the sharded ``models`` hold their whole weights, so that each process
        runs its own number of no-grad passes (every process enters it; a no-op without sharding)."""
        if not self.sharded:
            return contextlib.nullcontext()
        from rlzoo.runtime.sharding import gathered

        return gathered(*models)

    def models_with_grad(self) -> list[torch.nn.Module]:
        return [m for m in (self.policy, self.value_model) if m is not None]

    def sync_gradients(self, sync: bool):
        """A context in which backward passes all-reduce gradients (``sync``) or only accumulate."""
        stack = contextlib.ExitStack()
        if not sync:
            for model in self.models_with_grad():
                stack.enter_context(self.accelerator.no_sync(model))
        return stack

    def zero_backward(self, model: torch.nn.Module | None = None) -> None:
        """A forward and backward of a zero loss through ``model`` (default: every trained model,
        in the order of a real micro-batch), so that a rank with fewer rows than its peers takes
        part in their collectives (gradient all-reduce, bucket rebuild) with a contribution of 0."""
        ids = torch.full((1, 2), self.tokenizer.pad_token_id, dtype=torch.long, device=self.accelerator.device)
        mask = torch.ones_like(ids)
        for m in [model] if model is not None else self.models_with_grad():
            self.accelerator.backward(0.0 * m(ids, mask).sum())


@contextlib.contextmanager
def timed(metrics: dict[str, float], key: str):
    """Adds the seconds the block takes to ``metrics[key]``."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        metrics[key] = metrics.get(key, 0.0) + time.perf_counter() - t0


def _real_columns(attention_mask: torch.Tensor) -> tuple[int, int]:
    """[lo, hi): the columns where some row has a real token (outside, every row is padding); of a
    loss mask, where some row has a trained token. (0, T) when no row has any."""
    any_real = attention_mask.bool().any(0).nonzero().squeeze(-1)  # [T']
    if len(any_real) == 0:
        return 0, attention_mask.shape[1]
    return int(any_real[0]), int(any_real[-1]) + 1


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
    pinned = algorithm.loss_agg
    if pinned is not None and configured is not None and configured != pinned:
        raise ValueError(f"optim.loss_agg={configured} conflicts with the algorithm, whose coefficients are derived for '{pinned}'")
    mode = pinned or configured or "seq-mean-token-mean"
    if mode not in AGG_MODES:
        raise ValueError(f"optim.loss_agg: unknown mode '{mode}'; known: {', '.join(AGG_MODES)}")
    return mode


def minibatch_rows(batch: RolloutBatch, minibatches: int, group_coupled: bool, generator: torch.Generator,
                   dist: Dist) -> list[list[int]]:
    """This rank's row indices of each minibatch of one shuffled pass over the global batch.

    The global batch is put in a canonical order, by group id (a row keeps its place within its
    group), whatever the process count and whatever order ``prepare`` left the rows in. One
    permutation of it (of its groups when coupled) is drawn from ``generator``, whose state is
    the same on every rank, and cut into ``minibatches`` chunks: minibatch k holds the rows a
    single process holding the whole batch would put there; each rank keeps its own of them.
    """
    if minibatches == 1:
        return [list(range(len(batch)))]
    ids = batch.group_ids.tolist()
    everyone = dist.gather(ids)  # every rank's group ids, in rank order
    if group_coupled:
        groups = torch.tensor(sorted({g for part in everyone for g in part}), dtype=torch.long)  # [G]
        chunks = [set(c.tolist()) for c in groups[torch.randperm(len(groups), generator=generator)].chunk(minibatches)]
        return [[i for i, g in enumerate(ids) if g in chunk] for chunk in chunks]
    canonical = sorted((g, r, i) for r, part in enumerate(everyone) for i, g in enumerate(part))  # (group, rank, row)
    perm = torch.randperm(len(canonical), generator=generator)  # [N_global]
    chunks = perm.chunk(minibatches) if len(perm) else [perm] * minibatches
    return [sorted(canonical[j][2] for j in c.tolist() if canonical[j][1] == dist.rank) for c in chunks]


class _Means:
    """Weighted sums of per-micro-batch diagnostics on this rank: a mean over tokens
    (:class:`~rlzoo.functional.TokenMean`) weighted by its tokens, any other value by the rows of
    its micro-batch (:func:`~rlzoo.runtime.distributed.metric_weight`). Non-finite values are left out."""

    def __init__(self) -> None:
        self.sums: dict[str, float] = defaultdict(float)
        self.weights: dict[str, float] = defaultdict(float)
        self.token_means: set[str] = set()

    def add(self, metrics: dict[str, float], rows: float) -> None:
        for k, v in metrics.items():
            if v is not None and math.isfinite(v):
                weight = metric_weight(v, rows)
                self.sums[k] += float(v) * weight
                self.weights[k] += weight
                if isinstance(v, TokenMean):
                    self.token_means.add(k)

    def means(self) -> dict[str, float]:
        """Each metric's mean; a mean over tokens stays a TokenMean of all its tokens, so that the
        reduction over processes weights it by them too."""
        out = {}
        for k, total in self.sums.items():
            if self.weights[k] > 0:
                mean = total / self.weights[k]
                out[k] = TokenMean(mean, self.weights[k]) if k in self.token_means else mean
        return out


def _copy_or_none(algorithm):
    """A deep copy of ``algorithm``, or None when it cannot be copied (it holds a lock, a process
    group...): then the rows check is skipped rather than the run stopped."""
    try:
        return copy.deepcopy(algorithm)
    except Exception:  # noqa: BLE001 - whatever a plugin holds
        return None


def check_rows_independent(algorithm, micro: RolloutBatch, logp: torch.Tensor, coef: torch.Tensor) -> None:
    """The trainer cuts minibatches into micro-batches wherever ``optim.micro_batch_size`` falls, so a
    row's coefficient must not depend on which other rows share its micro-batch (unless the
    algorithm is ``group_coupled``, whose groups are kept whole). Checked once per stage on a real
    micro-batch: its coefficients, computed again on its two halves, must be the same. A group
    statistic computed in ``coefficients`` (a baseline over the rows it sees) fails here, in one
    line, instead of training on wrong advantages without a word; it belongs in ``prepare``.
    ``algorithm`` is a copy taken before the micro-batch's own call, so an algorithm that keeps
    state across calls is checked from the state that call saw and is itself left untouched."""
    half = len(micro) // 2
    parts = [copy.deepcopy(algorithm).coefficients(micro.select(rows), logp[rows])[0]  # each half from the same state (copyable: checked by the caller)
             for rows in (list(range(half)), list(range(half, len(micro))))]
    again = torch.cat(parts)  # [n, T]
    if not torch.allclose(again.float(), coef.float(), rtol=1e-4, atol=1e-6, equal_nan=True):  # NaN: the non-finite guard's case
        from rlzoo.errors import ConfigError

        name = getattr(algorithm, "name", type(algorithm).__name__)
        raise ConfigError(f"algorithm {name}: coefficients() of a row depend on the other rows of its micro-batch "
                          f"(max difference {float((again - coef).abs().max()):.3g}); compute group statistics in "
                          "prepare(), which sees whole groups (docs/interface.md), or set group_coupled = True")


def train_on_batch(
    rt: Runtime,
    algorithm,
    batch: RolloutBatch,
    optimizer: torch.optim.Optimizer,
    optim_cfg,
    loss_agg: str,
    agg_constant: float | None,
    generator: torch.Generator,
    timings: dict[str, float] | None = None,
) -> tuple[dict[str, float], float, dict[str, float]]:
    """All policy updates on one prepared batch (this rank's rows of it).

    Returns (means of this rank's diagnostics, the rows they weigh, global metrics that are
    already the same on every rank: losses, gradient norms, skipped steps). A diagnostic that is a
    mean over tokens (``masked_mean``) is averaged over micro-batches by tokens and returned as a
    :class:`~rlzoo.functional.TokenMean` of all of them (the rows do not weigh it), so it is the
    same whatever the micro-batch size and the process count. ``timings``, when given, gets the
    seconds spent in the policy's forward passes, backward passes and optimizer steps added to
    ``time/forward``, ``time/backward`` and ``time/optimizer``.
    """
    clock = {} if timings is None else timings
    acc, dist = rt.accelerator, rt.dist
    splitter = split_groups if algorithm.group_coupled else split_rows
    meter = _Means()
    losses = torch.zeros(3, dtype=torch.float64)  # this rank's share of the policy and extra losses, summed over steps; has-extra
    norms: dict[str, list[float]] = defaultdict(list)
    steps = skipped = overflows = 0
    has_extra = False
    for _ in range(optim_cfg.updates_per_batch):
        for rows in minibatch_rows(batch, optim_cfg.minibatches, algorithm.group_coupled, generator, dist):
            minibatch = batch.select(rows)
            micros = splitter(minibatch, optim_cfg.micro_batch_size)
            counts = dist.gather((len(minibatch), float(minibatch.loss_mask.sum()), len(micros)))  # every rank's
            num_seqs, num_tokens = sum(c[0] for c in counts), sum(c[1] for c in counts)
            if num_seqs == 0:
                continue  # an empty minibatch on every rank (more minibatches than rows)
            totals = {"num_seqs": num_seqs, "num_tokens": num_tokens, "constant": agg_constant}
            optimizer.zero_grad(set_to_none=True)

            def backward(micro: RolloutBatch) -> None:
                nonlocal has_extra
                with timed(clock, "time/forward"):
                    logp = rt.logprobs(micro)  # [n, T] with grad, through the wrapped model
                if "old_logprobs" in algorithm.needs and micro.old_logprobs is None:
                    micro.old_logprobs = logp.detach()  # used once: pi_old is this very pass, ratio exactly 1
                checking = not rt.rows_checked and not algorithm.group_coupled and len(micro) > 1
                before = _copy_or_none(algorithm) if checking else None  # its state as this call finds it
                rt.rows_checked = rt.rows_checked or (checking and before is None)  # cannot be copied: not checked
                checking = before is not None
                coef, metrics = algorithm.coefficients(micro, logp.detach())  # [n, T]
                if checking:
                    check_rows_independent(before, micro, logp.detach(), coef)
                    rt.rows_checked = True
                loss = surrogate_loss(coef, logp, micro.loss_mask, loss_agg, **totals)
                with timed(clock, "time/backward"):
                    acc.backward(loss * dist.world)  # DDP averages over ranks; the sum over ranks is the loss
                extra, extra_metrics = algorithm.extra_loss(micro, rt)  # [n, T] or None
                if extra is not None:
                    extra = aggregate(extra, micro.loss_mask, "token-mean", num_tokens=num_tokens)
                    with timed(clock, "time/backward"):
                        acc.backward(extra * dist.world)
                    has_extra = True
                    losses[1] += float(extra.detach())
                elif rt.value_model is not None:
                    rt.zero_backward(rt.value_model)  # the value model's all-reduce still takes place
                losses[0] += float(loss.detach())
                meter.add({**metrics, **extra_metrics}, len(micro))

            accumulate(micros, max(c[2] for c in counts), rt.sync_gradients, rt.zero_backward, backward)
            with timed(clock, "time/optimizer"):
                group_norms = clip_param_groups(acc, optimizer, optim_cfg.grad_clip)
                outcome = optimizer_step(acc, optimizer, group_norms)
            for k, v in group_norms.items():
                norms[k].append(v)
            steps += 1
            overflows += outcome == "overflow"
            skipped += outcome == "skipped"
    losses[2] = float(has_extra)
    total = dist.sum(losses).tolist()
    shared = {k: sum(v) / len(v) for k, v in norms.items()}
    if steps:
        shared["loss/policy"] = total[0] / steps
        if total[2]:
            shared["loss/extra"] = total[1] / steps
    shared["train/optimizer_steps"] = float(steps)
    shared["train/skipped_nonfinite"] = float(skipped)
    if getattr(acc, "scaler", None) is not None:
        shared["optim/fp16_overflow_steps"] = float(overflows)
    return meter.means(), float(len(batch)), shared


def accumulate(micros: list, rounds: int, sync: Callable[[bool], ContextManager], zero_backward: Callable[[], None],
               backward: Callable[[Any], None]) -> None:
    """Gradient accumulation over this rank's ``micros`` in ``rounds`` rounds, the same number on
    every rank (the busiest rank's count): round i runs ``backward(micros[i])``, or, past this
    rank's own micro-batches, ``zero_backward()`` (a zero loss through every trained model), so
    that the DDP collectives come in the same order everywhere; gradients are all-reduced in the
    last round only (``sync(last)`` is the context of a round)."""
    for i in range(rounds):
        with sync(i == rounds - 1):
            if i < len(micros):
                backward(micros[i])
            else:
                zero_backward()


def optimizer_step(acc, optimizer: torch.optim.Optimizer, norms: dict[str, float]) -> str:
    """Apply the clipped gradients unless a norm (:func:`clip_param_groups`) is not finite: returns
    ``stepped``, ``skipped`` (a non-finite gradient, dropped: it never reaches the weights) or, under
    fp16, ``overflow`` (the loss scaler skipped the step and lowered its scale)."""
    if getattr(acc, "scaler", None) is not None:
        optimizer.step()
        return "overflow" if getattr(optimizer, "step_was_skipped", False) else "stepped"
    if all(math.isfinite(v) for v in norms.values()):
        optimizer.step()
        return "stepped"
    optimizer.zero_grad(set_to_none=True)
    return "skipped"


def clip_param_groups(acc, optimizer: torch.optim.Optimizer, max_norm: float) -> dict[str, float]:
    """Unscale the gradients once (fp16), then clip each param group's gradient norm on its own
    (a value model's gradients never shrink the policy's step); returns the norms before clipping:
    ``optim/grad_norm`` for the first group (the policy), ``optim/grad_norm_<name>`` for the others.

    Sharded (``parallel: fsdp``), the gradients are DTensors and each norm is that of the whole
    gradient over every process's shard (a collective), so clipping is the unsharded run's.
    """
    acc.unscale_gradients(optimizer)
    norms = {}
    for i, group in enumerate(optimizer.param_groups):
        params = [p for p in group["params"] if p.grad is not None]
        if not params:
            continue
        norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))  # sharded: over the whole gradient
        if hasattr(norm, "full_tensor"):  # a DTensor (FSDP2): the same number on every process
            norm = norm.full_tensor()
        norms["optim/grad_norm" if i == 0 else f"optim/grad_norm_{group.get('name', i)}"] = float(norm)
    return norms
