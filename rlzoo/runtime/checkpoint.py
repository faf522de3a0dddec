"""Atomic checkpoints: Hugging Face weights + tokenizer, optimizer and RNG state, run config.

A checkpoint is written to a temporary sibling folder and renamed into place, so a crash leaves
either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import json
import os
import random
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import torch

CONFIG_NAME = "rlzoo_config.yaml"


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def rng_state() -> dict[str, Any]:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save_checkpoint(
    folder: Path,
    model,
    tokenizer,
    *,
    optimizer: torch.optim.Optimizer | None = None,
    config_yaml: str = "",
    state: dict[str, Any] | None = None,
) -> Path:
    """Write a complete checkpoint to ``folder`` atomically; returns ``folder``."""
    folder = Path(folder)
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    getattr(model, "module", model).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    torch.save(rng_state(), tmp / "rng_state.pt")
    (tmp / CONFIG_NAME).write_text(config_yaml)
    (tmp / "trainer_state.json").write_text(json.dumps(state or {}, indent=2))
    old = folder.with_name(folder.name + ".old")
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    if old.exists():
        shutil.rmtree(old)
    return folder
