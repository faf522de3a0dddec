"""What a reward model learns: labels of a policy's samples (DeepSeekMath Sec. 4.1.2-4.1.3).

* **outcome** labels: 1 when the stage's reward (the answer checker) gives a completion > 0.5;
* **Math-Shepherd** step labels (Wang et al. 2024): a step's label is whether (hard) or how often
  (soft) completions rolled out from its prefix reach the gold answer (:func:`math_shepherd_labels`);
* **oracle** step labels, where the task grades steps exactly (the embedded task's
  ``step_oracle``): each step end gets the label of the last step it closes
  (:func:`oracle_labels`).

:func:`label_batch` samples a policy on questions and labels what it wrote, as a reward-model
stage does (:mod:`rlzoo.run.reward_model_stage`).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Callable

import torch
from torch import Tensor

from rlzoo.interface import Example, RolloutBatch
from rlzoo.reward_models.steps import RowSteps, batch_steps, decode_with_offsets, end_mask

Sampler = Callable[[list[Example], int], RolloutBatch]
Grader = Callable[[list[Example], list[str]], list[float]]
StepOracle = Callable[[Example, list[str]], list[bool]]  # (example, step texts) -> a verdict per step


def oracle_labels(batch: RolloutBatch, rows: list[RowSteps | None], oracle: StepOracle) -> Tensor:
    """[N, T] exact step labels at the step ends of ``rows`` (:func:`rlzoo.reward_models.steps.batch_steps`).

    ``oracle(example, steps)`` grades the step texts of a completion (the rule's spans). A step
    end that closes several spans (a step merged with the one after it) gets the verdict of the
    last of them: whether the solution up to there is still on a correct path. An end closing no
    span (a completion with no step) is wrong. Every verdict is read at the end it belongs to, so
    no label moves to another step.

    >>> from rlzoo.reward_models.steps import RowSteps
    >>> batch = RolloutBatch(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4), torch.ones(1, 4), torch.zeros(1), torch.zeros(1), examples=[Example("q", "2")])
    >>> rows = [RowSteps(0, "a\\nb\\nc", [(0, 1), (2, 3), (4, 5)], [(1, 1), (3, 2)])]  # spans 0 and 1 end together
    >>> oracle_labels(batch, rows, lambda ex, steps: [s != "c" for s in steps]).tolist()
    [[0.0, 1.0, 0.0, 0.0]]
    """
    labels = torch.zeros(batch.input_ids.shape, dtype=torch.float32, device=batch.input_ids.device)  # [N, T]
    for i, row in enumerate(rows):
        if row is None:
            continue
        verdicts = oracle(batch.examples[i], [row.text[a:b] for a, b in row.spans])
        if len(verdicts) != len(row.spans):
            raise ValueError(f"step oracle gave {len(verdicts)} verdicts for {len(row.spans)} steps")
        for column, span in row.ends:
            labels[i, column] = float(span >= 0 and verdicts[span])
    return labels


def label_batch(policy, tokenizer, examples: list[Example], keys: list[int], reward, *, samples: int, generation, rm_type: str,
                labels: str, step_rule: str, rollouts: int, label_mode: str, sample_seed: int, autocast,
                oracle: StepOracle | None) -> tuple[RolloutBatch, int]:
    """``examples`` sampled from ``policy`` (``samples`` each, rows seeded by ``keys``) and labelled;
    also how many completions the reward skipped (None: no label, the row is dropped).

    ``extras['rm_labels']`` holds the labels: [N] outcome labels for an ``orm``; [N, T] step labels
    at ``step_ends`` for a ``prm`` (``labels``: ``math_shepherd`` or ``oracle``), with the outcome
    in ``extras['rm_outcome']`` and, when an ``oracle`` is given, its exact labels in
    ``extras['rm_oracle']`` (to measure a reward model against). ``autocast`` is the context the
    policy samples in.
    """
    from rlzoo.runtime.generation import sample
    from rlzoo.runtime.sampling import mix_seed

    with autocast():
        batch = sample(policy, tokenizer, examples, samples, generation, seed=sample_seed, keys=keys)
    reward.score_batch(batch)
    scored = (~torch.isnan(batch.rewards)).nonzero().flatten().tolist()  # a skipped completion has no label
    skipped = len(batch) - len(scored)
    batch = batch.select(scored)
    outcome = (batch.rewards > 0.5).float()  # [N]
    if rm_type == "orm":
        batch.extras["rm_labels"] = outcome
        return batch, skipped
    rows = batch_steps(batch, tokenizer, step_rule)
    batch.step_ends = end_mask(batch, rows)  # [N, T]
    batch.extras["rm_outcome"] = outcome
    if oracle is not None:
        batch.extras["rm_oracle"] = oracle_labels(batch, rows, oracle)  # [N, T]
    if labels == "oracle":
        batch.extras["rm_labels"] = batch.extras["rm_oracle"]
        return batch, skipped

    def sampler(queries, n):
        with autocast():
            return sample(policy, tokenizer, queries, n, generation, seed=sample_seed, keys=[mix_seed("prefix", q.prompt) for q in queries])

    def grader(exs, solutions):
        grades, _ = reward.score(exs, solutions)
        return [0.0 if g is None else g for g in grades]

    batch.extras["rm_labels"] = math_shepherd_labels(batch, batch.step_ends, sampler, grader, rollouts, label_mode, tokenizer=tokenizer)
    return batch, skipped


def math_shepherd_labels(
    batch: RolloutBatch,
    step_ends: Tensor,
    sampler: Sampler,
    grader: Grader,
    n: int,
    mode: str = "hard",
    *,
    tokenizer,
) -> Tensor:
    """[N, T] step labels estimated by rollouts (Math-Shepherd), at every step end; 0 elsewhere.

    For the step ending at token t of row i, the prefix is the row's completion up to and
    including t (decoded with ``tokenizer``, tool output included). ``sampler`` completes it
    ``n`` times from an :class:`~rlzoo.interface.Example` whose prompt is the row's prompt followed
    by that prefix; ``grader`` grades each full solution (prefix + continuation) against the row's
    example (its gold answer). A solution reaches the gold answer when its grade is >= 0.5
    (``rule`` gives 1 or 0). With c of the n reaching it:

        hard label = 1 if c > 0 else 0            soft label = c / n

    The last step of a row is labelled by grading the row itself (its whole solution is already
    there: 1 if it reaches the answer, else 0, in both modes), with no rollout. Every prefix of
    every row goes to ``sampler`` in one call (``len(prefixes) * n`` rows, the n continuations of
    a prefix adjacent, as :func:`rlzoo.runtime.generation.sample` returns them), and every
    solution to ``grader`` in one call per kind (the rows, the rollouts).

    batch      the sampled solutions (prompt left-padded, completion after it; ``examples`` set)
    step_ends  [N, T] 1.0 at each step's last token (:func:`rlzoo.reward_models.steps.step_end_mask`)
    sampler    ``(examples, n) -> RolloutBatch``: n completions of each example's prompt
    grader     ``(examples, completions) -> list[float]``: the grade of each full solution
    mode       ``hard`` or ``soft``
    """
    if mode not in ("hard", "soft"):
        raise ValueError(f"math_shepherd_labels: mode must be 'hard' or 'soft'; got '{mode}'")
    if n < 1:
        raise ValueError("math_shepherd_labels: n must be >= 1")
    if len(batch.examples) != len(batch):
        raise ValueError("math_shepherd_labels needs the batch's examples (batch.examples)")
    labels = torch.zeros(step_ends.shape, dtype=torch.float32, device=step_ends.device)  # [N, T]
    ends = (step_ends > 0).cpu()  # [N, T]
    trained = (batch.loss_mask > 0).cpu()  # [N, T]
    real = (batch.attention_mask > 0).cpu()  # [N, T]
    ids = batch.input_ids.cpu()  # [N, T]
    prefixes: list[tuple[int, int, str]] = []  # (row, column, completion prefix) of every step but the last
    finals: list[tuple[int, int, str]] = []  # (row, column, whole completion) of every last step
    for i in range(len(batch)):
        columns = ends[i].nonzero().flatten().tolist()
        if not columns:
            continue
        first, last = int(trained[i].nonzero()[0]), int(real[i].nonzero()[-1])
        text, char_ends = decode_with_offsets(tokenizer, ids[i, first : last + 1].tolist())
        prefixes += [(i, c, text[: char_ends[c - first]]) for c in columns[:-1]]
        finals.append((i, columns[-1], text))

    def reached(rows: list[int], solutions: list[str]) -> Tensor:
        grades = grader([batch.examples[i] for i in rows], solutions)
        return torch.tensor([float(g) >= 0.5 for g in grades], dtype=torch.float32)  # [len(rows)]

    if finals:
        rows, cols, texts = zip(*finals)
        labels[list(rows), list(cols)] = reached(list(rows), list(texts)).to(labels.device)
    if prefixes:
        rows, cols, texts = zip(*prefixes)
        queries = [replace(batch.examples[i], prompt=batch.examples[i].prompt + text, solution=None) for i, _, text in prefixes]
        rollouts = sampler(queries, n)
        if len(rollouts.completions) != len(queries) * n:
            raise ValueError(f"math_shepherd_labels: the sampler returned {len(rollouts.completions)} completions for "
                             f"{len(queries)} prefixes x {n}")
        solutions = [text + rollouts.completions[p * n + j] for p, text in enumerate(texts) for j in range(n)]
        hits = reached([i for i in rows for _ in range(n)], solutions).view(len(queries), n)  # [P, n]
        value = (hits.sum(-1) > 0).float() if mode == "hard" else hits.mean(-1)  # [P]
        labels[list(rows), list(cols)] = value.to(labels.device)
    return labels
