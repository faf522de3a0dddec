"""A reward-model stage: a policy's samples, labelled, train an outcome or a process reward model.

DeepSeekMath (Sec. 4.1.2-4.1.4) trains GRPO with a learned reward and, in iterative RL, keeps
training that reward model on the current policy's samples. This stage (``kind: reward_model``) is
that training. It is not a policy-gradient algorithm: it has its own loss (binary cross-entropy,
:mod:`rlzoo.reward_models`) and leaves the policy as it is.

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
import math
import time
from pathlib import Path
from typing import Any

import torch

from rlzoo.interface import RolloutBatch
from rlzoo.runtime.distributed import Dist


def _label(cfg, stage, policy, tokenizer, examples, keys, reward, sample_seed, accelerator) -> RolloutBatch:
    """``examples`` sampled from ``policy`` and labelled (``extras['rm_labels']``: [N] or [N, T])."""
    from rlzoo.runtime.generation import sample
    from rlzoo.runtime.sampling import mix_seed

    rm_cfg = stage.reward_model
    with accelerator.autocast():
        batch = sample(policy, tokenizer, examples, stage.data.samples_per_prompt, stage.generation, seed=sample_seed, keys=keys)
    values, _, _, _ = reward.score_batch(batch)
    scored = [i for i, v in enumerate(values) if v is not None]  # a skipped completion has no label
    batch = batch.select(scored)
    outcome = torch.tensor([float(values[i] > 0.5) for i in scored], device=batch.input_ids.device)  # [N]
    if rm_cfg.type == "orm":
        batch.extras["rm_labels"] = outcome
        return batch
    from rlzoo.steps import step_end_mask

    batch.step_ends = step_end_mask(batch, tokenizer, rm_cfg.step_rule).to(batch.input_ids.device)  # [N, T]
    batch.extras["rm_outcome"] = outcome
    if rm_cfg.labels == "oracle" or cfg.task.name == "synthetic":  # the exact step labels, for training or for measuring
        batch.extras["rm_oracle"] = _oracle_labels(batch, rm_cfg.step_rule)
    if rm_cfg.labels == "oracle":
        batch.extras["rm_labels"] = batch.extras["rm_oracle"]
    else:
        from rlzoo.reward_models import math_shepherd_labels

        def sampler(queries, n):
            with accelerator.autocast():
                return sample(policy, tokenizer, queries, n, stage.generation, seed=sample_seed,
                              keys=[mix_seed("prefix", q.prompt) for q in queries])

        def grader(exs, solutions):
            grades, _ = reward.score(exs, solutions)
            return [0.0 if g is None else g for g in grades]

        batch.extras["rm_labels"] = math_shepherd_labels(batch, batch.step_ends, sampler, grader, rm_cfg.rollouts,
                                                         rm_cfg.label_mode, tokenizer=tokenizer)
    return batch


def _oracle_labels(batch: RolloutBatch, rule: str) -> torch.Tensor:
    """[N, T] the embedded task's exact step labels at the batch's step ends."""
    from rlzoo.data.synthetic import step_oracle

    labels = torch.zeros_like(batch.step_ends)  # [N, T]
    for i, (ex, completion) in enumerate(zip(batch.examples, batch.completions)):
        columns = batch.step_ends[i].nonzero().flatten().tolist()
        verdicts = step_oracle(ex, completion, rule)
        for c, ok in zip(columns, verdicts + [False] * (len(columns) - len(verdicts))):
            labels[i, c] = float(ok)
    return labels


def _gathered(dist: Dist, batch: RolloutBatch, pad: int) -> RolloutBatch:
    return RolloutBatch.concat(dist.gather(batch.to("cpu")), pad)


def _replayed(run_dir: Path, stages: list[str], share: float, fresh: int, seed: int) -> RolloutBatch | None:
    """``share`` of the new training set drawn from the saved training data of ``stages``."""
    if share <= 0 or not stages:
        return None
    history = [torch.load(run_dir / name / "data.pt", weights_only=False)["train"] for name in stages]
    pool = RolloutBatch.concat(history, 0)
    n = min(len(pool), round(share / (1 - share) * fresh))
    rows = torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:n]
    return pool.select(rows)


def _loss(rm, micro: RolloutBatch, prm: bool, normaliser: float) -> torch.Tensor:
    from rlzoo.reward_models import outcome_loss, outcome_scores, process_loss, token_scores

    scores = token_scores(rm, micro.input_ids, micro.attention_mask)  # [n, T]
    if prm:
        return process_loss(scores, micro.extras["rm_labels"], micro.step_ends, normaliser)
    return outcome_loss(outcome_scores(scores, micro.attention_mask), micro.extras["rm_labels"], normaliser)


@torch.no_grad()
def held_out_metrics(rm, data: RolloutBatch, prm: bool, micro_batch_size: int) -> dict[str, float]:
    """The reward model's held-out metrics on a labelled set (``rm/`` keys)."""
    from rlzoo.reward_models import accuracy, first_error_accuracy, outcome_scores, per_step, roc_auc, step_accuracy, token_probs
    from rlzoo.steps import first_error

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


