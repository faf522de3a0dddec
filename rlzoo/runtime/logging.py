"""Metrics: one JSON object per logged step in metrics.jsonl, optionally mirrored to wandb.

A line is written whole or not at all: it goes to the file in one unbuffered write, and a write
that fails part-way (a full disk) is cut back to the previous line before the error (an OSError
naming metrics.jsonl) goes on, so the file never holds half a line for ``--resume`` to meet.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends slash-namespaced metrics to ``metrics.jsonl`` (and wandb when enabled)."""

    def __init__(self, folder: Path, *, wandb: bool = False, project: str = "rlzoo", name: str = "run", config: dict | None = None):
        self.path = Path(folder) / "metrics.jsonl"
        self.run = None
        if wandb:
            self.run = _start_wandb(project=project, name=name, config=config, dir=str(folder))
        # the run folder decided what stays: nothing (a new run) or the lines up to a resume point
        self.file = open(self.path, "ab", buffering=0)

    def log(self, metrics: dict[str, Any], step: int) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        line = (json.dumps({"global_step": step, **clean}) + "\n").encode()
        fd = self.file.fileno()
        end = os.fstat(fd).st_size
        try:
            done = 0
            while done < len(line):  # a write the kernel cut short is tried on, and then fails with its reason
                done += os.write(fd, line[done:])
        except OSError as e:
            os.ftruncate(fd, end)  # no half line: the file ends with the previous whole one
            raise OSError(e.errno, e.strerror, str(self.path)) from None
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            self.run.finish()


WANDB_INIT_TIMEOUT_S = 30  # wandb's own default (90 s) is a long wait for a machine without network; WANDB_INIT_TIMEOUT sets it


def _start_wandb(**kwargs):
    """``wandb.init``, or one line saying why not (no login, no network) as a ConfigError."""
    import wandb as wb

    from rlzoo.errors import ConfigError, reason

    timeout = float(os.environ.get("WANDB_INIT_TIMEOUT") or WANDB_INIT_TIMEOUT_S)
    try:
        return wb.init(settings=wb.Settings(init_timeout=timeout), **kwargs)
    except Exception as e:  # noqa: BLE001 - wandb's UsageError, CommError, a timeout
        wb.teardown()  # its service stops now, not in an exit hook after the error line
        raise ConfigError(f"logging.wandb: wandb did not start ({reason(e)}); run `wandb login`, or set WANDB_MODE=offline") from None

