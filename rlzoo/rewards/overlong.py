"""DAPO's overlong reward shaping (Yu et al. 2025, Sec. 3.4, Eq. 13): a length penalty added to the task reward.

Use it as a second function of a weighted sum, beside the task reward::

    reward:
      functions:
        - {name: rule}
        - {name: overlong, kwargs: {max_length: 48, cache: 8}}
"""

from __future__ import annotations

from rlzoo.registry import register_reward


@register_reward("overlong")
def overlong(prompts: list[str], completions: list[str], completion_ids: list[list[int]], *,
             max_length: int, cache: int, **_: object) -> list[float]:
    """0 up to ``max_length - cache`` tokens, then a linear penalty down to -1 at ``max_length``
    (the generation cap), -1 beyond: ((max_length - cache) - |o|) / cache inside the last
    ``cache`` tokens. TRL's batched shape; it reads only the token counts.

    >>> overlong(["q"] * 4, [""] * 4, [[0] * 40, [0] * 44, [0] * 48, [0] * 50], max_length=48, cache=8)
    [0.0, -0.5, -1.0, -1.0]
    """
    if not 0 < cache <= max_length:
        raise ValueError(f"overlong: cache={cache} must be in (0, max_length={max_length}]")
    free = max_length - cache
    return [0.0 if len(ids) <= free else max(-1.0, (free - len(ids)) / cache) for ids in completion_ids]
