"""Reward models: outcome (ORM) and process (PRM) reward models, their scores, losses and metrics.

DeepSeekMath (Shao et al. 2024, Sec. 4.1.2-4.1.3) trains GRPO with a learned reward: an outcome
reward model scores a whole output, a process reward model scores the end of every reasoning step.
Both are here the same standard Hugging Face model: a causal LM backbone with a scalar head on
every token, ``AutoModelForTokenClassification`` with ``num_labels = 1`` (``LlamaForTokenClassification``
for a Llama policy). Its logit at token t is the model's log-odds that the solution up to t is
correct; an ORM reads it at the last token, a PRM at every step end (:mod:`rlzoo.reward_models.steps`). A reward
model is saved and loaded with ``save_pretrained`` / ``from_pretrained`` like any model: a folder
with ``config.json`` (architecture ``*ForTokenClassification``, ``num_labels: 1``) and weights.

* models: :func:`reward_model_from_lm` (from a policy, head at zero), :func:`load_reward_model`;
* scores: :func:`token_scores` [N, T] (:func:`token_probs`: their sigmoid, in micro-batches), read by :func:`outcome_scores` [N] and :func:`step_scores` [N, T];
* losses: :func:`outcome_loss`, :func:`process_loss` (binary cross-entropy with logits, soft labels);
* metrics: :func:`roc_auc`, :func:`accuracy`, :func:`step_accuracy`, :func:`first_error_accuracy`.

What the labels are is :mod:`rlzoo.reward_models.labels`.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from rlzoo.errors import ModelLoadError, reason
from rlzoo.runtime.logprobs import backbone, position_ids_from_mask



# -- the model ------------------------------------------------------------------------------------


def reward_model_from_lm(lm: torch.nn.Module) -> torch.nn.Module:
    """A reward model with ``lm``'s backbone weights (copied) and a scalar head at zero.

    ``lm`` is a Hugging Face causal LM (or the runtime's wrapper around one). The result is the
    ``AutoModelForTokenClassification`` of the same config with ``num_labels = 1``, on ``lm``'s
    device and dtype. Its head (weight and bias) starts at zero, so every initial score is 0
    (probability 1/2): training starts from the policy's features, not from a random opinion.
    The classifier dropout is 0, so scores are a deterministic function of the text, as every
    log-prob pass of rlzoo is.

    >>> # rm = reward_model_from_lm(policy); rm.save_pretrained("runs/prm")
    """
    from transformers import AutoModelForTokenClassification

    from rlzoo.runtime.generation import causal_lm

    lm = causal_lm(lm)
    config = copy.deepcopy(lm.config)
    config.num_labels = 1
    config.id2label, config.label2id = {0: "correct"}, {"correct": 0}
    config.classifier_dropout = 0.0
    param = next(lm.parameters())
    rm = AutoModelForTokenClassification.from_config(config, dtype=param.dtype)
    rm.base_model.load_state_dict(backbone(lm).state_dict())
    prefix = rm.base_model_prefix + "."
    with torch.no_grad():
        for name, p in rm.named_parameters():
            if not name.startswith(prefix):  # the head: score.weight, score.bias
                p.zero_()
    return rm.to(param.device)


def load_reward_model(path: str, dtype: str = "float32") -> torch.nn.Module:
    """The reward model saved in the local folder ``path`` (``save_pretrained``); never downloads.

    A folder that is missing, has no ``config.json``, or holds another kind of model (a causal
    LM, a classifier with several labels) is a one-line :class:`~rlzoo.errors.ModelLoadError`.
    """
    from transformers import AutoConfig, AutoModelForTokenClassification

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"reward model folder not found: {path}")
    if not (folder / "config.json").is_file():
        raise ModelLoadError(f"not a Hugging Face model folder (no config.json): {path}")
    try:
        config = AutoConfig.from_pretrained(str(folder), local_files_only=True)
        architectures = config.architectures or ["(no architecture)"]
        if config.num_labels != 1 or not any(a.endswith("ForTokenClassification") for a in architectures):
            raise ModelLoadError(
                f"not a reward model (a *ForTokenClassification model with num_labels 1): {path} holds "
                f"{architectures[0]} with num_labels {config.num_labels}"
            )
        return AutoModelForTokenClassification.from_pretrained(str(folder), dtype=getattr(torch, dtype), local_files_only=True)
    except (OSError, ValueError) as e:
        raise ModelLoadError(f"cannot load reward model from {path}: {reason(e)}") from None


# -- scores ---------------------------------------------------------------------------------------


def token_scores(rm: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
    """[N, T] float32 score (logit) of every token: the model's log-odds that the text up to and
    including that token is on a correct path. Positions follow the attention mask
    (:func:`rlzoo.runtime.logprobs.position_ids_from_mask`), so left padding changes no score.
    Gradients flow when the caller's grad mode is on."""
    out = rm(input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask))
    return out.logits.squeeze(-1).float()  # [N, T]


