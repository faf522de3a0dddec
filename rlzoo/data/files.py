"""Problems from local jsonl files: GSM8K, MATH (and MATH-500), or a plain question/answer file.

``load_examples(path, format=..., limit=...)`` reads one file; the schema is told by the fields of
its first row, and every row must then follow it:

======  ======================================  =====================================================
schema  fields                                  Example
======  ======================================  =====================================================
gsm8k   ``question``, ``answer`` ending in      prompt: the question in the format's template;
        ``#### N``                              answer: N without thousands commas; solution (cot):
                                                the reasoning with the ``<<48/2=24>>`` calculator
                                                annotations removed, then ``The answer is \\boxed{N}.``
math    ``problem``, ``solution``, ``answer``   prompt: the problem in the format's template; answer:
        (PRM800K split files; MATH-500)         ``answer``; solution (cot): ``solution`` as it is
plain   ``prompt`` or ``question``, ``answer``  ``prompt`` is used as it is (already formatted),
        (str or number), optional ``solution``  ``question`` goes through the template; solution:
                                                ``solution`` when given
======  ======================================  =====================================================

GSM8K and MATH have reference solutions in chain-of-thought only, so with ``format`` ``pot`` or
``tir`` their examples have ``solution=None`` (fine for evaluation, RL and RFT; SFT needs
solutions). Every Example's ``meta`` holds ``source`` (the schema), ``format``, ``line`` (1-based)
and, for MATH, ``subject``, ``level`` and ``unique_id``.

jsonl rows are read as one JSON object per line with :mod:`json` rather than ``datasets``' json
loader: that way a bad row (invalid JSON, a missing field, a wrong type) raises a one-line
:class:`~rlzoo.errors.DataError` naming the file and the 1-based line, and nothing is cached on
disk. Blank lines are skipped. Parquet, csv and arrow files and folders saved with
``datasets.save_to_disk`` are read with Hugging Face ``datasets`` (:func:`read_rows`), rows
numbered from 1 in errors. A folder of a ``DatasetDict`` (several splits) is an error that names
its splits: a file is one split, and which one a task trains or evaluates on is the user's choice.

:class:`HeldOutFiles` makes a task of a training file and a held-out set (an eval file, or rows
held out of the training file) with the interface of the synthetic task: ``train_stream(seed)``,
``eval_examples()`` and ``corpus()``. :class:`FileTask` is the ``gsm8k`` and ``math`` tasks (paths
under ``task.files``); :class:`rlzoo.data.dataset.DatasetTask` the user's own file
(``task.name: dataset``).
"""

from __future__ import annotations

import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

from rlzoo.config import FilesConfig
from rlzoo.data.templates import check_format, format_prompt
from rlzoo.errors import DataError, reason
from rlzoo.interface import Example

DATA_ROOT = "../shared/data"  # relative to the working directory (the repository root)
DEFAULT_FILES = {  # task name -> (train, eval)
    "gsm8k": (f"{DATA_ROOT}/gsm8k/train.jsonl", f"{DATA_ROOT}/gsm8k/test.jsonl"),
    "math": (f"{DATA_ROOT}/math/train.jsonl", f"{DATA_ROOT}/math/test.jsonl"),  # eval: MATH-500
}
FILE_TASKS = tuple(DEFAULT_FILES)

_CALC_ANNOTATION_RE = re.compile(r"<<[^<>\n]*>>")  # GSM8K calculator annotations <<48/2=24>>




# -- one file -----------------------------------------------------------------------------------


DATASET_SUFFIXES = {".parquet": "parquet", ".csv": "csv", ".arrow": "arrow"}  # read with Hugging Face datasets


def is_data_path(path: Path) -> bool:
    """A file rlzoo reads (jsonl, or a table format of ``datasets``) or a folder written by
    ``datasets``' ``save_to_disk`` (a Dataset's, or a DatasetDict's, which reading refuses by name)."""
    return path.is_file() or (path.is_dir() and any((path / f).is_file() for f in ("dataset_info.json", "dataset_dict.json")))


def missing_data(path: Path, key: str) -> str:
    """The one-line complaint about ``path`` (the value of config key ``key``) when it is not
    :func:`is_data_path`: missing, or a folder that ``datasets`` did not write."""
    if path.is_dir():
        return f"{key}: {path} is a folder, but not a dataset saved by datasets (no dataset_info.json in it)"
    return f"{key}: file not found: {path}"


def field_noun(path: str | Path) -> str:
    """What a file's fields are called in errors: jsonl has fields, a table has columns."""
    return "field" if Path(path).suffix not in DATASET_SUFFIXES and not Path(path).is_dir() else "column"


