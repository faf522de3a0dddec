"""Rewards: plain functions, combined with weights into a stage's :class:`Reward`.

Two calling conventions are accepted, told apart by the function's parameter names:

* **rlzoo's**, one completion at a time: ``fn(prompt, completion, example, **kwargs) -> float | None``
  (the built-in ``rule``, ``program``, ``tool``, ``any_format``; see ``builtin``). A function that
  declares ``fn.parallel = True`` (it runs programs) is called from a thread pool.
* **TRL's** (``GRPOTrainer`` reward functions), a batch at a time:
  ``fn(prompts, completions, **kwargs) -> list[float | None]``. rlzoo passes ``prompts`` and
  ``completions`` (lists of strings), ``completion_ids`` (the generated token ids) and every
  column of the examples as a list: ``answer``, ``solution`` and each key of ``Example.meta``
  (``None`` where an example has none), plus the reward's ``kwargs``. A function written for TRL
  therefore runs unchanged; name it in the config as ``path/to/file.py:function`` or
  ``package.module:function``.

``None`` means "no reward for this completion" (TRL's convention): with several functions the
completion gets the weighted sum of the others; when every function says None the completion is
**skipped**: its reward is NaN, GRPO and PPO leave it out (of the group statistics and the loss),
DPO and RFT treat it as neither correct nor wrong, and the share is logged as
``reward/skipped_frac``. A NaN or infinite value, a result of the wrong length or type, or an
exception stops the run with one line naming the reward function (:class:`RewardError`).
"""

from __future__ import annotations

import inspect
import math
import os
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from rlzoo.errors import UserError


class RewardError(UserError):
    """A reward function that raised or returned something that is not a reward."""


def is_batched(fn: Callable) -> bool:
    """Whether ``fn`` follows TRL's batched convention (it takes ``prompts`` or ``completions``)."""
    fn = getattr(fn, "func", fn)  # functools.partial
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "completions" in params or "prompts" in params


def _cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def _where(e: BaseException) -> str:
    """``file:line`` of the innermost frame of ``e`` outside rlzoo's own reward plumbing."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.endswith(os.path.join("rewards", "__init__.py"))]
    return f" ({os.path.basename(frames[-1].filename)}:{frames[-1].lineno})" if frames else ""


@dataclass
class RewardFunction:
    """One reward function of a stage, with its weight and keyword arguments."""

    name: str
    fn: Callable
    weight: float = 1.0
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def batched(self) -> bool:
        return is_batched(self.fn)

    @property
    def needs_batch(self) -> bool:
        """A reward that reads the batch's tokens itself (a reward model, :mod:`rlzoo.reward_models.reward`)."""
        return getattr(self.fn, "needs_batch", False)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(getattr(self.fn, "events", ()))

    def __call__(self, examples: Sequence, completions: Sequence[str], completion_ids: Sequence | None = None,
                 *, answer: Callable | None = None) -> list[float | None] | tuple[list[float | None], list]:
        """The function's value for every completion (``None`` = no reward), checked. With
        ``answer(example, completion)`` (per-completion functions only), also each completion's
        answer, taken right after its grade in the same thread: ``(values, answers)``."""
        try:
            if self.needs_batch:
                raise RewardError(f"reward '{self.name}' scores token batches: it is called by Reward.score with a batch")
            if answer is not None:
                both = _map(self.fn, list(zip(examples, completions)),
                            lambda ex, c: (self.fn(ex.prompt, c, ex, **self.kwargs), answer(ex, c)))
                return self._checked([v for v, _ in both], len(completions)), [a for _, a in both]
            if self.batched:
                columns = _columns(examples)
                values = self.fn(prompts=[ex.prompt for ex in examples], completions=list(completions),
                                 completion_ids=list(completion_ids) if completion_ids is not None else None,
                                 **columns, **self.kwargs)
            else:
                values = _map(self.fn, list(zip(examples, completions)), lambda ex, c: self.fn(ex.prompt, c, ex, **self.kwargs))
        except RewardError:
            raise
        except Exception as e:  # noqa: BLE001 - a user's function: one line naming it and where it failed
            raise RewardError(f"reward '{self.name}' raised {type(e).__name__}: {e}{_where(e)}") from None
        return self._checked(values, len(completions))

    def _checked(self, values: Any, n: int) -> list[float | None]:
        """``values`` as ``n`` floats or Nones. Any sequence of length ``n`` will do, as TRL takes
        it: a list or tuple, a 1-D numpy array or torch tensor (made a list), of Python or numpy
        numbers; strings, mappings and arrays of another shape are refused."""
        shape = getattr(values, "shape", None)
        if shape is not None and hasattr(values, "tolist"):  # a numpy array, a torch tensor (any device)
            if len(shape) != 1:
                raise RewardError(f"reward '{self.name}' returned an array of shape {tuple(shape)} for {n} completions "
                                  f"(one value per completion: shape ({n},))")
            values = values.tolist()
        if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or len(values) != n:
            got = f"{len(values)} values" if isinstance(values, Sequence) and not isinstance(values, (str, bytes)) else \
                type(values).__name__
            raise RewardError(f"reward '{self.name}' returned {got} for {n} completions")
        out: list[float | None] = []
        for i, v in enumerate(values):
            if v is None:
                out.append(None)
                continue
            if isinstance(v, str) or not hasattr(v, "__float__"):
                raise RewardError(f"reward '{self.name}' returned {type(v).__name__} for completion {i}; rewards are numbers or None")
            v = float(v)
            if not math.isfinite(v):
                raise RewardError(f"reward '{self.name}' returned {v} for completion {i}; rewards must be finite (None skips a completion)")
            out.append(v)
        return out


