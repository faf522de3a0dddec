"""DPO: Direct Preference Optimization on correct/wrong pairs (DeepSeekMath Sec. 5.2.1, App. A.1.4).

Paper's row:
    data source    q from the task; a correct o+ and a wrong o- of the same q, sampled from the
                   SFT model (the stage's initial policy)                   -> ``offline``
    reward         rule (answer correctness) decides which output is o+     -> ``reward.name``
    gradient coef  +/- beta * sigmoid(beta * (lr(o-) - lr(o+))), + on o+ tokens, - on o- tokens,
                   lr(o) = log pi_theta(o | q) / pi_ref(o | q) normalised by ``normalize``

Native loss, one value per pair, averaged over the P pairs of a batch:

    L = 1/P sum_p -log sigmoid(z_p),   z_p = beta * (lr(o+_p) - lr(o-_p))
    lr(o) = sum_t (log pi_theta(o_t) - log pi_ref(o_t)) * w_t,   w_t = 1/|o| ("length") or 1 ("sum")

d L / d log pi_theta(o_t) = -(1/P) * beta * sigmoid(-z_p) * (+1 for o+, -1 for o-) * w_t. The runtime
minimises -1/N sum_i sum_t GC * log pi * w_t with N = 2P sequences, by pinning ``loss_agg`` to
``seq-mean-token-mean`` (w_t = 1/|o|) for ``length`` and ``seq-mean-token-sum`` (w_t = 1) for ``sum``.
Matching the two gives

    GC(o_t) = +/- 2 * beta * sigmoid(-z_p)   (= +/- 2 * beta * sigmoid(beta * (lr(o-) - lr(o+))))

the factor 2 because the runtime averages over sequences and the loss over pairs. With label
smoothing eps (conservative DPO, L = -(1-eps) log sigmoid(z) - eps log sigmoid(-z)) the sigmoid
becomes (1-eps) sigmoid(-z) - eps sigmoid(z). tests/test_dpo.py checks GC against autograd of L.
The coefficient is recomputed from the current log-probs for every update, so it stays exact
with ``updates_per_batch`` > 1.

``prepare`` turns each group of scored samples of one question into ``pairs_per_prompt`` pairs (a
correct output with a wrong one; groups without both are dropped), laid out as adjacent rows
(o+, o-) that share a fresh group id, so that ``group_coupled`` keeps a pair in one micro-batch.
``data.resample_every = N`` re-samples the offline pool from the current policy every N steps:
iterative (online) DPO. The reference stays the stage's initial policy.

Deliberate departures from the paper:
  * the paper's table writes GC = sigmoid(beta * (log-ratio(o-_t) - log-ratio(o+_t))), without the
    outer beta (a constant the learning rate absorbs) and with a per-token ratio inside the
    sigmoid; the exact gradient of its length-normalised objective has the sequence-level mean
    log-ratio there and the outer beta, as here (plus the factor 2 above).
  * ``normalize=sum`` gives the original DPO (Rafailov et al. 2023) summed log-ratio.
  * pairs are formed deterministically from sample order (samples of one question are
    exchangeable, so this is as good as random): the first min(|o+|, |o-|) pairs use every output
    at most once, more pairs reuse outputs with distinct (o+, o-) combinations, at most
    |o+| * |o-| pairs per question.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from rlzoo.config import AT_LEAST_1, FINITE, POSITIVE, Range, allowed
from rlzoo.functional import group_sum
from rlzoo.interface import NoExtras, RolloutBatch
from rlzoo.registry import register_algorithm

# the aggregation mode whose per-token weight w_t is d lr(o) / d log pi(o_t)
LOSS_AGG = {"length": "seq-mean-token-mean", "sum": "seq-mean-token-sum"}


def pair_indices(n_pos: int, n_neg: int, k: int) -> list[tuple[int, int]]:
    """The first min(k, n_pos * n_neg) distinct (i, j) pairs, i < n_pos, j < n_neg.

    Pair m is (m mod n_pos, (m mod n_pos + m div n_pos) mod n_neg): for a fixed i the j's differ,
    so no pair repeats, and the first min(n_pos, n_neg) pairs are (0, 0), (1, 1), ...

    >>> pair_indices(2, 3, 4)
    [(0, 0), (1, 1), (0, 1), (1, 2)]
    """
    return [(m % n_pos, (m % n_pos + m // n_pos) % n_neg) for m in range(min(k, n_pos * n_neg))]


def sequence_logratio(logp: torch.Tensor, ref_logp: torch.Tensor, mask: torch.Tensor, normalize: str) -> torch.Tensor:
    """[N] log pi(o) / pi_ref(o): summed over the trained tokens, or their mean for ``length``."""
    lr = ((logp - ref_logp) * mask).sum(-1)  # [N]
    return lr / mask.sum(-1).clamp(min=1.0) if normalize == "length" else lr  # [N]


@register_algorithm("dpo")
class DPO(NoExtras):
    """Pairs of a correct and a wrong output; logistic loss on their reference log-ratio margin."""

    @dataclass
    class Config:
        """DPO hyperparameters (samples per question are ``data.samples_per_prompt``)."""

        beta: float = allowed(0.1, POSITIVE)  # inverse temperature of the implicit reward beta * log-ratio
        normalize: str = allowed("length", choices=tuple(LOSS_AGG))  # log-ratio of an output: "length" (per-token mean, the paper) or "sum" (original DPO)
        pairs_per_prompt: int = allowed(1, AT_LEAST_1)  # (o+, o-) pairs formed per question (at most |o+| * |o-|)
        threshold: float = allowed(0.5, FINITE)  # an output is correct (o+) when its reward is > threshold, wrong when <=
        label_smoothing: float = allowed(0.0, Range(0, 0.5, hi_open=True))  # conservative DPO's eps: probability that a pair's label is flipped

    data_source = "offline"
    needs: frozenset[str] = frozenset({"reference"})
    logprobs_before_prepare = False  # prepare pairs rows by reward: the reference pass runs on the pairs only
    group_coupled = True
    min_samples_per_prompt = 2  # a pair needs a correct and a wrong output of one question

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.loss_agg = LOSS_AGG[cfg.normalize]  # the mode GC is derived for (see the module docstring)

    def prepare(self, batch: RolloutBatch, runtime) -> tuple[RolloutBatch, dict[str, float]]:
        correct = batch.rewards > self.cfg.threshold  # [N]
        wrong = batch.rewards <= self.cfg.threshold  # [N] (a NaN reward is neither)
        rows: list[int] = []
        pair_ids: list[int] = []
        dropped = 0
        groups = torch.unique(batch.group_ids)  # [G]
        for g in groups.tolist():
            in_group = batch.group_ids == g  # [N]
            pos = (in_group & correct).nonzero().squeeze(-1).tolist()
            neg = (in_group & wrong).nonzero().squeeze(-1).tolist()
            if not pos or not neg:
                dropped += 1
                continue
            for m, (i, j) in enumerate(pair_indices(len(pos), len(neg), self.cfg.pairs_per_prompt)):
                rows += [pos[i], neg[j]]
                pair_ids.append(g * self.cfg.pairs_per_prompt + m)  # unique across ranks: g is a global question id
        pairs = len(rows) // 2
        device = batch.group_ids.device
        out = batch.select(torch.tensor(rows, dtype=torch.long))
        out.group_ids = torch.tensor(pair_ids, dtype=torch.long, device=device).repeat_interleave(2)  # [2P] one id per pair
        out.extras["dpo_sign"] = torch.tensor([1.0, -1.0], device=device).repeat(pairs)  # [2P] +1 on o+, -1 on o-
        return out, {
            "dpo/num_pairs": float(pairs),
            "dpo/num_dropped_groups": float(dropped),
            "dpo/dropped_group_frac": dropped / max(len(groups), 1),
        }

    def coefficients(self, batch: RolloutBatch, logp: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        cfg = self.cfg
        sign = batch.extras["dpo_sign"]  # [N] +1 on o+, -1 on o-
        lr = sequence_logratio(logp, batch.ref_logprobs, batch.loss_mask, cfg.normalize)  # [N]
        chosen, pair = group_sum(lr * (sign > 0), batch.group_ids)  # [P] lr(o+), [N] pair index of each row
        rejected, _ = group_sum(lr * (sign < 0), batch.group_ids)  # [P] lr(o-)
        z = cfg.beta * (chosen - rejected)  # [P]
        eps = cfg.label_smoothing
        weight = (1 - eps) * torch.sigmoid(-z) - eps * torch.sigmoid(z)  # [P] -dL/dz of one pair
        coef_seq = 2.0 * cfg.beta * weight[pair] * sign  # [N]
        coef = coef_seq[:, None].expand_as(logp).clone()  # [N, T]
        loss = -(1 - eps) * F.logsigmoid(z) - eps * F.logsigmoid(-z)  # [P] the native loss
        metrics = {
            "dpo/chosen_reward": float((cfg.beta * chosen).mean()),
            "dpo/rejected_reward": float((cfg.beta * rejected).mean()),
            "dpo/margin": float(z.mean()),
            "dpo/accuracy": float((z > 0).float().mean()),
            "dpo/loss": float(loss.mean()),
        }
        return coef.detach(), metrics
