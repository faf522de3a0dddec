"""The mistakes a user can make, as exceptions whose ``str()`` is one line naming what is wrong.

The CLI prints any :class:`UserError` as ``rlzoo: error: <message>`` and exits with status 2,
without a traceback. Everything else is a bug in rlzoo (or in a plugin) and keeps its traceback.
This module imports nothing of rlzoo, so every other module can raise these without import cycles.
:func:`reason` turns a library's exception into the one-line reason such a message quotes;
:func:`say` writes a line to standard error in one ``write``, so that the lines of processes
launched together (``torchrun``) never run into each other.
"""

from __future__ import annotations

import os
import sys


class UserError(Exception):
    """A mistake in the user's input: config, data, model folder, plugin or run folder."""


class ConfigError(UserError):
    """A config file or override: an unknown key, a wrong type, a value out of range."""


class DataError(UserError):
    """Unusable data: a missing file, a bad row (the message names file and line)."""


class ModelLoadError(UserError):
    """A model folder or file that cannot be loaded."""


class RegistryError(UserError, KeyError):
    """An unknown or duplicate name of an algorithm, reward or data source, or a broken plugin."""

    def __str__(self) -> str:  # KeyError quotes its message; the user gets it plain
        return str(self.args[0])


class RunFolderError(UserError):
    """A run folder that cannot be used: not writable, owned by a live run, or a finished run."""


class TrainingStopped(UserError):
    """A run stopped because training went wrong (non-finite gradients step after step)."""


class Interrupted(Exception):
    """The run stopped on SIGINT or SIGTERM after writing a checkpoint; the CLI exits with 130."""


def one_line(text: str, limit: int | None = None) -> str:
    """``text`` on one line (its line breaks and runs of spaces made single spaces). Longer than
    ``limit``: cut after its last whole sentence, or else its last whole word, that fits, marked
    with "...", never inside a word."""
    text = " ".join(str(text).split())
    if limit is None or len(text) <= limit:
        return text
    head = text[: limit - 3]
    end = max(head.rfind(". "), head.rfind("; "))
    if end > limit // 2:
        return head[: end + 1] + " ..."
    return head[: head.rfind(" ")].rstrip(" ,;:(") + " ..." if " " in head else head + "..."


def reason(e: BaseException, limit: int = 300) -> str:
    """Why ``e`` happened, as one line to quote in an error message. A YAML error says where and
    what (its first line is only the context: "while parsing a flow mapping"); any other gives the
    first paragraph of its message with a wrapped sentence joined, not cut at the wrap; its type
    name when it says nothing."""
    problem, mark = getattr(e, "problem", None), getattr(e, "problem_mark", None)
    if isinstance(problem, str) and problem:  # yaml's MarkedYAMLError
        text = f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark is not None else problem
    else:
        text = str(e).strip().split("\n\n")[0]
    return one_line(text, limit) or type(e).__name__


def say(line: str) -> None:
    """``line`` and its newline to standard error in one write (what Python's print does in two
    when the stream is unbuffered: ``PYTHONUNBUFFERED=1``, ``python -u``)."""
    sys.stderr.flush()
    data = (one_line(line) + "\n").encode(sys.stderr.encoding or "utf-8", errors="replace")
    try:
        fd = sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a stream without a file (a test's capture)
        sys.stderr.write(data.decode(sys.stderr.encoding or "utf-8"))
        return
    while data:
        data = data[os.write(fd, data):]
