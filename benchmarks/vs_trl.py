"""rlzoo beside TRL, like for like: GRPO and DPO steps at identical shapes, time per phase, peak memory.

    python benchmarks/vs_trl.py [--sizes small large] [--algos grpo dpo] [--steps 10] [--warmup 2]
                                [--rounds 2] [--gc off on] [--out runs/vs_trl] [--rlzoo-at DIR]

Everything is built here, nothing is downloaded: a word-level tokenizer (decoding and encoding a
text gives back the same tokens), two randomly initialised Llama models saved as Hugging Face
folders (``small`` about 3M parameters, ``large`` about 26M), prompts of ``--prompt-tokens`` words
and a reward that both libraries call alike (a TRL-style function: a coin flip from a hash of the
completion). The models' ``generation_config`` suppresses EOS, so every completion is exactly
``--new-tokens`` tokens long on both sides; the script checks the token counts each side reports
and prints them.

Configs, each run in its own process (``OMP_NUM_THREADS=--threads``), ``--rounds`` times in
alternating order, each one waiting for the machine to be idle (less than
``--max-busy`` of the cores busy, up to ``--idle-wait`` seconds) first:

* GRPO: ``--questions`` prompts x ``--samples`` completions a step, beta 0.04, one optimizer step
  per batch (no pi_old pass), the whole batch in one micro-batch, the sequence-mean token-mean loss
  (TRL's ``loss_type="grpo"``), fp32, AdamW (each library's default implementation);
* DPO: ``--questions`` pairs a step (prompt + 32-token chosen and rejected), beta 0.1, the summed
  log-ratio (rlzoo ``normalize: sum``), reference log-probs computed each step; rlzoo samples its
  pairs (an offline pool sampled up front, before the timed steps), TRL reads them from a dataset
  of the same shape;
* each with gradient checkpointing off and on (TRL ships with it on).

Printed per config: median s/step over the steps after ``--warmup`` (and the spread over rounds),
the median seconds of each phase (generate, reward, reference, policy forward, backward,
optimizer), generated tokens per second of generation, peak RSS of the process (``wait4``) and,
with ``--device cuda``, the CUDA peak (max allocated), and the TRL/rlzoo ratios for GC off vs off
and on vs on. On a GPU: ``--sizes model --model smollm2 --algos grpo --device cuda --bf16`` (any
Hugging Face folder works as ``--model``; scripts/gpu_check.sh runs this). Without TRL installed (``pip install -e
'.[bench]'``) only rlzoo is measured. ``--only rlzoo`` does the same on purpose, and is the step
profile of rlzoo at any shape (``--questions``, ``--samples``, ``--prompt-tokens``, ``--new-tokens``).
``--rlzoo-at DIR`` adds the rlzoo of another checkout (with its own ``.venv``, if it has one) to the
same rounds: a before/after comparison on the same machine in one run.

Phases: rlzoo logs them itself (``time/generate``, ``time/reward``, ``time/reference``,
``time/forward``, ``time/backward``, ``time/optimizer`` in metrics.jsonl); TRL's are measured by
wrapping its model's ``generate``, the reward function, the reference model's and the policy's
``forward`` (a forward inside ``generate`` counts as generation), ``accelerator.backward`` and
the optimizer's ``step``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SIZES = {  # hidden, intermediate, layers, heads
    "small": (256, 688, 4, 4),
    "large": (512, 1376, 8, 8),
}
VOCAB_WORDS = 1000
PHASES = ("generate", "reward", "reference", "forward", "backward", "optimizer")
COLUMNS = (*PHASES, "train")  # train: the update (forward + backward + optimizer and the loss between)
REWARD_SOURCE = '''import zlib


def coin(completions, **kwargs):
    """1 or 0 from a hash of the completion's text: half the completions pay, at no cost."""
    return [float(zlib.crc32(c.encode()) % 2) for c in completions]
