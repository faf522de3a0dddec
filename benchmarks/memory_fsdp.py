"""What FSDP2 (``parallel: fsdp``) saves per process, and what it costs in step time against DDP.

1. Memory: each process of a ``torchrun --nproc_per_node N`` group (N = 1, 2, 4) builds the same
   causal LM, wraps it as the runtime does (a :class:`~rlzoo.runtime.models.LogProbModel`, sharded
   by :func:`rlzoo.runtime.sharding.shard`, or replicated under DDP), takes one AdamW step on a
   fixed batch, and counts the bytes *it* holds of parameters, gradients and optimizer state (a
   DTensor counts its local shard). Under FSDP the three fall as 1/N; under DDP they stay whole.
   Activations and the weights gathered for a forward are not counted: they are transient and
   grow with the batch, not with N.
2. Step time: ``rlzoo train`` on 2 CPU processes, an SFT stage then a GRPO stage, once with
   ``parallel: ddp`` and once with ``parallel: fsdp``; the mean ``time/step`` of each stage (its
   first step left out). FSDP all-gathers each layer's weights for every forward and again in
   backward and reduce-scatters gradients, and GRPO's rollouts gather the whole policy first.

Usage (from the repository root; the machine's load shows in the times, so say how busy it was):

    .venv/bin/python benchmarks/memory_fsdp.py
    .venv/bin/python benchmarks/memory_fsdp.py --hidden-size 512 --num-layers 8 --processes 1 2 4 --steps 6
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MB = 1024 * 1024


def _local_bytes(t) -> int:
    from torch.distributed.tensor import DTensor

    t = t.to_local() if isinstance(t, DTensor) else t
    return t.numel() * t.element_size()


def worker(args) -> None:
    """One process of the memory measurement (run under torchrun)."""
    import torch
    import torch.distributed as dist
    from transformers import LlamaConfig, LlamaForCausalLM

    from rlzoo.runtime.models import LogProbModel
    from rlzoo.runtime.sharding import shard

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=args.vocab_size, hidden_size=args.hidden_size, intermediate_size=args.intermediate_size,
                         num_hidden_layers=args.num_layers, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=128, tie_word_embeddings=True)
    model = LogProbModel(LlamaForCausalLM(config), chunk_size=64)
    numel = sum(p.numel() for p in model.parameters())
    if args.mode == "fsdp":
        shard(model, torch.device("cpu"), "policy")
        wrapped = model
    else:
        wrapped = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    ids = torch.randint(0, args.vocab_size, (2, 32), generator=torch.Generator().manual_seed(rank))
    (-wrapped(ids, torch.ones_like(ids)).mean()).backward()
    optimizer.step()
    params = sum(_local_bytes(p) for p in model.parameters())
    grads = sum(_local_bytes(p.grad) for p in model.parameters() if p.grad is not None)
    moments = sum(_local_bytes(v) for s in optimizer.state.values() for k, v in s.items() if torch.is_tensor(v) and k != "step")
    everyone = [None] * world
    dist.all_gather_object(everyone, (params, grads, moments))
    if rank == 0:
        print(json.dumps({"mode": args.mode, "world": world, "numel": numel, "per_process": everyone}))
    dist.destroy_process_group()


def measure(mode: str, nproc: int, extra: list[str]) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", __file__, "--worker",
           "--mode", mode, *extra]
    proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("{")))


def step_times(parallel: str, steps: int, out: Path) -> dict[str, float]:
    overrides = ["logging.progress=false", "model.tiny.hidden_size=128", "model.tiny.intermediate_size=384",
                 "model.tiny.num_layers=4", "eval.samples=0", "task.synthetic.eval_size=2", f"stages.sft.steps={steps}",
                 f"stages.grpo.steps={steps}", "stages.grpo.data.prompts_per_step=4", "stages.grpo.data.samples_per_prompt=4",
                 "stages.grpo.generation.max_new_tokens=24", f"parallel={parallel}", f"output_dir={out}"]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "rlzoo", "train",
           "configs/quickstart.yaml", *overrides]
    subprocess.run(cmd, cwd=ROOT, env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"}, capture_output=True, check=True,
                   timeout=1800)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    result = {}
    for stage in ("sft", "grpo"):
        times = [r["time/step"] for r in rows if r.get("stage") == stage and "time/step" in r and r["step"] > 1]
        result[stage] = sum(times) / len(times)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", default="fsdp", choices=("fsdp", "ddp"))
    parser.add_argument("--hidden-size", type=int, default=256)
    parser.add_argument("--intermediate-size", type=int, default=768)
    parser.add_argument("--num-layers", type=int, default=4)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--steps", type=int, default=4, help="steps per stage of the step-time runs (0: skip them)")
    args = parser.parse_args()
    if args.worker:
        return worker(args)
    extra = ["--hidden-size", str(args.hidden_size), "--intermediate-size", str(args.intermediate_size),
             "--num-layers", str(args.num_layers), "--vocab-size", str(args.vocab_size)]
    print("bytes each process holds after one AdamW step (MB; rank 0 / the largest rank); fp32, "
          f"hidden {args.hidden_size}, {args.num_layers} layers, vocab {args.vocab_size}")
    print(f"{'mode':5} {'N':>2} {'params':>8} {'grads':>8} {'adam':>8} {'total':>8} {'x 1/N of N=1':>13}")
    base = None
    for mode in ("ddp", "fsdp"):
        for n in args.processes:
            r = measure(mode, n, extra)
            worst = max(r["per_process"], key=sum)
            total = sum(worst) / MB
            base = base or total
            print(f"{mode:5} {n:>2} {worst[0] / MB:8.2f} {worst[1] / MB:8.2f} {worst[2] / MB:8.2f} {total:8.2f} "
                  f"{total / (base / n):13.2f}")
    print(f"({r['numel'] / 1e6:.2f}M parameters: 16 B each in fp32 Adam = {16 * r['numel'] / MB:.2f} MB unsharded)")
    if args.steps:
        print(f"\nstep time on 2 CPU processes (s, mean of steps 2..{args.steps}; 4 layers, hidden 128)")
        with tempfile.TemporaryDirectory() as tmp:
            times = {p: step_times(p, args.steps, Path(tmp) / p) for p in ("ddp", "fsdp")}
        for stage in ("sft", "grpo"):
            print(f"{stage:5} ddp {times['ddp'][stage]:.3f}  fsdp {times['fsdp'][stage]:.3f}  "
                  f"fsdp/ddp {times['fsdp'][stage] / times['ddp'][stage]:.2f}")


if __name__ == "__main__":
    main()
