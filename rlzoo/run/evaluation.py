"""Held-out evaluation: greedy accuracy, Pass@k and Maj@k from n samples per problem.

* accuracy: greedy decoding, the reward's verdict per problem.
* Pass@k: the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
  pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
* Maj@k: the n samples are cut into n // k disjoint votes of k samples; each vote is on the final
  answer (the one the reward grades, :meth:`rlzoo.rewards.Reward.answers`: for a program, what
  it prints). Answers that the verifier judges equal are one answer
  (:func:`answer_groups`: ``0.5``, ``\\frac12`` and ``1/2`` pool their votes); the vote is correct
  if its winning group is (the verdict of that group's first answer); ties go to the group seen
  first; averaged over votes and problems.
* ``<event>_frac``: the reward's events (``fn.events``) per greedy answer, e.g. ``format_pot_frac``
  under ``any_format`` is the share of greedy answers written as programs.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Callable

from rlzoo.config import GenerationConfig
from rlzoo.interface import Example
from rlzoo.runtime.distributed import Dist
from rlzoo.runtime.generation import sample


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: 1 - C(n-c, k) / C(n, k).

    >>> pass_at_k(4, 1, 1)   # 1 - C(3,1)/C(4,1) = 1 - 3/4
    0.25
    >>> pass_at_k(4, 1, 4)
    1.0
    """
    if k > n:
        raise ValueError(f"pass@k needs k <= n samples (k={k}, n={n})")
    if n - c < k:
        return 1.0
    return 1.0 - comb(n - c, k) / comb(n, k)


def answer_groups(answers: list[str | None], same: Callable[[str, str], bool] | None = None) -> list[int | None]:
    """Group ids of ``answers`` by equivalence: each answer joins the first earlier group whose first
    answer it equals (``same``, default :func:`rlzoo.rewards.verifier.answers_equivalent`), else
    starts a new one; ``None`` (no answer) gets no group.

    >>> answer_groups(["0.5", "2", None, "2.0", "1/2"])
    [0, 1, None, 1, 0]
    """
    if same is None:
        from rlzoo.rewards.verifier import answers_equivalent as same
    heads: list[str] = []  # the first answer of each group
    out: list[int | None] = []
    for a in answers:
        if a is None:
            out.append(None)
            continue
        group = next((g for g, head in enumerate(heads) if a == head or same(head, a)), None)
        if group is None:
            group = len(heads)
            heads.append(a)
        out.append(group)
    return out


def majority_correct(groups: list[int | None], correct: list[bool]) -> bool:
    """Whether the most voted group of answers (``answer_groups``) is correct: the verdict of the
    group's first answer in this vote. Ties go to the group seen first; ``None`` does not vote."""
    votes = Counter(g for g in groups if g is not None)
    if not votes:
        return False
    top = max(votes.values())
    winner = next(g for g in groups if g is not None and votes[g] == top)
    return correct[groups.index(winner)]


def evaluate(
    model,
    tokenizer,
    examples: list[Example],
    reward,
    *,
    samples: int = 8,
    ks: list[int] = (1, 8),
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
    tool_rounds: int = 0,
    tool_timeout_s: float = 10.0,
    tool_output_max_chars: int = 512,
    seed: int = 0,
    dist: Dist | None = None,
) -> dict[str, float]:
    """Greedy accuracy, and Pass@k / Maj@k for each k in ``ks`` when ``samples`` > 0.

    With several processes (``dist``) each rank evaluates a contiguous block of ``examples`` and
    the per-problem results are gathered, so every rank returns the same numbers. Sample j of
    problem i is drawn with the seed ``(seed, i, j)`` (:mod:`rlzoo.runtime.sampling`), so the
    numbers do not depend on the process count or the batch size either. ``tool_rounds > 0``
    runs the code blocks of tool-integrated answers, as training rollouts do.
    """
    for k in ks:
        if samples > 0 and k > samples:
            raise ValueError(f"eval.ks has k={k} > eval.samples={samples}")
    dist = dist or Dist()
    block = dist.shard(len(examples))
    mine, keys = examples[block], list(range(block.start, block.stop))
    tools = {"tool_rounds": tool_rounds, "tool_timeout_s": tool_timeout_s, "tool_output_max_chars": tool_output_max_chars}
    record: dict = {"greedy": [], "events": {}, "verdicts": [], "groups": []}
    dist.together(lambda: _evaluate_block(model, tokenizer, mine, keys, reward, record, samples, temperature, top_p,
                                          max_new_tokens, batch_size, tools, seed))  # a reward's error stops every rank alike
    parts = dist.gather(record)
    n = len(examples)
    greedy_ok = [v for p in parts for v in p["greedy"]]
    out = {"accuracy": sum(greedy_ok) / n, "num_examples": n}
    for event in dict.fromkeys(e for p in parts for e in p["events"]):  # of the greedy answers
        out[f"{event}_frac"] = sum(p["events"].get(event, 0.0) for p in parts) / n
    if samples > 0:
        verdicts = [v for p in parts for v in p["verdicts"]]
        groups = [g for p in parts for g in p["groups"]]
        for k in ks:
            out[f"pass@{k}"] = sum(pass_at_k(samples, sum(c), k) for c in verdicts) / n
            out[f"maj@{k}"] = sum(maj_at_k(g, c, k) for g, c in zip(groups, verdicts)) / n
    return out