'''


# -- assets ---------------------------------------------------------------------------------------


def build_assets(out: Path, args) -> dict:
    """Tokenizer, models, prompts, pairs and the reward file under ``out/assets`` (once)."""
    assets = out / "assets"
    done = assets / "assets.json"
    key = {"sizes": sorted(args.sizes), "prompt_tokens": args.prompt_tokens, "new_tokens": args.new_tokens,
           "rows": args.questions * (args.steps + args.warmup) * 2, "model": args.model}
    if done.is_file() and json.loads(done.read_text())["key"] == key:
        return json.loads(done.read_text())
    import random

    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    assets.mkdir(parents=True, exist_ok=True)
    words = [f"w{i}" for i in range(VOCAB_WORDS)]
    vocab = {t: i for i, t in enumerate(["<pad>", "<s>", "</s>", "<unk>", *words])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>",
                                        unk_token="<unk>")
    sample = "w1 w22 w333"
    assert tokenizer.decode(tokenizer(sample)["input_ids"]) == sample, "the tokenizer must round-trip"
    info = {"key": key, "models": {}}
    for size in [x for x in args.sizes if x in SIZES]:
        hidden, inter, layers, heads = SIZES[size]
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                          num_attention_heads=heads, num_key_value_heads=heads,
                          max_position_embeddings=args.prompt_tokens + args.new_tokens + 8,
                          pad_token_id=0, bos_token_id=1, eos_token_id=2, tie_word_embeddings=False)
        model = LlamaForCausalLM(cfg)
        # EOS never sampled: every completion is exactly max_new_tokens long, in both libraries
        model.generation_config = GenerationConfig(pad_token_id=0, bos_token_id=1, eos_token_id=2, suppress_tokens=[2])
        folder = assets / size
        model.save_pretrained(folder)
        tokenizer.save_pretrained(folder)
        info["models"][size] = {"path": str(folder), "params": sum(p.numel() for p in model.parameters())}
    if args.model:  # a real model (a folder, or smollm2), saved as a plain folder both libraries read
        from rlzoo.runtime.models import load_pretrained, resolve_model

        model, real_tokenizer = load_pretrained(*resolve_model(args.model))
        model.generation_config.suppress_tokens = [real_tokenizer.eos_token_id]
        folder = assets / "model"
        model.save_pretrained(folder)
        real_tokenizer.save_pretrained(folder)
        info["models"]["model"] = {"path": str(folder), "params": sum(p.numel() for p in model.parameters())}
    rng = random.Random(0)
    text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
    rows = key["rows"]
    with (assets / "prompts.jsonl").open("w") as f:
        for _ in range(rows):
            f.write(json.dumps({"prompt": text(args.prompt_tokens), "answer": "0"}) + "\n")
    with (assets / "heldout.jsonl").open("w") as f:
        f.write(json.dumps({"prompt": text(args.prompt_tokens), "answer": "0"}) + "\n")
    with (assets / "pairs.jsonl").open("w") as f:  # TRL appends EOS to chosen and rejected: new_tokens in all
        for _ in range(rows):
            f.write(json.dumps({"prompt": text(args.prompt_tokens), "chosen": text(args.new_tokens - 1),
                                "rejected": text(args.new_tokens - 1)}) + "\n")
    (assets / "reward.py").write_text(REWARD_SOURCE)
    done.write_text(json.dumps(info))
    return info


# -- rlzoo ----------------------------------------------------------------------------------------


def rlzoo_config(cfg: dict) -> dict:
    a = cfg["assets"]
    steps = cfg["steps"] + cfg["warmup"]
    q = cfg["questions"]
    stage = {"algorithm": cfg["algo"], "steps": steps,
             "generation": {"max_new_tokens": cfg["new_tokens"], "temperature": 1.0},
             "reward": {"name": f"{a}/reward.py:coin"},
             "optim": {"lr": 1e-6, "micro_batch_size": q * cfg["samples"] if cfg["algo"] == "grpo" else 2 * q}}
    if cfg["algo"] == "grpo":
        stage["data"] = {"prompts_per_step": q, "samples_per_prompt": cfg["samples"]}
        algos = {"grpo": {"beta": 0.04, "clip_eps": 0.2}}
    else:  # 8 samples a question: a coin reward leaves a group without a pair 1 time in 128
        stage["data"] = {"prompts_per_step": q, "samples_per_prompt": 8, "pool_prompts": q * steps}
        algos = {"dpo": {"beta": 0.1, "normalize": "sum", "pairs_per_prompt": 1}}
    return {
        "name": f"vs_trl_{cfg['algo']}", "seed": 0, "output_dir": cfg["run_dir"],
        "task": {"name": "dataset", "dataset": {"train": f"{a}/prompts.jsonl", "eval": f"{a}/heldout.jsonl",
                                                 "template": None}},
        "model": {"path": cfg["model"], "gradient_checkpointing": cfg["gc"], "logprob_chunk_size": 0},
        "mixed_precision": "bf16" if cfg["bf16"] else "no",
        "eval": {"samples": 0, "ks": [], "max_new_tokens": 4, "num_examples": 1},
        "logging": {"progress": False},
        "stages": {cfg["algo"]: stage},
        "algorithms": algos,
    }


def run_rlzoo(cfg: dict) -> dict:
    from omegaconf import OmegaConf

    run_dir = Path(cfg["run_dir"])
    config = run_dir.with_suffix(".yaml")
    config.write_text(OmegaConf.to_yaml(OmegaConf.create(rlzoo_config(cfg))))
    checkout = Path(cfg.get("checkout") or ROOT)  # --rlzoo-at: another checkout of rlzoo, with its own .venv
    python = checkout / ".venv" / "bin" / "python"
    argv = [str(python) if cfg.get("checkout") and python.is_file() else sys.executable, "-m", "rlzoo", "train", str(config), "--overwrite"]
    rss, log = spawn(argv, run_dir.with_suffix(".log"), cfg, cwd=checkout)
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if r.get("stage") == cfg["algo"] and "time/step" in r][cfg["warmup"]:]
    phases = {p: [r.get(f"time/{p}", float("nan")) for r in steps] for p in PHASES}
    phases["train"] = [r.get("time/train", 0.0) for r in steps]
    tokens = [r["data/sample_tokens"] / max(r["data/samples"], 1) for r in steps if r.get("data/samples")]
    out = {"step": [r["time/step"] for r in steps], "phases": phases, "peak_rss_mb": rss,
           "sequences": [r["train/num_sequences"] for r in steps]}
    if cfg["device"] == "cuda":  # the stage's CUDA peak (max allocated)
        out["peak_gpu_mb"] = json.loads((run_dir / "summary.json").read_text())["stages"][0]["peak_memory_mb"]
    if cfg["algo"] == "grpo":
        out["completion_tokens"] = statistics.fmean(tokens) if tokens else float("nan")
    return out


# -- TRL ------------------------------------------------------------------------------------------


class Phases:
    """Seconds per phase, counting only the outermost timed call (a forward inside ``generate``
    is generation)."""

    def __init__(self) -> None:
        self.seconds = dict.fromkeys(PHASES, 0.0)
        self.depth = 0

    def timed(self, fn, phase: str):
        """``fn`` with its seconds added to ``phase`` (unless a timed call is already running)."""

        @functools.wraps(fn)
        def run(*a, **k):
            if self.depth:
                return fn(*a, **k)
            self.depth += 1
            t0 = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.seconds[phase] += time.perf_counter() - t0
                self.depth -= 1

        return run

    def wrap(self, obj, attr: str, phase: str) -> None:
        setattr(obj, attr, self.timed(getattr(obj, attr), phase))

    def take(self) -> dict[str, float]:
        out, self.seconds = self.seconds, dict.fromkeys(PHASES, 0.0)
        return out


def run_trl_child(cfg: dict) -> None:
    """In the child process: train with TRL, write per-step times and phases to ``cfg['result']``."""
    import torch
    from datasets import load_dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback

    torch.set_num_threads(cfg["threads"])
    import trl

    a, steps = cfg["assets"], cfg["steps"] + cfg["warmup"]
    sys.path.insert(0, a)
    from reward import coin  # noqa: E402

    phases = Phases()
    marks: list[float] = []
    per_step: list[dict] = []
    lengths: list[float] = []

    class Clock(TrainerCallback):
        def on_train_begin(self, *_a, **_k):
            marks.append(time.perf_counter())
            phases.take()

        def on_step_end(self, *_a, **_k):
            marks.append(time.perf_counter())
            per_step.append(phases.take())

        def on_log(self, _args, _state, _control, logs=None, **_k):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    tokenizer = AutoTokenizer.from_pretrained(cfg["model"])
    model = AutoModelForCausalLM.from_pretrained(cfg["model"], dtype=torch.float32)
    common = dict(output_dir=cfg["run_dir"], max_steps=steps, learning_rate=1e-6, lr_scheduler_type="constant",
                  gradient_checkpointing=cfg["gc"], bf16=cfg["bf16"], use_cpu=cfg["device"] == "cpu", report_to=[], logging_steps=1,
                  save_strategy="no", dataloader_num_workers=0, seed=0, disable_tqdm=True, max_grad_norm=1.0)
    q = cfg["questions"]
    if cfg["algo"] == "grpo":
        args = trl.GRPOConfig(**common, per_device_train_batch_size=q * cfg["samples"], num_generations=cfg["samples"],
                              steps_per_generation=1, num_iterations=1, max_completion_length=cfg["new_tokens"],
                              beta=0.04, epsilon=0.2, loss_type="grpo", temperature=1.0, top_p=1.0, top_k=0,
                              generation_kwargs={"suppress_tokens": [tokenizer.eos_token_id]}, shuffle_dataset=False)
        data = load_dataset("json", data_files=f"{a}/prompts.jsonl", split="train")
        trainer = trl.GRPOTrainer(model=model, reward_funcs=coin, args=args, train_dataset=data,
                                  processing_class=tokenizer, callbacks=[Clock()])
        phases.wrap(trainer.model, "generate", "generate")
        trainer.reward_funcs[0] = phases.timed(trainer.reward_funcs[0], "reward")
    else:
        args = trl.DPOConfig(**common, per_device_train_batch_size=q, beta=0.1, loss_type=["sigmoid"], max_length=None,
                             precompute_ref_log_probs=False)
        data = load_dataset("json", data_files=f"{a}/pairs.jsonl", split="train")
        trainer = trl.DPOTrainer(model=model, args=args, train_dataset=data, processing_class=tokenizer, callbacks=[Clock()])
    if trainer.ref_model is not None:
        phases.wrap(trainer.ref_model, "forward", "reference")
    phases.wrap(trainer.model, "forward", "forward")
    phases.wrap(trainer.accelerator, "backward", "backward")

    class OptimizerClock(TrainerCallback):
        def on_pre_optimizer_step(self, *_a, **_k):
            self.t0 = time.perf_counter()

        def on_optimizer_step(self, *_a, **_k):
            phases.seconds["optimizer"] += time.perf_counter() - self.t0

    trainer.add_callback(OptimizerClock())
    trainer.train()
    times = [b - a_ for a_, b in zip(marks, marks[1:])][cfg["warmup"]:]
    kept = per_step[cfg["warmup"]:]
    result = {"step": times, "phases": {p: [s[p] for s in kept] for p in PHASES},
              "sequences": [2 * q if cfg["algo"] == "dpo" else q * cfg["samples"]] * len(times)}
    result["phases"]["train"] = [s["forward"] + s["backward"] + s["optimizer"] for s in kept]
    if lengths:
        result["completion_tokens"] = statistics.fmean(lengths[cfg["warmup"]:] or lengths)
    if cfg["device"] == "cuda":
        result["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    Path(cfg["result"]).write_text(json.dumps(result))


def run_trl(cfg: dict) -> dict:
    result = Path(cfg["run_dir"]).with_suffix(".json")
    result.unlink(missing_ok=True)
    child = {**cfg, "result": str(result)}
    rss, _ = spawn([sys.executable, __file__, "--child", json.dumps(child)], Path(cfg["run_dir"]).with_suffix(".log"), cfg)
    out = json.loads(result.read_text())
    out["peak_rss_mb"] = rss
    return out


# -- the parent -----------------------------------------------------------------------------------


def spawn(argv: list[str], log: Path, cfg: dict, cwd: Path = ROOT) -> tuple[float, Path]:
    """Run ``argv`` to its end; its peak RSS in MiB (``wait4`` of that one process)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(cfg["threads"]), "MKL_NUM_THREADS": str(cfg["threads"]),
           "TQDM_DISABLE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    with log.open("w") as f:
        proc = subprocess.Popen(argv, cwd=cwd, stdout=f, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv[:4])} ... failed (exit {proc.returncode}); see {log}")
    return usage.ru_maxrss / 1024, log


def cpu_busy(seconds: float = 2.0) -> float:
    """Share of all cores busy over the next ``seconds`` (from /proc/stat; 0 where it is missing)."""
    def ticks():
        with open("/proc/stat") as f:
            values = [int(x) for x in f.readline().split()[1:]]
        return sum(values), values[3] + values[4]  # total, idle + iowait

    try:
        total0, idle0 = ticks()
        time.sleep(seconds)
        total1, idle1 = ticks()
    except OSError:
        return 0.0
    return 1.0 - (idle1 - idle0) / max(total1 - total0, 1)


def wait_for_idle(max_busy: float, patience: float) -> float:
    """Wait until the cores are less than ``max_busy`` busy (at most ``patience`` s); the share then."""
    deadline = time.monotonic() + patience
    busy = cpu_busy()
    while busy > max_busy and time.monotonic() < deadline:
        busy = cpu_busy()
    return busy


def fmt(x: float, digits: int = 3) -> str:
    return "-" if x != x else f"{x:.{digits}f}"


def report(results: dict, info: dict, args) -> None:
    print(f"\n{args.questions} questions x {args.samples} samples (GRPO) or {args.questions} pairs (DPO), "
          f"prompts {args.prompt_tokens} tokens, completions {args.new_tokens} tokens, fp32, {args.threads} threads; "
          f"median of {args.steps} steps after {args.warmup} warm-up, {args.rounds} round(s)\n")
    print("| config | impl | GC | s/step (rounds) | " + " | ".join(COLUMNS)
          + " | sequences | completion tokens | generated tokens/s | peak RSS MiB | peak GPU MiB |")
    print("|---|---|---|---|" + "---:|" * len(COLUMNS) + "---:|---:|---:|---:|---:|")
    medians = {}
    for (algo, size, impl, gc), runs in sorted(results.items()):
        per_round = [statistics.median(r["step"]) for r in runs]
        med = statistics.median(per_round)
        medians[algo, size, impl, gc] = med
        ph = [statistics.median([statistics.median(r["phases"][p]) for r in runs]) for p in COLUMNS]
        tokens = statistics.fmean(r.get("completion_tokens", float("nan")) for r in runs)
        seqs = statistics.fmean(x for r in runs for x in r["sequences"])
        rss = max(r["peak_rss_mb"] for r in runs)
        gpu = max(r.get("peak_gpu_mb", float("nan")) for r in runs)
        rate = seqs * tokens / ph[0] if ph[0] and ph[0] == ph[0] else float("nan")  # generated tokens / generate seconds
        params = info["models"][size]["params"] / 1e6
        print(f"| {algo} {size} ({params:.1f}M) | {impl} | {'on' if gc else 'off'} | {med:.3f} "
              f"({', '.join(f'{x:.3f}' for x in per_round)}) | " + " | ".join(fmt(x) for x in ph)
              + f" | {seqs:.1f} | {fmt(tokens, 1)} | {fmt(rate, 0)} | {rss:.0f} | {fmt(gpu, 0)} |")
    others = sorted({impl for (_, _, impl, _) in medians if impl != "rlzoo"})
    if not others:
        return
    print("\n| config | GC | " + " | ".join(f"{o} s/step / rlzoo" for o in others) + " | "
          + " | ".join(f"{o} peak RSS / rlzoo" for o in others) + " |")
    print("|---|---|" + "---:|" * (2 * len(others)))
    peak = lambda key: max(r["peak_rss_mb"] for r in results[key])  # noqa: E731
    for (algo, size, impl, gc), med in sorted(medians.items()):
        if impl != "rlzoo":
            continue
        keys = [(algo, size, o, gc) for o in others]
        speed = [fmt(medians[k] / med, 2) if k in medians else "-" for k in keys]
        memory = [fmt(peak(k) / peak((algo, size, impl, gc)), 2) if k in results else "-" for k in keys]
        print(f"| {algo} {size} | {'on' if gc else 'off'} | " + " | ".join(speed + memory) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", default=["small", "large"], choices=[*sorted(SIZES), "model"],
                   help="'model': the --model folder")
    p.add_argument("--model", default=None, help="a Hugging Face folder or smollm2 (GRPO only: its tokenizer is not word-level)")
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in both libraries (a GPU run)")
    p.add_argument("--algos", nargs="+", default=["grpo", "dpo"], choices=["grpo", "dpo"])
    p.add_argument("--gc", nargs="+", default=["off", "on"], choices=["off", "on"])
    p.add_argument("--only", choices=["rlzoo", "trl"], default=None, help="measure one library only")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--prompt-tokens", type=int, default=48)
    p.add_argument("--new-tokens", type=int, default=32)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-busy", type=float, default=0.1, help="wait until less than this share of the cores is busy")
    p.add_argument("--idle-wait", type=float, default=120.0, help="longest wait for an idle machine, seconds")
    p.add_argument("--out", default="runs/vs_trl")
    p.add_argument("--rlzoo-at", default=None, metavar="DIR",
                   help="also measure the rlzoo of another checkout (its .venv if it has one), as 'rlzoo@DIR': before vs after")
    p.add_argument("--child", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return run_trl_child(json.loads(args.child))
    import importlib.util

    impls = ["rlzoo", "trl"] if args.only is None else [args.only]
    if "trl" in impls and importlib.util.find_spec("trl") is None:
        if args.only == "trl":
            raise SystemExit("TRL is not installed: pip install -e '.[bench]'")
        print("TRL is not installed (pip install -e '.[bench]'): measuring rlzoo alone")
        impls = ["rlzoo"]
    if ("model" in args.sizes) != bool(args.model):
        raise SystemExit("--model and --sizes model go together")
    if args.model and "dpo" in args.algos:
        raise SystemExit("--model: GRPO only (DPO's pairs are written as words of the benchmark's own tokenizer)")
    out = (ROOT / args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    info = build_assets(out, args)
    if args.rlzoo_at:
        impls.append("rlzoo@" + Path(args.rlzoo_at).name)
    configs = [(algo, size, impl, gc == "on") for algo in args.algos for size in args.sizes for gc in args.gc for impl in impls]
    results: dict = {}
    for rnd in range(args.rounds):
        for algo, size, impl, gc in configs if rnd % 2 == 0 else configs[::-1]:
            busy = wait_for_idle(args.max_busy, args.idle_wait)
            cfg = {"algo": algo, "gc": gc, "model": info["models"][size]["path"], "assets": str(out / "assets"),
                   "run_dir": str(out / f"{algo}_{size}_{impl.replace('@', '_at_')}_gc{int(gc)}_r{rnd}"), "steps": args.steps,
                   "warmup": args.warmup, "questions": args.questions, "samples": args.samples,
                   "new_tokens": args.new_tokens, "threads": args.threads, "device": args.device, "bf16": args.bf16,
                   "checkout": str(Path(args.rlzoo_at).resolve()) if impl.startswith("rlzoo@") else None}
            t0 = time.perf_counter()
            res = (run_trl if impl == "trl" else run_rlzoo)(cfg)
            results.setdefault((algo, size, impl, gc), []).append(res)
            print(f"round {rnd} {algo} {size} {impl} gc={'on' if gc else 'off'}: {statistics.median(res['step']):.3f} s/step, "
                  f"peak {res['peak_rss_mb']:.0f} MiB (cores {100 * busy:.0f}% busy before, {time.perf_counter() - t0:.0f} s)", flush=True)
    report(results, info, args)


if __name__ == "__main__":
    main()
