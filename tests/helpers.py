"""Stand-ins shared by tests that drive ``rlzoo.runtime.trainer.train_on_batch`` directly."""

import contextlib

import torch


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
