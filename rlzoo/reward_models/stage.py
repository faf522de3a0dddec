"""A reward-model stage: a policy's samples, labelled, train an outcome or a process reward model.

DeepSeekMath (Sec. 4.1.2-4.1.4) trains GRPO with a learned reward and, in iterative RL, keeps
training that reward model on the current policy's samples. This stage (``kind: reward_model``) is
that training. It is not a policy-gradient algorithm: it has its own loss (binary cross-entropy,
:mod:`rlzoo.reward_models.model`) and leaves the policy as it is. This module holds the stage's
parts (its data, loss, step and held-out metrics); :mod:`rlzoo.run.reward_model_stage` drives them
through the step loop that policy stages use too (logging, the non-finite guard, stop requests,
the final folder).

1. **Data.** ``questions`` training questions (the stage's question stream) and ``eval_questions``
   held-out ones (the first of the run's held-out set) are sampled from the policy
   (``data.samples_per_prompt`` each, row-seeded, :mod:`rlzoo.runtime.sampling`) and labelled:
   an ORM by the stage's reward (the answer checker: label 1 when the reward is > 0.5); a PRM at
   every step end (``step_rule``) by ``math_shepherd`` (``rollouts`` completions from each step
   prefix reach the gold answer: any = hard, the share = soft) or by the embedded task's exact
   ``oracle``. Every process samples its block; the labelled sets are gathered, so every process
   holds them whole. They are saved (``<stage>/data.pt``) for later replay and for a restart.
2. **Replay** (iterative RL): ``replay`` of the training set is drawn from the training data of the
   stages in ``replay_from``, so the new set is (1 - replay) fresh samples and replay history.
3. **Model.** ``init`` (a reward model folder or an earlier reward-model stage), else the sampling
   policy's backbone with a head at zero.
4. **Training.** ``steps`` AdamW steps of ``batch_size`` labelled completions (a seeded order over
   epochs); each process takes its block of a step's rows, in micro-batches; the loss is normalised
   by the step's totals over all processes (rows for an ORM, step ends for a PRM).
5. **Held-out metrics** (``eval/rm/*``, in summary.json): ORM AUC and accuracy; PRM step accuracy
   against the labels and, on the embedded task, against the exact oracle, first-error detection,
   and the AUC of its outcome score (the minimum step probability).

A stopped run that resumes restarts an unfinished reward-model stage's training from its saved
data (the sampling, the expensive part, is not redone).
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from rlzoo.interface import RolloutBatch
from rlzoo.runtime.distributed import Dist


def gathered(dist: Dist, batch: RolloutBatch, pad: int) -> RolloutBatch:
    """Every process's rows of ``batch``, in rank order, on every process (on the CPU)."""
    return RolloutBatch.concat(dist.gather(batch.to("cpu")), pad)


def replayed(run_dir: Path, stages: list[str], share: float, fresh: int, seed: int) -> RolloutBatch | None:
    """``share`` of the new training set drawn from the saved training data of ``stages``."""
    if share <= 0 or not stages:
        return None
    history = [torch.load(run_dir / name / "data.pt", weights_only=False)["train"] for name in stages]
    pool = RolloutBatch.concat(history, 0)
    n = min(len(pool), round(share / (1 - share) * fresh))
    rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    return pool.select(rows)


def loss(rm, micro: RolloutBatch, prm: bool, normaliser: float) -> torch.Tensor:
    """The micro-batch's share of the step's binary cross-entropy (``normaliser``: the step's
    rows for an ORM, its step ends for a PRM, over every process)."""
    from rlzoo.reward_models.model import outcome_loss, outcome_scores, process_loss, token_scores

    scores = token_scores(rm, micro.input_ids, micro.attention_mask)  # [n, T]
    if prm:
        return process_loss(scores, micro.extras["rm_labels"], micro.step_ends, normaliser)
    return outcome_loss(outcome_scores(scores, micro.attention_mask), micro.extras["rm_labels"], normaliser)


