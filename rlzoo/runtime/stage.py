"""One stage of a run: every algorithm trains through this loop unchanged.

:func:`build_stage` makes the stage's models, optimizer, schedule and data source with a fresh
``Accelerator`` (nothing of an earlier stage, no optimizer and no loss scaler, stays alive);
:func:`train_step` is one step in the paper's order:

    1. data source   the step's batch: read, or sampled and scored    (time/generate, time/reward)
    2. reference     log pi_ref of the batch, if the algorithm needs it (time/reference)
    3. pi_old        log pi_old, if the algorithm needs it and the batch is reused (time/old_logprobs)
    4. prepare       the algorithm's advantages, pairs or filter       (time/prepare)
    5. update        the single surrogate loss, optimizer steps        (time/train)

Every log-prob of a batch is taken at the batch's sampling temperature, under the same autocast,
without dropout, so pi_old = pi_theta = pi_ref before the first update of a stage: ratio 1, KL 0.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass
from typing import Any, Iterator

import torch
from accelerate.utils import DistributedType

from rlzoo.config import source_config
from rlzoo.errors import ConfigError
from rlzoo.interface import Algorithm, Example, RolloutBatch
from rlzoo.registry import DATA_SOURCES
from rlzoo.runtime.distributed import Dist, MetricsReducer
from rlzoo.runtime.models import (LogProbModel, ValueModel, add_lora, build_value_model, disable_dropout, frozen_copy, is_lora,
                                  merged, set_gradient_checkpointing)
from rlzoo.runtime.trainer import Runtime, resolve_loss_agg, timed, train_on_batch


def make_accelerator(mixed_precision: str):
    """A fresh ``Accelerator`` for one stage: GPUs when there are any, else CPU processes (gloo).

    accelerate keeps its settings (mixed precision) and gradient state in process-wide singletons;
    they are reset here, keeping the process group, so that no state of an earlier stage or run
    (another precision, an old optimizer's gradient-accumulation state) carries over.
    """
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState
    from accelerate.utils import DistributedDataParallelKwargs

    AcceleratorState._reset_state(reset_partial_state=False)
    GradientState._reset_state()

    # buffers (rotary frequencies) are the same everywhere: no sync at forward, so that a no-grad
    # pass is no collective (ranks may make different numbers of them). accelerate has no
    # ``forward_sync_buffers`` yet, so torch's deprecation warning of this flag is silenced in prepare.
    ddp = DistributedDataParallelKwargs(broadcast_buffers=False)
    accelerator = Accelerator(cpu=not torch.cuda.is_available(), mixed_precision=mixed_precision, kwargs_handlers=[ddp])
    if accelerator.distributed_type == DistributedType.FSDP:
        raise ConfigError("accelerate's FSDP plugin is not used: shard with the run config key parallel: fsdp (FSDP2, "
                          "docs/distributed.md), launched with torchrun or configs/accelerate/ddp.yaml")
    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        raise ConfigError("DeepSpeed is not supported: it steps the optimizer inside backward and takes one model per engine, "
                          "while rlzoo trains the policy and PPO's value model with one optimizer; shard with parallel: fsdp")
    return accelerator


@dataclass
class Stage:
    """Everything one stage trains with."""

    name: str
    cfg: Any  # the stage's config (StageConfig)
    algorithm: Algorithm
    accelerator: Any
    rt: Runtime
    optimizer: torch.optim.Optimizer
    scheduler: Any
    source: Any
    ctx: Any  # the source's SourceContext (its question position is the stage's data position)
    loss_agg: str
    agg_constant: float | None
    generator: torch.Generator  # minibatch shuffling, the same on every rank
    step: int = 0  # steps done
    global_step: int = 0  # steps done in the run, this stage's included
    seconds: float = 0.0  # training time before the current session (a resumed stage)
    _started: float = 0.0
    skeleton: torch.nn.Module | None = None  # sharded (parallel: fsdp): the policy's LM as a plain module on the meta device
    _plain: torch.nn.Module | None = None

    @property
    def dist(self) -> Dist:
        return self.rt.dist

    def autocast(self, fn, *args, **kwargs):
        """``fn(*args, **kwargs)`` under the stage's autocast: sampling and evaluation run in the
        precision of the log-prob passes."""
        with self.accelerator.autocast():
            return fn(*args, **kwargs)

    @property
    def lm(self) -> torch.nn.Module:
        """The policy's Hugging Face causal LM, unwrapped (sharded under FSDP: use it inside
        :meth:`gathered`, or take :meth:`plain_lm`)."""
        if self.rt.sharded:
            return self.rt.policy.lm
        return self.accelerator.unwrap_model(self.rt.policy).lm

    def gathered(self):
        """A block in which the policy's weights are whole on every process (sharded: gathered
        once, :func:`rlzoo.runtime.sharding.gathered`; every process enters it), so that each can
        sample and evaluate its own rows."""
        return self.rt.gathered(self.rt.policy)

    def plain_lm(self) -> torch.nn.Module:
        """The policy's LM as an ordinary module with the trained weights, the same on every
        process (sharded: gathered into a plain copy in CPU memory, a collective, taken once at
        the end of the stage; LoRA adapters not merged)."""
        if not self.rt.sharded:
            return self.lm
        if self._plain is None:
            from rlzoo.runtime.sharding import plain_copy

            self._plain = plain_copy(self.lm, self.skeleton)
        return self._plain

    # -- checkpoints -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """What a resumed stage needs besides models, optimizer, schedule and RNGs (which
        ``accelerator.save_state`` writes): steps, the data position, the source's own state (the
        offline pool and its order), the minibatch generator and the seconds trained so far."""
        return {"step": self.step, "global_step": self.global_step, "position": self.ctx.position,
                "source": self.source.state_dict(), "generator": self.generator.get_state(),
                "seconds": self.seconds + time.perf_counter() - self._started}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step, self.global_step, self.seconds = state["step"], state["global_step"], state["seconds"]
        for _ in range(state["position"] - self.ctx.position):  # the stream is re-read, not stored: skip what was used
            next(self.ctx.prompts)
        self.ctx.position = state["position"]
        self.source.load_state_dict(state["source"])
        self.generator.set_state(state["generator"])
        self._started = time.perf_counter()

    def save(self, stage_dir, keep: int, config_yaml: str) -> None:
        """Write ``<stage_dir>/checkpoint-<step>`` (every process takes part; the main one writes
        models, optimizer and the stage's state, each its own RNG states), then keep the newest ``keep``."""
        from pathlib import Path

        from rlzoo.runtime.checkpoint import CONFIG_NAME, prune, publish, temporary, write_state

        stage_dir = Path(stage_dir)
        folder = stage_dir / f"checkpoint-{self.step}"
        tmp = stage_dir / f"checkpoint-{self.step}.tmp"
        if self.dist.is_main:
            temporary(folder)
        self.dist.barrier()
        try:
            self.accelerator.save_state(str(tmp), safe_serialization=True)
            if self.rt.sharded:  # models and optimizer: each process its shards
                from rlzoo.runtime.sharding import save_sharded

                save_sharded(tmp, self.rt.models_with_grad(), self.optimizer)
            self.dist.barrier()
            if self.dist.is_main:
                write_state(tmp, {"stage": self.name, "step": self.step, "global_step": self.global_step})
                (tmp / CONFIG_NAME).write_text(config_yaml)
                publish(tmp, folder)
                prune(stage_dir, keep)
        except BaseException:  # a full disk: the previous checkpoints stay, no half-written one
            if self.dist.is_main:
                shutil.rmtree(tmp, ignore_errors=True)
            raise
        self.dist.barrier()

    def load(self, folder) -> None:
        """Continue from a step checkpoint written by :meth:`save`."""
        self.accelerator.load_state(str(folder))
        if self.rt.sharded:
            from pathlib import Path

            from rlzoo.runtime.sharding import load_sharded

            load_sharded(Path(folder), self.rt.models_with_grad(), self.optimizer)

    @property
    def seconds_trained(self) -> float:
        return self.seconds + time.perf_counter() - self._started

    def close(self) -> torch.nn.Module:
        """Release the stage's optimizer, wrappers and accelerator state; returns the trained LM
        (a LoRA model's adapters merged into its weights: the next stage adds fresh ones)."""
        lm = merged(self.plain_lm())
        self.accelerator.free_memory()
        self.rt = self.optimizer = self.scheduler = self.source = None
        return lm


def make_optimizer(param_groups: list[dict], ocfg, steps: int):
    """AdamW over ``param_groups`` (each with its ``lr``) and its learning-rate schedule (``optim``:
    warm-up from 0, then constant, linear or cosine over ``steps``). The schedule is stepped once
    per step by the stage; it is not given to accelerate, which would step it once per process."""
    from transformers import get_scheduler

    from rlzoo.config import SCHEDULES

    # the fused kernel (one pass over all parameters, CPU and CUDA): 10x less time than the
    # per-tensor loop on a 26M-parameter CPU model (benchmarks/vs_trl.py, docs/performance.md)
    params = [p for group in param_groups for p in group["params"]]
    fused = all(p.device.type in ("cpu", "cuda") and p.is_floating_point() for p in params)
    optimizer = torch.optim.AdamW(param_groups, betas=tuple(ocfg.betas), weight_decay=ocfg.weight_decay, fused=fused or None)
    return optimizer, get_scheduler(SCHEDULES[ocfg.schedule], optimizer, num_warmup_steps=ocfg.warmup_steps,
                                    num_training_steps=steps)


def build_stage(name: str, stage_cfg, algorithm: Algorithm, lm: torch.nn.Module, tokenizer, prompts: Iterator[Example],
                *, model_cfg, mixed_precision: str, seed: int, sample_seed: int, reward, diagnostics: dict | None = None,
                parallel: str = "ddp") -> Stage:
    """The stage ``name`` starting from ``lm`` (trained in place), drawing questions from ``prompts``
    and scoring samples with ``reward`` (anything with ``score_batch(batch) -> metrics``, e.g. a
    :class:`rlzoo.rewards.Reward`); ``diagnostics`` (name -> reward) score the same samples for the
    logs only (``diag/<name>/mean``).

    ``seed`` seeds the data source's and the minibatches' shuffling, ``sample_seed`` the rollouts
    (a row's seed is ``(sample_seed, its question's position, its sample index)``). ``parallel``:
    ``ddp`` (accelerate prepares the models) or ``fsdp`` (policy, value model and reference are
    sharded with FSDP2, :mod:`rlzoo.runtime.sharding`)."""
    from rlzoo.runtime.sources import SourceContext
    from rlzoo.runtime.generation import encode_pairs, sample

    from accelerate.utils import set_seed

    accelerator = make_accelerator(mixed_precision)
    dist = Dist(accelerator.device)
    set_seed(seed)  # what the stage draws at its start (LoRA's initial adapters) does not depend on earlier stages
    ocfg = stage_cfg.optim
    if model_cfg.lora.r > 0:
        lm = add_lora(lm, model_cfg.lora)  # base frozen; the reference is the same model with its adapters off
    if not model_cfg.dropout:
        disable_dropout(lm)
    set_gradient_checkpointing(lm, model_cfg.gradient_checkpointing)
    lm.train()
    # sharded, every process must make the same calls of each layer in a training pass (FSDP
    # gathers weights per call), whatever rows it holds: no pass runs a shared prompt apart
    share = model_cfg.share_prompts and parallel != "fsdp"
    policy = LogProbModel(lm, model_cfg.logprob_chunk_size, share)
    reference = None
    if "reference" in algorithm.needs and not is_lora(lm):
        reference = LogProbModel(frozen_copy(lm), model_cfg.logprob_chunk_size, share)
    value_model: ValueModel | None = None
    param_groups = [{"params": [p for p in lm.parameters() if p.requires_grad], "lr": ocfg.lr, "name": "policy"}]
    if "value_model" in algorithm.needs:
        value_model = build_value_model(lm)  # with LoRA: a copy of the frozen base with its own adapters (and head)
        set_gradient_checkpointing(value_model.backbone, model_cfg.gradient_checkpointing)
        param_groups.append({"params": [p for p in value_model.parameters() if p.requires_grad], "lr": ocfg.value_lr or ocfg.lr,
                             "name": "value"})
    skeleton = None
    if parallel == "fsdp":  # sharded in place (FSDP2): accelerate keeps autocast, devices and RNGs, not the models
        from rlzoo.runtime.sharding import autocast_forward, meta_copy, shard

        skeleton = meta_copy(lm)  # the plain model the trained weights go back into (plain_lm)
        for model, what in ((policy, "policy"), (value_model, "value model"), (reference, "reference")):
            if model is not None:
                shard(model, accelerator.device, what)
                if model is not reference:  # the Runtime gives the reference the policy's autocast
                    autocast_forward(model, accelerator)
        param_groups[0]["params"] = [p for p in lm.parameters() if p.requires_grad]  # now the shards
        if value_model is not None:
            param_groups[1]["params"] = [p for p in value_model.parameters() if p.requires_grad]
    optimizer, scheduler = make_optimizer(param_groups, ocfg, stage_cfg.steps)
    if parallel != "fsdp":
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*broadcast_buffers.*deprecated", category=FutureWarning)
            if value_model is not None:
                policy, value_model, optimizer = accelerator.prepare(policy, value_model, optimizer)
            else:
                policy, optimizer = accelerator.prepare(policy, optimizer)
        if reference is not None:
            reference.to(accelerator.device)  # not prepared: frozen, no DDP, not in checkpoints; the Runtime gives it the policy's autocast
    source_name = stage_cfg.data.source or algorithm.data_source
    rt = Runtime(accelerator, policy, tokenizer, reference, value_model, ocfg.micro_batch_size, dist,
                 reference_is_base="reference" in algorithm.needs and reference is None, data_source=source_name,
                 sharded=parallel == "fsdp")
    device = accelerator.device
    ctx = SourceContext(
        prompts=prompts,
        settings=stage_cfg.data,
        encode=lambda exs, comps, keys: encode_pairs(tokenizer, exs, comps, device, group_ids=keys),
        sample=lambda exs, keys, n: st.autocast(sample, policy, tokenizer, exs, n, stage_cfg.generation, seed=sample_seed, keys=keys),
        reward=reward,
        diagnostics=dict(diagnostics or {}),
        seed=seed,
        dist=dist,
        pad_token_id=tokenizer.pad_token_id,
    )
    source_cls = DATA_SOURCES.get(source_name)
    ctx.args = source_config(source_name, source_cls, stage_cfg.data.source_args, name)
    source = source_cls(ctx)
    st = Stage(
        name=name, cfg=stage_cfg, algorithm=algorithm, accelerator=accelerator, rt=rt, optimizer=optimizer,
        scheduler=scheduler, source=source, ctx=ctx, loss_agg=resolve_loss_agg(algorithm, ocfg.loss_agg),
        agg_constant=ocfg.loss_agg_constant or float(stage_cfg.generation.max_new_tokens),
        generator=torch.Generator().manual_seed(seed), _started=time.perf_counter(), skeleton=skeleton,
    )
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(st)
    return st


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA max allocated on a GPU (reset per stage), else the process's peak RSS."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def reward_statistics(dist: Dist, batch: RolloutBatch) -> dict[str, float]:
    """Mean and std of the step's rewards over every rank (none for unscored data)."""
    rewards = [r for part in dist.gather(batch.rewards.tolist()) for r in part if r == r]  # NaN != NaN
    if not rewards:
        return {}
    t = torch.tensor(rewards, dtype=torch.float64)
    return {"reward/mean": float(t.mean()), "reward/std": float(t.std()) if len(t) > 1 else 0.0}


def replica_divergence(dist: Dist, models: list[torch.nn.Module]) -> float:
    """How far the ranks' copies of the weights are apart: the largest difference of a weight
    fingerprint (sum and sum of squares in float64) from the main rank's. 0 when in sync."""
    with torch.no_grad():
        prints = torch.stack([torch.stack([p.double().sum(), p.double().square().sum()])
                              for m in models for p in m.parameters()]).sum(0).cpu()  # [2]
    everyone = torch.stack(dist.gather(prints))  # [world, 2]
    return float((everyone - everyone[0]).abs().max())


def logprob_passes(st: Stage, batch: RolloutBatch, local: dict[str, float]) -> None:
    """The no-grad log-prob passes the algorithm needs, into ``batch``: the reference's, and pi_old
    when the batch is used for more than one update (every process takes part, rows or not)."""
    algo, rt = st.algorithm, st.rt
    with timed(local, "time/reference"), rt.gathered(rt.policy if rt.reference_is_base else rt.reference):
        if "reference" in algo.needs:
            batch.ref_logprobs = rt.reference_logprobs(batch)  # [N, T]
    with timed(local, "time/old_logprobs"), rt.gathered(rt.policy, rt.value_model):
        ocfg = st.cfg.optim
        used_once = ocfg.updates_per_batch == 1 and ocfg.minibatches == 1
        if "old_logprobs" in algo.needs and not used_once:
            batch.old_logprobs = rt.policy_logprobs(batch)  # [N, T]: the sampling policy
        # a batch used for one update only: pi_old is the training pass's own log-probs (ratio exactly 1), no extra pass


def train_step(st: Stage) -> dict[str, float]:
    """One step of the stage (its ``st.step + 1``-th); returns its metrics, the same on every rank."""
    algo, rt, dist = st.algorithm, st.rt, st.dist
    local: dict[str, float] = {}
    t0 = time.perf_counter()
    drawn = (st.ctx.position, st.ctx.generated, st.ctx.generated_tokens)
    with rt.gathered(rt.policy):  # sharded: whole weights for the no-grad passes, every process at once
        batch, source_metrics = st.source.next_batch(st.step)  # 1. data source
    samples, tokens = dist.sum([float(st.ctx.generated - drawn[1]), float(st.ctx.generated_tokens - drawn[2])]).tolist()  # every rank's
    rows = float(len(batch))
    shared = reward_statistics(dist, batch)
    local["time/data"] = time.perf_counter() - t0 - source_metrics.get("time/generate", 0.0) - source_metrics.get("time/reward", 0.0)
    # an algorithm whose prepare reads no log-prob gets them after it, for the rows it kept (DPO's pairs)
    late = not getattr(algo, "logprobs_before_prepare", True)
    if not late:
        logprob_passes(st, batch, local)  # 2. reference, 3. pi_old
    with rt.gathered(rt.policy, rt.value_model), timed(local, "time/prepare"):
        batch, prep_metrics = algo.prepare(batch, rt)  # 4. advantages, pairs, filtering
    if late:
        logprob_passes(st, batch, local)
    reducer = MetricsReducer()
    if rows:
        reducer.add({**source_metrics, **prep_metrics}, rows)
    else:
        reducer.add({k: v for k, v in source_metrics.items() if k.startswith("time/")})
    trained = float(dist.sum([float(len(batch))])[0])
    if trained == 0:
        shared["train/skipped_empty"] = 1.0  # nothing to learn from on any rank (e.g. no correct output)
    else:
        with timed(local, "time/train"):
            train_metrics, weight, train_shared = train_on_batch(
                rt, algo, batch, st.optimizer, st.cfg.optim, st.loss_agg, st.agg_constant, st.generator, local)  # 5. update
        if weight:
            reducer.add(train_metrics, weight)
        shared.update(train_shared)
    st.scheduler.step()
    st.step += 1
    st.global_step += 1
    if dist.world > 1 and not rt.sharded and st.accelerator.distributed_type in (DistributedType.MULTI_CPU, DistributedType.MULTI_GPU):
        shared["dist/replica_max_diff"] = replica_divergence(dist, st.rt.models_with_grad())
    local["time/step"] = time.perf_counter() - t0
    reducer.add(local)
    metrics = reducer.reduce(dist)
    metrics.update(shared)
    metrics.update({"optim/lr": st.scheduler.get_last_lr()[0], "train/num_sequences": trained,
                    "data/questions": float(st.ctx.position - drawn[0]), "data/samples": samples, "data/sample_tokens": tokens})
    return metrics