def _map(fn: Callable, pairs: list, call: Callable) -> list:
    """``call(example, completion)`` for each pair, in order; in a thread pool when ``fn`` declares
    ``parallel = True`` (one thread per CPU, at least 2), else a plain loop."""
    if getattr(getattr(fn, "func", fn), "parallel", False) and len(pairs) > 1:
        with ThreadPoolExecutor(max_workers=min(len(pairs), max(2, _cpus()))) as pool:
            return list(pool.map(lambda pair: call(*pair), pairs))
    return [call(ex, c) for ex, c in pairs]


def _columns(examples: Sequence) -> dict[str, list]:
    """The examples' fields as TRL's dataset columns: ``answer``, ``solution`` and every meta key."""
    keys = list(dict.fromkeys(k for ex in examples for k in ex.meta))
    columns = {"answer": [ex.answer for ex in examples], "solution": [ex.solution for ex in examples]}
    taken = {*columns, "prompts", "completions", "completion_ids"}  # the call's own arguments: a meta key of that name is left out
    columns.update({k: [ex.meta.get(k) for ex in examples] for k in keys if k not in taken})
    return columns


class Reward:
    """A stage's reward: the weighted sum of its functions' values, ``None`` when all are None.

    ``score`` returns the values and the share of completions that counted each event the
    built-in functions count (``builtin.count_event``), plus ``skipped`` (no function gave a value).
    """

    def __init__(self, functions: list[RewardFunction]) -> None:
        if not functions:
            raise ValueError("a reward needs at least one function")
        self.functions = functions

    @property
    def name(self) -> str:
        return "+".join(f.name for f in self.functions)

    @property
    def events(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(e for f in self.functions for e in f.events))

    @property
    def process(self) -> bool:
        """Whether the reward gives step rewards (it includes a process reward model)."""
        return any(getattr(f.fn, "process", False) for f in self.functions)

    def score(self, examples: Sequence, completions: Sequence[str], completion_ids: Sequence | None = None,
              *, answers: list | None = None, batch=None) -> tuple[list[float | None], dict[str, float]]:
        """The reward of every completion (None: skipped) and the events' shares. With ``answers``
        (a list to fill), each completion's graded answer (:meth:`answers`) is taken right after
        its grade, in the same thread, so that a program's answer reads the run its grade just
        memoised: no program runs twice, however many completions are scored. A reward model
        among the functions needs the token ``batch``."""
        values, events, _, _ = self._score(examples, completions, completion_ids, answers, batch)
        return values, events

    def score_batch(self, batch) -> dict[str, float]:
        """Score a RolloutBatch in place; its reward diagnostics.

        Fills ``batch.rewards`` [N] (NaN where the completion is skipped: every function said
        None) and, when the reward includes a process reward model, ``batch.step_rewards`` and
        ``batch.step_ends`` [N, T]: the weighted sum of every function's step rewards, where an
        outcome function's value counts as a reward on the last step. Returns the share of
        completions that counted each event (``reward/<event>_frac``, ``reward/skipped_frac``
        included): this process's rows; the run reduces them over processes.
        """
        import torch

        values, events, batch.step_rewards, batch.step_ends = self._score(batch.examples, batch.completions,
                                                                          batch.completion_ids(), None, batch)
        batch.rewards = torch.tensor([float("nan") if v is None else v for v in values], device=batch.input_ids.device,
                                     dtype=torch.float)  # [N]
        return {f"reward/{e}_frac": frac for e, frac in events.items()}

    def _score(self, examples, completions, completion_ids, answers, batch):
        from rlzoo.rewards.builtin import reward_events

        before = reward_events()
        first = self.functions[0]
        answer = self._answer_fn()
        outputs = {}
        for f in self.functions:
            if f.needs_batch:
                if batch is None:
                    raise RewardError(f"reward '{f.name}' is a reward model: it scores token batches, not texts")
                outputs[id(f)] = f.fn(batch)
        if answers is not None and not first.batched and not first.needs_batch and answer is not None:
            first_values, answers[:] = first(examples, completions, answer=answer)
            parts = [(first, first_values)] + [(f, self._values(f, outputs, examples, completions, completion_ids)) for f in self.functions[1:]]
        else:
            parts = [(f, self._values(f, outputs, examples, completions, completion_ids)) for f in self.functions]
            if answers is not None:
                answers[:] = self.answers(examples, completions)
        after = reward_events()
        values: list[float | None] = []
        for i in range(len(completions)):
            given = [(f.weight, v[i]) for f, v in parts if v[i] is not None]
            values.append(sum(w * v for w, v in given) if given else None)
        n = max(len(values), 1)
        events = {e: (after.get(e, 0) - before.get(e, 0)) / n for e in self.events}
        events["skipped"] = sum(v is None for v in values) / n
        step_rewards, step_ends = self._steps(parts, outputs)
        return values, events, step_rewards, step_ends

    @staticmethod
    def _values(f: RewardFunction, outputs: dict, examples, completions, completion_ids) -> list[float | None]:
        if f.needs_batch:
            return f._checked(list(outputs[id(f)].values), len(completions))
        return f(examples, completions, completion_ids)

    def _steps(self, parts, outputs) -> tuple["Tensor | None", "Tensor | None"]:
        process = [outputs[id(f)] for f, _ in parts if f.needs_batch and outputs[id(f)].step_ends is not None]
        if not process:
            return None, None
        import torch

        ends = process[0].step_ends  # [N, T] the first process reward's steps
        last = ends * (ends.cumsum(-1) == ends.sum(-1, keepdim=True)).float()  # [N, T] 1 at each row's last step end
        total = torch.zeros_like(ends)  # [N, T]
        for f, values in parts:
            out = outputs.get(id(f))
            if out is not None and out.step_rewards is not None:
                total += f.weight * out.step_rewards * ends
            else:  # an outcome reward is a reward on the last step
                v = torch.tensor([0.0 if x is None else x for x in values], device=ends.device)  # [N]
                total += f.weight * v[:, None] * last
        return total, ends

    def _answer_fn(self) -> Callable | None:
        """``(example, completion) -> answer`` of the first function's declared ``answer``, or None."""
        first = self.functions[0]
        answer = getattr(getattr(first.fn, "func", first.fn), "answer", None)
        return None if answer is None else (lambda ex, c: answer(ex.prompt, c, ex, **first.kwargs))

    def answers(self, examples: Sequence, completions: Sequence[str]) -> list[str | None]:
        """The final answer of each completion that the first function grades (Maj@k votes on it):
        a function's declared ``answer`` (``program``: what the program prints), else the answer
        the text states (:func:`rlzoo.rewards.verifier.extract_answer`)."""
        from rlzoo.rewards.verifier import extract_answer

        answer = self._answer_fn()
        if answer is None:
            return [extract_answer(c) for c in completions]
        return _map(self.functions[0].fn, list(zip(examples, completions)), answer)


