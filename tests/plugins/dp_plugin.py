"""A plugin for the multi-process tests: a reward that varies with what a random tiny model writes,
so every algorithm has non-zero advantages and both correct and wrong outputs to pair."""

from rlzoo.registry import register_reward


@register_reward("test_length_parity")
def length_parity(prompt, completion, example) -> float:
    """1.0 when the completion has an odd number of characters, else 0.0."""
    return float(len(completion) % 2)
