"""Dr. GRPO: GRPO done right (Liu et al. 2025, "Understanding R1-Zero-Like Training", Sec. 3.2), a preset of GRPO.

Paper's row (what changes against GRPO, DeepSeekMath Sec. 4.1):
    data source    as GRPO: q from the task, G outputs per q from the current policy  -> ``online``
    reward         as GRPO: rule (answer correctness) or a reward model
    gradient coef  GC = (r_i - mean(r)) * rho * [unclipped] + beta * (pi_ref / pi_theta - 1)
                   the group-centred reward, **not divided by the group std** (the question-level
                   difficulty bias), aggregated with a **constant normaliser** instead of 1/|o_i|
                   (the response-length bias): ``seq-mean-token-sum-norm``, 1/N sum_i sum_t x / C,
                   C = ``optim.loss_agg_constant`` or ``generation.max_new_tokens``

The coefficient is GRPO's (algorithms/grpo.py derives it, tests/test_grpo.py checks it against
autograd of the clipped objective with the k3 KL); only two settings differ, so this file is a
subclass that sets them: ``scale_rewards`` defaults to false, and ``loss_agg`` is pinned (an
``optim.loss_agg`` that asks for another mode is a config error naming it).

Departures from the paper: Dr. GRPO drops the KL term (beta = 0 in its experiments); the preset
keeps it at 0 too, and ``beta`` can turn it on. Every other GRPO option (clip-higher, process
supervision) works as in GRPO, and its metrics keep GRPO's names (``grpo/*``).
"""

from __future__ import annotations

from dataclasses import dataclass

from rlzoo.algorithms.grpo import GRPO
from rlzoo.config import AT_LEAST_0, allowed
from rlzoo.registry import register_algorithm


@register_algorithm("dr_grpo")
class DrGRPO(GRPO):
    """GRPO without the std division, with the constant-normaliser aggregation."""

    @dataclass
    class Config(GRPO.Config):
        """GRPO's hyperparameters with Dr. GRPO's defaults."""

        beta: float = allowed(0.0, AT_LEAST_0)  # weight of the k3 KL to the reference (Dr. GRPO: 0, no reference model)
        scale_rewards: bool = False  # divide by the group std (Dr. GRPO: no)

    name = "dr_grpo"
    loss_agg = "seq-mean-token-sum-norm"  # 1/N sum_i sum_t x / C: no 1/|o_i| length bias
