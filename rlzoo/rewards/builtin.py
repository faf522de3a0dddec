"""Built-in reward functions. A reward is a plain callable ``(prompt, completion, example) -> float``.

Register your own with ``@register_reward("name")`` in a plugin module and select it with
``reward.name`` in a stage; ``reward.kwargs`` are passed as keyword arguments.
"""

from __future__ import annotations

from rlzoo.interface import Example
from rlzoo.registry import register_reward


@register_reward("rule")
def rule(prompt: str, completion: str, example: Example, *, correct: float = 1.0, wrong: float = 0.0) -> float:
    """``correct`` if the completion's final answer equals the gold answer, else ``wrong``.

    The answer is extracted and compared by :func:`rlzoo.rewards.verifier.verify` (last
    ``\\boxed{}``, "The answer is", ``#### N``, program output, last number; numeric and symbolic
    equivalence).

    >>> rule("Q", " 2 + 3 = 5. The answer is \\\\boxed{5}.", Example("Q", "5"))
    1.0
    >>> rule("Q", " 2 + 3 = 6. The answer is \\\\boxed{6}.", Example("Q", "5"))
    0.0
    """
    from rlzoo.rewards.verifier import verify

    return correct if verify(completion, example.answer) else wrong
