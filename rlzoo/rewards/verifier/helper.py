"""The symbolic helper process: its main loop, the client with deadlines, the verdict cache, the counters.

One persistent subprocess per calling process answers the pairs the fast path leaves open
(``_compare_answers(..., symbolic=True)``). It is started lazily by :func:`_ensure_helper`, runs
this package's own files by path (:data:`_BOOT`, no ``rlzoo`` import), interrupts itself at 80% of
a request's deadline and is killed at the deadline; a forked child starts its own. Decided
verdicts are cached (LRU) and :func:`verifier_stats` counts calls, symbolic checks, timeouts and
starts. Needs POSIX (``select`` on pipes, ``SIGALRM``).
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import select
import subprocess
import sys
import threading
import time
from collections import OrderedDict
from typing import Any, Optional

from .compare import _compare_answers
from .symbolic import _SoftTimeout, _load_math_verify, _load_sympy, _to_sympy

logger = logging.getLogger("rlzoo.verifier")

_STARTUP_TIMEOUT_S = 120.0  # importing sympy on a loaded 2-core machine can take a while
_SOFT_TIMEOUT_FRACTION = 0.8  # the helper interrupts itself at this share of timeout_s
_CACHE_SIZE = 8192
_LOG_EXPR_CHARS = 200
_HELPER_MEMORY_BYTES = 4 << 30  # address-space cap of the symbolic helper


def _on_alarm(signum: int, frame: Any) -> None:
    raise _SoftTimeout()


def _helper_watchdog(parent_pid: int) -> None:
    while True:
        time.sleep(1.0)
        if os.getppid() != parent_pid:
            os._exit(0)


def _limit_memory() -> None:
    """Cap the helper's address space so a huge power raises MemoryError instead of eating RAM."""
    try:
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_AS)
        cap = _HELPER_MEMORY_BYTES if hard == resource.RLIM_INFINITY else min(hard, _HELPER_MEMORY_BYTES)
        if soft == resource.RLIM_INFINITY or soft > cap:
            resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    except (ImportError, ValueError, OSError):
        pass


def _helper_main() -> None:
    """Entry point of the helper: JSON requests on stdin, JSON answers on stdout."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _limit_memory()
    out = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # libraries that print must not corrupt the protocol
    sys.stdout = sys.stderr
    threading.Thread(target=_helper_watchdog, args=(os.getppid(),), daemon=True).start()
    try:
        _load_sympy()
        _to_sympy("\\frac{1}{2}+x")  # warm the parser
        _load_math_verify()
    except Exception as exc:  # noqa: BLE001
        out.write(json.dumps({"ready": False, "error": repr(exc)}) + "\n")
        return
    out.write(json.dumps({"ready": True}) + "\n")
    signal.signal(signal.SIGALRM, _on_alarm)
    stdin = sys.stdin.buffer
    while True:
        line = stdin.readline()
        if not line:
            return
        req = json.loads(line)
        result: Optional[bool]
        try:
            signal.setitimer(signal.ITIMER_REAL, max(0.01, float(req["soft_timeout"])))
            try:
                result = _compare_answers(
                    req["a"], req.get("va"), req["b"], req.get("vb"), True, bool(req.get("symmetric"))
                )
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
        except _SoftTimeout:
            result = None
        except Exception:  # noqa: BLE001
            result = False
        out.write(json.dumps({"id": req["id"], "result": result}) + "\n")


# The helper imports this folder as a package of its own name, so it loads these files and nothing
# of rlzoo, nor anything from the caller's working directory.
_BOOT = (
    "import importlib, sys, types\nif sys.path and sys.path[0] == '': del sys.path[0]\n"
    "pkg = types.ModuleType('_rlzoo_verifier_helper'); pkg.__path__ = [sys.argv[1]]; sys.modules[pkg.__name__] = pkg\n"
    "importlib.import_module(pkg.__name__ + '.helper')._helper_main()"
)


class _HelperTimeout(Exception):
    pass


class _Helper:
    """Client side of the persistent symbolic helper process."""

    def __init__(self) -> None:
        self.proc: Optional[subprocess.Popen[bytes]] = None
        self.buf = b""
        self.next_id = 0

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        self.stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", _BOOT, os.path.dirname(os.path.abspath(__file__))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            bufsize=0,
            close_fds=True,
        )
        self.buf = b""
        try:
            msg = self._read_message(time.monotonic() + _STARTUP_TIMEOUT_S)
        except _HelperTimeout:
            msg = {"error": f"no answer within {_STARTUP_TIMEOUT_S:.0f}s"}
        if not msg.get("ready"):
            self.stop()
            raise RuntimeError(f"symbolic helper failed to start: {msg.get('error')}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        try:
            if proc.stdin:
                proc.stdin.close()
        except OSError:
            pass
        if proc.poll() is None:
            proc.kill()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if proc.stdout:
            proc.stdout.close()

    def _read_message(self, deadline: float) -> dict[str, Any]:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise _HelperTimeout()
            ready, _, _ = select.select([fd], [], [], remaining)
            if ready:
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise EOFError("symbolic helper exited")
                self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def compare(self, key: "_Key", timeout_s: float) -> Optional[bool]:
        """The helper's verdict on ``(a, va, b, vb, symmetric)``, or ``None`` on timeout (starts it if needed)."""
        if not self.alive():
            self.start()
        assert self.proc is not None and self.proc.stdin is not None
        self.next_id += 1
        req_id = self.next_id
        a, va, b, vb, symmetric = key
        req = {
            "id": req_id, "a": a, "va": va, "b": b, "vb": vb, "symmetric": symmetric,
            "soft_timeout": timeout_s * _SOFT_TIMEOUT_FRACTION,
        }
        deadline = time.monotonic() + timeout_s
        self.proc.stdin.write((json.dumps(req) + "\n").encode())
        while True:
            msg = self._read_message(deadline)
            if msg.get("id") == req_id:
                return msg["result"]


