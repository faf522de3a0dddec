"""Which solution format a checkpoint chooses, and how good it is in each one.

For a model trained on a format mix without prompt hints (the quickstart), held-out accuracy
depends on two things: which format the model picks and how well it solves in that format. This
script separates them. For each checkpoint it prints, on the held-out set of the checkpoint's own
config:

    greedy          accuracy and format of the model's own choice
    greedy, forced  accuracy when the answer is forced to start in one format: the prompt is
                    followed by the format's opening (``\\n```python\\n`` for a program, a space
                    for chain-of-thought) and the answer is graded with that opening
    sampled         at ``--temperature``, ``--samples`` per problem: the share of answers in each
                    format and the accuracy of each share

All grading uses the ``any_format`` reward. Usage (from the repository root):

    .venv/bin/python benchmarks/format_choice.py runs/quickstart/sft/final runs/quickstart/grpo/final
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections import defaultdict
from pathlib import Path

OPENINGS = {"pot": "\n```python\n", "cot": " "}  # how a solution in each format starts


def measure(folder: str, samples: int, temperature: float, max_new_tokens: int) -> dict[str, float]:
    import torch

    from rlzoo.config import load_config
    from rlzoo.rewards import make_reward
    from rlzoo.rewards.builtin import completion_format
    from rlzoo.runtime.checkpoint import CONFIG_NAME
    from rlzoo.runtime.generation import GenerationConfig, sample
    from rlzoo.runtime.models import load_pretrained
    from rlzoo.run.factories import build_task

    cfg = load_config(Path(folder) / CONFIG_NAME)
    examples = build_task(cfg).eval_examples()
    model, tokenizer = load_pretrained(folder)
    model.eval()
    reward = make_reward("any_format")
    score = lambda exs, completions: [v or 0.0 for v in reward.score(exs, completions)[0]]
    torch.manual_seed(0)
    out: dict[str, float] = {}
    greedy = GenerationConfig(max_new_tokens, 0.0, 1.0, 256)
    batch = sample(model, tokenizer, examples, 1, greedy)
    scores = score(examples, batch.completions)
    out["greedy"] = sum(scores) / len(scores)
    out["greedy pot share"] = sum(completion_format(c) == "pot" for c in batch.completions) / len(scores)
    for fmt, opening in OPENINGS.items():
        forced = [dataclasses.replace(ex, prompt=ex.prompt + opening) for ex in examples]
        batch = sample(model, tokenizer, forced, 1, greedy)
        scores = score(examples, [opening + c for c in batch.completions])
        out[f"greedy forced {fmt}"] = sum(scores) / len(scores)
    batch = sample(model, tokenizer, examples, samples, GenerationConfig(max_new_tokens, temperature, 1.0, 256))
    scores = score(batch.examples, batch.completions)
    by_format: dict[str, list[float]] = defaultdict(list)
    for completion, score in zip(batch.completions, scores):
        by_format[completion_format(completion)].append(score)
    for fmt, values in sorted(by_format.items()):
        out[f"sampled {fmt} share"] = len(values) / len(scores)
        out[f"sampled {fmt} accuracy"] = sum(values) / len(values)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", help="checkpoint folders written by rlzoo train")
    parser.add_argument("--samples", type=int, default=8, help="samples per problem (default 8)")
    parser.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    args = parser.parse_args()
    from rlzoo.runtime.checkpoint import CONFIG_NAME

    for folder in args.checkpoints:
        if not (Path(folder) / CONFIG_NAME).is_file():
            print(f"format_choice: {folder} is not an rlzoo checkpoint (no {CONFIG_NAME})", file=sys.stderr)
            return 2
    rows = {folder: measure(folder, args.samples, args.temperature, args.max_new_tokens) for folder in args.checkpoints}
    keys = list(dict.fromkeys(k for r in rows.values() for k in r))
    width = max(len(k) for k in keys)
    print(f"held-out accuracy and format shares in %; sampled at T={args.temperature}, {args.samples} per problem")
    print(" " * width + "".join(f"  {Path(f).parent.name + '/' + Path(f).name:>14}" for f in rows))
    for k in keys:
        print(k.ljust(width) + "".join(f"  {100 * r.get(k, float('nan')):14.1f}" for r in rows.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
