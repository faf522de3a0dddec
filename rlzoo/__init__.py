"""rlzoo: post-training language models on mathematical reasoning, DeepSeekMath style.

SFT, RFT, Online RFT, DPO, PPO and GRPO as one interface: an algorithm is a data source, a reward
and a per-token gradient coefficient; a shared runtime does everything else.

Importing ``rlzoo`` is cheap (no torch): heavy modules load on first use.

    >>> import rlzoo
    >>> rlzoo.verify("so the answer is \\\\boxed{\\\\frac{1}{2}}", "0.5")  # doctest: +SKIP
    True
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["verify", "register_algorithm", "register_reward", "register_data_source", "__version__"]


def __getattr__(name: str):
    if name == "verify":
        from rlzoo.rewards.verifier import verify

        return verify
    if name in ("register_algorithm", "register_reward", "register_data_source"):
        from rlzoo import registry

        return getattr(registry, name)
    if name == "sandbox":
        import importlib

        return importlib.import_module("rlzoo.sandbox")
    raise AttributeError(f"module 'rlzoo' has no attribute '{name}'")
