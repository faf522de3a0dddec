"""SFT: supervised fine-tuning on reference solutions (DeepSeekMath Sec. 5.2.1, App. A.1.1).

Paper's row:
    data source    q, o from the SFT dataset           -> ``dataset`` (the task's solutions)
    reward         none
    gradient coef  GC(q, o, t) = 1

With the default aggregation (seq-mean-token-mean) the loss is the paper's
``-1/N sum_i 1/|o_i| sum_t log pi(o_t | q, o_<t)``: each solution weighs the same whatever its
length. ``optim.loss_agg=token-mean`` gives the per-token average most SFT trainers use.
Departures from the paper: none.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


@register_algorithm("sft")
class SFT(NoExtras):
    """Maximum likelihood on the data source's completions."""

    @dataclass
    class Config:
        """SFT has no hyperparameters of its own (learning rate etc. are in the stage's optim)."""

    data_source = "dataset"
    needs: frozenset[str] = frozenset()
    loss_agg = None
    group_coupled = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return torch.ones_like(logp), {}  # [N, T]
