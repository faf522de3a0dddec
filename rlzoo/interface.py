"""The algorithm interface: typed batches and the three parts an algorithm is made of.

DeepSeekMath (Shao et al. 2024, Sec. 5.2.1) writes the gradient of SFT, RFT, Online RFT, DPO, PPO
and GRPO in one form::

    grad J_A = E_{(q,o) ~ D} [ 1/|o| sum_t GC_A(q, o, t, r) * grad log pi_theta(o_t | q, o_<t) ]

An algorithm here is exactly that: a **data source** D (named, chosen in config), a **reward** r
(named, chosen in config) and a **gradient coefficient** GC (the ``coefficients`` method). The
runtime owns everything else: models, sampling, the single log-prob path, the single surrogate
loss ``-aggregate(coef.detach() * logp)``, optimisation, logging and checkpoints.

A new algorithm is one file with one class that satisfies :class:`Algorithm`, decorated with
``@register_algorithm("name")``. See docs/interface.md for a worked example.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

if TYPE_CHECKING:  # keep `import rlzoo.interface` free of torch at import time
    import torch
    from torch import Tensor


@dataclass
class Example:
    """One problem of a task.

    prompt:   the text the policy is conditioned on (already formatted)
    answer:   the gold final answer, graded by the reward
    solution: a reference solution (completion text), for SFT; None when the task has none
    meta:     anything else a reward or logger may need (format, difficulty, source row...)
    """

    prompt: str
    answer: str
    solution: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class RolloutBatch:
    """A token-level batch of N sequences of length T (prompt left-padded, completion after it).

    Every per-token tensor is aligned with ``input_ids``: position t holds the quantity of token
    ``input_ids[:, t]`` given the tokens before it (position 0 of a row never enters a loss).

    input_ids      [N, T] long   prompt tokens then completion tokens, pad elsewhere
    attention_mask [N, T] long   1 on real (prompt or completion) tokens
    loss_mask      [N, T] float  1 on tokens the policy is trained on: generated completion tokens
                                 (prompt, padding and tool output are 0)
    group_ids      [N]    long   index of the prompt a sequence answers; the G samples of one
                                 prompt (or the two sides of a DPO pair) share it
    rewards        [N]    float  sequence reward; NaN where there is none (SFT's gold data)
    old_logprobs   [N, T] float  log pi_old(token), the sampling-time policy (None unless needed)
    ref_logprobs   [N, T] float  log pi_ref(token) (None unless the algorithm needs a reference)
    advantages     [N, T] float  set by an algorithm's ``prepare`` (None otherwise)
    sample_logprobs [N, T] float log-prob of each generated token recorded by the sampler, under
                                 softmax(logits / temperature) (0 elsewhere; None for given text)
    step_ends      [N, T] float  1.0 at the last token of each reasoning step of the completion
                                 (rlzoo.reward_models.steps.step_end_mask), 0 elsewhere (None unless steps are used)
    step_rewards   [N, T] float  the reward of the step ending at that token, 0 elsewhere: a process
                                 reward model's scores (None unless a PRM scored the batch)
    extras         name -> tensor with leading dim N: algorithm-specific (values, returns...)
    completions    N completion strings (for logging and rewards)
    examples       N examples the sequences answer
    temperature    the sampling temperature of the completions (1 for given text or greedy); every
                   log-prob of the batch (training, old, reference) is taken under logits / temperature

    Group ids are global: a question's position in the stage's question stream (DPO: one id per
    pair), so they are unique across ranks and the same whatever the process count.
    """

    input_ids: "Tensor"
    attention_mask: "Tensor"
    loss_mask: "Tensor"
    group_ids: "Tensor"
    rewards: "Tensor"
    old_logprobs: "Tensor | None" = None
    ref_logprobs: "Tensor | None" = None
    advantages: "Tensor | None" = None
    sample_logprobs: "Tensor | None" = None
    step_ends: "Tensor | None" = None
    step_rewards: "Tensor | None" = None
    extras: dict[str, "Tensor"] = field(default_factory=dict)
    completions: list[str] = field(default_factory=list)
    examples: list[Example] = field(default_factory=list)
    temperature: float = 1.0

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def select(self, index: "Tensor | list[int]") -> "RolloutBatch":
        """The sub-batch of the rows in ``index`` (every tensor and list sliced alike)."""
        import torch

        idx = torch.as_tensor(index, dtype=torch.long)
        rows = idx.tolist()
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None or isinstance(value, float):
                out[f.name] = value
            elif f.name == "extras":
                out[f.name] = {k: v[idx.to(v.device)] for k, v in value.items()}
            elif isinstance(value, list):
                out[f.name] = [value[i] for i in rows] if value else []
            else:
                out[f.name] = value[idx.to(value.device)]
        return RolloutBatch(**out)

    @staticmethod
    def concat(batches: "list[RolloutBatch]", pad_token_id: int) -> "RolloutBatch":
        """The rows of ``batches`` in order, each left-padded to the widest (positions follow the
        attention mask, so left padding changes no log-prob). All must share a temperature and
        the same optional fields."""
        import torch
        import torch.nn.functional as F

        batches = [b for b in batches if len(b)] or batches[:1]
        width = max(b.input_ids.shape[1] for b in batches)

        def cat(tensors: list, pad_value: float) -> "Tensor":
            if tensors[0].dim() == 1:
                return torch.cat(tensors)
            return torch.cat([F.pad(t, (width - t.shape[1], 0), value=pad_value) for t in tensors])

        out: dict[str, Any] = {}
        for f in fields(RolloutBatch):
            values = [getattr(b, f.name) for b in batches]
            if f.name == "temperature":
                out[f.name] = values[0]
            elif f.name == "extras":
                out[f.name] = {k: cat([v[k] for v in values], 0.0) for k in values[0]}
            elif isinstance(values[0], list):
                out[f.name] = [x for v in values for x in v]
            elif values[0] is None:
                out[f.name] = None
            else:
                out[f.name] = cat(values, pad_token_id if f.name == "input_ids" else 0.0)
        return RolloutBatch(**out)

    def to(self, device: "torch.device | str") -> "RolloutBatch":
        """The same batch with every tensor on ``device``."""
        import torch

        moved = {f.name: getattr(self, f.name).to(device) for f in fields(self) if isinstance(getattr(self, f.name), torch.Tensor)}
        moved["extras"] = {k: v.to(device) for k, v in self.extras.items()}
        return replace(self, **moved)

    def completion_ids(self) -> list[list[int]]:
        """Each row's completion tokens: from its first trained token to its last real one
        (tool-output tokens included, padding excluded)."""
        out = []
        for ids, trained, real in zip(self.input_ids.tolist(), self.loss_mask.tolist(), self.attention_mask.tolist()):
            start = next((t for t, m in enumerate(trained) if m), len(ids))
            out.append([tok for tok, r in zip(ids[start:], real[start:]) if r])
        return out

    @property
    def completion_lengths(self) -> "Tensor":
        """[N] number of trained tokens |o_i| of each sequence."""
        return self.loss_mask.sum(-1)


@runtime_checkable
class Algorithm(Protocol):
    """What an algorithm is. A class satisfying this, registered by name, is an algorithm.

    Attributes (declarations the runtime reads, every one of them; class attributes, or instance
    attributes when they depend on the Config; no method of the runtime switches on names):

    Config        dataclass of the algorithm's hyperparameters, read from ``algorithms.<name>``
                  of the run config; every field has a docstring-style comment, and a field with
                  allowed values declares them beside it (:func:`rlzoo.config.ranged`): the run
                  checks them before any work, for plugins as for built-in algorithms
    data_source   default data source name ("dataset", "online", "offline"); a stage's
                  ``data.source`` overrides it (``runtime.data_source`` is the one in use)
    needs         runtime services the algorithm uses, a subset of :data:`NEEDS`:
                  ``reference``     the runtime fills ``batch.ref_logprobs`` (a no-grad pass of
                                    the frozen reference) before ``prepare``;
                  ``old_logprobs``  ``batch.old_logprobs`` = log pi_old: before ``prepare`` when
                                    the batch is used for several updates, else the one training
                                    pass's own log-probs, detached, before ``coefficients`` (ratio
                                    exactly 1, no extra pass); a ``prepare`` that reads pi_old
                                    itself takes ``runtime.policy_logprobs(batch)`` when it is None;
                  ``value_model``   the runtime builds and trains a value model (``runtime.values``);
                  ``step_rewards``  the stage's reward must give step rewards (a process reward
                                    model): ``batch.step_rewards`` and ``batch.step_ends`` are set
    loss_agg      the aggregation mode the coefficients are derived for, or None to let the
                  user choose with ``optim.loss_agg`` (see rlzoo.losses.aggregate)
    group_coupled True when a sequence's coefficient depends on other sequences of its group
                  (DPO pairs): the runtime then never splits a group across micro-batches
    min_samples_per_prompt
                  the fewest outputs per question (``data.samples_per_prompt``) with which the
                  algorithm can learn anything: GRPO 2 (one output is its own group mean, so every
                  advantage is 0), DPO 2 (no pair without two outputs), else 1. A stage with fewer
                  is a config error naming the key, raised before any work; so is greedy sampling
                  (``generation.temperature: 0``) when this is above 1, since the outputs of a
                  question would all be the same

    Optional (read with a default, so an algorithm without it is unchanged):

    logprobs_before_prepare
                  True (the default): ``ref_logprobs`` and ``old_logprobs`` are filled before
                  ``prepare``, which may read them (PPO's KL reward). False: ``prepare`` reads
                  neither, and the runtime fills them after it, for the rows it kept only (DPO
                  keeps 2 of a question's G samples: the reference pass costs G/2 times less)

    :class:`NoExtras` gives ``prepare``, ``extra_loss`` and ``min_samples_per_prompt = 1`` their
    defaults. :func:`check_algorithm` is what ``rlzoo train`` checks of an algorithm before any work.
    """

    Config: ClassVar[type]
    data_source: ClassVar[str]
    needs: ClassVar[frozenset[str]]
    loss_agg: ClassVar[str | None]
    group_coupled: ClassVar[bool]
    min_samples_per_prompt: ClassVar[int]

    def __init__(self, cfg: Any) -> None: ...

    def prepare(self, batch: RolloutBatch, runtime: "RuntimeView") -> tuple[RolloutBatch, dict[str, float]]:
        """Once per batch, before any update, without gradients: advantages, pairing, filtering.

        Under data parallel ``batch`` holds this process's rows: whole groups (a question's G
        samples are never split across processes), so group statistics are local; a statistic
        of the whole batch must sum over processes with ``runtime.reduce_sum``. Diagnostics are
        averaged over processes weighted by rows (``num_*`` keys are summed).

        Returns the (possibly filtered) batch and diagnostics with slash-namespaced keys.
        """
        ...

    def coefficients(self, batch: RolloutBatch, logp: "Tensor") -> tuple["Tensor", dict[str, float]]:
        """GC per token, [N, T], from the detached current log-probs ``logp`` [N, T].

        Called for every update (so with ratio != 1 when a batch is reused). The returned tensor
        must not require grad; the runtime minimises ``-aggregate(coef * logp, loss_mask)``.
        """
        ...

    def extra_loss(self, batch: RolloutBatch, runtime: "RuntimeView") -> tuple["Tensor | None", dict[str, float]]:
        """A loss term that is not a policy gradient (PPO's value loss), per token [n, T], or None.

        The runtime averages it over the trained tokens of the whole minibatch (every micro-batch,
        every rank) and backpropagates it after the policy loss. It may use the value model
        (``runtime.values``); a term of the policy's own log-probs belongs in the coefficient.
        """
        ...


class RuntimeView(Protocol):
    """What ``prepare`` and ``extra_loss`` may use from the runtime."""

    data_source: str  # the name of the stage's data source (``data.source``, else the algorithm's own)

    def policy_logprobs(self, batch: RolloutBatch) -> "Tensor":
        """[N, T] log-probs of the current policy, without grad (e.g. pi_old for a KL reward)."""
        ...

    def values(self, batch: RolloutBatch) -> "Tensor":
        """[N, T] value estimates of the value model (grad enabled when the caller's is)."""
        ...

    def reduce_sum(self, values: "Tensor") -> "Tensor":
        """``values`` summed elementwise over every process: for statistics of the global batch
        (PPO's advantage whitening), so that 2 processes compute what 1 process computes."""
        ...


class NoExtras:
    """Defaults for the optional parts of :class:`Algorithm`: use by composition of methods.

    An algorithm that needs no preparation and no extra loss may inherit these two no-ops
    instead of writing them out (and ``min_samples_per_prompt = 1``). It is the only base class
    rlzoo offers.
    """

    min_samples_per_prompt = 1

    def prepare(self, batch: RolloutBatch, runtime: RuntimeView) -> tuple[RolloutBatch, dict[str, float]]:
        return batch, {}

    def extra_loss(self, batch: RolloutBatch, runtime: RuntimeView) -> tuple[None, dict[str, float]]:
        return None, {}


NEEDS = frozenset({"reference", "old_logprobs", "value_model", "step_rewards"})  # what ``Algorithm.needs`` may name


def protocol_members(protocol: type) -> list[str]:
    """The attributes and methods a class must have to satisfy ``protocol`` (in declaration order)."""
    names: list[str] = []
    for base in reversed(protocol.__mro__):
        if base is object or base.__module__ == "typing":
            continue
        names += [n for n in getattr(base, "__annotations__", {}) if n not in names]
        names += [n for n, v in vars(base).items() if callable(v) and not n.startswith("_") and n not in names]
    return names


def check_algorithm(name: str, algorithm: Any) -> type:
    """That ``algorithm`` (a class, or an instance) satisfies :class:`Algorithm`: it has every
    member the protocol declares, a dataclass ``Config`` and ``needs`` within :data:`NEEDS`.
    Returns its Config; raises :class:`rlzoo.errors.ConfigError` naming what is missing.

    >>> check_algorithm("mine", type("Mine", (), {}))
    Traceback (most recent call last):
    ...
    rlzoo.errors.ConfigError: algorithm 'mine' does not satisfy the interface: its class has no Config dataclass
    """
    from dataclasses import is_dataclass

    from rlzoo.errors import ConfigError

    config = getattr(algorithm, "Config", None)
    if not is_dataclass(config):
        raise ConfigError(f"algorithm '{name}' does not satisfy the interface: its class has no Config dataclass")
    if isinstance(algorithm, type):
        return config
    missing = [m for m in protocol_members(Algorithm) if not hasattr(algorithm, m)]
    if missing:
        raise ConfigError(f"algorithm '{name}' does not satisfy the interface: missing {', '.join(missing)}")
    unknown = sorted(set(algorithm.needs) - NEEDS)
    if unknown:
        raise ConfigError(f"algorithm '{name}': unknown needs {', '.join(unknown)}; known: {', '.join(sorted(NEEDS))}")
    return config
