"""What kind of error a chain-of-thought checkpoint makes on the embedded task, by operation count.

Each held-out answer (greedy, and ``--samples`` sampled at ``--temperature``) is put in one class,
by replaying its equation lines against the problem (``meta["steps"]``):

    correct     the boxed value is the answer (whatever the lines before it say)
    skip_last   every operation but the last done right, then the value before the last boxed
    stop_early  stopped earlier still (fewer right equations than operations, no wrong one)
    wrong_box   every operation done right, then another value boxed
    arith       an equation with the right operation on the right value, and a wrong result
    misread     an equation with a wrong operand, operator or starting value
    other       anything else (no answer line, an extra equation, cut off)

These are the errors ``task.synthetic.noise`` plants (skip_last, wrong_box, slip ~ arith), so the
table shows whether SFT learned them and whether RL unlearned them. Usage (from the repository
root; ``--config`` takes the held-out set of another config, e.g. a shifted task):

    .venv/bin/python benchmarks/cot_errors.py runs/X/sft/final runs/X/grpo/final [--config C.yaml]
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter, defaultdict
from pathlib import Path

CLASSES = ("correct", "skip_last", "stop_early", "wrong_box", "arith", "misread", "other")
EQUATION = re.compile(r"(-?\d+)\s*([-+*/])\s*(-?\d+)\s*=\s*(-?\d+)\s*\.?")
BOXED = re.compile(r"The answer is \\boxed\{\s*(-?\d+)\s*\}\s*\.?")


def classify(meta: dict, answer: str, completion: str) -> str:
    lines = [ln.strip() for ln in completion.strip().split("\n") if ln.strip()]
    boxes = [m[1] for m in map(BOXED.fullmatch, lines) if m]
    if boxes and boxes[0] == answer:  # what the rule reward grades: the first answer line
        return "correct"
    value, todo, done = meta["start"], [tuple(s) for s in meta["steps"]], 0
    values = [value]
    for line in lines:
        eq, box = EQUATION.fullmatch(line), BOXED.fullmatch(line)
        if box:
            boxed = int(box[1])
            if str(boxed) == answer:
                return "correct"
            if done == len(todo):
                return "wrong_box"
            if done == len(todo) - 1 and boxed == values[-1]:
                return "skip_last"
            return "stop_early" if boxed == values[-1] else "other"
        if not eq or done >= len(todo):
            return "other"
        x, op, b, y = int(eq[1]), eq[2], int(eq[3]), int(eq[4])
        want_op, want_b, want_y = todo[done]
        if (x, op, b) != (values[-1], want_op, want_b):
            return "misread"
        if y != want_y:
            return "arith"
        values.append(y)
        done += 1
    return "other"


def measure(folder: str, config: str | None, samples: int, temperature: float, max_new_tokens: int) -> dict:
    import torch

    from rlzoo.config import load_config
    from rlzoo.runtime.checkpoint import CONFIG_NAME
    from rlzoo.runtime.generation import GenerationConfig, sample
    from rlzoo.runtime.models import load_pretrained
    from rlzoo.run.factories import build_task

    torch.set_num_threads(1)  # a shared 2-core machine: one thread is fastest
    cfg = load_config(config or Path(folder) / CONFIG_NAME)
    examples = build_task(cfg).eval_examples()
    model, tokenizer = load_pretrained(folder)
    model.eval()
    torch.manual_seed(0)
    out = {}
    runs = [("greedy", 1, GenerationConfig(max_new_tokens, 0.0, 1.0, 256))]
    if samples:
        runs.append((f"T={temperature}", samples, GenerationConfig(max_new_tokens, temperature, 1.0, 256)))
    for name, n, gen in runs:
        batch = sample(model, tokenizer, examples, n, gen, seed=0)
        table: dict[int, Counter] = defaultdict(Counter)
        for ex, completion in zip(batch.examples, batch.completions):
            table[ex.meta["ops"]][classify(ex.meta, ex.answer, completion)] += 1
        out[name] = table
    return out


def show(folder: str, result: dict) -> None:
    print(f"\n{folder}")
    print(f"{'':10} {'ops':>3} {'n':>5} " + " ".join(f"{c:>10}" for c in CLASSES))
    for name, table in result.items():
        for ops in sorted(table) + ["all"]:
            counts = sum(table.values(), Counter()) if ops == "all" else table[ops]
            n = sum(counts.values())
            print(f"{name:10} {ops:>3} {n:>5} " + " ".join(f"{100 * counts[c] / n:10.1f}" for c in CLASSES))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders written by rlzoo train")
    parser.add_argument("--config", help="take the held-out set from this config (default: the checkpoint's own)")
    parser.add_argument("--samples", type=int, default=4, help="samples per problem (default 4; 0 = greedy only)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    for folder in args.checkpoints:
        show(folder, measure(folder, args.config, args.samples, args.temperature, args.max_new_tokens))
    return 0


if __name__ == "__main__":
    sys.exit(main())
