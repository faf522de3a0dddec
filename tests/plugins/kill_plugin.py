"""A plugin for the resume tests: data sources that SIGKILL their own process at a chosen step.

``killing_<source>`` behaves as the built-in ``<source>``; when the environment variable
``RLZOO_TEST_KILL_AT`` is N, the process kills itself with SIGKILL at the N-th batch it asks for
(counted over every stage of the process), mid-step as a crash or a pre-empted machine would.
"""

import os
import signal

from rlzoo.registry import DATA_SOURCES, register_data_source

CALLS = [0]


def _killing(name: str):
    base = DATA_SOURCES.get(name)

    class Killing(base):
        def next_batch(self, step):
            CALLS[0] += 1
            if CALLS[0] == int(os.environ.get("RLZOO_TEST_KILL_AT", "0")):
                os.kill(os.getpid(), signal.SIGKILL)
            return super().next_batch(step)

    Killing.__name__ = f"Killing{base.__name__}"
    return register_data_source(f"killing_{name}")(Killing)


for _name in ("dataset", "online", "offline"):
    _killing(_name)
