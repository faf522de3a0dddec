"""The run folder: one run at a time, never overwritten by mistake, and where a stopped run resumes.

* A lock (``run.lock``, ``flock``, released by the kernel when the process dies, even by SIGKILL):
  a second run into a folder whose run is alive fails at once.
* A folder is an rlzoo run when rlzoo's marker says so (``.rlzoo-run``, written first when a run
  is created), or, for a run of an rlzoo from before the marker, when its ``config.yaml`` comes
  with rlzoo's own files (:meth:`RunFolder.holds_run`). A file named ``config.yaml`` alone makes
  no run: a folder that is not empty and holds no rlzoo run is never written to.
* A run is only written again with ``--resume`` (continue it) or ``--overwrite`` (start over), and
  only after the new config has validated. ``--overwrite`` removes what rlzoo wrote (its files,
  ``initial/``, and in each stage folder the finals, step checkpoints and labelled data), never a
  file of anyone else's.
* ``--resume`` (:func:`resume_difference`): a stage that has started (its folder holds a final, a
  step checkpoint or labelled data) and everything it depends on (model, task, seed, its
  algorithm's hyperparameters) must equal the stored config; stages not started yet, ``eval``,
  ``logging`` and ``output_dir`` may change, and the stored config becomes the new one. Finished
  stages are skipped (their summary kept), the first unfinished one continues from its newest
  intact checkpoint (a damaged one is named and removed), and ``metrics.jsonl`` keeps exactly the
  lines up to that point.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlzoo.errors import RunFolderError, reason, say
from rlzoo.runtime.checkpoint import (CONFIG_NAME, TRAINER_STATE, atomic_write_text, checkpoints, damage, read_state, recover,
                                     torch_file_damage)

LOCK = "run.lock"
MARKER = ".rlzoo-run"  # written first into a new run's folder: this folder holds an rlzoo run
# What rlzoo writes at the top of a run folder (with the ``.<pid>.tmp`` of an atomic write, and
# the ``.tmp``/``.old`` of a folder being replaced), and in a stage folder. Nothing else is ever removed.
_RUN_ENTRY = re.compile(r"^(?:(?:\.rlzoo-run|config\.yaml|metrics\.jsonl|summary\.json)(?:\.\d+\.tmp)?"
                        r"|initial(?:\.tmp|\.old)?|wandb|\.rlzoo-write-test-\d+)$")
_STAGE_ENTRY = re.compile(r"^(?:(?:final|checkpoint-\d+)(?:\.tmp|\.old)?|data\.pt(?:\.\d+\.tmp)?)$")
# Top-level config sections that --resume lets change: they change nothing a started stage did.
# ``stages`` and ``algorithms`` are compared stage by stage; ``iterative`` through the stages it
# writes out; ``plugins`` through the names the stages use.
RESUME_FREE = ("logging", "output_dir", "eval", "name", "compare", "plugins", "iterative")
RESUME_RULE = "--resume may change only stages that have not started, eval, logging and output_dir"


@dataclass
class ResumePoint:
    """Where a stopped run goes on.

    summary     the summary entries of the stages that finished (trained and evaluated)
    trained     stages whose ``final`` checkpoint exists, in order (they are not trained again)
    checkpoint  the newest intact step checkpoint of the first unfinished stage, or None (start it afresh)
    """

    summary: list[dict[str, Any]] = field(default_factory=list)
    trained: list[str] = field(default_factory=list)
    checkpoint: Path | None = None


def first_difference(a: Any, b: Any, prefix: str = "") -> str | None:
    """The dotted key of the first difference between two plain config containers, or None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(dict.fromkeys([*a, *b])):
            where = f"{prefix}.{key}" if prefix else str(key)
            if key not in a or key not in b:
                return where
            found = first_difference(a[key], b[key], where)
            if found:
                return found
        return None
    return None if a == b else (prefix or "(top level)")


def resume_difference(stored: dict, ours: dict, started: list[str]) -> str | None:
    """The first key of ``ours`` (a run config with its stages written out) that ``--resume``
    refuses to change from ``stored``: in a stage that has ``started`` (these must also stay the
    first stages, in order), in the hyperparameters of an algorithm such a stage uses, or in a
    section every stage depends on (model, task, seed, ...). None when the change is allowed."""
    names = list(ours["stages"])
    for i, name in enumerate(started):
        if i >= len(names) or names[i] != name:
            return f"stages.{name}"  # a started stage removed, renamed or moved
        found = first_difference(stored["stages"][name], ours["stages"][name], f"stages.{name}")
        if found:
            return found
    used = {str(stored["stages"][n].get("algorithm")).rpartition(":")[2] for n in started
            if stored["stages"][n].get("kind", "policy") == "policy"}
    for algorithm in sorted(used & set([*stored.get("algorithms", {}), *ours.get("algorithms", {})])):
        found = first_difference(stored["algorithms"].get(algorithm) or {}, ours["algorithms"].get(algorithm) or {},
                                 f"algorithms.{algorithm}")
        if found:
            return found
    for key in dict.fromkeys([*stored, *ours]):
        if key not in RESUME_FREE and key not in ("stages", "algorithms"):
            found = first_difference(stored.get(key), ours.get(key), key)
            if found:
                return found
    return None


