"""A plugin for the resume and fault tests: data sources that act at a chosen batch.

``killing_<source>`` and ``gated_<source>`` behave as the built-in ``<source>``, and count the
batches the process asks for (over every stage of the process):

* ``killing_<source>``: when the environment variable ``RLZOO_TEST_KILL_AT`` is N, the process
  kills itself with SIGKILL at the N-th batch, mid-step as a crash or a pre-empted machine would.
* ``gated_<source>``: when ``RLZOO_TEST_GATE_AT`` is N, the N-th batch waits until the file
  ``RLZOO_TEST_GATE`` exists (touching ``RLZOO_TEST_GATE`` + ``.waiting`` when it starts), so a
  test can act (start a second run, send a signal) while the run is surely inside that step.
"""

import os
import signal
import time
from pathlib import Path

from rlzoo.registry import DATA_SOURCES, register_data_source

CALLS = [0]


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def _wait_for_gate() -> None:
    gate = Path(os.environ["RLZOO_TEST_GATE"])
    gate.with_name(gate.name + ".waiting").touch()
    deadline = time.monotonic() + 120
    while not gate.exists() and time.monotonic() < deadline:
        time.sleep(0.05)


def _wrapped(name: str, prefix: str, variable: str, act):
    base = DATA_SOURCES.get(name)

    class Wrapped(base):
        def next_batch(self, step):
            CALLS[0] += 1
            if CALLS[0] == int(os.environ.get(variable, "0")):
                act()
            return super().next_batch(step)

    Wrapped.__name__ = f"{prefix.capitalize()}{base.__name__}"
    return register_data_source(f"{prefix}_{name}")(Wrapped)


for _name in ("dataset", "online", "offline", "dynamic"):
    _wrapped(_name, "killing", "RLZOO_TEST_KILL_AT", _kill)
    _wrapped(_name, "gated", "RLZOO_TEST_GATE_AT", _wait_for_gate)
