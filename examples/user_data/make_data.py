"""Writes train.jsonl and eval.jsonl of this folder: the worked example of docs/data.md ("Your own data").

Rows of arithmetic word problems from rlzoo's embedded generator (rlzoo.data.synthetic), written as
a user's own file would be: a bare question in ``prompt``, the gold ``answer`` as a number, a
chain-of-thought ``solution`` (for SFT), and an extra column, ``difficulty`` (the number of
operations, 1 or 2), which a reward function can read. Deterministic: rerunning it rewrites the
same files.

    python examples/user_data/make_data.py
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

from rlzoo.config import SyntheticConfig
from rlzoo.data.synthetic import SyntheticTask, question_key

HERE = Path(__file__).parent
TRAIN_ROWS, EVAL_ROWS = 300, 50


def row(ex) -> dict:
    return {"prompt": question_key(ex.prompt), "answer": int(ex.answer), "solution": ex.solution.strip(),
            "difficulty": ex.meta["ops"]}


def main() -> None:
    task = SyntheticTask(SyntheticConfig(min_ops=1, max_ops=2, ops_weights=[0.7, 0.3], max_operand=5, max_value=20, operators="+-",
                                         eval_size=EVAL_ROWS, eval_seed=2024))
    held_out = [row(ex) for ex in task.eval_examples()]
    train, seen = [], set()
    for ex in itertools.islice(task.train_stream(7), 10 * TRAIN_ROWS):  # never a held-out question
        r = row(ex)
        if r["prompt"] not in seen and len(train) < TRAIN_ROWS:
            seen.add(r["prompt"])
            train.append(r)
    for name, rows in (("train.jsonl", train), ("eval.jsonl", held_out)):
        (HERE / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
        print(f"{HERE / name}: {len(rows)} rows")


if __name__ == "__main__":
    main()
