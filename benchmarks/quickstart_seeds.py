"""Does the quickstart's GRPO stage end where its rollout reward has levelled off, for every seed?

    python benchmarks/quickstart_seeds.py --seeds 0 1 2 3 4 [--out runs/quickstart_seeds] [--parallel 1] [KEY=VALUE ...]

Trains ``configs/quickstart.yaml`` once per seed (``seed=N``, each run its own process and folder;
a finished run is read back, not trained again) and prints one row per seed: greedy accuracy after
SFT and after GRPO, the rollout reward (``reward/mean``) of the GRPO stage's first and last
``--window`` steps and of the ``--window`` steps before the last ones, whether it has levelled off
(the last window's mean within ``--tolerance`` of the one before: the reward no longer rising), and
the wall time of each stage and of the whole run. Extra ``KEY=VALUE`` arguments are passed to
``rlzoo train`` (``grpo.steps=60``). Times depend on the machine and on what else runs on it: with
``--parallel 2`` two runs share the cores, so read their times as upper bounds.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run(seed: int, out: Path, extra: list[str]) -> tuple[Path, float]:
    folder = out / f"seed{seed}"
    if (folder / "summary.json").is_file():
        return folder, float("nan")
    t0 = time.perf_counter()
    with (out / f"seed{seed}.log").open("w") as log:
        proc = subprocess.run([sys.executable, "-m", "rlzoo", "train", "configs/quickstart.yaml", f"seed={seed}",
                               f"output_dir={folder}", "logging.progress=false", "--overwrite", *extra],
                              cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TQDM_DISABLE": "1"})
    if proc.returncode != 0:
        raise SystemExit(f"seed {seed} failed (exit {proc.returncode}); see {out / f'seed{seed}.log'}")
    return folder, time.perf_counter() - t0


def row(seed: int, folder: Path, seconds: float, window: int, tolerance: float) -> dict:
    stages = {s["name"]: s for s in json.loads((folder / "summary.json").read_text())["stages"]}
    rewards = [r["reward/mean"] for r in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines())
               if r.get("stage") == "grpo" and "reward/mean" in r]
    first, last, before = (statistics.fmean(x) for x in (rewards[:window], rewards[-window:], rewards[-2 * window : -window]))
    return {"seed": seed, "sft": 100 * stages["sft"]["eval"]["accuracy"], "grpo": 100 * stages["grpo"]["eval"]["accuracy"],
            "first": first, "before": before, "last": last, "levelled": last - before <= tolerance,
            "sft_s": stages["sft"]["wall_seconds"], "grpo_s": stages["grpo"]["wall_seconds"], "run_s": seconds}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--out", default="runs/quickstart_seeds")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--window", type=int, default=10, help="steps averaged at each end of the GRPO stage")
    p.add_argument("--tolerance", type=float, default=0.05,
                   help="largest rise of the last window over the one before that counts as level (a 10-step mean of 16x8 samples varies by about 0.03)")
    args, extra = p.parse_known_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(args.parallel) as pool:
        done = list(pool.map(lambda s: run(s, out, extra), args.seeds))
    rows = [row(s, folder, seconds, args.window, args.tolerance) for s, (folder, seconds) in zip(args.seeds, done)]
    w = args.window
    print(f"| seed | SFT greedy % | GRPO greedy % | reward, first {w} steps | {w} steps before the last | last {w} | levelled | SFT s | GRPO s | run s |")
    print("|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|")
    for r in rows:
        print(f"| {r['seed']} | {r['sft']:.1f} | {r['grpo']:.1f} | {r['first']:.3f} | {r['before']:.3f} | {r['last']:.3f} | "
              f"{'yes' if r['levelled'] else 'no'} | {r['sft_s']:.0f} | {r['grpo_s']:.0f} | {r['run_s']:.0f} |")
    gains = [r["grpo"] - r["sft"] for r in rows]
    print(f"\nGRPO greedy accuracy {min(r['grpo'] for r in rows):.1f}-{max(r['grpo'] for r in rows):.1f} "
          f"(gain over SFT {min(gains):+.1f} to {max(gains):+.1f}); levelled in {sum(r['levelled'] for r in rows)}/{len(rows)} seeds")


if __name__ == "__main__":
    main()
