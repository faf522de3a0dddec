"""Built-in reward functions. A reward is a plain callable ``(prompt, completion, example) -> float``.

* ``rule``: the final answer in the text (chain-of-thought).
* ``program``: runs the last ```` ```python ```` block in the sandbox and grades what it prints
  (program-of-thought).
* ``tool``: the answer the text states outside code and output blocks (tool-integrated rollouts,
  whose code already ran during generation).

A slow reward may declare ``fn.parallel = True`` so that training and evaluation call it from a
thread pool (``rlzoo.rewards.reward_values``), and count events (``count_event``) listed in ``fn.events`` to have them logged as
``reward/<event>_frac``. docs/rewards.md says which reward fits which format.

Register your own with ``@register_reward("name")`` in a plugin module and select it with
``reward.name`` in a stage; ``reward.kwargs`` are passed as keyword arguments.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, OrderedDict

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


# -- program-of-thought and tool-integrated rewards ------------------------------------------------

_PYTHON_BLOCK_RE = re.compile(r"```python[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_ANY_BLOCK_RE = re.compile(r"```(?:python|output)[^\n`]*\n.*?(?:```|\Z)", re.DOTALL)
_EXEC_CACHE_SIZE = 4096
_exec_cache: OrderedDict[tuple, tuple[bool, str, bool]] = OrderedDict()
_lock = threading.Lock()
_events: Counter[str] = Counter()


def count_event(name: str) -> None:
    """Count one reward event (``exec_fail``...); ``score_batch`` logs ``reward/<name>_frac``.

    A reward lists the events it may count in its ``events`` attribute, so the fraction is logged
    (as 0) on steps where none happened. Thread-safe.
    """
    with _lock:
        _events[name] += 1


def reward_events() -> dict[str, int]:
    """Running totals of every counted reward event (take a difference around a batch)."""
    with _lock:
        return dict(_events)


def extract_program(completion: str, *, bare_code: bool = False) -> str | None:
    """The code of the last ```` ```python ```` block; an unclosed last block runs to the end.

    Without any such fence the completion is not a program (``None``) unless ``bare_code`` is true,
    in which case the whole completion is the program.

    >>> extract_program("Let me compute.\\n```python\\nprint(2 + 3)\\n```\\nDone.")
    'print(2 + 3)\\n'
    >>> extract_program("2 + 3 = 5") is None
    True
    """
    blocks = _PYTHON_BLOCK_RE.findall(completion)
    if blocks:
        return blocks[-1]
    return completion if bare_code and completion.strip() else None


def _run_cached(code: str, timeout_s: float, memory_mb: int, site_packages: bool) -> tuple[bool, str, bool]:
    """(ok, stdout, timed_out) of ``code`` in the sandbox, memoised by program text (LRU)."""
    from rlzoo.sandbox import run_python

    key = (code, timeout_s, memory_mb, site_packages)
    with _lock:
        if key in _exec_cache:
            _exec_cache.move_to_end(key)
            return _exec_cache[key]
    result = run_python(code, timeout_s=timeout_s, memory_mb=memory_mb, site_packages=site_packages)
    value = (result.ok, result.stdout, result.error == "timeout")
    with _lock:
        _exec_cache[key] = value
        if len(_exec_cache) > _EXEC_CACHE_SIZE:
            _exec_cache.popitem(last=False)
    return value


@register_reward("program")
def program(
    prompt: str,
    completion: str,
    example: Example,
    *,
    correct: float = 1.0,
    wrong: float = 0.0,
    timeout_s: float = 5.0,
    memory_mb: int = 512,
    site_packages: bool = False,
    bare_code: bool = False,
) -> float:
    """Program-of-thought: run the completion's program; ``correct`` if what it prints is the answer.

    The program is the last ```` ```python ```` block (see :func:`extract_program`; a completion
    without one scores ``wrong`` without running anything, unless ``bare_code``). It runs in
    :func:`rlzoo.sandbox.run_python` with ``timeout_s`` / ``memory_mb`` (``site_packages=True``
    allows ``import sympy``). The last non-empty line of its stdout is graded by
    :func:`~rlzoo.rewards.verifier.verify`; a failed run (exception, timeout, memory, no output)
    scores ``wrong``. Results are memoised by program text (programs are taken as deterministic),
    so the G samples of a group that write the same program run it once.

    >>> program("Q", "\\n```python\\nx = 2 + 3\\nprint(x)\\n```", Example("Q", "5"))
    1.0
    >>> program("Q", "\\n```python\\nprint(1 / 0)\\n```", Example("Q", "5"))
    0.0
    """
    from rlzoo.rewards.verifier import verify

    code = extract_program(completion, bare_code=bare_code)
    if code is None:
        count_event("no_program")
        return wrong
    ok, stdout, timed_out = _run_cached(code, float(timeout_s), int(memory_mb), bool(site_packages))
    if not ok:
        count_event("exec_timeout" if timed_out else "exec_fail")
        return wrong
    lines = [line for line in stdout.splitlines() if line.strip()]
    return correct if lines and verify(lines[-1], example.answer) else wrong


program.parallel = True  # sandbox runs are subprocesses: reward_values runs them in a thread pool
program.events = ("no_program", "exec_fail", "exec_timeout")


@register_reward("tool")
def tool(prompt: str, completion: str, example: Example, *, correct: float = 1.0, wrong: float = 0.0) -> float:
    """Tool-integrated: ``correct`` if the answer the text states (outside code and output blocks) is right.

    Like ``rule`` on the completion with every ```` ```python ```` and ```` ```output ```` block
    removed first, so the policy is paid only for an answer it writes itself (``\\boxed{}``, "The
    answer is", else the last number of its prose), never for a number inside its code or a
    tool output it did not restate. Nothing is executed here: the runtime ran the code during
    generation (``generation.tool_rounds``).

    >>> tool("Q", "\\n```python\\nprint(2 + 3)\\n```\\n```output\\n5\\n```\\nSo \\\\boxed{5}.", Example("Q", "5"))
    1.0
    >>> tool("Q", "\\n```python\\nprint(2 + 3)\\n```\\n```output\\n5\\n```\\n", Example("Q", "5"))
    0.0
    """
    from rlzoo.rewards.verifier import verify

    return correct if verify(_ANY_BLOCK_RE.sub("\n", completion), example.answer) else wrong
