"""A short run of each algorithm on the quickstart task, side by side, from one SFT checkpoint.

    python benchmarks/variants.py INIT [--algorithms grpo dr_grpo rloo gspo cispo reinforce_pp dapo]
                                  [--steps 20] [--out runs/variants] [KEY=VALUE ...]

INIT is an SFT stage's final folder (``runs/quickstart/sft/final`` after ``rlzoo train
configs/quickstart.yaml``). Each algorithm runs ``configs/rl.yaml`` (``rl.algorithm=NAME``) for
``--steps`` steps, one after the other in this process's machine (so their times compare), and the
table gives the rollout reward (``reward/mean``: the kept groups for DAPO; ``reward/sampled_mean``:
everything sampled) over the first and the last 5 steps, the held-out greedy accuracy at the end,
the seconds per step (mean over steps) and the lines of the algorithm's file. Extra ``KEY=VALUE``
arguments go to ``rlzoo train``. A finished run is read back, not trained again.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("init")
    p.add_argument("--algorithms", nargs="+", default=["grpo", "dr_grpo", "rloo", "gspo", "cispo", "reinforce_pp", "dapo"])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default="runs/variants")
    args, extra = p.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("| algorithm | file lines | reward, first 5 steps | last 5 steps | sampled, last 5 | held-out greedy % | s/step |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name in args.algorithms:
        folder = out / name
        if not (folder / "summary.json").is_file():
            with (out / f"{name}.log").open("w") as log:
                proc = subprocess.run([sys.executable, "-m", "rlzoo", "train", "configs/rl.yaml", f"rl.algorithm={name}",
                                       f"rl.init={Path(args.init).resolve()}", f"rl.steps={args.steps}", "rl.eval_every=0",
                                       "eval.samples=0", "logging.progress=false", f"output_dir={folder}", "--overwrite", *extra],
                                      cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
            if proc.returncode != 0:
                print(f"| {name} | failed (exit {proc.returncode}, {out / f'{name}.log'}) |")
                continue
        rows = [r for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss/policy" in r]
        reward = [r["reward/mean"] for r in rows]
        sampled = [r.get("reward/sampled_mean", r["reward/mean"]) for r in rows]
        summary = json.loads((folder / "summary.json").read_text())["stages"][-1]
        module = importlib.import_module(f"rlzoo.algorithms.{name}")
        lines = len(inspect.getsource(module).splitlines())
        print(f"| {name} | {lines} | {statistics.fmean(reward[:5]):.3f} | {statistics.fmean(reward[-5:]):.3f} | "
              f"{statistics.fmean(sampled[-5:]):.3f} | {100 * summary['eval']['accuracy']:.1f} | "
              f"{statistics.fmean(r['time/step'] for r in rows):.2f} |")


if __name__ == "__main__":
    main()
