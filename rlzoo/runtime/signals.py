"""Ctrl-C and SIGTERM stop a run between two steps, after a checkpoint, so that it can be resumed.

Inside :func:`stop_on_signals` the first SIGINT or SIGTERM only raises a flag, which the stage
loop reads after each step (over every process, so that all stop at the same step); a second one
interrupts at once (the newest periodic checkpoint remains).
"""

from __future__ import annotations

import signal
import threading
from contextlib import contextmanager

from rlzoo.errors import say


class StopRequest:
    """Whether a stop was asked for, in any process."""

    def __init__(self) -> None:
        self.flag = False

    def requested(self, dist) -> bool:
        return bool(dist.sum([float(self.flag)])[0] > 0)


@contextmanager
def stop_on_signals():
    stop = StopRequest()
    if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
        yield stop
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if stop.flag:  # the second one: no waiting
            raise KeyboardInterrupt
        stop.flag = True
        say(f"rlzoo: {signal.Signals(signum).name}: finishing the current step, then saving a checkpoint "
            "(again to stop at once)")  # one write: lines of processes launched together never run into one another

    for s in previous:
        signal.signal(s, handler)
    try:
        yield stop
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
