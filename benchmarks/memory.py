"""Peak memory of one PPO training step against one GRPO training step, same model, same batch.

GRPO drops PPO's value model (DeepSeekMath Sec. 4.1). PPO holds a second copy of the backbone
plus its gradients and AdamW state, so its step should cost about four extra model-sizes of memory
(weights + grads + two Adam moments). This script measures it through the real runtime: each
algorithm builds the quickstart's RL stage and runs one ``train_step`` (sampling, reference and
old log-probs, ``prepare``, ``train_on_batch``) in a fresh spawned process.

    CPU   peak RSS (VmHWM) after the step, and its delta over the RSS of the same process right
          after the policy was built (the high-water mark is reset there when Linux allows it)
    GPU   torch.cuda.max_memory_allocated after the step, and its delta over the memory allocated
          once the policy sits on the GPU

Both algorithms use the same optimisation settings (``updates_per_batch``, ``minibatches``,
``micro_batch_size``), the same prompts, and the same number of sequences; the completion lengths
are printed (a random model rarely samples EOS, so every row runs to ``max_new_tokens``). The
measurement is taken right after the step, so no evaluation or checkpoint is counted.

Usage (from the repository root):

    .venv/bin/python benchmarks/memory.py
    .venv/bin/python benchmarks/memory.py --hidden-size 512 --num-layers 8 --intermediate-size 1536 \\
        --prompts 4 --samples 4 --max-new-tokens 32 --micro-batch-size 2 --device cpu
    .venv/bin/python benchmarks/memory.py --device cuda grpo.optim.minibatches=2   # extra overrides

Any further ``key=value`` arguments are config overrides applied to both runs (as ``rlzoo train``
takes them; the RL stage of configs/quickstart.yaml is called ``grpo``).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "quickstart.yaml"
MB = 1024 * 1024


def _proc_status(field: str) -> float:
    """A kB figure of /proc/self/status (VmRSS, VmHWM); ru_maxrss where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return float(line.split()[1])
    except OSError:
        pass
    import resource

    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def _reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where not allowed."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def measure(variant: str, overrides: list[str], device: str) -> dict[str, float]:
    """One RL step of ``variant`` (``rlzoo.runtime.stage.train_step``) in this (fresh) process; memory in MB.

    A variant is an algorithm name with options: ``grpo+lora`` trains LoRA adapters (rank 16; the
    reference is the policy with its adapters off), ``grpo+lora+copyref`` does the same with a
    frozen copy of the model as the reference instead: the difference of the two is what the
    adapter-off reference saves.
    """
    algorithm, *options = variant.split("+")
    sys.path.insert(0, str(ROOT))
    import gc
    import os

    if device == "cpu":
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the stage's accelerator takes a GPU whenever it sees one
    import torch
    from accelerate.utils import set_seed

    from rlzoo.config import load_config
    from rlzoo.runtime.stage import build_stage, train_step
    from rlzoo.run.factories import build_task, initial_model, make_algorithm, make_reward

    lora = ["model.lora.r=16"] if "lora" in options else []
    if "copyref" in options:  # the stage then takes the LoRA model for a plain one and keeps a frozen copy as reference
        import rlzoo.runtime.stage as stage_module

        stage_module.is_lora = lambda model: False
    cfg = load_config(CONFIG, [*overrides, *lora, f"grpo.algorithm={algorithm}", "grpo.steps=1", "logging.progress=false"])
    cuda = torch.cuda.is_available()
    set_seed(cfg.seed)
    task = build_task(cfg)
    lm, tokenizer = initial_model(cfg, task)
    lm.to("cuda" if cuda else "cpu")
    stage = cfg.stages.grpo
    algo = make_algorithm(cfg, stage.algorithm)
    params = sum(p.numel() for p in lm.parameters())
    gc.collect()
    reset = _reset_peak_rss()
    base_rss = _proc_status("VmRSS") / 1024
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base_gpu = torch.cuda.memory_allocated() / MB
    st = build_stage("grpo", stage, algo, lm, tokenizer, task.train_stream(cfg.seed), model_cfg=cfg.model,
                     mixed_precision=cfg.mixed_precision, seed=cfg.seed, sample_seed=cfg.seed,
                     reward=make_reward(stage))
    metrics = train_step(st)
    rec = {k: metrics[k] for k in ("train/num_sequences", "completion/length_mean", "completion/length_max") if k in metrics}
    if cuda:
        torch.cuda.synchronize()
        rec["gpu_peak"] = torch.cuda.max_memory_allocated() / MB
    rec["rss_peak"] = _proc_status("VmHWM") / 1024
    rec.update({"params_m": params / 1e6, "rss_base": base_rss, "rss_delta": rec["rss_peak"] - base_rss,
                "hwm_reset": float(reset), "vocab": float(len(tokenizer))})
    if cuda:
        rec.update({"gpu_base": base_gpu, "gpu_delta": rec["gpu_peak"] - base_gpu,
                    "gpu_name": torch.cuda.get_device_name()})
    return rec


