"""Rewards: plain callables ``(prompt, completion, example) -> float`` (see ``builtin``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


def reward_values(reward: Callable, examples: Sequence, completions: Sequence[str]) -> list[float]:
    """``reward(ex.prompt, completion, ex)`` for each pair, in order.

    A reward that declares ``parallel = True`` (slow: it runs programs in subprocesses) is called
    from a thread pool with one thread per CPU (at least 2); any other reward in a plain loop.
    """
    fn = getattr(reward, "func", reward)  # see through functools.partial (reward.kwargs)
    pairs = list(zip(examples, completions))
    call = lambda pair: float(reward(pair[0].prompt, pair[1], pair[0]))  # noqa: E731
    if getattr(fn, "parallel", False) and len(pairs) > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=min(len(pairs), max(2, cpus))) as pool:
            return list(pool.map(call, pairs))
    return [call(pair) for pair in pairs]