class RunFolder:
    """The output folder of one run, opened by every process (only the main one writes)."""

    def __init__(self, path: Path, is_main: bool) -> None:
        self.path = Path(path)
        self.is_main = is_main
        self._lock = None

    # -- opening -------------------------------------------------------------------------------

    def check_writable(self) -> None:
        """One clear line now, rather than a traceback at the first checkpoint."""
        p = self.path
        if p.exists() and not p.is_dir():
            raise RunFolderError(f"output_dir {p} is a file, not a folder")
        try:
            p.mkdir(parents=True, exist_ok=True)
            probe = p / f".rlzoo-write-test-{os.getpid()}"
            probe.write_text("ok")
            probe.unlink()
        except OSError as e:
            raise RunFolderError(f"output_dir {p}: cannot write there ({e.strerror or e})") from None

    def check_space(self, needed_bytes: float) -> None:
        free = shutil.disk_usage(self.path).free
        if free < needed_bytes:
            have, need = sizes(free, needed_bytes)
            raise RunFolderError(f"output_dir {self.path}: {have} free on its disk, and this run's checkpoints "
                                 f"need about {need} (save_total_limit bounds them)")

    def lock(self) -> None:
        """Hold the folder's lock for the life of this process, or fail naming the process that does."""
        fd = os.open(self.path / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderError(f"output_dir {self.path} is in use by a run that is still going (pid {holder}); "
                                 "wait for it, or choose another output_dir") from None
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode())
        self._lock = fd

    def release(self) -> None:
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def holds_run(self) -> bool:
        """Whether the folder holds an rlzoo run: its marker, or (a run of an rlzoo from before the
        marker) a ``config.yaml`` with rlzoo's metrics or summary, with a stage folder holding a
        final or step checkpoint that rlzoo wrote, or, with rlzoo's lock, itself a config with
        stages. A ``config.yaml`` alone is anyone's."""
        p = self.path
        if (p / MARKER).is_file():
            return True
        if not (p / "config.yaml").is_file():
            return False
        if _first_json(p / "metrics.jsonl", ("global_step", "stage")) or _first_json(p / "summary.json", ("stages",)):
            return True
        if (p / LOCK).is_file() and _stages_yaml(p / "config.yaml"):  # stopped before it wrote anything else
            return True
        try:
            return any(d.is_dir() and any((c / TRAINER_STATE).is_file() and (c / CONFIG_NAME).is_file()
                                          for c in d.iterdir() if _STAGE_ENTRY.match(c.name))
                       for d in p.iterdir())
        except OSError:  # a folder we may not read is not ours
            return False

    def prepare(self, config_yaml: str, config: dict, stage_names: list[str], *, resume: bool,
                overwrite: bool) -> ResumePoint | None:
        """Lock and make the folder ready for this run (main process); the resume point, if resuming."""
        if resume and overwrite:
            raise RunFolderError("give --resume or --overwrite, not both")
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output_dir {self.path} is a file, not a folder")
        others = [p.name for p in self.path.iterdir() if p.name != LOCK] if self.path.is_dir() else []
        if resume and not self.holds_run():  # checked before anything is created
            raise RunFolderError(f"nothing to resume in {self.path}: no rlzoo run was started there"
                                 + (f" (it holds {_listing(others)})" if others else ""))
        if not self.holds_run() and others:
            raise RunFolderError(f"output_dir {self.path} is not empty and holds no rlzoo run (found {_listing(others)}); "
                                 "choose an empty or new folder")
        self.check_writable()
        self.lock()
        held = self.holds_run()  # again, under the lock
        if held and overwrite:
            self._clear()
        elif held and not resume:
            raise RunFolderError(f"output_dir {self.path} holds a run ({self.describe(stage_names)}): add --resume to "
                                 "continue it or --overwrite to start over")
        if not held or overwrite:
            self._mark()  # first: from now on this is a run
            atomic_write_text(self.path / "config.yaml", config_yaml)
            return None
        point, changed = self.resume_point(config, stage_names)
        self._mark()  # a run of an rlzoo from before the marker gets one
        if changed:
            atomic_write_text(self.path / "config.yaml", config_yaml)
            say(f"rlzoo: resuming with a changed config (first: '{changed}'); what has trained is unchanged, and "
                "config.yaml now holds the new config")
        return point

    def discard_unstarted(self, stage_names: list[str]) -> None:
        """Remove what a new run wrote when it stopped before its first stage began (a model that
        does not load, wandb that does not start, a full disk), so that the same command can simply
        be run again. A run with a stage folder or a metrics line is kept for ``--resume``."""
        metrics = self.path / "metrics.jsonl"
        if not any((self.path / n).exists() for n in stage_names) and not (metrics.is_file() and metrics.stat().st_size):
            self._clear()
            if any(p.name != LOCK for p in self.path.iterdir()):  # files of someone else's, which --overwrite
                self._mark()  # found in the run: the folder stays a run, so the same command runs again

    def _mark(self) -> None:
        atomic_write_text(self.path / MARKER, "This folder holds an rlzoo run (docs/runs.md).\n")

    def _clear(self) -> None:
        """Remove what rlzoo wrote in the folder (its lock excepted): its files at the top, and in
        each stage folder the finals, step checkpoints and labelled data (the stage folder too, if
        that empties it). Anything else, anyone else's, stays."""
        for p in self.path.iterdir():
            if _RUN_ENTRY.match(p.name):
                _remove(p)
            elif p.is_dir() and not p.is_symlink():
                own = [c for c in p.iterdir() if _STAGE_ENTRY.match(c.name)]
                for c in own:
                    _remove(c)
                if own and not any(p.iterdir()):
                    p.rmdir()

    # -- resuming ------------------------------------------------------------------------------

    def describe(self, stage_names: list[str]) -> str:
        done = [n for n in stage_names if (self.path / n / "final" / TRAINER_STATE).is_file()]
        return f"{len(done)} of {len(stage_names)} stages finished" if done != stage_names else "finished"

    def started(self, name: str) -> bool:
        """Whether stage ``name`` has started: its folder holds a final, a step checkpoint or
        labelled data (a ``.tmp`` a killed writer left does not count)."""
        folder = self.path / name
        return folder.is_dir() and any(_STAGE_ENTRY.match(c.name) and not c.name.endswith(".tmp") for c in folder.iterdir())

    def stored_config(self) -> dict:
        """The run's stored config, as a plain container with its stages written out; one line
        when it does not load."""
        from omegaconf import OmegaConf

        from rlzoo.config import RunConfig

        path = self.path / "config.yaml"
        if not path.is_file():
            raise RunFolderError(f"nothing to resume in {self.path}: it has no config.yaml (the run stopped before it began)")
        try:
            stored = OmegaConf.merge(OmegaConf.structured(RunConfig), OmegaConf.load(path))
            return _written_out(stored)
        except Exception as e:  # noqa: BLE001 - a config of another version, or a damaged file
            raise RunFolderError(f"cannot resume {self.path}: its config.yaml does not load ({reason(e)})") from None

    def stored_summary(self) -> list[dict[str, Any]]:
        """The stages of ``summary.json`` (none when it is missing); one line when it is damaged."""
        path = self.path / "summary.json"
        if not path.is_file():
            return []
        try:
            stages = json.loads(path.read_text())["stages"]
            if not isinstance(stages, list) or not all(isinstance(s, dict) and isinstance(s.get("name"), str) for s in stages):
                raise ValueError("'stages' is not a list of stage entries")
            return stages
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise RunFolderError(f"cannot resume {self.path}: {path} is damaged ({reason(e)}); remove it and --resume "
                                 "evaluates the finished stages again") from None

    def resume_point(self, config: dict, stage_names: list[str]) -> tuple[ResumePoint, str | None]:
        """Where the run goes on, and the first key in which ``config`` differs from the stored
        one (None when equal); a one-line RunFolderError when a difference touches a stage that
        has started, or the folder holds nothing to go on from. Nothing is changed before every
        check has passed."""
        stored = self.stored_config()
        ours = _written_out(config)
        started = [n for n in stored["stages"] if self.started(n)]
        key = resume_difference(stored, ours, started)
        if key:
            raise RunFolderError(f"cannot resume {self.path} with a different config: '{key}' differs from the run's "
                                 f"({RESUME_RULE})")
        summary, point = self.stored_summary(), ResumePoint()
        damaged: list[tuple[Path, str]] = []
        current, kept = None, None
        for name in stage_names:
            final = self.path / name / "final"
            if (final / TRAINER_STATE).is_file() or (final.with_name("final.old") / TRAINER_STATE).is_file():
                problem = _unreadable_state(final if (final / TRAINER_STATE).is_file() else final.with_name("final.old"))
                if problem:
                    raise RunFolderError(f"cannot resume {self.path}: {problem}")
                point.trained.append(name)
                continue
            current = name
            for _, folder in reversed(checkpoints(self.path / name)):
                problem = damage(folder)
                if problem is None:
                    point.checkpoint = folder
                    break
                damaged.append((folder, problem))
            labelled = self.path / name / "data.pt"  # a reward-model stage's samples: labelled again when damaged
            if labelled.is_file() and (problem := torch_file_damage(labelled)):
                damaged.append((labelled, problem))
            elif labelled.is_file():
                kept = labelled
            break
        point.summary = [s for s in summary if s["name"] in point.trained]
        if not point.trained and point.checkpoint is None and kept is None:
            why = f"its checkpoints are damaged ({damaged[0][1]})" if damaged else \
                "no checkpoint was written before it stopped (set save_every, or start over with --overwrite)"
            raise RunFolderError(f"nothing to resume in {self.path}: {why}")
        for name in stage_names:  # every check passed: now undo what a killed writer left
            recover(self.path / name)
        if damaged:
            for folder, _ in damaged:
                _remove(folder)
            again = f"from {point.checkpoint or kept}" if point.checkpoint or kept else "from its start"
            say(f"rlzoo: {damaged[0][1]}: removed {', '.join(f.name for f, _ in damaged)}; stage {current} resumes {again}")
        return point, first_difference(_without(stored, "output_dir"), _without(ours, "output_dir"))

    def newest_checkpoint(self) -> Path | None:
        """The newest complete checkpoint in the folder (a stage's step checkpoint or final), by
        the global step it was written at; None when there is none."""
        found = []
        for stage in (d for d in self.path.iterdir() if d.is_dir()) if self.path.is_dir() else ():
            for c in stage.iterdir():
                if _STAGE_ENTRY.match(c.name) and c.is_dir() and not c.name.endswith((".tmp", ".old")):
                    try:
                        found.append((read_state(c).get("global_step", 0), c.name == "final", c))
                    except (OSError, ValueError):
                        continue
        return max(found, key=lambda f: f[:2])[2] if found else None

    def truncate_metrics(self, point: ResumePoint, stage_names: list[str]) -> None:
        """Keep the metrics lines up to the resume point: every line of the stages that finished,
        and the current stage's steps up to its checkpoint (no end-of-stage evaluation of an
        unfinished or unevaluated stage, which the resumed run writes again)."""
        path = self.path / "metrics.jsonl"
        if not path.is_file():
            return
        evaluated = {s["name"] for s in point.summary}
        step = read_state(point.checkpoint)["step"] if point.checkpoint else 0
        current = point.checkpoint.parent.name if point.checkpoint else None
        keep = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line half-written when the run was killed
            stage, is_end_eval = row.get("stage"), "time/step" not in row
            if stage in evaluated or (stage in point.trained and not is_end_eval):
                keep.append(line)
            elif stage == current and not is_end_eval and row.get("step", 0) <= step:
                keep.append(line)
        atomic_write_text(path, "".join(line + "\n" for line in keep))