class RewardModelTrainer:
    """The reward model's optimisation: ``step()`` is one AdamW step of ``batch_size`` labelled
    completions from a seeded order over epochs; each process takes its block of the step's rows,
    in micro-batches of ``micro_batch_size`` (every process runs as many as the busiest, a zero
    loss past its own), and the loss is normalised by the step's totals over all processes."""

    def __init__(self, accelerator, dist: Dist, rm, optimizer, scheduler, train: RolloutBatch, *, prm: bool,
                 batch_size: int, micro_batch_size: int, grad_clip: float, seed: int, pad_token_id: int) -> None:
        self.accelerator, self.dist, self.rm, self.optimizer, self.scheduler = accelerator, dist, rm, optimizer, scheduler
        self.train, self.prm, self.batch_size, self.micro_batch_size, self.grad_clip = train, prm, batch_size, micro_batch_size, grad_clip
        self.pad_token_id = pad_token_id
        self.generator = torch.Generator().manual_seed(seed)
        self.order: list[int] = []

    def _sync(self, last: bool):
        return contextlib.nullcontext() if last else self.accelerator.no_sync(self.rm)

    def _zero_backward(self) -> None:
        ids = torch.full((1, 2), self.pad_token_id, device=self.accelerator.device)
        self.accelerator.backward(0.0 * self.rm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum())

    def step(self) -> dict[str, float]:
        """One optimizer step; its metrics, the same on every process."""
        from rlzoo.runtime.trainer import accumulate, clip_param_groups, optimizer_step, split_rows

        while len(self.order) < self.batch_size:
            self.order += torch.randperm(len(self.train), generator=self.generator).tolist()
        rows, self.order = self.order[: self.batch_size], self.order[self.batch_size :]
        mine = self.train.select(rows[self.dist.shard(len(rows))])
        micros = split_rows(mine, self.micro_batch_size)
        counts = self.dist.gather((float(mine.step_ends.sum()) if self.prm else float(len(mine)), len(micros)))
        normaliser = max(sum(c[0] for c in counts), 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        total = [0.0]

        def backward(micro: RolloutBatch) -> None:
            part = loss(self.rm, micro, self.prm, normaliser)
            self.accelerator.backward(part * self.dist.world)  # DDP averages over processes; the sum is the loss
            total[0] += float(part.detach())

        accumulate(micros, max(c[1] for c in counts), self._sync, self._zero_backward, backward)
        norms = clip_param_groups(self.accelerator, self.optimizer, self.grad_clip)
        outcome = optimizer_step(self.accelerator, self.optimizer, norms)  # the same on every process (all-reduced gradients)
        self.scheduler.step()
        return {"rm/loss": float(self.dist.sum([total[0]])[0]), **norms, "optim/lr": self.scheduler.get_last_lr()[0],
                "train/optimizer_steps": 1.0, "train/skipped_nonfinite": float(outcome == "skipped")}


@torch.no_grad()
def held_out_metrics(rm, data: RolloutBatch, prm: bool, micro_batch_size: int) -> dict[str, float]:
    """The reward model's held-out metrics on a labelled set (``rm/`` keys)."""
    from rlzoo.reward_models.model import accuracy, first_error_accuracy, outcome_scores, per_step, roc_auc, step_accuracy, token_probs
    from rlzoo.reward_models.steps import first_error

    rm.eval()
    probs = token_probs(rm, data.input_ids, data.attention_mask, micro_batch_size)  # [N, T]
    rm.train()
    if not prm:
        scores, labels = outcome_scores(probs, data.attention_mask), data.extras["rm_labels"]
        return {"rm/auc": roc_auc(scores, labels), "rm/accuracy": accuracy(scores, labels), "rm/positive_frac": float(labels.mean())}
    steps = per_step(probs, data.step_ends)
    labels = [[v >= 0.5 for v in row] for row in per_step(data.extras["rm_labels"], data.step_ends)]
    out = {"rm/step_accuracy": step_accuracy(steps, labels)}
    outcome = data.extras["rm_outcome"]
    out["rm/outcome_auc"] = roc_auc(torch.tensor([min(s) if s else 0.0 for s in steps]), outcome)
    flat_steps = [p for row in steps for p in row]
    out["rm/step_auc"] = roc_auc(torch.tensor(flat_steps), torch.tensor([float(v) for row in labels for v in row]))
    if "rm_oracle" in data.extras:
        oracle = [[v >= 0.5 for v in row] for row in per_step(data.extras["rm_oracle"], data.step_ends)]
        flat_oracle = [float(v) for row in oracle for v in row]
        out["rm/oracle_step_accuracy"] = step_accuracy(steps, oracle)
        out["rm/oracle_step_auc"] = roc_auc(torch.tensor(flat_steps), torch.tensor(flat_oracle))
        out["rm/oracle_positive_frac"] = sum(flat_oracle) / max(len(flat_oracle), 1)  # the base rate accuracy is read against
        out["rm/first_error_accuracy"] = first_error_accuracy([first_error([p >= 0.5 for p in s]) for s in steps],
                                                              [first_error(o) for o in oracle])
        out["rm/label_oracle_agreement"] = step_accuracy([[float(x) for x in row] for row in labels], oracle)
    return out