def read_rows(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based row number, row) of every row of a data file: jsonl (a line per row), or, through
    Hugging Face ``datasets``, a ``.parquet``, ``.csv`` or ``.arrow`` file or a folder saved with
    ``save_to_disk`` (GSM8K and MATH as downloaded from the Hub are parquet). Errors name the file
    and the row."""
    p = Path(path)
    if p.suffix in DATASET_SUFFIXES or p.is_dir():
        yield from _dataset_rows(p)
    else:
        yield from read_jsonl(p)


def _dataset_rows(p: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    import datasets

    datasets.disable_progress_bars()
    if not is_data_path(p):
        raise DataError(f"file not found: {p}" if not p.exists() else f"{p}: not a file, nor a folder saved by datasets")
    if (p / "dataset_dict.json").is_file():
        try:
            splits = [str(s) for s in json.loads((p / "dataset_dict.json").read_text())["splits"]]
        except (OSError, ValueError, KeyError, TypeError):
            splits = sorted(c.name for c in p.iterdir() if (c / "dataset_info.json").is_file())
        raise DataError(f"{p} is a DatasetDict with splits {', '.join(splits) or '(none)'}: name the folder of one split"
                        + (f", e.g. {p / splits[0]}" if splits else ""))
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(datasets.logging.CRITICAL)  # not its "Failed to read file ..." line: the error below says it
    try:
        if p.is_dir():
            table = datasets.load_from_disk(str(p))
        else:
            table = datasets.load_dataset(DATASET_SUFFIXES[p.suffix], data_files=str(p), split="train",
                                          cache_dir=None, keep_in_memory=True)
    except Exception as e:  # noqa: BLE001 - a damaged or unreadable file: one line naming it
        while e.__cause__ is not None:  # datasets raises its own "An error occurred while generating the dataset"
            e = e.__cause__  # from the reader's: say the reader's
        raise DataError(f"{p}: cannot be read as {DATASET_SUFFIXES.get(p.suffix, 'a saved dataset')} ({reason(e)})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    for index, row in enumerate(table, 1):
        yield index, dict(row)


def read_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """(1-based line number, row) of every non-blank line of a jsonl file; one-line DataErrors."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"file not found: {path}")
    with p.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{lineno}: not UTF-8 ({e.reason} at byte {e.start})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(row, dict):
                raise DataError(f"{path}:{lineno}: expected a JSON object, got {type(row).__name__}")
            yield lineno, row


def detect_schema(row: dict[str, Any]) -> Optional[str]:
    """``gsm8k``, ``math`` or ``plain`` from a row's fields; None when it is none of them."""
    if "problem" in row:
        return "math"
    if "question" in row and isinstance(row.get("answer"), str) and "####" in row["answer"]:
        return "gsm8k"
    if "prompt" in row or "question" in row:
        return "plain"
    return None


def gsm8k_answer(answer: str) -> tuple[str, str]:
    """(reasoning without calculator annotations, final answer without commas) of a GSM8K answer.

    >>> gsm8k_answer("She has 3 * 4 = <<3*4=12>>12 eggs.\\n#### 1,200")
    ('She has 3 * 4 = 12 eggs.', '1200')
    """
    reasoning, _, final = answer.rpartition("####")
    return _CALC_ANNOTATION_RE.sub("", reasoning).strip(), final.strip().replace(",", "")


_SCHEMA_HINTS = {"gsm8k": "GSM8K (question, answer ending in '#### N')", "math": "MATH (problem, solution, answer)",
                 "plain": "plain (prompt or question, answer)"}


def load_examples(path: str | Path, *, format: str = "cot", limit: int | None = None,
                  schema: str | None = None) -> list[Example]:
    """The problems of a GSM8K, MATH or plain jsonl file (the first ``limit`` rows when given).

    With ``schema`` (``gsm8k``, ``math`` or ``plain``) the file must be of that schema: a GSM8K
    file whose first row lacks its ``#### N`` line is an error naming the line, not a plain file.
    Without it the first row tells the schema, and a file of question/answer rows that turns out
    to be GSM8K (a later row's answer ends in ``#### N``) is that same error, not a plain file
    graded against whole GSM8K answers."""
    check_format(format)
    out: list[Example] = []
    expected = schema
    schema, first = None, 0
    for lineno, row in read_rows(path):
        if limit is not None and len(out) >= limit:
            break
        if schema is None:
            schema, first = detect_schema(row), lineno
            if schema is None:
                raise DataError(
                    f"{path}:{lineno}: cannot tell the schema from fields {sorted(row)}; expected "
                    + ", ".join(_SCHEMA_HINTS.values()).replace(", plain", " or plain")
                )
            if expected is not None and schema != expected:
                raise DataError(f"{path}:{lineno}: not a {_SCHEMA_HINTS[expected]} row: {_unlike(path, row, expected)}")
        elif schema == "plain" and "question" in row and detect_schema(row) == "gsm8k":
            raise DataError(f"{path}:{first}: not a {_SCHEMA_HINTS['gsm8k']} row: the '#### N' line of its answer is missing "
                            f"(line {lineno} has one, so the file is GSM8K and every row needs it)")
        out.append(_ROW_PARSERS[schema](Row(path, lineno, row, schema), format))
    if not out and limit != 0:
        raise DataError(f"{path}: no rows")
    return out


