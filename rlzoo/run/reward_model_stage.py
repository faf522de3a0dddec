"""A reward-model stage (``kind: reward_model``): a policy's samples, labelled, train an outcome or a
process reward model; the policy is left as it is (:mod:`rlzoo.reward_models.stage` says how).

The stage labels its data once (saved as ``<stage>/data.pt``: a resumed run restarts the stage's
training from it, without sampling again), then trains through the run's step loop
(:func:`rlzoo.run.loop.run_steps`: logging, the stop rules, stop requests) and writes its
``final/`` folder with the same writer as a policy stage.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from omegaconf import DictConfig

from rlzoo.errors import DataError
from rlzoo.run.factories import held_out, make_reward, stage_prompts, step_oracle
from rlzoo.run.loop import RunContext, StopRules, run_steps, write_final


def run_reward_model_stage(ctx: RunContext, index: int, name: str, stage: DictConfig, lm: torch.nn.Module, tokenizer, *,
                           global_step: int) -> dict[str, Any]:
    """Train the reward model of the stage at ``index`` on the samples of ``lm`` (or of
    ``reward_model.policy``); returns the stage's summary entry."""
    from accelerate.utils import set_seed

    from rlzoo.interface import RolloutBatch
    from rlzoo.reward_models.model import load_reward_model, reward_model_from_lm
    from rlzoo.reward_models.stage import RewardModelTrainer, held_out_metrics, replayed
    from rlzoo.runtime.checkpoint import atomic_write
    from rlzoo.runtime.models import checksum, load_stage_result
    from rlzoo.runtime.sampling import mix_seed
    from rlzoo.runtime.stage import make_accelerator, make_optimizer, peak_memory_mb

    t0 = time.perf_counter()
    cfg, out, dist = ctx.cfg, ctx.out, ctx.dist
    rm_cfg, ocfg = stage.reward_model, stage.optim
    prm = rm_cfg.type == "prm"
    accelerator = make_accelerator(cfg.mixed_precision)
    set_seed(cfg.seed + index)
    stage_dir = out / name
    if rm_cfg.policy is not None:  # with its own tokenizer, which the labelled data and the saved reward model then use
        policy, tokenizer = load_stage_result(ctx.resolve(rm_cfg.policy), cfg.model.dtype)
    else:
        policy = lm
    policy.to(accelerator.device).eval()
    sampled = checksum(policy)  # the weights the labelled samples come from
    data_file = stage_dir / "data.pt"
    if data_file.is_file():  # a restart: the labelled data of the stopped session
        data = torch.load(data_file, weights_only=False)
    else:
        data = _label(ctx, index, name, stage, policy, tokenizer, accelerator)
        if dist.is_main:
            stage_dir.mkdir(parents=True, exist_ok=True)
            atomic_write(data_file, lambda f: torch.save(data, f))
    sampled_seconds = time.perf_counter() - t0
    if ctx.stop.requested(dist):  # a stop request during labelling: the labelled data is saved
        from rlzoo.errors import Interrupted

        raise Interrupted(f"stopped at reward-model stage {name} after labelling; its labelled data is saved and --resume "
                          "trains from it")
    train = data["train"]
    replay = replayed(out, list(rm_cfg.replay_from), rm_cfg.replay, len(train), mix_seed(cfg.seed, index, "replay"))
    if replay is not None:
        train = RolloutBatch.concat([train, replay], tokenizer.pad_token_id)
    rm = load_reward_model(ctx.resolve(rm_cfg.init), cfg.model.dtype) if rm_cfg.init else reward_model_from_lm(policy)
    if lm is not policy:
        del policy
    rm.train()
    skeleton = None
    if cfg.parallel == "fsdp":  # sharded in place (FSDP2), as a policy stage's models are
        from rlzoo.runtime.sharding import autocast_forward, meta_copy, shard

        skeleton = meta_copy(rm)
        autocast_forward(shard(rm, accelerator.device, "reward model"), accelerator)
    optimizer, scheduler = make_optimizer([{"params": [p for p in rm.parameters() if p.requires_grad], "lr": ocfg.lr,
                                            "name": "reward_model"}], ocfg, stage.steps)
    if skeleton is None:
        rm, optimizer = accelerator.prepare(rm, optimizer)
    trainer = RewardModelTrainer(accelerator, dist, rm, optimizer, scheduler, train.to(accelerator.device), prm=prm,
                                 batch_size=rm_cfg.batch_size, micro_batch_size=ocfg.micro_batch_size, grad_clip=ocfg.grad_clip,
                                 seed=mix_seed(cfg.seed, index, "order"), pad_token_id=tokenizer.pad_token_id)

    def step() -> dict[str, float]:
        t_step = time.perf_counter()
        return {**trainer.step(), "time/step": time.perf_counter() - t_step}

    run_steps(ctx, name, f"{name} ({rm_cfg.type})", done=0, steps=stage.steps, global_step=global_step, step=step,
              rules=StopRules(name, ocfg.max_nonfinite_steps, stage_dir, checkpoints=False, on_divergence=ocfg.on_divergence,
                              loss="rm/loss"),
              stopped=lambda s: f"stopped at reward-model stage {name} step {s}; its labelled data is saved and --resume "
                                "restarts its training")
    if skeleton is not None:
        from rlzoo.runtime.sharding import plain_copy

        unwrapped = plain_copy(rm, skeleton).to(accelerator.device)  # every process: the whole trained model
    else:
        unwrapped = accelerator.unwrap_model(rm)
    evaluation = held_out_metrics(unwrapped, data["eval"].to(accelerator.device), prm, ocfg.micro_batch_size)
    result = {"name": name, "kind": "reward_model", "type": rm_cfg.type, "algorithm": f"{rm_cfg.type} ({rm_cfg.labels})",
              "steps": stage.steps, "wall_seconds": round(time.perf_counter() - t0, 2),
              "sampling_seconds": round(sampled_seconds, 2), "peak_memory_mb": round(peak_memory_mb(accelerator.device), 1),
              "checksum": {"policy": sampled},
              "data": {"train": len(data["train"]), "replayed": 0 if replay is None else len(replay), "held_out": len(data["eval"]),
                       **({"steps_mean": float(data["train"].step_ends.sum(-1).mean())} if prm else {})},
              "eval": evaluation}

    def save(folder) -> None:
        unwrapped.save_pretrained(folder, safe_serialization=True)
        tokenizer.save_pretrained(folder)

    write_final(ctx, name, save, {"stage": name, "step": stage.steps, "global_step": global_step + stage.steps, "result": result})
    accelerator.free_memory()
    ctx.log_eval(name, stage.steps, evaluation, global_step + stage.steps)
    return result


