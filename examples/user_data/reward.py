"""Reward functions for the worked example (docs/data.md, "Your own data"), in TRL's convention:

    fn(prompts, completions, **columns) -> list[float | None]

rlzoo passes every column of the user's file by name: ``answer`` (the gold answer, a string) and
each extra column, here ``difficulty``, as lists with one entry per completion. A function written
for TRL's GRPOTrainer runs unchanged. Name one in a config as

    reward: {name: examples/user_data/reward.py:correct}

>>> correct(["Q"], ["3 + 4 = 7.\\nThe answer is \\\\boxed{7}."], answer=["7"])
[1.0]
>>> correct_by_difficulty(["Q", "Q"], ["\\\\boxed{7}", "\\\\boxed{8}"], answer=["7", "7"], difficulty=[2, 1])
[2.0, 0.0]
"""

from __future__ import annotations

import rlzoo


def correct(prompts, completions, answer, **kwargs) -> list[float]:
    """1.0 when the final answer the completion states (``\\boxed{...}``, "The answer is ...")
    equals the gold answer under rlzoo's verifier (so ``0.5`` matches ``1/2``), else 0.0."""
    return [1.0 if rlzoo.verify(completion, gold) else 0.0 for completion, gold in zip(completions, answer)]


def correct_by_difficulty(prompts, completions, answer, difficulty, **kwargs) -> list[float]:
    """Reads the file's extra column: a right answer scores its problem's ``difficulty`` (the
    number of operations), so harder problems count more; a wrong one scores 0."""
    return [float(d) if rlzoo.verify(c, gold) else 0.0 for c, gold, d in zip(completions, answer, difficulty)]
