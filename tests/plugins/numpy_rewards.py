"""TRL-style rewards that return what TRL itself accepts besides a list: a numpy array, a torch
tensor, a list of numpy numbers. No rlzoo import, no decorator (tests/test_faults.py)."""

import numpy as np
import torch


def array_reward(prompts, completions, **kwargs):
    """A numpy array: 1.0 for a completion of odd length, else 0.0."""
    return np.array([len(c) % 2 for c in completions], dtype=np.float64)


def tensor_reward(prompts, completions, **kwargs):
    """A torch tensor: the completion's length over 100."""
    return torch.tensor([len(c) / 100 for c in completions])


def numpy_numbers_reward(prompts, completions, **kwargs):
    """A list of numpy scalars."""
    return [np.float32(0.5) for _ in completions]