def _child(conn, algorithm: str, overrides: list[str], device: str) -> None:
    try:
        conn.send(("ok", measure(algorithm, overrides, device)))
    except BaseException as e:  # report, do not hang the parent
        conn.send(("error", f"{type(e).__name__}: {e}"))
    finally:
        conn.close()


def run_fresh(algorithm: str, overrides: list[str], device: str) -> dict[str, float]:
    """``measure`` in a freshly spawned interpreter, so that no peak leaks from one run into the next."""
    spawn = mp.get_context("spawn")
    receiver, sender = spawn.Pipe(duplex=False)
    proc = spawn.Process(target=_child, args=(sender, algorithm, overrides, device))
    proc.start()
    sender.close()
    status, payload = receiver.recv()
    proc.join()
    if status != "ok":
        raise SystemExit(f"{algorithm}: {payload}")
    return payload


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--hidden-size", type=int, default=512)
    p.add_argument("--num-layers", type=int, default=8)
    p.add_argument("--intermediate-size", type=int, default=1536)
    p.add_argument("--num-heads", type=int, default=8)
    p.add_argument("--prompts", type=int, default=4, help="prompts per step")
    p.add_argument("--samples", type=int, default=4, help="samples per prompt (sequences = prompts * samples)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--micro-batch-size", type=int, default=2,
                   help="sequences per forward/backward (gradients accumulate over the batch); small keeps "
                        "activations below the model state, so the value model's cost stands out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--algorithms", default="grpo,ppo",
                   help="comma-separated variants (grpo, ppo, grpo+lora, grpo+lora+copyref...); the first is the ratio's denominator")
    p.add_argument("--json", action="store_true", help="print the measurements as one JSON object at the end")
    p.add_argument("overrides", nargs="*", help="extra key=value config overrides for both runs")
    args = p.parse_args(argv)
    overrides = [
        f"model.tiny.hidden_size={args.hidden_size}", f"model.tiny.num_layers={args.num_layers}",
        f"model.tiny.intermediate_size={args.intermediate_size}", f"model.tiny.num_heads={args.num_heads}",
        "task.synthetic.eval_size=8", f"grpo.data.prompts_per_step={args.prompts}",
        f"grpo.data.samples_per_prompt={args.samples}", f"grpo.generation.max_new_tokens={args.max_new_tokens}",
        "grpo.optim.updates_per_batch=1", "grpo.optim.minibatches=1",
        f"grpo.optim.micro_batch_size={args.micro_batch_size}", *args.overrides,
    ]
    results = {name: run_fresh(name, overrides, args.device) for name in args.algorithms.split(",")}

    first = next(iter(results.values()))
    print(f"model: tiny Llama hidden={args.hidden_size} layers={args.num_layers} intermediate={args.intermediate_size} "
          f"vocab={first['vocab']:.0f}: {first['params_m']:.1f}M parameters = {first['params_m'] * 4:.0f} MB in fp32")
    gpu = "gpu_peak" in first
    w = max(10, *(len(n) for n in results))
    header = f"{'variant':<{w}} {'policy M':>8} {'seqs':>5} {'len max':>7} {'RSS base MB':>12} {'RSS peak MB':>12} {'RSS delta MB':>13}"
    if gpu:
        header += f" {'GPU peak MB':>12} {'GPU delta MB':>13}"
    print(header)
    for name, r in results.items():
        line = (f"{name:<{w}} {r['params_m']:>8.1f} {r['train/num_sequences']:>5.0f} {r['completion/length_max']:>7.0f} {r['rss_base']:>12.0f} "
                f"{r['rss_peak']:>12.0f} {r['rss_delta']:>13.0f}")
        if gpu:
            line += f" {r['gpu_peak']:>12.0f} {r['gpu_delta']:>13.0f}"
        print(line)
    names = list(results)
    weights = first["params_m"] * 4
    kinds = [("RSS", "rss")] + ([("GPU", "gpu")] if gpu else [])
    for other in names[1:]:
        a, b = results[other], results[names[0]]
        for label, key in kinds:
            extra = a[f"{key}_delta"] - b[f"{key}_delta"]
            print(f"{other} - {names[0]}: {label} {extra:.0f} MB = {extra / weights:.1f} x the fp32 weights "
                  f"(a value model's weights + grads + 2 Adam moments are 4 x)")
        ratios = [f"{label} peak x{a[f'{key}_peak'] / b[f'{key}_peak']:.2f}, "
                  f"{label} delta x{a[f'{key}_delta'] / b[f'{key}_delta']:.2f}" for label, key in kinds]
        print(f"{other}/{names[0]}: " + ", ".join(ratios))
    if not all(r["hwm_reset"] for r in results.values()):
        print("note: the RSS high-water mark could not be reset; deltas include any earlier peak while loading")
    if args.json:
        import json

        print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
