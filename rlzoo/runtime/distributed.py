"""Data parallel, exactly: which rows a rank holds, and how numbers from every rank meet.

rlzoo's global batch is a property of the config, never of the process count. Each step draws its
questions from one seeded stream, identical on every rank; rank r keeps a contiguous block of them
(:meth:`Dist.shard`), with all the samples of a question. Normalisers of the loss (sequences,
tokens) and batch statistics are sums over all ranks (:meth:`Dist.sum`), and each rank's loss is
multiplied by the world size before DDP averages the gradients, so the update equals the one a
single process takes on the whole batch.

Metrics are reduced before the main process logs them (:class:`MetricsReducer`): time by max over
ranks, ``*_max`` / ``*_min`` by max / min, keys whose last part starts with ``num_`` by sum, and
every other value as a weighted mean (:func:`metric_weight`): a mean over tokens (a
:class:`~rlzoo.functional.TokenMean`, what ``masked_mean`` returns) weighted by its tokens, any
other value by the rows it was measured on. So ``kl/k3`` or ``policy/clip_frac`` is the mean over
every trained token of the batch, whatever its split into micro-batches and processes.

On one process (no ``torch.distributed`` group) every operation is the identity.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any, Callable

import torch
import torch.distributed as torch_dist

from rlzoo.functional import TokenMean


class Dist:
    """This process's rank in the world of processes, and collective operations over it."""

    def __init__(self, device: torch.device | str = "cpu") -> None:
        self.enabled = torch_dist.is_available() and torch_dist.is_initialized()
        self.rank = torch_dist.get_rank() if self.enabled else 0
        self.world = torch_dist.get_world_size() if self.enabled else 1
        self.device = torch.device(device)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous block of ``range(n)``: sizes differ by at most one, lower ranks first.

        >>> Dist().shard(5)
        slice(0, 5, None)
        """
        base, extra = divmod(n, self.world)
        start = self.rank * base + min(self.rank, extra)
        return slice(start, start + base + (self.rank < extra))

    def sum(self, values: torch.Tensor | list[float]) -> torch.Tensor:
        """Elementwise sum over ranks (a float64 tensor on the CPU)."""
        t = torch.as_tensor(values, dtype=torch.float64)
        if not self.enabled:
            return t
        t = t.to(self.device)
        torch_dist.all_reduce(t, op=torch_dist.ReduceOp.SUM)
        return t.cpu()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank (picklable objects)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world
        torch_dist.all_gather_object(out, obj)
        return out

    def together(self, fn: Callable[[], Any]) -> Any:
        """``fn()`` on every rank; a user error on any rank is raised on every rank, the same one
        (the lowest failing rank's), so that every process stops with the same one line instead of
        the others failing in their next collective. Every rank must call it at the same point."""
        from rlzoo.errors import UserError

        result, error = None, None
        try:
            result = fn()
        except UserError as e:
            error = e
        errors = [e for e in self.gather(error) if e is not None] if self.enabled else [error] if error else []
        if errors:
            raise errors[0]
        return result

    def barrier(self) -> None:
        if self.enabled:
            torch_dist.barrier()


def init_distributed() -> Dist:
    """Join the launcher's process group, if any (``torchrun`` or ``accelerate launch`` set
    ``WORLD_SIZE``): NCCL on GPUs, gloo on CPUs. Returns this process's :class:`Dist`."""
    from accelerate import PartialState

    state = PartialState(cpu=not torch.cuda.is_available())
    return Dist(state.device)


def reduction(key: str) -> str:
    """How a metric meets its values from several ranks: ``max``, ``min``, ``sum`` or ``mean``."""
    last = key.rsplit("/", 1)[-1]
    if key.startswith("time/") or last.endswith("_max"):
        return "max"
    if last.endswith("_min"):
        return "min"
    if last.startswith("num_"):
        return "sum"
    return "mean"


def metric_weight(value: float, rows: float) -> float:
    """The weight of one measurement of a metric in a mean: its tokens for a mean over tokens
    (:class:`~rlzoo.functional.TokenMean`), else ``rows``, the rows it was measured on."""
    return value.tokens if isinstance(value, TokenMean) else rows


class MetricsReducer:
    """Collects a step's metrics on each rank, with their weights (:func:`metric_weight`; ``weight``
    is the rows they were measured on), and reduces them over ranks (:func:`reduction`).
    Non-finite values are kept (the non-finite guard reads them); ``None`` is skipped."""

    def __init__(self) -> None:
        self.values: dict[str, list[tuple[float, float]]] = defaultdict(list)

    def add(self, metrics: dict[str, float], weight: float = 1.0) -> None:
        for k, v in metrics.items():
            if v is not None:
                self.values[k].append((float(v), float(metric_weight(v, weight))))

    def reduce(self, dist: Dist) -> dict[str, float]:
        """The step's metrics over every rank (the same dict on every rank)."""
        out: dict[str, float] = {}
        merged: dict[str, list[tuple[float, float]]] = defaultdict(list)
        for part in dist.gather(dict(self.values)):
            for k, pairs in part.items():
                merged[k] += pairs
        for k, pairs in merged.items():
            how = reduction(k)
            values = [v for v, _ in pairs]
            if how == "max":
                out[k] = max(values)
            elif how == "min":
                out[k] = min(values)
            elif how == "sum":
                out[k] = sum(values)
            else:
                total = sum(w for _, w in pairs)
                out[k] = sum(v * w for v, w in pairs) / total if total > 0 else sum(values) / len(values)
        return out