def sizes(*numbers: float) -> list[str]:
    """Byte counts as megabytes, with as many decimals (up to 3) as it takes for different numbers
    to read differently ("0.95 MB free, need about 0.97 MB", never "1 MB free, need about 1 MB")."""
    for decimals in range(4):
        shown = [f"{n / 2**20:.{decimals}f} MB" for n in numbers]
        if len(set(shown)) == len(set(numbers)):
            return shown
    return [f"{int(n)} bytes" for n in numbers]


def _written_out(config: Any) -> dict:
    """A run config (a DictConfig or plain container) as a plain container with its ``iterative``
    section written out as the stages it runs (what the run folder holds)."""
    from omegaconf import OmegaConf

    from rlzoo.config import RunConfig, expand_iterative

    cfg = config if OmegaConf.is_config(config) else OmegaConf.merge(OmegaConf.structured(RunConfig), config)
    return OmegaConf.to_container(expand_iterative(cfg), resolve=True)


def _without(config: dict, key: str) -> dict:
    return {k: v for k, v in config.items() if k != key}


def _unreadable_state(folder: Path) -> str | None:
    try:
        read_state(folder)
        return None
    except (OSError, ValueError) as e:
        return f"{folder / TRAINER_STATE} is damaged ({reason(e)})"


def _first_json(path: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``path`` starts with a JSON object (its first line, for a jsonl file) that has ``keys``."""
    try:
        with open(path, "rb") as f:
            head = f.read(1 << 16)
        text = head.decode(errors="replace")
        row = json.loads(text.splitlines()[0] if path.suffix == ".jsonl" else text)
    except (OSError, ValueError, IndexError):
        return False
    return isinstance(row, dict) and all(k in row for k in keys)


def _stages_yaml(path: Path) -> bool:
    """Whether ``path`` is YAML whose top level has a non-empty ``stages`` mapping (an rlzoo config)."""
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, ValueError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and isinstance(data.get("stages"), dict) and bool(data["stages"])


def _listing(names: list[str]) -> str:
    shown = sorted(names)[:3]
    return ", ".join(shown) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def _remove(p: Path) -> None:
    shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
