"""A plugin for the fault tests (tests/test_faults.py): what goes wrong in a run, on purpose.

* ``nan_sft``: SFT whose coefficients are NaN from its ``nan_from``-th call on, as an algorithm
  whose numbers blow up would be; the runtime must skip those steps, never apply them.
* ``test_nan_reward``: a reward that returns NaN; ``test_some_none_reward``: a reward that gives no
  value (None) to every completion whose length is a multiple of 3, else its length's parity.
* ``gated_<source>``: the built-in ``<source>``, except that the N-th batch the process asks for
  (``RLZOO_TEST_GATE_AT``, counted over every stage) waits until the file ``RLZOO_TEST_GATE``
  exists, so a test can act (a second run, a signal) while a run is surely mid-step; it touches
  ``RLZOO_TEST_GATE`` + ``.waiting`` when it starts waiting.
"""

import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from rlzoo.interface import NoExtras
from rlzoo.registry import DATA_SOURCES, register_algorithm, register_data_source, register_reward


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


CALLS = [0]


def _gated(name: str):
    base = DATA_SOURCES.get(name)

    class Gated(base):
        def next_batch(self, step):
            CALLS[0] += 1
            if CALLS[0] == int(os.environ.get("RLZOO_TEST_GATE_AT", "0")):
                gate = Path(os.environ["RLZOO_TEST_GATE"])
                gate.with_name(gate.name + ".waiting").touch()
                deadline = time.monotonic() + 120
                while not gate.exists() and time.monotonic() < deadline:
                    time.sleep(0.05)
            return super().next_batch(step)

    Gated.__name__ = f"Gated{base.__name__}"
    return register_data_source(f"gated_{name}")(Gated)


for _name in ("dataset", "online"):
    _gated(_name)
