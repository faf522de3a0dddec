"""Your own prompt/answer file as a task (``task.name: dataset``, docs/data.md "Your own data").

A file of rows with a prompt and an answer, in TRL's column convention (``prompt``), in any format
:func:`~rlzoo.data.files.read_rows` reads: jsonl, parquet, csv, arrow, or a folder written by
``datasets``' ``save_to_disk``. :class:`~rlzoo.config.DatasetConfig` maps columns to an Example:

=================  ===========================================================================
Example            from the row
=================  ===========================================================================
``prompt``         column ``prompt``: a string, through ``template`` (None: as it is; ``cot``,
                   ``pot``, ``tir``: rlzoo's template; else a format string with ``{prompt}``
                   and any other ``{column}``). Or a list of chat messages (TRL's conversational
                   format), which needs ``task.chat_template: true``: the messages are kept in
                   ``meta["prompt_messages"]`` (the template applied to the last user message)
                   and the tokenizer's chat template renders them; ``prompt`` is then the last
                   user message's content (what held-out prompts are compared by, and what logs
                   and errors show).
``answer``         column ``answer``: a string, or a number written as a string
``solution``       column ``solution`` (None: a ``solution`` column when the file has one)
``meta``           every other column, by its name; then rlzoo's ``source`` (``dataset``),
                   ``line`` (the 1-based row) and ``format`` where the row has no such column
=================  ===========================================================================

Every ``meta`` key reaches a TRL-style reward function as a keyword argument (a list per batch),
so a reward reads the file's extra columns (``difficulty``) by name. Mistakes are one-line
:class:`~rlzoo.errors.DataError` s naming the file and the row; a template or a mapping that
cannot work is a ``ValueError`` naming its ``task.dataset`` key (a ConfigError when built from a
config).

The training and held-out logic (an eval file, or rows of the training file held out by a seeded
shuffle; held-out prompts never trained on) is :class:`~rlzoo.data.files.HeldOutFiles`'.
"""

from __future__ import annotations

import math
import string
from pathlib import Path
from typing import Any, Optional

from rlzoo.config import FORMATS, DatasetConfig
from rlzoo.data.files import HeldOutFiles, Row, field_noun, read_rows
from rlzoo.data.templates import CHAT_META_KEY, MESSAGES_META_KEY, format_prompt
from rlzoo.errors import DataError
from rlzoo.interface import Example

KEY = "task.dataset"
SOURCE = "dataset"  # meta["source"] of every example, unless the row has a source column
RESERVED = (CHAT_META_KEY, "raw_prompt", MESSAGES_META_KEY)  # meta keys of the chat wrapping: no column may take them


def template_fields(template: Optional[str]) -> list[str]:
    """The column names a custom ``template`` uses; ``ValueError`` naming ``task.dataset.template``
    when it is not a format string with ``{prompt}`` and plain ``{column}`` fields. None and the
    format names (``cot``, ``pot``, ``tir``) use no column.

    >>> template_fields("Q ({difficulty}): {prompt}\\nA:")
    ['difficulty', 'prompt']
    """
    if template is None or template in FORMATS:
        return []
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
    except ValueError as e:  # a lone { or }
        raise ValueError(f"{KEY}.template: {template!r} is not a format string ({e}; write a literal brace as {{{{ or }}}})") from None
    bad = next((n for n in names if not n.isidentifier()), None)
    if bad is not None:
        raise ValueError(f"{KEY}.template: field {{{bad}}} is not a column name (write {{prompt}} or {{column}})")
    if "prompt" not in names:
        raise ValueError(f"{KEY}.template: {template!r} has no {{prompt}} (or set template to cot, pot or tir, or null)")
    return names


