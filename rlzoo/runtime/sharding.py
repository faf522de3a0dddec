"""Sharded training with PyTorch's FSDP2 (``parallel: fsdp``): each parameter, gradient and
optimizer moment held once across the processes.

:func:`shard` applies ``torch.distributed.fsdp.fully_shard`` to every decoder layer of a model and
then to the model itself (the root: embeddings, final norm, output head, a value or score head).
The root is the module whose ``forward`` the runtime calls (a
:class:`~rlzoo.runtime.models.LogProbModel`, a :class:`~rlzoo.runtime.models.ValueModel`, a reward
model), so the chunked log-prob head, which reads the output layer's weight outside that layer's
forward, runs while the root's parameters are gathered: it sees the whole weight, not a shard.

A forward under FSDP is a collective (each layer all-gathers its shards), but the passes without
gradient (sampling, evaluation, reference and old log-probs, values) come in numbers that differ
between processes (each holds its own rows). They run inside :func:`gathered`: every process
all-gathers the weights of the named models once, together, runs its own passes with no
collective, and frees the gathered weights at the end. Rollouts therefore hold one model's full
weights at a time (no gradients, no optimizer state): FSDP shards the training state, which is
16 bytes per parameter in fp32 Adam against 4 for the weights.

:func:`plain_copy` gives the unsharded model back (every process the same), one parameter at a
time, for the stage's ``final/`` folder and the next stage.

LoRA: the adapters live inside the decoder layers and are sharded with them (FSDP2 mixes frozen
and trained parameters in one group). Autocast (``mixed_precision``) is the same as under data
parallel (no ``MixedPrecisionPolicy``): the weights are gathered in their dtype and matmuls run
under ``torch.autocast``, so a sharded run takes the data-parallel run's steps.
"""

from __future__ import annotations

import copy
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

from rlzoo.errors import ConfigError

_MESHES: dict[tuple[str, int], object] = {}


def mesh_for(device: torch.device):
    """The 1-D device mesh of every process (made once per process)."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    world = dist.get_world_size() if dist.is_initialized() else 1
    key = (device.type, world)
    if key not in _MESHES:
        if not dist.is_initialized():  # one process without a launcher: a group of one
            dist.init_process_group("gloo" if device.type == "cpu" else "nccl", store=dist.HashStore(), rank=0, world_size=1)
        _MESHES[key] = init_device_mesh(device.type, (world,))
    return _MESHES[key]


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks of ``model``: modules whose class a Hugging Face model names in its
    ``_no_split_modules`` (``LlamaDecoderLayer``, ...), through peft and value/score heads."""
    names = {n for m in model.modules() for n in (getattr(m, "_no_split_modules", None) or [])}
    return [m for m in model.modules() if type(m).__name__ in names]


def shard(model: nn.Module, device: torch.device, what: str = "model") -> nn.Module:
    """``fully_shard`` on each decoder layer of ``model``, then on ``model``; returns ``model``
    (sharded in place, its parameters now DTensors on ``device``). A model without decoder layers
    is a one-line ConfigError naming the key."""
    from torch.distributed.fsdp import fully_shard

    layers = decoder_layers(model)
    if not layers:
        raise ConfigError(f"parallel: fsdp shards a model layer by layer, but the {what} ({type(model).__name__}) has no decoder "
                          "layers a Hugging Face model names in _no_split_modules; use parallel: ddp")
    mesh = mesh_for(device)
    for layer in layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    # decide the root now (FSDP2 otherwise takes the first module to run forward): sampling calls
    # the causal LM inside the root directly
    model._get_fsdp_state()._lazy_init()
    return model


def is_sharded(model: nn.Module | None) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextmanager
def gathered(*models: nn.Module | None) -> Iterator[None]:
    """A block in which the sharded ``models`` hold their full weights: each process all-gathers
    them once on entry (every process must enter, with the same models) and may then run any
    number of forwards without a collective; the gathered weights are freed on exit. Unsharded
    models and nested use (a model already gathered) cost nothing."""
    from torch.distributed.fsdp import FSDPModule

    todo = [m for m in models if is_sharded(m) and not getattr(m, "_rlzoo_gathered", False)]
    modules = [sub for m in todo for sub in m.modules() if isinstance(sub, FSDPModule)]
    for m in todo:
        m._rlzoo_gathered = True
    for sub in modules:
        if sub not in todo:  # the roots keep their weights after forward anyway; the layers must too
            sub.set_reshard_after_forward(False, recurse=False)
        sub.unshard()
    try:
        yield
    finally:
        for sub in modules:
            sub.reshard()
            if sub not in todo:
                sub.set_reshard_after_forward(True, recurse=False)
        for m in todo:
            m._rlzoo_gathered = False


