"""Held-out evaluation: greedy accuracy, Pass@k and Maj@k from n samples per problem.

* accuracy: greedy decoding, the reward's verdict per problem.
* Pass@k: the unbiased estimator of Chen et al. (2021): with n samples of which c are correct,
  pass@k = 1 - C(n - c, k) / C(n, k), averaged over problems.
* Maj@k: the n samples are cut into n // k disjoint groups of k; each group votes on the final
  answer (the one the reward grades, :func:`rlzoo.rewards.reward_values_and_answers`: for a program, what it
  prints), normalised; the vote is correct if the winner is correct; averaged over groups and
  problems. Answers vote in normalised form (`1,600` = `1600`); ties go to the answer seen first.
* ``<event>_frac``: the reward's events (``fn.events``) per greedy answer, e.g. ``format_pot_frac``
  under ``any_format`` is the share of greedy answers written as programs.
"""

from __future__ import annotations

from collections import Counter
from math import comb
from typing import Callable

from rlzoo.interface import Example
from rlzoo.rewards import reward_values_and_answers, reward_values_and_events
from rlzoo.runtime.generation import GenerationConfig, sample


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


def majority_correct(answers: list[str | None], correct: list[bool]) -> bool:
    """Whether the most common (non-empty) answer is a correct one."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return False
    winner = votes.most_common(1)[0][0]
    return correct[answers.index(winner)]


def evaluate(
    model,
    tokenizer,
    examples: list[Example],
    reward: Callable[[str, str, Example], float],
    *,
    samples: int = 8,
    ks: list[int] = (1, 8),
    temperature: float = 0.7,
    top_p: float = 1.0,
    max_new_tokens: int = 64,
    batch_size: int = 256,
) -> dict[str, float]:
    """Greedy accuracy, and Pass@k / Maj@k for each k in ``ks`` when ``samples`` > 0."""
    from rlzoo.rewards.verifier import normalize_answer

    greedy = sample(model, tokenizer, examples, 1, GenerationConfig(max_new_tokens, 0.0, 1.0, batch_size))
    values, events = reward_values_and_events(reward, examples, greedy.completions)
    out = {"accuracy": sum(v > 0 for v in values) / len(examples), "num_examples": len(examples)}
    out.update({f"{event}_frac": frac for event, frac in events.items()})  # of the greedy answers
    if samples > 0:
        cfg = GenerationConfig(max_new_tokens, temperature, top_p, batch_size)
        batch = sample(model, tokenizer, examples, samples, cfg)
        for k in ks:
            if k > samples:
                raise ValueError(f"eval.ks has k={k} > eval.samples={samples}")
        values, voted = reward_values_and_answers(reward, batch.examples, batch.completions)
        verdicts = [v > 0 for v in values]
        pass_k = {k: 0.0 for k in ks}
        maj_k = {k: 0.0 for k in ks}
        for i, ex in enumerate(examples):
            correct = verdicts[i * samples : (i + 1) * samples]
            answers = [_vote_key(a, normalize_answer) for a in voted[i * samples : (i + 1) * samples]]
            for k in ks:
                pass_k[k] += pass_at_k(samples, sum(correct), k)
                chunks = [(answers[j : j + k], correct[j : j + k]) for j in range(0, samples - k + 1, k)]
                maj_k[k] += sum(majority_correct(a, c) for a, c in chunks) / len(chunks)
        for k in ks:
            out[f"pass@{k}"] = pass_k[k] / len(examples)
            out[f"maj@{k}"] = maj_k[k] / len(examples)
    return out


def shown_metrics(evals: list[dict]) -> list[str]:
    """The metric names a table of these evaluation results shows, in order.

    ``num_examples`` is left out, and so is every reward-event share (``*_frac``) that is zero in
    all of them (``format_tir_frac`` when no answer was tool-integrated).
    """
    keys = list(dict.fromkeys(k for e in evals for k in e if k != "num_examples"))
    return [k for k in keys if not k.endswith("_frac") or any(e.get(k) for e in evals)]


def _vote_key(answer: str | None, normalize) -> str | None:
    """The form answers vote under (``1,600`` and ``1600`` are one answer)."""
    return None if answer is None else normalize(answer)