@torch.no_grad()
def token_probs(rm: torch.nn.Module, input_ids: Tensor, attention_mask: Tensor, batch_size: int) -> Tensor:
    """[N, T] sigmoid of :func:`token_scores`, without gradients, in micro-batches of ``batch_size`` rows."""
    parts = [torch.sigmoid(token_scores(rm, input_ids[i : i + batch_size], attention_mask[i : i + batch_size]))
             for i in range(0, len(input_ids), batch_size)]
    return torch.cat(parts) if parts else torch.zeros(input_ids.shape, device=input_ids.device)  # [N, T]


def outcome_scores(scores: Tensor, attention_mask: Tensor) -> Tensor:
    """[N] each row's score at its last real token (attention_mask 1: EOS for a finished sample).

    >>> outcome_scores(torch.tensor([[9., 1., 2., 9.], [3., 4., 9., 9.]]), torch.tensor([[0, 1, 1, 0], [1, 1, 0, 0]]))
    tensor([2., 4.])
    """
    last = attention_mask.long().cumsum(-1).argmax(-1)  # [N] first column reaching the row's count
    return scores.gather(-1, last[:, None]).squeeze(-1)  # [N]


def step_scores(scores: Tensor, step_ends: Tensor) -> Tensor:
    """[N, T] the scores at step ends (``step_ends`` 1.0), 0 elsewhere.

    >>> step_scores(torch.tensor([[1., 2., 3.]]), torch.tensor([[0., 1., 1.]]))
    tensor([[0., 2., 3.]])
    """
    return torch.where(step_ends > 0, scores, torch.zeros_like(scores))  # [N, T]


# -- losses ---------------------------------------------------------------------------------------


def outcome_loss(logits: Tensor, labels: Tensor, normaliser: float | Tensor | None = None) -> Tensor:
    """Binary cross-entropy with logits of an ORM, averaged over the rows.

    logits [N] (the outcome scores), labels [N] in [0, 1] (soft labels allowed):

        loss = 1/N * sum_i -[y_i log sigmoid(s_i) + (1 - y_i) log(1 - sigmoid(s_i))]

    ``normaliser`` replaces N (e.g. the row count of a whole minibatch split in micro-batches or
    across processes, so that the summed gradients are those of one big batch).
    """
    per_row = F.binary_cross_entropy_with_logits(logits.float(), labels.float(), reduction="none")  # [N]
    return per_row.sum() / (len(per_row) if normaliser is None else normaliser)


def process_loss(logits: Tensor, labels: Tensor, step_ends: Tensor, normaliser: float | Tensor | None = None) -> Tensor:
    """Binary cross-entropy with logits of a PRM, averaged over the step ends.

    logits [N, T] (token scores), labels [N, T] in [0, 1] at step ends (soft labels allowed;
    anything elsewhere), step_ends [N, T] 1.0 at the labelled positions:

        loss = 1/S * sum_{(i, t): step end} BCE(s_{i,t}, y_{i,t}),   S = number of step ends

    ``normaliser`` replaces S (the step ends of a whole minibatch); with no step end the loss is 0.
    """
    labelled = step_ends > 0  # [N, T]
    safe_labels = torch.where(labelled, labels.float(), torch.zeros_like(logits, dtype=torch.float32))  # [N, T]
    per_token = F.binary_cross_entropy_with_logits(logits.float(), safe_labels, reduction="none")  # [N, T]
    total = torch.where(labelled, per_token, torch.zeros_like(per_token)).sum()
    return total / (labelled.sum().clamp(min=1) if normaliser is None else normaliser)


