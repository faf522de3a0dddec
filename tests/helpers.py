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


def one_question_config(tmp_path):
    """A GRPO stage (tool-integrated sampling) and an offline RFT stage with one question per step,
    written to ``tmp_path/config.yaml``: on 2 processes, process 1 holds no question."""
    import yaml

    one_question = {"prompts_per_step": 1, "samples_per_prompt": 4}
    stage = {"steps": 2, "generation": {"max_new_tokens": 10}, "reward": {"name": "test_length_parity"},
             "optim": {"lr": 1e-3, "micro_batch_size": 4}}
    cfg = {
        "name": "one_question", "logging": {"progress": False}, "plugins": ["tests/plugins/dp_plugin.py"],
        "task": {"synthetic": {"eval_size": 1}}, "eval": {"samples": 0, "max_new_tokens": 8},
        "model": {"tiny": {"hidden_size": 32, "intermediate_size": 64, "num_layers": 1, "num_heads": 2}},
        "stages": {
            "grpo": {**stage, "algorithm": "grpo", "data": one_question, "generation": {"max_new_tokens": 10, "tool_rounds": 1}},
            "rft": {**stage, "algorithm": "rft", "data": {**one_question, "source": "offline", "pool_prompts": 1}},
        },
    }
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path
