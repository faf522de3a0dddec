"""Metrics: one JSON object per logged step in metrics.jsonl, optionally mirrored to wandb."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any


class MetricsLogger:
    """Appends slash-namespaced metrics to ``metrics.jsonl`` (and wandb when enabled)."""

    def __init__(self, folder: Path, *, wandb: bool = False, project: str = "rlzoo", name: str = "run", config: dict | None = None):
        self.path = Path(folder) / "metrics.jsonl"
        self.file = self.path.open("a")  # the run folder decided what stays: nothing (a new run) or the lines up to a resume point
        self.run = None
        if wandb:
            import wandb as wb

            self.run = wb.init(project=project, name=name, config=config, dir=str(folder))

    def log(self, metrics: dict[str, Any], step: int) -> None:
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.file.write(json.dumps({"global_step": step, **clean}) + "\n")
        self.file.flush()
        if self.run is not None:
            self.run.log({k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=step)

    def close(self) -> None:
        self.file.close()
        if self.run is not None:
            self.run.finish()
