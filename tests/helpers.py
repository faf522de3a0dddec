"""Pieces shared by tests: stand-ins for driving ``rlzoo.runtime.trainer.train_on_batch`` directly,
and the config overrides of a tiny model for end-to-end runs."""

import contextlib

import torch

# config overrides that shrink the embedded model for smoke runs through ``rlzoo.train.train``
TINY_MODEL = ["model.tiny.hidden_size=32", "model.tiny.intermediate_size=64", "model.tiny.num_layers=1", "model.tiny.num_heads=2"]


class NoAccel:
    """The three accelerate calls train_on_batch makes, for a single CPU process."""

    def no_sync(self, model):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def clip_grad_norm_(self, params, max_norm):
        return torch.nn.utils.clip_grad_norm_(params, max_norm)


class OptimSettings:
    """An ``optim`` config section given as keyword arguments."""

    def __init__(self, **kw):
        self.__dict__.update(kw)
