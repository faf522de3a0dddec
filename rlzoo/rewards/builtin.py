"""Built-in reward functions. A reward is a plain callable ``(prompt, completion, example) -> float``.

* ``rule``: the final answer in the text (chain-of-thought).
* ``program``: runs the last ```` ```python ```` block in the sandbox and grades what it prints
  (program-of-thought).
* ``tool``: the answer the text states outside code and output blocks (tool-integrated rollouts,
  whose code already ran during generation).

* ``any_format``: by the completion's own format (``tir``, ``pot`` or ``cot``), for a model
  trained on a format mix.

A slow reward may declare ``fn.parallel = True`` so that training and evaluation call it from a
thread pool (``rlzoo.rewards.Reward.score``), and count events (``count_event``) listed in
``fn.events`` to have them logged as ``reward/<event>_frac``. A reward that grades something other
than the answer the text states declares ``fn.answer(prompt, completion, example, **kwargs)``,
the answer it grades, so Maj@k votes on it (``rlzoo.rewards.reward_answers``). docs/rewards.md
says which reward fits which format.

Register your own with ``@register_reward("name")`` in a plugin module and select it with
``reward.name`` in a stage; ``reward.kwargs`` are passed as keyword arguments.
"""

from __future__ import annotations

import functools
import re
import threading
from collections import Counter
from typing import Callable

from rlzoo.interface import Example
from rlzoo.registry import register_reward
from rlzoo.sandbox import DEFAULT_LIMITS

TIMEOUT_S = 5.0  # seconds a reward gives each program by default (tool calls in generation: generation.tool_timeout_s)
MEMORY_MB = DEFAULT_LIMITS.memory_mb  # the sandbox's address-space cap


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


def _rule_answer(prompt: str, completion: str, example: Example, **_: object) -> str | None:
    """The answer ``rule`` grades: the one the text states."""
    from rlzoo.rewards.verifier import extract_answer

    return extract_answer(completion)


rule.answer = _rule_answer


# -- program-of-thought and tool-integrated rewards ------------------------------------------------

_PYTHON_BLOCK_RE = re.compile(r"```python[^\n`]*\n(.*?)(?:```|\Z)", re.DOTALL)
_ANY_BLOCK_RE = re.compile(r"```(?:python|output)[^\n`]*\n.*?(?:```|\Z)", re.DOTALL)
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


@functools.lru_cache(maxsize=4096)
def _run_cached(code: str, timeout_s: float, memory_mb: int, site_packages: bool) -> tuple[bool, str, bool]:
    """(ok, stdout, timed_out) of ``code`` in the sandbox, memoised by program text (LRU; two
    threads asking for the same new program at once may both run it, which is harmless)."""
    from rlzoo.sandbox import run_python

    result = run_python(code, timeout_s=timeout_s, memory_mb=memory_mb, site_packages=site_packages)
    return result.ok, result.stdout, result.error == "timeout"