def _evaluate_block(model, tokenizer, mine: list[Example], keys: list[int], reward, record: dict, samples: int, temperature: float,
                    top_p: float, max_new_tokens: int, batch_size: int, tools: dict, seed: int) -> None:
    """Greedy and sampled answers of this rank's problems ``mine``, graded into ``record``."""
    if not mine:
        return
    greedy = sample(model, tokenizer, mine, 1, GenerationConfig(max_new_tokens, 0.0, 1.0, batch_size, **tools), keys=keys)
    values, events = reward.score(mine, greedy.completions, batch=greedy)
    record["greedy"] = [v is not None and v > 0 for v in values]
    record["events"] = {e: frac * len(mine) for e, frac in events.items()}
    if samples > 0:
        cfg = GenerationConfig(max_new_tokens, temperature, top_p, batch_size, **tools)
        batch = sample(model, tokenizer, mine, samples, cfg, seed=seed, keys=keys)
        voted: list = []
        values, _ = reward.score(batch.examples, batch.completions, answers=voted, batch=batch)
        record["verdicts"] = [[v is not None and v > 0 for v in values[i * samples : (i + 1) * samples]] for i in range(len(mine))]
        record["groups"] = [answer_groups(voted[i * samples : (i + 1) * samples]) for i in range(len(mine))]


def maj_at_k(groups: list[int | None], correct: list[bool], k: int) -> float:
    """Maj@k of one problem: its n samples (their answer groups) cut into n // k disjoint votes of k."""
    chunks = [(groups[j : j + k], correct[j : j + k]) for j in range(0, len(groups) - k + 1, k)]
    return sum(majority_correct(g, c) for g, c in chunks) / len(chunks)


def shown_metrics(evals: list[dict]) -> list[str]:
    """The metric names a table of these evaluation results shows, in order.

    ``num_examples`` (of the main set and of each ``eval.sets`` entry, ``<set>/num_examples``) is left
    out, and so is every reward-event share (``*_frac``) that is zero in all of them
    (``format_tir_frac`` when no answer was tool-integrated).
    """
    keys = list(dict.fromkeys(k for e in evals for k in e if k.rpartition("/")[2] != "num_examples"))
    return [k for k in keys if not k.endswith("_frac") or any(e.get(k) for e in evals)]


def run_eval(cfg, model, tokenizer, examples: list[Example], reward, dist: Dist | None = None) -> dict[str, float]:
    """The held-out evaluation of ``cfg.eval`` on ``examples`` (sharded over the ranks of ``dist``)."""
    from rlzoo.run.factories import held_out
    from rlzoo.runtime.sampling import mix_seed

    e = cfg.eval
    return evaluate(
        model, tokenizer, held_out(cfg, examples, tokenizer, e.num_examples), reward, samples=e.samples, ks=list(e.ks),
        temperature=e.temperature, top_p=e.top_p, max_new_tokens=e.max_new_tokens, batch_size=e.batch_size,
        tool_rounds=e.tool_rounds, tool_timeout_s=e.tool_timeout_s, seed=mix_seed(cfg.seed, "eval"), dist=dist,
    )


def run_evals(cfg, model, tokenizer, examples: list[Example], sets: dict[str, list[Example]], reward,
              dist: Dist | None = None) -> dict[str, float]:
    """:func:`run_eval` on the main held-out set, then on each extra set of ``eval.sets`` (``sets``:
    name -> its examples), whose metrics are named ``<set>/<metric>`` (``shifted/accuracy``)."""
    out = run_eval(cfg, model, tokenizer, examples, reward, dist)
    for name, set_examples in sets.items():
        out.update({f"{name}/{k}": v for k, v in run_eval(cfg, model, tokenizer, set_examples, reward, dist).items()})
    return out


def evaluate_stage(cfg, lm, tokenizer, examples: list[Example], dist: Dist, sets: dict[str, list[Example]] = {}) -> dict[str, float]:
    """The held-out evaluation of a stage's final weights (and of the extra ``sets``), under the run's autocast."""
    from rlzoo.run.factories import make_eval_reward
    from rlzoo.runtime.stage import make_accelerator

    accelerator = make_accelerator(cfg.mixed_precision)
    lm.to(accelerator.device).eval()
    with accelerator.autocast():
        return run_evals(cfg, lm, tokenizer, examples, sets, make_eval_reward(cfg), dist)
