"""Worker of tests/test_distributed.py: updates on one fixed batch, with its rows split over ranks.

    python -m torch.distributed.run --standalone --nproc_per_node N tests/dist_worker.py OUT SPLIT

Builds a tiny model and a fixed batch of 6 questions x 2 samples (seeded, the same in every
process), gives rank r the questions of ``SPLIT`` (``even``: 3 + 3; ``uneven``: 5 + 1; ``empty``:
6 + 0), and runs GRPO (rows shuffled into minibatches), DPO (pairs kept whole), PPO (a value
model, whitening over the global batch) and the later variants (REINFORCE++'s normalisation over
the global batch, GSPO's sequence ratios, RLOO's leave-one-out baselines, ...), each for 2 updates x 3 minibatches x micro-batches of 2
rows, through ``train_on_batch`` with a real Accelerator. Rank 0 saves the final weights of each
to ``OUT/<algorithm>.pt`` and the step's metrics, reduced over ranks as a stage reduces them, to
``OUT/<algorithm>_metrics.json``. On one process every split is the whole batch.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch

SPLITS = {"even": [3, 3], "uneven": [5, 1], "empty": [6, 0]}
ALGORITHMS = ("grpo", "dpo", "ppo", "dr_grpo", "rloo", "gspo", "cispo", "reinforce_pp", "dapo")  # every one sampling-based


def fixed_batch(tokenizer):
    from rlzoo.interface import Example, RolloutBatch

    g = torch.Generator().manual_seed(0)
    n, t, prompt = 12, 9, 3
    vocab = len(tokenizer)
    ids = torch.randint(3, vocab, (n, t), generator=g)
    mask = torch.ones(n, t, dtype=torch.long)
    loss_mask = torch.zeros(n, t)
    lengths = torch.randint(2, t - prompt + 1, (n,), generator=g)
    for i, length in enumerate(lengths.tolist()):
        loss_mask[i, prompt : prompt + length] = 1
        mask[i, prompt + length :] = 0
        ids[i, prompt + length :] = tokenizer.pad_token_id
    return RolloutBatch(
        input_ids=ids, attention_mask=mask, loss_mask=loss_mask,
        group_ids=torch.arange(100, 106).repeat_interleave(2),  # [12] global ids, two samples each
        rewards=torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]),
        examples=[Example("q", "1")] * n, completions=["c"] * n, temperature=0.8,
    )


def run(algorithm_name: str, split: str, out: Path) -> None:
    from accelerate.utils import set_seed

    from rlzoo.config import OptimConfig, TinyModelConfig
    from rlzoo.data.synthetic import SyntheticConfig, SyntheticTask
    from rlzoo.data.tokenizer import build_tokenizer
    from rlzoo.registry import ALGORITHMS
    from rlzoo.runtime.models import LogProbModel, ValueModel, build_tiny_model, frozen_copy
    from rlzoo.runtime.stage import make_accelerator
    from rlzoo.runtime.trainer import Runtime, train_on_batch
    from rlzoo.runtime.distributed import Dist, MetricsReducer

    accelerator = make_accelerator("no")
    dist = Dist(accelerator.device)
    set_seed(0)
    tokenizer = build_tokenizer(SyntheticTask(SyntheticConfig(eval_size=4)).corpus(50))
    lm = build_tiny_model(TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=1, num_heads=2), tokenizer)
    reference = LogProbModel(frozen_copy(lm))
    with torch.no_grad():  # the policy away from the reference
        for p in lm.parameters():
            p.add_(0.05 * torch.randn_like(p))
    cls = ALGORITHMS.get(algorithm_name)
    algo = cls(cls.Config())
    policy = LogProbModel(lm)
    groups = [{"params": list(lm.parameters()), "lr": 1e-3}]
    value = None
    if "value_model" in algo.needs:
        value = ValueModel(frozen_copy(lm).requires_grad_(True).train())
        groups.append({"params": list(value.parameters()), "lr": 1e-3, "name": "value"})
    optimizer = torch.optim.AdamW(groups)
    if value is not None:
        policy, value, optimizer = accelerator.prepare(policy, value, optimizer)
    else:
        policy, optimizer = accelerator.prepare(policy, optimizer)
    rt = Runtime(accelerator, policy, tokenizer, reference, value, 2, dist)

    if dist.is_main:
        torch.save({k: v.detach().clone() for k, v in accelerator.unwrap_model(policy).state_dict().items()}, out / "start.pt")
    batch = fixed_batch(tokenizer)
    sizes = SPLITS[split] if dist.world == 2 else [6]
    start = sum(sizes[: dist.rank])
    batch = batch.select(list(range(2 * start, 2 * (start + sizes[dist.rank]))))
    batch.ref_logprobs = rt.reference_logprobs(batch)
    batch.old_logprobs = rt.policy_logprobs(batch)
    rows = len(batch)
    batch, prep_metrics = algo.prepare(batch, rt)
    cfg = OptimConfig(updates_per_batch=2, minibatches=3, micro_batch_size=2, grad_clip=1.0)
    means, weight, shared = train_on_batch(rt, algo, batch, optimizer, cfg,
                                           "seq-mean-token-mean" if algo.loss_agg is None else algo.loss_agg,
                                           9.0, torch.Generator().manual_seed(1))  # 9: Dr. GRPO's constant (the batch's width)
    reducer = MetricsReducer()  # as a stage step reduces them
    if rows:
        reducer.add(prep_metrics, rows)
    if weight:
        reducer.add(means, weight)
    metrics = {**reducer.reduce(dist), **shared}
    if dist.is_main:
        (out / f"{algorithm_name}_metrics.json").write_text(json.dumps(metrics))
        state = {k: v.detach().clone() for k, v in accelerator.unwrap_model(policy).state_dict().items()}
        if value is not None:
            state.update({f"value.{k}": v.detach().clone() for k, v in accelerator.unwrap_model(value).state_dict().items()})
        torch.save(state, out / f"{algorithm_name}.pt")
    accelerator.free_memory()


if __name__ == "__main__":
    out, split = Path(sys.argv[1]), sys.argv[2]
    out.mkdir(parents=True, exist_ok=True)
    for name in ALGORITHMS:
        run(name, split, out)
