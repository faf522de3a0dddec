"""The sandbox's limits have one set of defaults: run_python, run_many and the rewards that run
programs take theirs from ``rlzoo.sandbox.DEFAULT_LIMITS`` (once written three times, free to drift)."""

import inspect

from rlzoo import sandbox
from rlzoo.rewards import builtin


def defaults(fn) -> dict:
    return {k: p.default for k, p in inspect.signature(fn).parameters.items() if p.default is not inspect.Parameter.empty}


def test_run_python_and_run_many_default_to_the_sandbox_limits():
    limits = sandbox.DEFAULT_LIMITS
    for fn in (sandbox.run_python, sandbox.run_many):
        for name, value in defaults(fn).items():
            if name != "max_workers":
                assert value == getattr(limits, name), (fn.__name__, name)
    assert limits.timeout_s == 10.0 and limits.memory_mb == 512  # the paper's 10 s per program


def test_program_rewards_share_one_default_timeout_and_memory():
    assert builtin.MEMORY_MB == sandbox.DEFAULT_LIMITS.memory_mb
    for fn in (builtin.program, builtin.any_format, builtin.program.answer, builtin.any_format.answer):
        d = defaults(fn)
        assert (d["timeout_s"], d["memory_mb"]) == (builtin.TIMEOUT_S, builtin.MEMORY_MB), fn.__name__
