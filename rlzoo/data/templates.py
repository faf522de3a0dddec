"""Prompt templates: how a question is asked in each solution format, and the chat wrapper.

The three formats of DeepSeekMath's instruction-tuning data (Shao et al. 2024, Sec. 3.1):

* ``cot`` chain-of-thought: step-by-step text ending in ``\\boxed{answer}``. The instruction is the
  paper's own (used for DeepSeekMath-Instruct and -RL evaluation).
* ``pot`` program-of-thought: a Python program whose printed output is the answer.
* ``tir`` tool-integrated reasoning (ToRA, Gou et al. 2024): text reasoning interleaved with
  ```` ```python ```` blocks, each followed by its ```` ```output ```` block, then ``\\boxed{answer}``.
  The instruction is the paper's tool-integrated one.

The ``pot`` wording is ours (the paper does not print one). Templates are plain ``str.format``
strings with one field, ``{question}``.

>>> format_prompt("What is 2 + 3?")
'What is 2 + 3?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'

The chat-template option (``task.chat_template: true``) wraps an already formatted prompt in the
tokenizer's own chat template, as a single user turn followed by the assistant header, where
examples meet the tokenizer (:func:`apply_chat_template`). An example whose prompt came as chat
messages (TRL's conversational format, ``task.name: dataset``) keeps them in
``meta["prompt_messages"]``, and those messages are rendered instead.

The embedded synthetic task keeps its own short phrasing (``rlzoo.data.synthetic.PROMPT_SUFFIX``):
its tiny model has a 256-token context.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Iterable, Iterator

from rlzoo.config import FORMATS  # noqa: F401  (defined with the config schema, whose format keys it checks)
from rlzoo.interface import Example

TEMPLATES = {
    "cot": "{question}\nPlease reason step by step, and put your final answer within \\boxed{{}}.",
    "pot": (
        "{question}\nPlease write a Python program that solves the problem and prints the final answer. "
        "Put the program in a ```python code block."
    ),
    "tir": (
        "{question}\nPlease integrate natural language reasoning with programs to solve the problem above, "
        "and put your final answer within \\boxed{{}}."
    ),
}

CHAT_META_KEY = "chat_template"  # set on examples whose prompt is already wrapped
MESSAGES_META_KEY = "prompt_messages"  # a conversational prompt's messages, [{"role", "content"}], rendered by the chat template


def check_format(fmt: str, what: str = "format") -> str:
    """``fmt`` if it is a known format, else ``ValueError`` naming the known ones."""
    if fmt not in FORMATS:
        raise ValueError(f"{what} must be one of {', '.join(FORMATS)}; got '{fmt}'")
    return fmt


def format_prompt(question: str, fmt: str = "cot") -> str:
    """The prompt that asks ``question`` in format ``fmt`` (``cot``, ``pot`` or ``tir``)."""
    return TEMPLATES[check_format(fmt)].format(question=question)


def chat_prompt(prompt: str | list[dict[str, str]], tokenizer) -> str:
    """``prompt`` through ``tokenizer``'s chat template, ending in the assistant header: a string as
    one user turn, a list of ``{"role", "content"}`` messages as that conversation."""
    if not getattr(tokenizer, "chat_template", None):
        from rlzoo.errors import ConfigError

        raise ConfigError("task.chat_template is true but the tokenizer has no chat template")
    messages = [{"role": "user", "content": prompt}] if isinstance(prompt, str) else list(prompt)
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def apply_chat_template(examples: Iterable[Example], tokenizer) -> list[Example]:
    """Copies of ``examples`` whose prompts are wrapped in the tokenizer's chat template.

    The unwrapped prompt is kept in ``meta["raw_prompt"]``; an example already wrapped
    (``meta["chat_template"]`` true) is returned unchanged, so wrapping twice is harmless. An
    example with ``meta["prompt_messages"]`` (a conversational prompt) has those messages
    rendered, not its ``prompt`` as one user turn.
    Answers and solutions are untouched (a solution is the assistant's reply; the runtime appends
    EOS, which for chat models is the end-of-turn token).
    """
    out = []
    for ex in examples:
        if ex.meta.get(CHAT_META_KEY):
            out.append(ex)
            continue
        meta = {**ex.meta, CHAT_META_KEY: True, "raw_prompt": ex.prompt}
        out.append(replace(ex, prompt=chat_prompt(ex.meta.get(MESSAGES_META_KEY) or ex.prompt, tokenizer), meta=meta))
    return out


def chat_stream(stream: Iterable[Example], tokenizer) -> Iterator[Example]:
    """:func:`apply_chat_template` over an endless stream (``task.train_stream(seed)``), lazily."""
    for ex in stream:
        yield apply_chat_template([ex], tokenizer)[0]
