"""Pieces shared by tests: a real single-process runtime for driving
``rlzoo.runtime.trainer.train_on_batch`` directly, and the config overrides of a tiny model for
end-to-end runs."""

import torch

# config overrides that shrink the embedded model for smoke runs through ``rlzoo.train.train``
TINY_MODEL = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2"]


def make_runtime(model, tokenizer=None, *, reference=None, micro_batch_size: int = 64, chunk_size: int = 4096):
    """The runtime of one CPU process around ``model`` (and a frozen ``reference``), as a stage builds it."""
    from accelerate import Accelerator

    from rlzoo.runtime.models import LogProbModel
    from rlzoo.runtime.trainer import Runtime

    accelerator = Accelerator(cpu=True)
    ref = None if reference is None else LogProbModel(reference, chunk_size)
    return Runtime(accelerator, LogProbModel(model, chunk_size), tokenizer, ref, None, micro_batch_size)


def optim(**kw):
    """A stage's ``optim`` section (the real dataclass) with ``kw`` set."""
    from rlzoo.config import OptimConfig

    return OptimConfig(**kw)


def assert_every_weight_moved(before_folder, after_folder) -> None:
    """Every tensor of the checkpoint in ``after_folder`` differs from ``before_folder``'s, as TRL's
    smoke tests check: a stage that leaves some trainable weight untouched is a bug."""
    from pathlib import Path

    from safetensors.torch import load_file

    before = load_file(Path(before_folder) / "model.safetensors")
    after = load_file(Path(after_folder) / "model.safetensors")
    assert before.keys() == after.keys()
    frozen = [k for k in before if torch.equal(before[k], after[k])]
    assert not frozen, f"weights that did not move: {frozen}"


def assert_coefficient_is_native_gradient(algo, batch, logp0, native, mode: str, **normalisers) -> dict:
    """That ``algo``'s coefficients at log-probs ``logp0`` [N, T] give, through the runtime's surrogate
    loss under ``mode``, the gradient of ``native(logp)`` (the objective to maximise, a scalar) with
    respect to logp; returns the coefficients' metrics."""
    from rlzoo.losses import surrogate_loss

    logp = logp0.clone().requires_grad_(True)
    coef, metrics = algo.coefficients(batch, logp.detach())
    surrogate_loss(coef, logp, batch.loss_mask, mode, **normalisers).backward()
    grad_coef = logp.grad.clone()
    logp = logp0.clone().requires_grad_(True)
    (-native(logp)).backward()
    torch.testing.assert_close(grad_coef, logp.grad, rtol=1e-5, atol=1e-7)
    return metrics