def _unlike(path: str | Path, row: dict[str, Any], expected: str) -> str:
    """What makes ``row`` not a row of the ``expected`` schema: the missing field, or else the
    missing ``#### N`` line of a GSM8K answer."""
    noun = field_noun(path)
    missing = [f for f in _FIELDS[expected] if f not in row]
    if missing:
        return f"missing {noun}{'s' if len(missing) > 1 else ''} {', '.join(repr(f) for f in missing)} (it has {sorted(row)})"
    if expected == "gsm8k" and not isinstance(row["answer"], str):
        return f"{noun} 'answer' is a {type(row['answer']).__name__}, not a text ending in '#### N'"
    return "the '#### N' line of its answer is missing" if expected == "gsm8k" else f"{noun}s {sorted(row)}"


@dataclass
class Row:
    """One parsed line, for field access with errors that name file and line."""

    path: str | Path
    line: int
    data: dict[str, Any]
    schema: str

    def error(self, message: str) -> DataError:
        return DataError(f"{self.path}:{self.line}: {message}")

    def text(self, key: str, *, optional: bool = False, numbers: bool = False) -> Optional[str]:
        """Field ``key`` as a string (numbers allowed when ``numbers``); missing -> error unless optional."""
        if key not in self.data or (optional and self.data[key] is None):
            if optional:
                return None
            need = f" ({self.schema} rows need {', '.join(_FIELDS[self.schema])})" if self.schema in _FIELDS else ""
            raise self.error(f"missing {field_noun(self.path)} '{key}'{need}")
        value = self.data[key]
        if isinstance(value, str):
            return value
        if numbers and isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        kind = "a string or a number" if numbers else "a string"
        raise self.error(f"{field_noun(self.path)} '{key}' must be {kind}, got {type(value).__name__}")

    def meta(self, fmt: str, **extra: Any) -> dict[str, Any]:
        return {"source": self.schema, "format": fmt, "line": self.line, **extra}


_FIELDS = {"gsm8k": ("question", "answer"), "math": ("problem", "solution", "answer"), "plain": ("prompt or question", "answer")}


def _gsm8k(row: Row, fmt: str) -> Example:
    question, raw = row.text("question"), row.text("answer")
    if "####" not in raw:
        raise row.error("field 'answer' has no final '#### N' line")
    reasoning, answer = gsm8k_answer(raw)
    if not answer:
        raise row.error("field 'answer' has an empty '#### N' line")
    solution = f"{reasoning}\nThe answer is \\boxed{{{answer}}}." if fmt == "cot" else None
    return Example(format_prompt(question, fmt), answer, solution, row.meta(fmt))


def _math(row: Row, fmt: str) -> Example:
    problem, solution, answer = row.text("problem"), row.text("solution"), row.text("answer")
    extra = {k: row.data[k] for k in ("subject", "level", "unique_id") if k in row.data}
    return Example(format_prompt(problem, fmt), answer, solution if fmt == "cot" else None, row.meta(fmt, **extra))


def _plain(row: Row, fmt: str) -> Example:
    if "prompt" in row.data:
        prompt = row.text("prompt")
    else:
        prompt = format_prompt(row.text("question"), fmt)
    return Example(prompt, row.text("answer", numbers=True), row.text("solution", optional=True), row.meta(fmt))


_ROW_PARSERS = {"gsm8k": _gsm8k, "math": _math, "plain": _plain}


# -- a task of two files --------------------------------------------------------------------------