@register_reward("program")
def program(
    prompt: str,
    completion: str,
    example: Example,
    *,
    correct: float = 1.0,
    wrong: float = 0.0,
    timeout_s: float = TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
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

    printed = _program_output(completion, timeout_s, memory_mb, site_packages, bare_code, count=True)
    return correct if printed is not None and verify(printed, example.answer) else wrong


def _program_output(completion: str, timeout_s: float, memory_mb: int, site_packages: bool, bare_code: bool, count: bool = False) -> str | None:
    """The last non-empty line the completion's program prints; ``None`` if it has no program or fails."""
    code = extract_program(completion, bare_code=bare_code)
    if code is None:
        if count:
            count_event("no_program")
        return None
    ok, stdout, timed_out = _run_cached(code, float(timeout_s), int(memory_mb), bool(site_packages))
    if not ok:
        if count:
            count_event("exec_timeout" if timed_out else "exec_fail")
        return None
    lines = [line for line in stdout.splitlines() if line.strip()]
    return lines[-1].strip() if lines else None


def _program_answer(
    prompt: str, completion: str, example: Example, *, timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB,
    site_packages: bool = False, bare_code: bool = False, **_: object,
) -> str | None:
    """The answer ``program`` grades: what the program prints last (memoised, so no second run)."""
    from rlzoo.rewards.verifier import extract_answer

    printed = _program_output(completion, timeout_s, memory_mb, site_packages, bare_code)
    return None if printed is None else extract_answer(printed)


program.parallel = True  # sandbox runs are subprocesses: Reward.score runs them in a thread pool
program.events = ("no_program", "exec_fail", "exec_timeout")
program.answer = _program_answer


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


def _tool_answer(prompt: str, completion: str, example: Example, **_: object) -> str | None:
    """The answer ``tool`` grades: the one the text states outside code and output blocks."""
    from rlzoo.rewards.verifier import extract_answer

    return extract_answer(_ANY_BLOCK_RE.sub("\n", completion))


tool.answer = _tool_answer


_OUTPUT_BLOCK_RE = re.compile(r"```output[^\n`]*\n")


def completion_format(completion: str) -> str:
    """The solution format a completion is written in: ``tir``, ``pot`` or ``cot``.

    ``tir`` if it holds an ```` ```output ```` block, else ``pot`` if it holds a ```` ```python ````
    block, else ``cot``.

    >>> [completion_format(c) for c in (" 2 + 3 = 5.", "\\n```python\\nprint(5)\\n```", "```python\\nprint(5)\\n```\\n```output\\n5\\n```")]
    ['cot', 'pot', 'tir']
    """
    if _OUTPUT_BLOCK_RE.search(completion):
        return "tir"
    return "pot" if _PYTHON_BLOCK_RE.search(completion) else "cot"


@register_reward("any_format")
def any_format(
    prompt: str,
    completion: str,
    example: Example,
    *,
    correct: float = 1.0,
    wrong: float = 0.0,
    timeout_s: float = TIMEOUT_S,
    memory_mb: int = MEMORY_MB,
) -> float:
    """Grades a completion in whichever format it is written: for models trained on a format mix.

    Tool-integrated text (it has an ```` ```output ```` block) is graded by ``tool``, a program
    (a ```` ```python ```` block) by ``program`` (run in the sandbox), anything else by ``rule``.
    Each call counts its format as an event, so training logs ``reward/format_cot_frac``,
    ``reward/format_pot_frac`` and ``reward/format_tir_frac``: how often the policy picks each.

    >>> any_format("Q", " 2 + 3 = 5. The answer is \\\\boxed{5}.", Example("Q", "5"))
    1.0
    >>> any_format("Q", "\\n```python\\nx = 2 + 3\\nprint(x)\\n```", Example("Q", "5"))
    1.0
    """
    fmt, grader, kwargs = _grader(completion, timeout_s, memory_mb)
    count_event(f"format_{fmt}")
    return grader(prompt, completion, example, correct=correct, wrong=wrong, **kwargs)


def _grader(completion: str, timeout_s: float, memory_mb: int) -> tuple[str, Callable, dict]:
    """(format, the reward of that format, its extra keyword arguments) for ``completion``."""
    fmt = completion_format(completion)
    kwargs = {"timeout_s": timeout_s, "memory_mb": memory_mb} if fmt == "pot" else {}
    return fmt, {"cot": rule, "pot": program, "tir": tool}[fmt], kwargs


def _any_format_answer(prompt: str, completion: str, example: Example, *, timeout_s: float = TIMEOUT_S, memory_mb: int = MEMORY_MB, **_: object) -> str | None:
    """The answer ``any_format`` grades: the answer of the reward of the completion's format."""
    _, grader, kwargs = _grader(completion, timeout_s, memory_mb)
    return grader.answer(prompt, completion, example, **kwargs)


any_format.parallel = True
any_format.events = ("format_cot", "format_pot", "format_tir", "exec_fail", "exec_timeout")
any_format.answer = _any_format_answer


@register_reward("random")
class RandomReward:
    """The control of a reward: 1 with probability ``p``, else 0, whatever the completion says.

    A completion's coin is a hash of ``(seed, prompt, completion)``: the same text always gets the
    same reward (within a run, across runs and processes), two texts get independent coins, and
    correctness plays no part. Training on it measures what RL does without a signal, the
    spurious-reward control of Shao et al. (2025), whose random rewards lifted some models.

    >>> r = RandomReward(p=0.5, seed=0)
    >>> r("Q", " 2 + 3 = 5.", Example("Q", "5")) == r("Q", " 2 + 3 = 5.", Example("Q", "5"))
    True
    >>> RandomReward(p=0.0)("Q", "anything", Example("Q", "5")), RandomReward(p=1.0)("Q", "anything", Example("Q", "5"))
    (0.0, 1.0)
    """

    def __init__(self, p: float = 0.5, seed: int = 0) -> None:
        from rlzoo.config import UNIT, check_range

        check_range("reward random: p", p, UNIT)
        self.p, self.seed = float(p), int(seed)

    def __call__(self, prompt: str, completion: str, example: Example) -> float:
        import hashlib

        digest = hashlib.sha256(f"{self.seed}\x00{prompt}\x00{completion}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64  # uniform in [0, 1)
        return 1.0 if u < self.p else 0.0