def run_reward_model_stage(cfg, name: str, index: int, stage, lm, tokenizer, prompts, held_out, reward, logger, out: Path,
                           config_yaml: str, global_step: int, stop, resolve) -> dict[str, Any]:
    """Train the reward model of stage ``name`` on ``lm``'s samples (``lm`` is not changed).

    ``prompts`` is the stage's question stream, ``held_out`` its held-out questions, ``reward`` the
    grader of labels; ``resolve(ref)`` is the folder of a model reference (a folder, or an earlier
    stage's name)."""
    from accelerate.utils import set_seed

    from rlzoo.reward_models import load_reward_model, reward_model_from_lm
    from rlzoo.runtime.checkpoint import CONFIG_NAME, atomic_write, write_state, written
    from rlzoo.runtime.models import load_stage_result
    from rlzoo.runtime.sampling import mix_seed
    from rlzoo.runtime.stage import NonfiniteGuard, make_accelerator, make_optimizer, peak_memory_mb
    from rlzoo.runtime.trainer import clip_param_groups, optimizer_step

    t0 = time.perf_counter()
    rm_cfg, ocfg = stage.reward_model, stage.optim
    prm = rm_cfg.type == "prm"
    accelerator = make_accelerator(cfg.mixed_precision)
    dist = Dist(accelerator.device)
    set_seed(cfg.seed + index)
    stage_dir = out / name
    policy = lm if rm_cfg.policy is None else load_stage_result(resolve(rm_cfg.policy), cfg.model.dtype)[0]
    policy.to(accelerator.device).eval()
    data_file = stage_dir / "data.pt"
    if data_file.is_file():  # a restart: the labelled data of the stopped session
        data = torch.load(data_file, weights_only=False)
    else:
        sample_seed = mix_seed(cfg.seed, index, "rollouts")
        questions = [next(prompts) for _ in range(rm_cfg.questions)]
        data = {}
        for split, exs in (("train", questions), ("eval", held_out)):
            block = dist.shard(len(exs))
            keys = list(range(block.start, block.stop)) if split == "train" else [10**9 + k for k in range(block.start, block.stop)]
            labelled = _label(cfg, stage, policy, tokenizer, exs[block], keys, reward, sample_seed, accelerator)
            data[split] = _gathered(dist, labelled, tokenizer.pad_token_id)
        if dist.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(data_file, lambda f: torch.save(data, f))
    sampled_seconds = time.perf_counter() - t0
    train = data["train"]
    replay = _replayed(out, list(rm_cfg.replay_from), rm_cfg.replay, len(train), mix_seed(cfg.seed, index, "replay"))
    if replay is not None:
        train = RolloutBatch.concat([train, replay], tokenizer.pad_token_id)
    train = train.to(accelerator.device)
    rm = load_reward_model(resolve(rm_cfg.init), cfg.model.dtype) if rm_cfg.init else reward_model_from_lm(policy)
    if lm is not policy:
        del policy
    rm.train()
    optimizer, scheduler = make_optimizer([{"params": [p for p in rm.parameters() if p.requires_grad], "lr": ocfg.lr,
                                            "name": "reward_model"}], ocfg, stage.steps)
    rm, optimizer = accelerator.prepare(rm, optimizer)
    generator = torch.Generator().manual_seed(mix_seed(cfg.seed, index, "order"))
    order: list[int] = []
    guard = NonfiniteGuard(name, ocfg.max_nonfinite_steps, stage_dir, checkpoints=False)
    for step in range(1, stage.steps + 1):
        t_step = time.perf_counter()
        while len(order) < rm_cfg.batch_size:
            order += torch.randperm(len(train), generator=generator).tolist()
        rows, order = order[: rm_cfg.batch_size], order[rm_cfg.batch_size :]
        mine = train.select(rows[dist.shard(len(rows))])
        counts = dist.gather((len(mine), float(mine.step_ends.sum()) if prm else float(len(mine)),
                              math.ceil(len(mine) / ocfg.micro_batch_size)))
        normaliser = sum(c[1] for c in counts)
        rounds = max(c[2] for c in counts)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for r in range(rounds):
            micro = mine.select(list(range(r * ocfg.micro_batch_size, min((r + 1) * ocfg.micro_batch_size, len(mine)))))
            with accelerator.no_sync(rm) if r < rounds - 1 else contextlib.nullcontext():
                if len(micro):
                    loss = _loss(rm, micro, prm, max(normaliser, 1.0))
                else:  # a process with fewer rows still takes part in the all-reduce
                    ids = torch.full((1, 2), tokenizer.pad_token_id, device=accelerator.device)
                    loss = 0.0 * rm(input_ids=ids, attention_mask=torch.ones_like(ids)).logits.sum()
                accelerator.backward(loss * dist.world)
                total += float(loss.detach())
        norms = clip_param_groups(accelerator, optimizer, ocfg.grad_clip)
        skipped = optimizer_step(accelerator, optimizer, norms) == "skipped"  # the same on every process (all-reduced gradients)
        scheduler.step()
        metrics = {"rm/loss": float(dist.sum([total])[0]), **norms, "optim/lr": scheduler.get_last_lr()[0],
                   "train/skipped_nonfinite": float(skipped), "time/step": time.perf_counter() - t_step}
        if logger is not None and step % cfg.logging.log_every == 0:
            logger.log({"stage": name, "step": step, **metrics}, global_step + step)
        guard.update(step, skipped)
        if stop.requested(dist):
            from rlzoo.errors import Interrupted

            raise Interrupted(f"stopped at reward-model stage {name} step {step}; its labelled data is saved and "
                              "--resume restarts its training")
    unwrapped = accelerator.unwrap_model(rm)
    evaluation = held_out_metrics(unwrapped, data["eval"].to(accelerator.device), prm, ocfg.micro_batch_size)
    result = {"name": name, "kind": "reward_model", "type": rm_cfg.type, "algorithm": f"{rm_cfg.type} ({rm_cfg.labels})",
              "steps": stage.steps, "wall_seconds": round(time.perf_counter() - t0, 2),
              "sampling_seconds": round(sampled_seconds, 2), "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
              "data": {"train": len(data["train"]), "replayed": 0 if replay is None else len(replay), "held_out": len(data["eval"]),
                       **({"steps_mean": float(data["train"].step_ends.sum(-1).mean())} if prm else {})},
              "eval": evaluation}
    if dist.is_main:
        with written(stage_dir / "final") as tmp:
            unwrapped.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            (tmp / CONFIG_NAME).write_text(config_yaml)
            write_state(tmp, {"stage": name, "step": stage.steps, "global_step": global_step + stage.steps, "result": result})
    dist.barrier()
    accelerator.free_memory()
    return result