def default_holdout_size(rows: int) -> int:
    """How many rows of a training file are held out when no eval file is given: 10%, at most
    500, at least 1."""
    return max(1, min(500, rows // 10))


class HeldOutFiles:
    """Training rows and held-out rows read from files, with the synthetic task's interface:
    ``train_stream(seed)``, ``eval_examples()``, ``train_examples()`` and ``corpus()``.

    ``load(path)`` reads one file into Examples (:func:`load_examples` for GSM8K and MATH, the
    column mapping of :class:`rlzoo.data.dataset.DatasetTask` for the user's own file); files are
    read when first needed, and must exist when the task is built. Errors name the config keys
    under ``key`` (``task.files``, ``task.dataset``).

    * With an eval file, the held-out set is its first ``eval_size`` rows (all when None), in
      file order, and training rows whose prompt equals the prompt of *any* row of the eval file
      are skipped.
    * Without one (``eval_path`` None), ``eval_size`` rows of the training file are held out
      (None: :func:`default_holdout_size`), picked by a shuffle seeded with ``eval_seed`` so that
      the file's order does not bias them, and kept in file order; training rows whose prompt
      equals a held-out prompt are skipped, so a held-out problem is never trained on.

    ``skipped_overlap`` counts the training file's rows left out (held out, or with a held-out
    prompt) once ``train_examples()`` has run.
    """

    def __init__(self, key: str, train_path: Path, eval_path: Optional[Path], load: Callable[[Path], list[Example]], *,
                 eval_size: Optional[int] = None, eval_seed: int = 0) -> None:
        if eval_size is not None and eval_size < 1:
            raise ValueError(f"{key}.eval_size must be >= 1 or null; got {eval_size}")
        for name, path in (("train", train_path), ("eval", eval_path)):
            if path is not None and not is_data_path(path):
                raise DataError(missing_data(path, f"{key}.{name}"))
        if eval_path is not None and train_path.resolve() == eval_path.resolve():
            raise DataError(f"{key}.train and {key}.eval are the same file: {eval_path}")
        self.key, self.train_path, self.eval_path, self.load = key, train_path, eval_path, load
        self.eval_size, self.eval_seed = eval_size, eval_seed
        self._train_rows: list[Example] | None = None
        self._eval: list[Example] | None = None
        self._held_out: set[str] = set()
        self._train: list[Example] | None = None

    def _rows(self) -> list[Example]:
        if self._train_rows is None:
            self._train_rows = self.load(self.train_path)
        return self._train_rows

    def eval_examples(self) -> list[Example]:
        if self._eval is None:
            if self.eval_path is not None:
                rows = self.load(self.eval_path)
                self._held_out = {ex.prompt.strip() for ex in rows}
                self._eval = rows[: self.eval_size] if self.eval_size else rows
            else:
                rows = self._rows()
                n = self.eval_size or default_holdout_size(len(rows))
                if n >= len(rows):
                    raise DataError(f"{self.key}.eval_size: holding out {n} of the {len(rows)} rows of {self.train_path} "
                                    f"leaves none to train on (give a smaller eval_size, or a held-out file as {self.key}.eval)")
                picked = sorted(random.Random(self.eval_seed).sample(range(len(rows)), n))
                self._eval = [rows[i] for i in picked]
                self._held_out = {ex.prompt.strip() for ex in self._eval}
        return list(self._eval)

    def train_examples(self) -> list[Example]:
        """Every training row that is not a held-out problem, in file order."""
        if self._train is None:
            self.eval_examples()
            rows = self._rows()
            self._train = [ex for ex in rows if ex.prompt.strip() not in self._held_out]
            self.skipped_overlap = len(rows) - len(self._train)
            if not self._train:
                held = self.eval_path or "the rows held out of it"
                raise DataError(f"{self.key}.train: every row of {self.train_path} has the prompt of a held-out row ({held})")
        return self._train

    def train_stream(self, seed: int) -> Iterator[Example]:
        """Training problems, endlessly: each pass over the file in a new order from ``seed``."""
        rows = self.train_examples()
        rng = random.Random(seed)
        order = list(range(len(rows)))
        while True:
            rng.shuffle(order)
            for i in order:
                yield rows[i]

    def corpus(self, n: int = 2000, seed: int = 0) -> list[str]:
        """Prompt + solution texts of ``n`` training rows drawn with ``seed`` (for a local tokenizer)."""
        rows = self.train_examples()
        picked = random.Random(seed).sample(rows, min(n, len(rows)))
        return [ex.prompt + (ex.solution or "") for ex in picked]


class FileTask(HeldOutFiles):
    """The ``gsm8k`` or ``math`` task: a training file and a held-out file of that schema
    (:class:`HeldOutFiles`; ``task.files``, defaults under ``../shared/data``). E.g.
    ``math/test_full.jsonl`` for training against MATH-500 leaves PRM800K's 12,000-problem train
    split, its 500 MATH-500 rows skipped."""

    def __init__(self, name: str, cfg: FilesConfig) -> None:
        if name not in DEFAULT_FILES:
            raise ValueError(f"task.name: unknown file task '{name}'; known: {', '.join(FILE_TASKS)}")
        check_format(cfg.format, "task.files.format")
        self.name, self.cfg = name, cfg
        default_train, default_eval = DEFAULT_FILES[name]
        super().__init__("task.files", Path(cfg.train or default_train), Path(cfg.eval or default_eval),
                         lambda path: load_examples(path, format=cfg.format, schema=name), eval_size=cfg.eval_size)