# -- metrics --------------------------------------------------------------------------------------


def _binary(labels) -> Tensor:
    y = torch.as_tensor(labels).flatten().double()
    if not torch.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0/1 (or bool)")
    return y == 1


def roc_auc(scores, labels) -> float:
    """Area under the ROC curve: the chance that a random positive scores above a random
    negative, ties counting half (the Mann-Whitney U statistic over P * N pairs). NaN when one
    class is missing. Scores may be logits or probabilities (only their order matters).

    With average ranks r (ties share the mean of their ranks), AUC = (sum_{positives} r - P(P+1)/2) / (P N).

    >>> roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])  # pairs (0.35 vs 0.1, 0.4), (0.8 vs both): 3 of 4
    0.75
    >>> roc_auc([0.5, 0.5], [0, 1]), roc_auc([0.2, 0.3], [1, 1])
    (0.5, nan)
    """
    s = torch.as_tensor(scores, dtype=torch.float64).flatten()
    y = _binary(labels)
    num_pos, num_neg = int(y.sum()), int((~y).sum())
    if num_pos == 0 or num_neg == 0:
        return math.nan
    _, inverse, counts = torch.unique(s, return_inverse=True, return_counts=True)
    below = counts.cumsum(0) - counts  # values strictly smaller than each distinct value
    ranks = (below.double() + (counts.double() + 1) / 2)[inverse]  # 1-based average ranks
    return float((ranks[y].sum() - num_pos * (num_pos + 1) / 2) / (num_pos * num_neg))


def accuracy(probs, labels, threshold: float = 0.5) -> float:
    """The share of predictions ``probs >= threshold`` that equal the 0/1 ``labels`` (NaN if none).

    >>> accuracy([0.9, 0.2, 0.5, 0.4], [1, 0, 0, 1])  # right, right, wrong (0.5 says correct), wrong
    0.5
    """
    p = torch.as_tensor(probs, dtype=torch.float64).flatten()
    y = _binary(labels)
    return float(((p >= threshold) == y).double().mean()) if len(p) else math.nan


def step_accuracy(pred_probs: Sequence[Sequence[float]], oracle_labels: Sequence[Sequence[bool]]) -> float:
    """:func:`accuracy` over every step of every solution: the share of steps whose prediction
    (probability >= 0.5: on a correct path) equals the oracle's label. Per solution, one
    probability per step (e.g. ``per_step(torch.sigmoid(scores), step_ends)``) and one label per
    step (e.g. :func:`rlzoo.reward_models.labels.oracle_labels`); their counts must match.

    >>> step_accuracy([[0.9, 0.3], [0.8]], [[True, True], [True]])
    0.6666666666666666
    """
    if [len(p) for p in pred_probs] != [len(y) for y in oracle_labels]:
        raise ValueError("step_accuracy needs one prediction per oracle step in every solution")
    return accuracy([p for ps in pred_probs for p in ps], [bool(y) for ys in oracle_labels for y in ys])


def first_error_accuracy(pred_first_errors: Sequence[int | None], oracle_first_errors: Sequence[int | None]) -> float:
    """The share of solutions whose predicted first error step equals the oracle's (None = no
    error; a right solution predicted right counts as a match). A prediction's first error is the
    first step with probability < 0.5: ``rlzoo.reward_models.steps.first_error([p >= 0.5 for p in probs])``.

    >>> first_error_accuracy([1, None, 0, None], [1, None, 2, 0])
    0.5
    """
    if len(pred_first_errors) != len(oracle_first_errors):
        raise ValueError("first_error_accuracy needs one prediction per solution")
    if not oracle_first_errors:
        return math.nan
    return sum(p == o for p, o in zip(pred_first_errors, oracle_first_errors)) / len(oracle_first_errors)


def per_step(values: Tensor, step_ends: Tensor) -> list[list[float]]:
    """Each row's values at its step ends, in order: [N, T] -> N lists (ragged).

    >>> per_step(torch.tensor([[0.5, 0.75, 0.25], [0.5, 0.5, 1.0]]), torch.tensor([[0., 1., 1.], [0., 0., 1.]]))
    [[0.75, 0.25], [1.0]]
    """
    return [row[ends > 0].tolist() for row, ends in zip(values, step_ends)]