_helper_lock = threading.Lock()  # one request at a time to the helper
_stats_lock = threading.Lock()  # counters and cache; never held while waiting on the helper
_helper: Optional[_Helper] = None
_helper_disabled_until = 0.0  # after a failed start, symbolic checks are judged wrong for a while
_HELPER_RETRY_S = 30.0
_Key = tuple[str, Optional[str], str, Optional[str], bool]  # (pred, its variable, gold, its variable, symmetric)
_cache: OrderedDict[_Key, bool] = OrderedDict()
_stats = {"verify/calls": 0, "verify/timeouts": 0, "verify/symbolic": 0, "verify/helper_starts": 0}


def _reset_after_fork() -> None:
    """A forked child must not talk to (or kill) its parent's helper, nor inherit held locks."""
    global _helper_lock, _stats_lock, _helper
    _helper_lock = threading.Lock()
    _stats_lock = threading.Lock()
    _helper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_after_fork)


def shutdown() -> None:
    """Stop the symbolic helper process (registered with ``atexit``; safe to call any time)."""
    global _helper
    helper, _helper = _helper, None
    if helper is not None:
        helper.stop()


atexit.register(shutdown)


def _count(key: str) -> None:
    with _stats_lock:
        _stats[key] += 1


def _ensure_helper() -> _Helper:
    """The running helper, started if needed (call with ``_helper_lock`` held)."""
    global _helper, _helper_disabled_until
    if _helper is None:
        _helper = _Helper()
    if not _helper.alive():
        if time.monotonic() < _helper_disabled_until:
            raise RuntimeError("symbolic helper unavailable (failed to start recently)")
        _count("verify/helper_starts")
        try:
            _helper.start()
        except Exception:
            _helper_disabled_until = time.monotonic() + _HELPER_RETRY_S
            raise
    return _helper


def warm_up() -> None:
    """Start the symbolic helper now (optional: it starts lazily on the first symbolic check)."""
    with _helper_lock:
        _ensure_helper()


def _short(s: str) -> str:
    return s if len(s) <= _LOG_EXPR_CHARS else s[:_LOG_EXPR_CHARS] + "..."


def _cache_get(key: _Key) -> Optional[bool]:
    with _stats_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    return None


def _cache_put(key: _Key, value: bool) -> None:
    with _stats_lock:
        _cache[key] = value
        if len(_cache) > _CACHE_SIZE:
            _cache.popitem(last=False)


def _symbolic_compare(key: _Key, timeout_s: float) -> bool:
    """Ask the helper; a timeout or a helper failure counts as a wrong answer."""
    a, _, b, _, _ = key
    cached = _cache_get(key)
    if cached is not None:
        return cached
    _count("verify/symbolic")
    with _helper_lock:
        try:
            result = _ensure_helper().compare(key, timeout_s)
        except _HelperTimeout:
            result = None
            if _helper is not None:
                _helper.stop()  # kill the stuck helper; the next request starts a fresh one
        except (OSError, EOFError, RuntimeError, ValueError) as exc:
            if _helper is not None:
                _helper.stop()
            logger.error("symbolic check failed (%s) comparing %r with %r; judged wrong", exc, _short(a), _short(b))
            return False
    if result is None:
        _count("verify/timeouts")
        logger.warning(
            "verify timed out after %.1fs comparing %r with %r; judged wrong", timeout_s, _short(a), _short(b)
        )
        return False
    _cache_put(key, bool(result))
    return bool(result)


def verifier_stats(reset: bool = False) -> dict[str, int]:
    """Counters for the trainer's logs: calls, symbolic checks, timeouts, helper (re)starts.

    >>> sorted(verifier_stats())
    ['verify/calls', 'verify/helper_starts', 'verify/symbolic', 'verify/timeouts']
    """
    with _stats_lock:
        snapshot = dict(_stats)
        if reset:
            for k in _stats:
                _stats[k] = 0
    return snapshot