class DatasetTask(HeldOutFiles):
    """The user's own file of prompt/answer rows (see the module docstring), with the synthetic
    task's interface. ``chat_template`` is ``task.chat_template``: conversational prompts need it."""

    def __init__(self, cfg: DatasetConfig, chat_template: bool = False) -> None:
        if not cfg.train:
            raise ValueError(f"{KEY}.train: required with task.name: dataset (your rows: a jsonl, parquet, csv or arrow "
                             "file, or a folder saved by datasets)")
        template_fields(cfg.template)
        self.cfg, self.chat_template = cfg, chat_template
        self.format = cfg.format or (cfg.template if cfg.template in FORMATS else "cot")
        super().__init__(KEY, Path(cfg.train), Path(cfg.eval) if cfg.eval else None, self._load,
                         eval_size=cfg.eval_size, eval_seed=cfg.eval_seed)

    def _load(self, path: Path) -> list[Example]:
        out: list[Example] = []
        solution = self.cfg.solution
        for line, data in read_rows(path):
            row = Row(path, line, data, SOURCE)
            if not out:
                solution = self._check_columns(row)
            out.append(self._example(row, solution))
        if not out:
            raise DataError(f"{path}: no rows")
        return out

    def _check_columns(self, row: Row) -> Optional[str]:
        """The first row has every mapped column and no reserved one; the solution column of the file."""
        noun = field_noun(row.path)
        has = ", ".join(sorted(row.data))
        for key in ("prompt", "answer", "solution"):
            column = getattr(self.cfg, key)
            if column is not None and column not in row.data:
                raise row.error(f"no {noun} '{column}' ({KEY}.{key}); the file has {noun}s {has}")
        if taken := next((c for c in RESERVED if c in row.data), None):
            raise row.error(f"{noun} '{taken}' has a name rlzoo keeps for itself in Example.meta: rename it")
        return self.cfg.solution or ("solution" if "solution" in row.data else None)

    def _example(self, row: Row, solution_column: Optional[str]) -> Example:
        cfg = self.cfg
        mapped = {cfg.prompt, cfg.answer, solution_column}
        prompt, messages = self._prompt(row)
        meta: dict[str, Any] = {"source": SOURCE, "format": self.format, "line": row.line}
        meta.update({k: v for k, v in row.data.items() if k not in mapped})  # the row's own columns win
        if messages is not None:
            meta[MESSAGES_META_KEY] = messages
        solution = row.text(solution_column, optional=True) if solution_column else None
        return Example(prompt, self._answer(row), solution, meta)

    def _prompt(self, row: Row) -> tuple[str, Optional[list[dict[str, str]]]]:
        """(prompt text, chat messages or None) of a row, through the template."""
        noun, column = field_noun(row.path), self.cfg.prompt
        value = self._value(row, column, "prompt")
        if isinstance(value, str):
            return self._templated(row, value), None
        if value is None:
            raise row.error(f"{noun} '{column}' ({KEY}.prompt) is empty: every row needs a prompt")
        if not _is_messages(value):
            raise row.error(f"{noun} '{column}' must be a string or a list of chat messages "
                            f"([{{role: ..., content: ...}}]), got {type(value).__name__}")
        if not self.chat_template:
            raise row.error(f"{noun} '{column}' is a list of chat messages: set task.chat_template: true, so that the "
                            "tokenizer's chat template renders them")
        messages = [{"role": m["role"], "content": m["content"]} for m in value]
        last = next((i for i in range(len(messages) - 1, -1, -1) if messages[i]["role"] == "user"), None)
        if last is None:
            raise row.error(f"{noun} '{column}' has no user message (roles: {', '.join(m['role'] for m in messages)})")
        messages[last]["content"] = self._templated(row, messages[last]["content"])
        return messages[last]["content"], messages

    def _templated(self, row: Row, text: str) -> str:
        template = self.cfg.template
        if template is None:
            return text
        if template in FORMATS:
            return format_prompt(text, template)
        try:
            return template.format_map({**row.data, "prompt": text})
        except KeyError as e:
            noun = field_noun(row.path)
            raise row.error(f"{KEY}.template names {noun} '{e.args[0]}', which this row does not have "
                            f"(it has {', '.join(sorted(row.data))})") from None
        except (ValueError, TypeError, IndexError) as e:  # a format spec that does not fit the column's value
            raise row.error(f"{KEY}.template cannot be filled in from this row ({e})") from None

    def _answer(self, row: Row) -> str:
        column = self.cfg.answer
        answer = row.text(column, numbers=True) if self._value(row, column, "answer") is not None else ""
        if not answer.strip():
            raise row.error(f"{field_noun(row.path)} '{column}' ({KEY}.answer) is empty: every row needs an answer")
        return answer

    @staticmethod
    def _value(row: Row, column: str, key: str) -> Any:
        """The row's ``column`` (None for an empty cell: null, or a table's NaN); missing -> error."""
        if column not in row.data:
            raise row.error(f"missing {field_noun(row.path)} '{column}' ({KEY}.{key})")
        value = row.data[column]
        return None if isinstance(value, float) and math.isnan(value) else value


def _is_messages(value: Any) -> bool:
    """A non-empty list of ``{"role": str, "content": str}`` mappings (other keys allowed)."""
    return (isinstance(value, list) and bool(value)
            and all(isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in value))
