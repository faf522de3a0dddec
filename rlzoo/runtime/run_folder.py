"""The run folder: one run at a time, never overwritten by mistake, and where a stopped run resumes.

* A lock (``run.lock``, ``flock``, released by the kernel when the process dies, even by SIGKILL):
  a second run into a folder whose run is alive fails at once.
* A folder that already holds a run (its ``config.yaml``) is only written again with ``--resume``
  (continue it) or ``--overwrite`` (start over: its contents are removed), and only after the new
  config has validated. A folder that is not empty and holds no run is never touched.
* ``--resume``: the stored config must equal this one in everything but ``logging`` and
  ``output_dir`` (a run folder may be moved); finished
  stages are skipped (their summary kept), the first unfinished one continues from its newest
  checkpoint, and ``metrics.jsonl`` keeps exactly the lines up to that point.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rlzoo.errors import RunFolderError
from rlzoo.runtime.checkpoint import TRAINER_STATE, atomic_write_text, checkpoints, read_state, recover

LOCK = "run.lock"


@dataclass
class ResumePoint:
    """Where a stopped run goes on.

    summary     the summary entries of the stages that finished (trained and evaluated)
    trained     stages whose ``final`` checkpoint exists, in order (they are not trained again)
    checkpoint  the newest step checkpoint of the first unfinished stage, or None (start it afresh)
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
            raise RunFolderError(f"output_dir {self.path}: {free / 2**20:.0f} MB free on its disk, and this run's "
                                 f"checkpoints need about {needed_bytes / 2**20:.0f} MB (save_total_limit bounds them)")

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
        return (self.path / "config.yaml").is_file()

    def prepare(self, config_yaml: str, config: dict, stage_names: list[str], *, resume: bool,
                overwrite: bool) -> ResumePoint | None:
        """Lock and make the folder ready for this run (main process); the resume point, if resuming."""
        if resume and overwrite:
            raise RunFolderError("give --resume or --overwrite, not both")
        if self.path.exists() and not self.path.is_dir():
            raise RunFolderError(f"output_dir {self.path} is a file, not a folder")
        if resume and not self.holds_run():  # checked before anything is created
            raise RunFolderError(f"nothing to resume in {self.path}: no run was started there")
        others = [p.name for p in self.path.iterdir() if p.name != LOCK] if self.path.is_dir() else []
        if not self.holds_run() and others:
            raise RunFolderError(f"output_dir {self.path} is not empty and holds no rlzoo run "
                                 f"(found {', '.join(sorted(others)[:3])}); choose an empty or new folder")
        self.check_writable()
        self.lock()
        held = self.holds_run()  # again, under the lock
        if not held:
            atomic_write_text(self.path / "config.yaml", config_yaml)
            return None
        if overwrite:
            self._clear()
            atomic_write_text(self.path / "config.yaml", config_yaml)
            return None
        if not resume:
            raise RunFolderError(f"output_dir {self.path} holds a run ({self.describe(stage_names)}): add --resume to "
                                 "continue it or --overwrite to start over")
        return self.resume_point(config, stage_names)

    def discard_unstarted(self, stage_names: list[str]) -> None:
        """Remove what a new run wrote when it stopped before its first stage began (a model that
        does not load, wandb that does not start, a full disk), so that the same command can simply
        be run again. A run with a stage folder or a metrics line is kept for ``--resume``."""
        metrics = self.path / "metrics.jsonl"
        if not any((self.path / n).exists() for n in stage_names) and not (metrics.is_file() and metrics.stat().st_size):
            self._clear()

    def _clear(self) -> None:
        """Remove everything in the folder but its lock."""
        for p in self.path.iterdir():
            if p.name != LOCK:
                shutil.rmtree(p) if p.is_dir() else p.unlink()

    # -- resuming ------------------------------------------------------------------------------

    def describe(self, stage_names: list[str]) -> str:
        done = [n for n in stage_names if (self.path / n / "final" / TRAINER_STATE).is_file()]
        return f"{len(done)} of {len(stage_names)} stages finished" if done != stage_names else "finished"

    def resume_point(self, config: dict, stage_names: list[str]) -> ResumePoint:
        from omegaconf import OmegaConf

        from rlzoo.config import RunConfig

        try:
            stored = OmegaConf.to_container(OmegaConf.merge(OmegaConf.structured(RunConfig),
                                                            OmegaConf.load(self.path / "config.yaml")), resolve=True)
        except Exception as e:  # noqa: BLE001 - a config of another version, or a damaged file
            raise RunFolderError(f"cannot resume {self.path}: its config.yaml does not load ({str(e).splitlines()[0]})") from None
        ours = dict(config)
        for free in ("logging", "output_dir"):  # neither changes what is trained; a run folder may be moved
            stored.pop(free, None)
            ours.pop(free, None)
        key = first_difference(stored, ours)
        if key:
            raise RunFolderError(f"cannot resume {self.path} with a different config: '{key}' differs from the run's "
                                 "(only logging.* and output_dir may change on --resume)")
        summary_file = self.path / "summary.json"
        summary = json.loads(summary_file.read_text())["stages"] if summary_file.is_file() else []
        point = ResumePoint(summary=[s for s in summary if s["name"] in stage_names])
        for name in stage_names:
            recover(self.path / name)
            if (self.path / name / "final" / TRAINER_STATE).is_file():
                point.trained.append(name)
                continue
            done = [(step, p) for step, p in checkpoints(self.path / name) if (p / TRAINER_STATE).is_file()]
            point.checkpoint = done[-1][1] if done else None
            break
        if not point.trained and point.checkpoint is None:
            raise RunFolderError(f"nothing to resume in {self.path}: no checkpoint was written before it stopped "
                                 "(set save_every, or start over with --overwrite)")
        return point

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
