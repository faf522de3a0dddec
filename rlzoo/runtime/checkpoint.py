"""Checkpoints that are never half-written: a folder is written under a temporary name and renamed.

Two kinds (docs/runs.md):

* ``<stage>/checkpoint-<step>/`` during a stage, every ``save_every`` steps and on Ctrl-C:
  ``accelerator.save_state`` (the trained models, optimizer, every process's RNG states, the
  schedule and the stage's own state: step, data position, offline pool, shuffling generator)
  plus ``trainer_state.json``; under ``parallel: fsdp`` the models and optimizer are in
  ``sharded/`` instead, each process's shards written by ``torch.distributed.checkpoint``. The
  newest ``save_total_limit`` are kept; a new one is complete before an old one is deleted, so
  there is never a moment without a checkpoint.
* ``<stage>/final/`` when the stage has trained: a Hugging Face model folder (or, for a LoRA stage,
  the adapter and the path of its base) with the tokenizer, ``rlzoo_config.yaml`` and
  ``trainer_state.json``: what the next stage, ``rlzoo eval`` and ``rlzoo export`` read.

:func:`publish` replaces a folder: the new one is renamed into place after the old one is moved
aside (``<name>.old``) and the old one is deleted last; :func:`recover` puts a ``.old`` back when a
crash fell between the two renames and removes temporary folders a killed run left behind.
:func:`damage` tells a step checkpoint whose files were cut short (a disk that filled up, a copy
that stopped) without loading it, so that ``--resume`` can go on from an older one.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterator

CONFIG_NAME = "rlzoo_config.yaml"
TRAINER_STATE = "trainer_state.json"
_CHECKPOINT_RE = re.compile(r"^checkpoint-(\d+)$")


def atomic_write(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """``write(f)`` into a temporary file, then a rename to ``path``: readers see the old or the new
    file, never part of one (a failed write leaves the old one and no temporary file)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.filename is None:  # a write that failed (a full disk) says no file: this one
            raise OSError(e.errno, e.strerror, str(path)) from None
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (:func:`atomic_write`)."""
    atomic_write(path, lambda f: f.write(text.encode()))


def temporary(folder: Path) -> Path:
    """An empty sibling folder to write ``folder`` into (``<name>.tmp``)."""
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


@contextmanager
def written(folder: Path) -> Iterator[Path]:
    """Write ``folder`` atomically: yields an empty temporary folder to write into, publishes it
    when the block ends, removes it when the block fails (a full disk leaves nothing behind)."""
    tmp = temporary(folder)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish(tmp, folder)


def publish(tmp: Path, folder: Path) -> Path:
    """Move the finished ``tmp`` folder to ``folder``, replacing what is there; returns ``folder``."""
    old = folder.with_name(folder.name + ".old")
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder


def recover(parent: Path) -> None:
    """Undo what a killed writer left in ``parent``: ``*.tmp`` folders and files are removed, and a
    ``<name>.old`` whose ``<name>`` is missing is put back."""
    if not parent.is_dir():
        return
    for child in parent.iterdir():
        if child.name.endswith(".tmp"):
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    for child in parent.iterdir():
        if child.name.endswith(".old"):
            target = child.with_name(child.name[: -len(".old")])
            if target.exists():
                shutil.rmtree(child)
            else:
                os.replace(child, target)


def checkpoints(stage_dir: Path) -> list[tuple[int, Path]]:
    """The stage's step checkpoints, oldest first: (step, folder)."""
    if not stage_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in stage_dir.iterdir() if p.is_dir() and (m := _CHECKPOINT_RE.match(p.name))]
    return sorted(found)


def prune(stage_dir: Path, keep: int) -> None:
    """Delete all but the newest ``keep`` step checkpoints of a stage (``keep`` <= 0 keeps all)."""
    if keep > 0:
        for _, folder in checkpoints(stage_dir)[:-keep]:
            shutil.rmtree(folder)


TORCH_FILES = (".bin", ".pkl", ".pt", ".pth")  # torch.save's files: zip archives (accelerate's optimizer, RNG states, ...)


def damage(folder: Path) -> str | None:
    """``FILE is ...`` for the first file of a step checkpoint that is cut short or unreadable,
    else None: its ``trainer_state.json`` must parse, every torch file be a zip archive whose
    entries all lie inside it, and every safetensors header cover its file. Headers only: nothing
    is loaded."""
    from rlzoo.errors import reason
    from rlzoo.runtime.model_files import damaged_safetensors

    state = folder / TRAINER_STATE
    try:
        read_state(folder)
    except (OSError, ValueError) as e:
        return f"{state} is missing" if not state.is_file() else f"{state} is not whole ({reason(e)})"
    for file in sorted(folder.iterdir()):
        if file.suffix in TORCH_FILES and (problem := torch_file_damage(file)):
            return problem
    sharded = folder / "sharded"  # parallel: fsdp (torch.distributed.checkpoint writes .metadata after every shard)
    if sharded.is_dir() and not (sharded / ".metadata").is_file():
        return f"{sharded / '.metadata'} is missing"
    return damaged_safetensors(folder)


def torch_file_damage(file: Path) -> str | None:
    """``FILE is ...`` when a file torch.save wrote (a zip archive) is cut short or unreadable, else None."""
    from rlzoo.errors import reason

    try:
        with zipfile.ZipFile(file) as archive:
            if any(i.header_offset + i.compress_size > file.stat().st_size for i in archive.infolist()):
                return f"{file} is cut short"
    except zipfile.BadZipFile:
        return f"{file} is cut short (not a whole zip archive, as torch.save writes)"
    except OSError as e:
        return f"{file} cannot be read ({reason(e)})"
    return None


def read_state(folder: Path) -> dict[str, Any]:
    """A checkpoint's ``trainer_state.json``."""
    return json.loads((folder / TRAINER_STATE).read_text())


def write_state(folder: Path, state: dict[str, Any]) -> None:
    (folder / TRAINER_STATE).write_text(json.dumps(state, indent=2))
