"""A plugin for the stop-rule tests (tests/test_stop_rules.py): updates that go non-finite in one
model or one minibatch only, and a reward that gives nothing to train on.

* ``nan_value_ppo``: PPO whose value loss is NaN from its first call (the policy's gradient stays
  finite, the value model's is NaN: the step is skipped whole).
* ``nan_every_other_sft``: SFT whose coefficients are NaN at every second call (with two
  minibatches a step, one of its two optimizer updates is skipped, the other applied).
* ``test_none_reward``: a reward that gives no value (None) to any completion.
* ``test_fails_on_rank_1``: a reward that raises on the second of two processes only.
"""

import torch

from rlzoo.algorithms.ppo import PPO
from rlzoo.algorithms.sft import SFT
from rlzoo.registry import register_algorithm, register_reward


@register_algorithm("nan_value_ppo")
class NanValuePPO(PPO):
    """PPO with a NaN value loss."""

    def extra_loss(self, batch, runtime):
        loss, metrics = super().extra_loss(batch, runtime)
        return loss * float("nan"), metrics  # [n, T]


@register_algorithm("nan_every_other_sft")
class NanEveryOtherSFT(SFT):
    """SFT with NaN coefficients at every second call."""

    def __init__(self, cfg) -> None:
        super().__init__(cfg)
        self.calls = 0

    def coefficients(self, batch, logp):
        self.calls += 1
        coef, metrics = super().coefficients(batch, logp)
        return (coef * float("nan") if self.calls % 2 == 0 else coef), metrics  # [N, T]


@register_reward("test_none_reward")
def none_reward(prompt, completion, example):
    return None


@register_reward("test_fails_on_rank_1")
def fails_on_rank_1(prompt, completion, example):
    """A reward that raises on the second process only (under torchrun), and gives 0 elsewhere."""
    import os

    if os.environ.get("RANK") == "1":
        raise ValueError("the grader lost its connection")
    return 0.0