def meta_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose parameters are on the meta device (no memory), tied ones still
    tied; buffers are copied. What :func:`plain_copy` fills after training."""
    memo = {id(p): nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad) for p in model.parameters()}
    return copy.deepcopy(model, memo)


def full_parameters(model: nn.Module, device: torch.device | str = "cpu") -> dict[str, torch.Tensor]:
    """Every parameter of the sharded ``model``, whole, on every process (gathered one at a time,
    so no more than one whole parameter is on the accelerator at once), by name."""
    from torch.distributed.tensor import DTensor

    out = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            full = p.full_tensor() if isinstance(p, DTensor) else p
            out[name] = full.detach().to(device, copy=True)
    return out


def plain_copy(model: nn.Module, skeleton: nn.Module) -> nn.Module:
    """``skeleton`` (a :func:`meta_copy` of ``model`` before it was sharded) holding the sharded
    ``model``'s current weights: an ordinary module, the same on every process. Collective."""
    full = full_parameters(model)
    names: dict[int, str] = {}
    for name, p in skeleton.named_parameters():
        names.setdefault(id(p), name)
    if sorted(names.values()) != sorted(full):
        raise RuntimeError("the sharded model and its skeleton have different parameters")
    made: dict[int, nn.Parameter] = {}
    for module in skeleton.modules():
        for key, p in list(module._parameters.items()):
            if p is not None:
                if id(p) not in made:
                    made[id(p)] = nn.Parameter(full[names[id(p)]].to(p.dtype), requires_grad=p.requires_grad)
                module._parameters[key] = made[id(p)]
    return skeleton


def autocast_forward(model: nn.Module, accelerator) -> nn.Module:
    """Run ``model``'s forward under the accelerator's autocast and return fp32, as
    ``accelerator.prepare`` does for the models it wraps (a sharded model is not handed to it)."""
    if accelerator.mixed_precision == "no":
        return model
    from accelerate.utils import convert_outputs_to_fp32

    inner = model.forward

    def forward(*args, **kwargs):
        with accelerator.autocast():
            return inner(*args, **kwargs)

    model.forward = convert_outputs_to_fp32(forward)
    return model


def checkpoint_state(models: list[nn.Module], optimizer: torch.optim.Optimizer | None):
    """(container, {"model", "optim"}) of the sharded ``models`` and their ``optimizer``, as
    ``torch.distributed.checkpoint`` saves and loads them (each process its shards)."""
    from torch.distributed.checkpoint.state_dict import get_state_dict

    container = nn.ModuleList(models)
    model_state, optim_state = get_state_dict(container, [optimizer] if optimizer is not None else [])
    return container, {"model": model_state, "optim": optim_state}


SHARDED_DIR = "sharded"  # in a step checkpoint: the models' and optimizer's shards (torch.distributed.checkpoint)


def save_sharded(folder, models: list[nn.Module], optimizer) -> None:
    """Each process writes its shards of ``models`` and ``optimizer`` into ``folder/sharded``."""
    import torch.distributed.checkpoint as dcp

    _, state = checkpoint_state(models, optimizer)
    dcp.save(state, checkpoint_id=str(folder / SHARDED_DIR))


def load_sharded(folder, models: list[nn.Module], optimizer) -> None:
    """Load what :func:`save_sharded` wrote into the (already sharded) ``models`` and ``optimizer``.
    The shards are resharded to this process count if it differs."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    container, state = checkpoint_state(models, optimizer)
    dcp.load(state, checkpoint_id=str(folder / SHARDED_DIR))
    set_state_dict(container, [optimizer] if optimizer is not None else [], model_state_dict=state["model"],
                   optim_state_dict=state["optim"])
