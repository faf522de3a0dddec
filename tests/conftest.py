"""Shared fixtures: a tiny model and tokenizer, built once per session (CPU, no network)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def task():
    from rlzoo.data.synthetic import SyntheticConfig, SyntheticTask

    return SyntheticTask(SyntheticConfig(eval_size=32))


@pytest.fixture(scope="session")
def tokenizer(task):
    from rlzoo.data.tokenizer import build_tokenizer

    return build_tokenizer(task.corpus(300))


@pytest.fixture()
def tiny_model(tokenizer):
    from rlzoo.runtime.models import TinyModelConfig, build_tiny_model

    torch.manual_seed(0)
    return build_tiny_model(TinyModelConfig(hidden_size=32, intermediate_size=64, num_layers=2, num_heads=2), tokenizer)
