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


def reward_values_and_events(reward: Callable, examples: Sequence, completions: Sequence[str]) -> tuple[list[float], dict[str, float]]:
    """:func:`reward_values`, and the share of completions that counted each event the reward lists.

    A reward lists the events it may count (``rlzoo.rewards.builtin.count_event``) in its
    ``events`` attribute; each comes back as ``{event: count / len(completions)}``, 0.0 when none
    happened. Counts are process-wide, so score one batch at a time.
    """
    from rlzoo.rewards.builtin import reward_events

    before = reward_events()
    values = reward_values(reward, examples, completions)
    after = reward_events()
    n = max(len(values), 1)
    events = getattr(getattr(reward, "func", reward), "events", ())
    return values, {e: (after.get(e, 0) - before.get(e, 0)) / n for e in events}


def reward_answers(reward: Callable, examples: Sequence, completions: Sequence[str]) -> list[str | None]:
    """The final answer ``reward`` grades in each completion (``None``: no answer), in order.

    A reward declares it as ``fn.answer(prompt, completion, example, **kwargs)`` (``program``: what
    the program prints); otherwise it is the answer the text states
    (:func:`rlzoo.rewards.verifier.extract_answer`). Maj@k votes on these.
    """
    from rlzoo.rewards.verifier import extract_answer

    fn = getattr(reward, "func", reward)
    kwargs = getattr(reward, "keywords", {}) if fn is not reward else {}
    answer = getattr(fn, "answer", None)
    if answer is None:
        return [extract_answer(c) for c in completions]
    return [answer(ex.prompt, c, ex, **kwargs) for ex, c in zip(examples, completions)]