def _label(ctx: RunContext, index: int, name: str, stage: DictConfig, policy, tokenizer, accelerator) -> dict[str, Any]:
    """The stage's labelled sets, ``{"train", "eval"}``, whole on every process: ``questions``
    of the stage's question stream and the first ``eval_questions`` held-out questions, each
    process sampling and labelling its block of them. A reward that skips every completion
    leaves nothing to learn from: one line, before any training."""
    from rlzoo.reward_models.labels import label_batch
    from rlzoo.reward_models.stage import gathered
    from rlzoo.runtime.sampling import mix_seed

    cfg, dist = ctx.cfg, ctx.dist
    rm_cfg = stage.reward_model
    reward = make_reward(stage, ctx.out, ctx.names, tokenizer)
    prompts = stage_prompts(cfg, name, index, stage, ctx.task, tokenizer)
    questions = [next(prompts) for _ in range(rm_cfg.questions)]
    data, skipped = {}, 0
    for split, exs in (("train", questions), ("eval", held_out(cfg, ctx.eval_examples, tokenizer, rm_cfg.eval_questions))):
        block = dist.shard(len(exs))
        keys = list(range(block.start, block.stop)) if split == "train" else [10**9 + k for k in range(block.start, block.stop)]
        labelled, dropped = label_batch(
            policy, tokenizer, exs[block], keys, reward, samples=stage.data.samples_per_prompt, generation=stage.generation,
            rm_type=rm_cfg.type, labels=rm_cfg.labels, step_rule=rm_cfg.step_rule, rollouts=rm_cfg.rollouts,
            label_mode=rm_cfg.label_mode, sample_seed=mix_seed(cfg.seed, index, "rollouts"), autocast=accelerator.autocast,
            oracle=step_oracle(cfg, stage))
        data[split] = gathered(dist, labelled, tokenizer.pad_token_id)
        skipped += sum(dist.gather(dropped))
        if split == "train" and len(data[split]) == 0:
            raise DataError(f"stage {name}: no labelled samples: the reward '{reward.name}' skipped all {skipped} completions "
                            "(it returned None for every one), so the reward model has nothing to learn from")
    return data
