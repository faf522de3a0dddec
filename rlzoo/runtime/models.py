"""Loading and building the models of a run: policy, frozen reference, optional value model."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn


class ModelLoadError(Exception):
    """A model folder or file that cannot be loaded; ``str()`` is a one-line message."""


@dataclass
class TinyModelConfig:
    """The embedded default: a small Llama built from a config (no download)."""

    hidden_size: int = 128  # width of the residual stream
    intermediate_size: int = 384  # width of the MLP
    num_layers: int = 4  # transformer blocks
    num_heads: int = 4  # attention heads (no grouped KV)
    max_position_embeddings: int = 256  # longest prompt + completion
    vocab_size: int = 512  # BPE merges of the locally built tokenizer (the saturated size is smaller)


def build_tiny_model(cfg: TinyModelConfig, tokenizer) -> nn.Module:
    """A randomly initialised ``LlamaForCausalLM`` of ``cfg``'s size for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(config)


def load_pretrained(path: str, gguf_file: str | None = None, dtype: str = "float32"):
    """(model, tokenizer) from a local Hugging Face folder; never downloads."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {path}")
    if gguf_file is None and not (folder / "config.json").is_file():
        raise ModelLoadError(f"not a Hugging Face model folder (no config.json): {path}")
    if gguf_file is not None and not (folder / gguf_file).is_file():
        raise ModelLoadError(f"GGUF file not found: {folder / gguf_file}")
    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelLoadError(f"cannot load model from {path}: {first_line}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


def frozen_copy(model: nn.Module) -> nn.Module:
    """A detached copy in eval mode with no parameter requiring grad: the reference policy."""
    ref = copy.deepcopy(model)
    ref.eval()
    ref.requires_grad_(False)
    return ref


class ValueModel(nn.Module):
    """A scalar head on a causal LM's backbone: V(prefix) for every position.

    Built from the policy's weights (a separate copy, so its memory is that of a second model)
    or from a given folder. ``forward`` returns [N, T] values aligned with ``input_ids``.
    """

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.backbone = lm.base_model
        hidden = lm.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        from rlzoo.runtime.logprobs import position_ids_from_mask

        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state  # [N, T, H]
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1)  # [N, T]


def build_value_model(policy: nn.Module, path: str | None = None) -> ValueModel:
    """A value model initialised from the policy (a deep copy) or from a local folder."""
    if path is None:
        return ValueModel(copy.deepcopy(policy))
    model, _ = load_pretrained(path)
    return ValueModel(model)
