"""RFT and Online RFT: rejection-sampling fine-tuning (DeepSeekMath Sec. 5.2.1, App. A.1.2-A.1.3).

Paper's rows:
    data source    RFT:        q from the task, k outputs per q sampled once, offline, from the
                               SFT model (the stage's initial policy)       -> ``offline``
                   Online RFT: q from the task, outputs sampled from the current policy at every
                               step                                         -> ``online``
    reward         rule (answer correctness)                                -> ``reward.name``
    gradient coef  GC(q, o, t) = I(o) = 1 if o is correct (reward > ``threshold``), else 0

So RFT is SFT on the policy's own correct outputs. The two methods differ only in the data
source: ``data.source=online`` turns ``rft`` into Online RFT, and ``online_rft`` is registered as
the same class with ``online`` as its default source. k is ``data.samples_per_prompt``, the pool
size ``data.pool_prompts``, and ``data.resample_every`` re-samples the offline pool from the
current policy (an iterative RFT between the two).

``prepare`` marks the kept outputs (correct, and with ``dedupe`` the first copy of each distinct
correct output of a question), drops the others (``drop_rejected``) and stores GC per token in
``batch.advantages``; ``coefficients`` returns it. With GC in {0, 1} the surrogate is exactly
SFT's negative log-likelihood on the kept outputs (tests/test_rft.py).

Deliberate departures from the paper:
  * dedupe: the RFT the paper follows (Yuan et al. 2023) keeps distinct reasoning paths only; here
    ``dedupe`` drops exact token-for-token duplicates of a correct output within a question
    (identical text, not "the same equations"). Its default (None) turns it on when the
    stage's data source is ``offline`` and off when it is ``online`` (the paper's Online RFT,
    whose coefficient is the plain I(o)); the runtime tells the instance which source it runs on.
  * normaliser: with ``drop_rejected=true`` (default) the wrong outputs leave the batch, so the
    aggregation averages over the kept outputs, as SFT on the filtered set does. The paper's
    expectation counts every sampled output (GC 0 for the wrong ones), which makes the step size
    scale with the fraction of correct samples; ``drop_rejected=false`` gives that form.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from rlzoo.config import FINITE, allowed
from rlzoo.functional import group_sum
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm


def duplicate_mask(batch: RolloutBatch, candidates: torch.Tensor) -> torch.Tensor:
    """[N] bool: candidate rows whose trained tokens repeat an earlier candidate of the same group.

    Two outputs are identical when the tokens under ``loss_mask`` are the same (the prompt is the
    group's, so it does not enter the key). The first copy is not a duplicate.
    """
    seen: set[tuple[int, tuple[int, ...]]] = set()
    dup = torch.zeros(len(batch), dtype=torch.bool, device=batch.group_ids.device)  # [N]
    ids, groups = batch.input_ids.tolist(), batch.group_ids.tolist()
    trained = (batch.loss_mask > 0).tolist()
    for i in candidates.nonzero().squeeze(-1).tolist():
        key = (groups[i], tuple(t for t, m in zip(ids[i], trained[i]) if m))
        dup[i] = key in seen
        seen.add(key)
    return dup


@register_algorithm("rft")
class RFT(NoExtras):
    """Fine-tune on the correct outputs among sampled ones: GC = 1 if correct, else 0."""

    @dataclass
    class Config:
        """RFT hyperparameters (k is ``data.samples_per_prompt``, the pool ``data.pool_prompts``)."""

        threshold: float = allowed(0.5, FINITE)  # an output is correct when its reward is > threshold (rule reward: 1 / 0)
        dedupe: Optional[bool] = None  # keep one copy of identical correct outputs per question; None = on for offline
        drop_rejected: bool = True  # drop outputs with GC 0 in prepare (false: keep them, the normaliser counts them)

    data_source = "offline"
    needs: frozenset[str] = frozenset()
    loss_agg = None
    group_coupled = False

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg

    def dedupe(self, source: str) -> bool:
        """Whether identical correct outputs of a question are kept once, on data ``source``."""
        return self.cfg.dedupe if self.cfg.dedupe is not None else source == "offline"

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        if len(batch) and torch.isnan(batch.rewards).all():
            raise ValueError("RFT needs scored samples (data.source offline or online); this batch has no rewards")
        correct = batch.rewards > self.cfg.threshold  # [N] (a NaN reward is not correct)
        keep = (correct & ~duplicate_mask(batch, correct)) if self.dedupe(runtime.data_source) else correct  # [N]
        solved, _ = group_sum(correct.float(), batch.group_ids)  # [P] correct outputs per question
        n = max(len(batch), 1)
        metrics = {
            "rft/correct_frac": float(correct.sum()) / n,
            "rft/kept_frac": float(keep.sum()) / n,
            "rft/solved_prompt_frac": float((solved > 0).float().mean()) if len(solved) else 0.0,
        }
        if self.cfg.drop_rejected:
            batch = batch.select(keep.nonzero().squeeze(-1))
            keep = keep[keep]  # [N'] all True
        batch.advantages = keep.float()[:, None] * batch.loss_mask  # [N', T] GC = I(o) on every trained token
        return batch, metrics

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        return batch.advantages.detach().clone(), {}  # [N, T]


@register_algorithm("online_rft")
class OnlineRFT(RFT):
    """Online RFT: RFT's coefficient on outputs sampled from the current policy at every step."""

    data_source = "online"
