"""Reward functions written for TRL's GRPOTrainer, unchanged: batched, ``(prompts, completions,
**kwargs) -> list[float | None]``, dataset columns as keyword lists. No rlzoo import, no decorator."""

import re


def format_reward(prompts, completions, **kwargs):
    """1.0 for a completion with a boxed answer, else 0.0 (TRL's classic format reward)."""
    return [1.0 if re.search(r"\\boxed\{", c) else 0.0 for c in completions]


def accuracy_reward(prompts, completions, answer, **kwargs):
    """1.0 when the boxed answer equals the answer column; None (skip) when there is no box."""
    out = []
    for completion, gold in zip(completions, answer):
        m = re.search(r"\\boxed\{([^}]*)\}", completion)
        out.append(None if m is None else float(m.group(1).strip() == gold))
    return out


SEEN = {}


def recording_reward(prompts, completions, completion_ids, **kwargs):
    """Records what it was called with (for the tests); 0.5 for every completion."""
    SEEN.update(prompts=prompts, completions=completions, completion_ids=completion_ids, columns=kwargs)
    return [0.5] * len(completions)