def reward_function(name: str, weight: float = 1.0, kwargs: dict | None = None, tokenizer=None) -> RewardFunction:
    """The reward function registered as ``name`` (or ``file.py:function`` / ``module:function``).

    A registered class (a reward model, :mod:`rlzoo.reward_models.reward`) is built once, with the
    ``kwargs``; a function gets them at every call. A class that declares ``needs_tokenizer = True``
    (it reads the batch's tokens as text: ``oracle_prm``) is also given the policy's ``tokenizer``."""
    from rlzoo.registry import REWARDS

    fn = REWARDS.get(name)
    if inspect.isclass(fn):
        args = {**dict(kwargs or {}), **({"tokenizer": tokenizer} if getattr(fn, "needs_tokenizer", False) else {})}
        params = inspect.signature(fn).parameters
        missing = [p for p, v in params.items() if v.default is inspect.Parameter.empty and p not in args
                   and v.kind in (v.POSITIONAL_OR_KEYWORD, v.KEYWORD_ONLY)]
        unknown = [k for k in args if k not in params and not any(v.kind == v.VAR_KEYWORD for v in params.values())]
        if missing or unknown:
            what = f"needs kwargs.{missing[0]}" if missing else f"takes no kwargs.{unknown[0]}"
            known = ", ".join(p for p in params if p != "tokenizer")
            raise RewardError(f"reward '{name}' {what} (its kwargs: {known})")
        try:
            return RewardFunction(name, fn(**args), weight, {})
        except TypeError as e:
            raise RewardError(f"reward '{name}': {e}") from None
    return RewardFunction(name, fn, weight, dict(kwargs or {}))


def make_reward(spec, tokenizer=None) -> Reward:
    """The :class:`Reward` of a config's reward section (``name`` and ``kwargs``, or ``functions``);
    ``tokenizer``, the policy's, goes to the functions that declare they need it."""
    from omegaconf import OmegaConf

    if isinstance(spec, str):
        return Reward([reward_function(spec, tokenizer=tokenizer)])
    plain = OmegaConf.to_container(spec, resolve=True) if OmegaConf.is_config(spec) else dict(spec)
    if plain.get("functions"):
        return Reward([reward_function(f["name"], f.get("weight", 1.0), f.get("kwargs"), tokenizer) for f in plain["functions"]])
    return Reward([reward_function(plain["name"], 1.0, plain.get("kwargs"), tokenizer)])
