"""A plugin for the fault tests (tests/test_faults.py): what goes wrong in a run, on purpose.

* ``nan_sft``: SFT whose coefficients are NaN from its ``nan_from``-th call on, as an algorithm
  whose numbers blow up would be; the runtime must skip those steps, never apply them.
* ``test_nan_reward``: a reward that returns NaN; ``test_some_none_reward``: a reward that gives no
  value (None) to every completion whose length is a multiple of 3, else its length's parity.

The data sources that hold a chosen batch (``gated_<source>``) are in kill_plugin.py.
"""

from dataclasses import dataclass

import torch

from rlzoo.interface import NoExtras
from rlzoo.registry import register_algorithm, register_reward


@register_algorithm("nan_sft")
class NanSFT(NoExtras):
    """SFT (GC = 1) until the ``nan_from``-th call of ``coefficients``, NaN from then on."""

    @dataclass
    class Config:
        nan_from: int = 3  # the first call whose coefficients are NaN

    data_source = "dataset"
    needs = frozenset()
    loss_agg = None
    group_coupled = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.calls = 0

    def coefficients(self, batch, logp):
        self.calls += 1
        return torch.full_like(logp, float("nan") if self.calls >= self.cfg.nan_from else 1.0), {}  # [N, T]


@register_reward("test_nan_reward")
def nan_reward(prompt, completion, example) -> float:
    return float("nan")


@register_reward("test_some_none_reward")
def some_none_reward(prompt, completion, example):
    return None if len(completion) % 3 == 0 else float(len(completion) % 2)
