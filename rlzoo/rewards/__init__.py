"""Rewards: plain callables ``(prompt, completion, example) -> float`` (see ``builtin``)."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Sequence


def _map(reward: Callable, examples: Sequence, completions: Sequence[str], call: Callable) -> list:
    """``call(example, completion)`` for each pair, in order; in a thread pool when ``reward`` is slow.

    A reward that declares ``parallel = True`` (it runs programs in subprocesses) is served by a
    pool with one thread per CPU (at least 2); any other reward by a plain loop.
    """
    fn = getattr(reward, "func", reward)  # see through functools.partial (reward.kwargs)
    pairs = list(zip(examples, completions))
    if getattr(fn, "parallel", False) and len(pairs) > 1:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        with ThreadPoolExecutor(max_workers=min(len(pairs), max(2, cpus))) as pool:
            return list(pool.map(lambda pair: call(*pair), pairs))
    return [call(ex, c) for ex, c in pairs]


def reward_values(reward: Callable, examples: Sequence, completions: Sequence[str]) -> list[float]:
    """``reward(ex.prompt, completion, ex)`` for each pair, in order (see :func:`_map` for threads)."""
    return _map(reward, examples, completions, lambda ex, c: float(reward(ex.prompt, c, ex)))


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


def _answer_of(reward: Callable) -> Callable:
    """``(example, completion) -> answer``: the reward's declared ``answer``, else the text's own."""
    from rlzoo.rewards.verifier import extract_answer

    fn = getattr(reward, "func", reward)
    kwargs = getattr(reward, "keywords", {}) if fn is not reward else {}
    answer = getattr(fn, "answer", None)
    if answer is None:
        return lambda ex, c: extract_answer(c)
    return lambda ex, c: answer(ex.prompt, c, ex, **kwargs)


def reward_answers(reward: Callable, examples: Sequence, completions: Sequence[str]) -> list[str | None]:
    """The final answer ``reward`` grades in each completion (``None``: no answer), in order.

    A reward declares it as ``fn.answer(prompt, completion, example, **kwargs)`` (``program``: what
    the program prints); otherwise it is the answer the text states
    (:func:`rlzoo.rewards.verifier.extract_answer`). Maj@k votes on these.
    """
    return _map(reward, examples, completions, _answer_of(reward))


def reward_values_and_answers(reward: Callable, examples: Sequence, completions: Sequence[str]) -> tuple[list[float], list[str | None]]:
    """:func:`reward_values` and :func:`reward_answers` in one pass.

    Each answer is taken right after its grade, in the same thread, so a program's answer reads the
    run its grade just memoised: no program runs twice, however many completions are scored.
    """
    answer = _answer_of(reward)
    both = _map(reward, examples, completions, lambda ex, c: (float(reward(ex.prompt, c, ex)), answer(ex, c)))
    return [v for v, _ in both], [a for _, a in both]
