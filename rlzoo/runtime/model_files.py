"""Checks of a model folder's files that read headers only, never weights.

:func:`check_model_folder` is what ``rlzoo train`` checks of ``model.path`` and each stage's
``init`` before any work (:func:`rlzoo.run.validate.validate`), and ``rlzoo eval`` and ``rlzoo export``
of their folder: all of them take a policy (a causal LM), so a reward model's folder (what a
reward-model stage saves, :mod:`rlzoo.reward_models.model`) is refused by name rather than loaded
without its head. :func:`damaged_safetensors` names the damaged file when loading a folder fails
anyway (:func:`rlzoo.runtime.models.load_pretrained`).
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from rlzoo.errors import ModelLoadError, reason

MODEL_CONFIGS = ("config.json", "adapter_config.json")  # a Hugging Face model, or a LoRA adapter on one
SCORING_HEADS = ("ForTokenClassification", "ForSequenceClassification")  # a reward model: a score, not a next token


def damaged_safetensors(folder: str | Path) -> str | None:
    """``FILE is not a whole safetensors file (why)`` for the first ``*.safetensors`` file of
    ``folder`` whose header does not parse or does not cover the file, else None."""
    from safetensors import safe_open

    for file in sorted(Path(folder).expanduser().glob("*.safetensors")):
        try:
            with safe_open(str(file), "pt"):
                pass
        except Exception as e:  # noqa: BLE001 - safetensors' SafetensorError, or an OSError reading it
            return f"{file} is not a whole safetensors file ({reason(e)})"
    return None


def reward_model_architecture(folder: Path) -> str | None:
    """The architecture named in ``folder``'s config.json when it is a scoring model (a reward
    model: ``*ForTokenClassification``, ``*ForSequenceClassification``), else None."""
    try:
        architectures = json.loads((folder / "config.json").read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError):  # no config.json (a LoRA adapter's folder), or not a JSON object
        return None
    return next((a for a in architectures if isinstance(a, str) and a.endswith(SCORING_HEADS)), None)


def check_model_folder(path: str, key: str, gguf_file: str | None = None) -> None:
    """``path`` is a folder holding a model that can load: a Hugging Face folder (``config.json``,
    or a LoRA adapter's ``adapter_config.json``) whose JSON files parse and whose weights are there
    and whole (safetensors headers), or the ``gguf_file`` in it; a policy, not a reward model. A
    one-line ModelLoadError naming ``key`` otherwise."""
    folder = Path(path).expanduser()
    if not folder.exists():
        raise ModelLoadError(f"{key}: model folder not found: {path}")
    if not folder.is_dir():
        raise ModelLoadError(f"{key}: {path} is a file, not a model folder")
    if gguf_file:
        file = folder / gguf_file
        if not file.is_file():
            raise ModelLoadError(f"{key}: GGUF file not found: {file}")
        if importlib.util.find_spec("gguf") is None:
            raise ModelLoadError(f"{key}: loading {gguf_file} needs the gguf package: pip install 'gguf>=0.10'")
        with open(file, "rb") as f:
            if f.read(4) != b"GGUF":
                raise ModelLoadError(f"{key}: {file} is not a GGUF file")
        return
    if not any((folder / name).is_file() for name in MODEL_CONFIGS):
        raise ModelLoadError(f"{key}: {path} holds no model (no {' or '.join(MODEL_CONFIGS)})")
    for file in sorted(folder.glob("*.json")):  # configs, tokenizer files, a sharded checkpoint's index
        try:
            json.loads(file.read_text())
        except (ValueError, UnicodeDecodeError) as e:
            raise ModelLoadError(f"{key}: {file} is not valid JSON ({reason(e)})") from None
    head = reward_model_architecture(folder)
    if head:
        raise ModelLoadError(f"{key}: {path} holds a reward model ({head}), not a policy (a causal LM): give a policy's "
                             "folder, e.g. a policy stage's final (a reward model scores through a stage's reward: "
                             "docs/reward_models.md)")
    if not any(folder.glob("*.safetensors")) and not any(folder.glob("*.bin")):
        raise ModelLoadError(f"{key}: {path} holds no weights (no .safetensors or .bin file)")
    damaged = damaged_safetensors(folder)
    if damaged:
        raise ModelLoadError(f"{key}: {damaged}")
