"""DAPO: Decoupled Clip and Dynamic sAmpling Policy Optimization (Yu et al. 2025, Sec. 3, Algorithm 1).

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1), one change per column:
    data source    **dynamic sampling** (Sec. 3.2): G outputs per q from the current policy, groups
                   whose rewards are all equal dropped, sampling repeated until the batch holds
                   ``prompts_per_step`` informative groups                        -> ``dynamic``
    reward         rule, plus **overlong reward shaping** (Sec. 3.4): 0 up to L_max - L_cache tokens,
                   linear down to -1 at L_max (the ``overlong`` reward function, in a weighted sum)
    gradient coef  GC = A_i * rho * [unclipped], GRPO's coefficient with **clip-higher** (Sec. 3.1:
                   eps_low 0.2, eps_high 0.28) and **no KL** (beta = 0), under the **token-level
                   loss** (Sec. 3.3: sum over the batch's tokens / their count, ``token-mean``)

The native objective per token, maximised, is min(rho A, clip(rho, 1 - eps_low, 1 + eps_high) A)
averaged over every token of the batch; its derivative with respect to log pi_theta is GRPO's
coefficient (derived in algorithms/grpo.py) with beta = 0, under ``token-mean`` (pinned here).
tests/test_dapo.py checks it against autograd with ratios != 1 on both sides of the clip.

This file is a preset of GRPO (its Config defaults, the pinned aggregation, the default source);
the data source is ``dynamic`` in rlzoo/runtime/sources.py (any algorithm can use it with
``data.source: dynamic``), and the overlong shaping is a reward function, rlzoo/rewards/overlong.py,
because that is where the paper puts it: in the reward. The reward is the stage's, so it is added
in the config, not by the algorithm:

    reward: {functions: [{name: rule}, {name: overlong, kwargs: {max_length: 48, cache: 8}}]}

Departures from the paper: dynamic sampling keeps at most ``data.source_args.max_rounds`` rounds and then
trains on the informative groups it has (the paper samples until the batch is full); it decides on
the stage's whole reward (with the shaping: a group whose outputs are all correct but of different
lengths is kept, since its shaped rewards differ), where verl's recipe can filter on accuracy alone.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from rlzoo.algorithms.grpo import GRPO
from rlzoo.config import AT_LEAST_0, allowed
from rlzoo.registry import register_algorithm


@register_algorithm("dapo")
class DAPO(GRPO):
    """GRPO with clip-higher, no KL, the token-level loss and dynamic sampling."""

    @dataclass
    class Config(GRPO.Config):
        """GRPO's hyperparameters with DAPO's defaults."""

        beta: float = allowed(0.0, AT_LEAST_0)  # weight of the k3 KL to the reference (DAPO: 0, no reference model)
        clip_eps: float = 0.2  # lower clip, eps_low (DAPO: 0.2)
        clip_eps_high: Optional[float] = 0.28  # upper clip, eps_high (DAPO's clip-higher: 0.28)

    name = "dapo"
    data_source = "dynamic"  # groups of equal rewards dropped, sampling until the batch is full
    loss_agg = "token-mean"  # the token-level policy-gradient loss
