"""A plugin for the fault tests (tests/test_faults.py): a disk that fills up, as the kernel shows it.

* ``fulldisk_<source>`` behaves as the built-in ``<source>``; at the ``RLZOO_TEST_FULL_AT``-th
  batch it lets no file of the process grow past ``RLZOO_TEST_FULL_ROOM`` bytes more than
  ``RLZOO_TEST_FULL_FILE`` holds then (``RLIMIT_FSIZE``): the kernel writes what fits and fails the
  rest of a write with EFBIG, as it fails a write to a full disk with ENOSPC.
* ``RLZOO_TEST_FREE_BYTES``: the free space ``shutil.disk_usage`` reports (a nearly full disk).
"""

import os
import resource
import shutil
import signal

from rlzoo.registry import DATA_SOURCES, register_data_source

CALLS = [0]

if os.environ.get("RLZOO_TEST_FREE_BYTES"):
    _real_usage = shutil.disk_usage
    shutil.disk_usage = lambda path: _real_usage(path)._replace(free=int(os.environ["RLZOO_TEST_FREE_BYTES"]))


def _fill_the_disk() -> None:
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing
    room = os.path.getsize(os.environ["RLZOO_TEST_FULL_FILE"]) + int(os.environ["RLZOO_TEST_FULL_ROOM"])
    resource.setrlimit(resource.RLIMIT_FSIZE, (room, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))


for _name in ("dataset", "online"):
    class _FullDisk(DATA_SOURCES.get(_name)):
        def next_batch(self, step):
            CALLS[0] += 1
            if CALLS[0] == int(os.environ.get("RLZOO_TEST_FULL_AT", "0")):
                _fill_the_disk()
            return super().next_batch(step)

    register_data_source(f"fulldisk_{_name}")(_FullDisk)
