"""Program-of-thought execution sandbox: run untrusted Python in a contained child process.

``run_python(code)`` writes ``code`` to a fresh temporary folder and runs it in a separate,
isolated interpreter (``sys.executable -I -B [-S]``) that loads this very file and calls
``_child_main``, a small *trusted bootstrap*. Before any user code runs, the bootstrap

1. sets resource limits (``RLIMIT_AS``, ``RLIMIT_CPU``, ``RLIMIT_FSIZE``, ``RLIMIT_NPROC``,
   ``RLIMIT_NOFILE``, ``RLIMIT_CORE``),
2. enters new network, mount and pid namespaces when the kernel allows it (as root, or
   through an unprivileged user namespace), remounts the whole filesystem read-only, mounts a
   small private ``tmpfs`` on the work folder and a private ``/proc``; the program then runs
   as PID 1 of its namespace while the bootstrap stays outside as a tiny exit-status relay,
3. when started as root, drops to a fresh unprivileged uid/gid that no other process uses,
   so the kernel enforces ``RLIMIT_NPROC`` and refuses signals to the caller,
4. sets ``PR_SET_NO_NEW_PRIVS``,
5. installs an audit hook (``sys.addaudithook``) that rejects process creation, signals to
   other processes, sockets, ``ctypes`` calls and writes/deletes outside the work folder.

The caller side enforces a wall-clock timeout and an output cap by killing the child's whole
process group (and, when a private uid was used, every process of that uid), and removes the
work folder afterwards. The child environment is a minimal dict (no inherited variables).

Starting an interpreter per program costs most of a run's CPU, so by default the child is not
started but forked: a *pool server* (an interpreter started exactly like such a child, one per
``site_packages`` setting and caller process, on first use) forks one child per program; the
child closes every fd of the server, takes the program's pipes, session, stdio, environment and
working folder, and then runs the same bootstrap. The server never runs user code. The caller
watches, kills and classifies exactly as for a spawned child; the server reaps only when told.
``RLZOO_SANDBOX_POOL=0`` (or ``rlzoo.sandbox.USE_POOL = False``) starts an interpreter per
program instead, which is also the fallback when no server can start.

The OS mechanisms (rlimits, namespaces, uid, read-only mounts) are real kernel boundaries; the
audit hook is a best-effort first line that gives clean error messages and covers gaps where
the OS layers are unavailable, but it is *not* a security boundary against a determined
attacker. ``sandbox_layers()`` reports which layers the current machine actually provides;
docs/sandbox.md describes each guarantee and its limits.
"""

from __future__ import annotations

import _thread
import dataclasses
import json
import os
import signal
import sys
import time
from typing import Any, Callable, Sequence

__all__ = ["ExecResult", "run_python", "run_many", "sandbox_layers", "close_pool"]

_STDERR_TAIL_BYTES = 4096
_SETUP_EXIT_CODE = 125
_SETUP_MARK = "rlzoo-sandbox-setup-error:"
_PROGRAM_NAME = "program.py"
_CHILD_FLAG = "--rlzoo-sandbox-child"
_SERVER_FLAG = "--rlzoo-sandbox-server"
# Loads this file by path (so its cached bytecode is used; a script would be recompiled on
# every run) under a private name, then hands over to the bootstrap.
_CHILD_LOADER = (
    "import sys, importlib.util as u\n"
    "s = u.spec_from_file_location('_rlzoo_sandbox_child', sys.argv[1])\n"
    "m = sys.modules[s.name] = u.module_from_spec(s)\n"
    "s.loader.exec_module(m)\n"
    "m._child_main(sys.argv[1:])\n"
)
_SAFE_PATH = "/usr/local/bin:/usr/bin:/bin"

# Linux constants (x86_64 and aarch64 agree on all of these).
_CLONE_NEWNS = 0x00020000
_CLONE_NEWUSER = 0x10000000
_CLONE_NEWNET = 0x40000000
_CLONE_NEWPID = 0x20000000
_MS_RDONLY, _MS_NOSUID, _MS_NODEV, _MS_NOEXEC = 1, 2, 4, 8
_MS_REMOUNT, _MS_NOATIME, _MS_NODIRATIME, _MS_BIND = 32, 1024, 2048, 4096
_MS_REC, _MS_PRIVATE, _MS_RELATIME, _MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
_SYS_MOUNT_SETATTR = 442
_AT_FDCWD, _AT_RECURSIVE, _MOUNT_ATTR_RDONLY = -100, 0x8000, 1
_PR_SET_PDEATHSIG, _PR_SET_NO_NEW_PRIVS = 1, 38
_LINUX_CAPABILITY_VERSION_3 = 0x20080522


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """Outcome of one sandboxed program.

    ``ok`` is True only for a clean exit (status 0) within every limit. ``error`` says why
    not: ``"timeout"``, ``"memory: ..."``, ``"exit code N: <last stderr line>"``,
    ``"output truncated"``, ``"killed by signal N (NAME)"``, ``"cpu time limit"``,
    ``"sandbox setup failed: ..."``. ``stderr`` holds the last few KiB of standard error.
    """

    stdout: str
    ok: bool
    error: str | None
    stderr: str = ""


@dataclasses.dataclass(frozen=True)
class _Limits:
    """The limits of one sandboxed run. Their defaults here are the only place they are written:
    :func:`run_python`, :func:`run_many` and the rewards that run programs read them from
    :data:`DEFAULT_LIMITS`."""

    timeout_s: float = 10.0
    memory_mb: int = 512
    max_output_bytes: int = 64_000
    max_file_mb: int = 16
    disk_mb: int = 64
    max_processes: int = 16
    max_open_files: int = 128
    site_packages: bool = False
    audit_hook: bool = True  # tests switch it off to exercise the OS layers alone

    def validate(self) -> None:
        positive = {
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "max_output_bytes": self.max_output_bytes,
            "max_file_mb": self.max_file_mb,
            "disk_mb": self.disk_mb,
            "max_processes": self.max_processes,
            "max_open_files": self.max_open_files,
        }
        for name, value in positive.items():
            if not 0 < value < float("inf"):
                raise ValueError(f"{name} must be positive and finite, got {value!r}")


# --------------------------------------------------------------------------------------
# Public API (caller side)
# --------------------------------------------------------------------------------------


DEFAULT_LIMITS = _Limits()  # the default of every limit (the paper allows a program 10 s)


def run_python(
    code: str,
    timeout_s: float = DEFAULT_LIMITS.timeout_s,
    *,
    memory_mb: int = DEFAULT_LIMITS.memory_mb,
    max_output_bytes: int = DEFAULT_LIMITS.max_output_bytes,
    max_file_mb: int = DEFAULT_LIMITS.max_file_mb,
    max_processes: int = DEFAULT_LIMITS.max_processes,
    site_packages: bool = DEFAULT_LIMITS.site_packages,
) -> ExecResult:
    """Run ``code`` in a sandboxed child process and return what it printed.

    ``timeout_s`` is wall-clock time for the whole child (the CPU-time rlimit is slightly
    larger). ``memory_mb`` caps the address space, ``max_output_bytes`` caps stdout (the child
    is killed once it is exceeded), ``max_file_mb`` caps any single file the program writes,
    ``max_processes`` caps tasks (processes and threads). ``site_packages=True`` drops ``-S``
    so installed packages such as sympy can be imported; the standard library is always there.
    """
    return run_many([code], timeout_s, 1, memory_mb=memory_mb, max_output_bytes=max_output_bytes,
                    max_file_mb=max_file_mb, max_processes=max_processes, site_packages=site_packages)[0]


def run_many(
    codes: Sequence[str],
    timeout_s: float = DEFAULT_LIMITS.timeout_s,
    max_workers: int = 2,
    *,
    memory_mb: int = DEFAULT_LIMITS.memory_mb,
    max_output_bytes: int = DEFAULT_LIMITS.max_output_bytes,
    max_file_mb: int = DEFAULT_LIMITS.max_file_mb,
    max_processes: int = DEFAULT_LIMITS.max_processes,
    site_packages: bool = DEFAULT_LIMITS.site_packages,
) -> list[ExecResult]:
    """Run many programs with at most ``max_workers`` children alive; results in input order
    (the limits are :func:`run_python`'s, for each program)."""
    from concurrent.futures import ThreadPoolExecutor

    if max_workers < 1:
        raise ValueError(f"max_workers must be >= 1, got {max_workers}")
    limits = dataclasses.replace(
        DEFAULT_LIMITS,
        timeout_s=timeout_s,
        memory_mb=memory_mb,
        max_output_bytes=max_output_bytes,
        max_file_mb=max_file_mb,
        max_processes=max_processes,
        site_packages=site_packages,
    )
    limits.validate()
    if len(codes) <= 1:  # run_python: in this thread
        return [_execute(code, limits) for code in codes]
    with ThreadPoolExecutor(max_workers=min(max_workers, len(codes))) as pool:
        return list(pool.map(lambda code: _execute(code, limits), codes))


def sandbox_layers(site_packages: bool = False) -> frozenset[str]:
    """Names of the protection layers a sandboxed child actually gets on this machine.

    Possible names: ``rlimits``, ``uid`` (private unprivileged uid), ``userns``, ``net``
    (private network namespace), ``mount_ns``, ``readonly_fs``, ``tmpfs_workdir`` or
    ``bind_workdir``, ``pid_ns``, ``private_proc``, ``no_new_privs``, ``audit_hook``
    (``caps_kept`` would flag a user namespace whose capabilities could not be dropped).
    Empty when the probe itself failed.
    """
    probe = "import sys\nprint(' '.join(sys._rlzoo_sandbox_layers))\n"
    result = _execute(probe, dataclasses.replace(DEFAULT_LIMITS, site_packages=site_packages))
    return frozenset(result.stdout.split()) if result.ok else frozenset()


# --------------------------------------------------------------------------------------
# Caller side: spawn, watch, kill, classify
# --------------------------------------------------------------------------------------


def _execute(code: str, limits: _Limits) -> ExecResult:
    import tempfile  # parent-only modules are imported lazily to keep the child lean

    limits.validate()
    workdir = os.path.realpath(tempfile.mkdtemp(prefix="rlzoo_sandbox_"))
    try:
        return _execute_in(code, limits, workdir)
    finally:
        _remove_tree(workdir)


def _execute_in(code: str, limits: _Limits, workdir: str) -> ExecResult:
    program = os.path.join(workdir, _PROGRAM_NAME)
    with open(program, "w", encoding="utf-8") as handle:
        handle.write(code)
    os.chmod(program, 0o644)
    sandbox_id = _pick_sandbox_id() if os.geteuid() == 0 else None
    if sandbox_id is not None:
        os.chown(workdir, sandbox_id, sandbox_id)
    config = _child_config(limits, workdir, sandbox_id)
    started = _start_pooled(config, limits) if USE_POOL else None
    if started is None:
        started = _start_spawned(config, limits, workdir)
    if isinstance(started, ExecResult):
        return started
    child, deadline = started
    try:
        on_exit = lambda: _kill_everything(child.pid, sandbox_id)  # noqa: E731
        stdout, stderr, reason = _collect(child, deadline, limits.max_output_bytes, on_exit)
        returncode = _finish(child, sandbox_id, deadline, reason)
    finally:
        if not child.reaped:  # only on an unexpected error: still unreaped, pid safe
            _kill_everything(child.pid, sandbox_id)
            child.reap()
        child.close()
    if returncode is _SERVER_LOST:  # its exit status went with the server
        if reason is None:
            return dataclasses.replace(_classify(stdout, stderr, None, 0), ok=False,
                                       error="sandbox server died")
        returncode = None
    if reason is None and returncode is None:
        reason = "timeout"
    return _classify(stdout, stderr, reason, returncode)


def _interpreter_argv(site_packages: bool) -> list[str]:
    argv = [sys.executable, "-I", "-B", *([] if site_packages else ["-S"])]
    return argv + ["-c", _CHILD_LOADER, os.path.abspath(__file__)]


def _child_env(workdir: str) -> dict[str, str]:
    return {"PATH": _SAFE_PATH, "HOME": workdir, "LANG": "C.UTF-8", "PYTHONHASHSEED": "0"}


class _SpawnedChild:
    """A child interpreter started for one program (``subprocess.Popen``), watched by the caller."""

    def __init__(self, proc: Any) -> None:
        self.proc, self.pid = proc, proc.pid
        self.stdout_fd, self.stderr_fd = proc.stdout.fileno(), proc.stderr.fileno()
        self.pidfd = _open_pidfd(proc.pid)

    @property
    def reaped(self) -> bool:
        return self.proc.returncode is not None

    def wait_unreaped(self, deadline: float) -> bool:
        return _wait_unreaped(self.pid, deadline)

    def reap(self) -> int:
        return self.proc.wait()

    def close(self) -> None:
        if self.pidfd is not None:
            os.close(self.pidfd)
        self.proc.stdout.close()
        self.proc.stderr.close()


def _start_spawned(config: dict[str, Any], limits: _Limits, workdir: str) -> Any:
    """Start a fresh interpreter for this program: (child, deadline), or an ExecResult."""
    import subprocess

    argv = _interpreter_argv(limits.site_packages) + [_CHILD_FLAG, json.dumps(config)]
    deadline = time.monotonic() + limits.timeout_s
    try:
        proc = subprocess.Popen(
            argv,
            cwd=workdir,
            env=_child_env(workdir),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
            close_fds=True,
        )
    except OSError as exc:
        return ExecResult(stdout="", ok=False, error=f"spawn failed: {exc}")
    return _SpawnedChild(proc), deadline


# Pool of pre-started servers (caller side) ----------------------------------------------
#
# A server is an interpreter started exactly like a per-program child (same flags, same minimal
# environment) that has loaded this file and then waits in _serve. For each program the caller
# sends it the program's config and three fds (a private reply channel, the write ends of the
# stdout and stderr pipes); the server forks, replies with the new child's pid and never reaps
# it until the caller, having killed whatever the program left, says "reap". The forked child
# drops everything of the server's (fds, socket objects, stdio) and then runs the same
# bootstrap as a spawned child, layer by layer in the same order. The caller watches the child
# through a pidfd, so the watchdog above is shared by both paths.

# False: a fresh interpreter per program (the environment variable is read once, at import)
USE_POOL = os.environ.get("RLZOO_SANDBOX_POOL", "1") != "0"
_SERVER_LOST = object()  # reap() when the server died under a running program
_SERVER_START_S = 20.0  # how long a starting server may take to say it is ready
_REPLY_GRACE_S = 30.0  # how long a live server may take to answer, beyond the program's timeout


class _PooledChild:
    """A program's child forked by a pool server; the caller holds the pipes and a pidfd."""

    def __init__(self, pid: int, stdout_fd: int, stderr_fd: int, pidfd: int, channel: Any) -> None:
        self.pid, self.stdout_fd, self.stderr_fd = pid, stdout_fd, stderr_fd
        self.pidfd, self.channel, self.reaped = pidfd, channel, False

    def wait_unreaped(self, deadline: float) -> bool:
        import select

        remaining = max(0.0, deadline - time.monotonic())
        return bool(select.select([self.pidfd], [], [], remaining)[0])

    def reap(self) -> Any:
        """Ask the server to reap the child; its exit code, or _SERVER_LOST."""
        import socket

        self.reaped = True
        try:
            self.channel.settimeout(_REPLY_GRACE_S)
            self.channel.send(b"reap", socket.MSG_NOSIGNAL)
            reply = self.channel.recv(64).split()
            if len(reply) == 2 and reply[0] == b"status":
                return int(reply[1])
        except OSError:
            pass
        return _SERVER_LOST

    def close(self) -> None:
        for fd in (self.pidfd, self.stdout_fd, self.stderr_fd):
            os.close(fd)
        self.channel.close()


class _PoolServer:
    """One running server interpreter, for one ``site_packages`` setting, in one caller process."""

    def __init__(self, site_packages: bool) -> None:
        import socket
        import subprocess

        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            argv = _interpreter_argv(site_packages) + [_SERVER_FLAG, str(theirs.fileno())]
            self.proc = subprocess.Popen(
                argv,
                cwd="/",
                env=_child_env("/"),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # Ctrl-C in a terminal is for the caller, not for it
                close_fds=True,
                pass_fds=(theirs.fileno(),),
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()
        self.socket = ours
        try:
            ours.settimeout(_SERVER_START_S)
            if ours.recv(16) != b"ready":
                raise OSError("the sandbox server did not start")
            ours.settimeout(None)
            os.close(os.pidfd_open(self.proc.pid))  # the watchdog needs pidfds of non-children
        except BaseException:
            self.close()
            raise

    def alive(self) -> bool:
        return self.proc.poll() is None

    def submit(self, config: dict[str, Any]) -> _PooledChild | None:
        """Have the server fork a child for ``config``; None if the server failed."""
        import array
        import socket

        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        fds = array.array("i", [theirs.fileno(), out_w, err_w])
        try:
            self.socket.sendmsg([json.dumps(config).encode()],
                               [(socket.SOL_SOCKET, socket.SCM_RIGHTS, fds)], socket.MSG_NOSIGNAL)
        except OSError:
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            return None
        finally:
            theirs.close()
            os.close(out_w)
            os.close(err_w)
        try:
            mine.settimeout(_REPLY_GRACE_S)
            reply = mine.recv(64).split()
            pid = int(reply[1]) if len(reply) == 2 and reply[0] == b"pid" else None
            pidfd = os.pidfd_open(pid) if pid is not None else None  # unreaped until "reap": safe
        except (OSError, ValueError):
            pid = pidfd = None
        if pidfd is None:  # the server died, failed to fork, or stopped answering
            for fd in (out_r, err_r):
                os.close(fd)
            mine.close()
            return None
        return _PooledChild(pid, out_r, err_r, pidfd, mine)

    def close(self) -> None:
        """Closing the socket tells the server to kill what still runs and exit."""
        import subprocess

        self.socket.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# _thread, not threading: this file is also the children's bootstrap, which should stay lean
_pool_lock = _thread.allocate_lock()
_pool_servers: dict[bool, _PoolServer] = {}  # by site_packages, for the process _pool_owner
_pool_owner = os.getpid()
_pool_unavailable: dict[bool, float] = {}  # by site_packages: when a server last failed to start
_pool_hooks_installed = False
_pool_inherited: list[Any] = []  # a parent's servers, seen after os.fork: never waited on


def _start_pooled(config: dict[str, Any], limits: _Limits) -> tuple[_PooledChild, float] | None:
    """Fork this program's child from a pool server: (child, deadline), or None to spawn instead.

    A server found dead, or that fails during the request, is replaced once.
    """
    failed = None
    for _ in range(2):
        server = _pool_server(limits.site_packages, failed)
        if server is None:
            return None
        deadline = time.monotonic() + limits.timeout_s
        child = server.submit({**config, "pooled": True})
        if child is not None:
            return child, deadline
        failed = server
    return None


def _pool_server(site_packages: bool, failed: _PoolServer | None = None) -> _PoolServer | None:
    """This process's server for ``site_packages``, started (or restarted) if needed; None when
    none could start in the last minute. ``failed``: a server that just failed a request."""
    with _pool_lock:
        if _pool_owner != os.getpid():  # a forked caller: the parent's servers are not ours
            _forget_pool_servers()
        server = _pool_servers.get(site_packages)
        if server is not None and (server is failed or not server.alive()):
            del _pool_servers[site_packages]
            server.close()
            server = None
        if server is None:
            if time.monotonic() < _pool_unavailable.get(site_packages, float("-inf")) + 60:
                return None
            _install_pool_hooks()
            try:
                server = _pool_servers[site_packages] = _PoolServer(site_packages)
            except (OSError, AttributeError, ValueError):  # no server here: spawn per program
                _pool_unavailable[site_packages] = time.monotonic()
                return None
        return server


def _install_pool_hooks() -> None:
    """Once per process, with the first server: stop servers at exit, forget them after fork."""
    global _pool_hooks_installed
    if not _pool_hooks_installed:
        import atexit

        atexit.register(close_pool)
        os.register_at_fork(after_in_child=_forget_pool_servers)
        _pool_hooks_installed = True


def _forget_pool_servers() -> None:
    """In a forked caller: drop (without stopping) the parent's servers and start afresh."""
    global _pool_owner, _pool_lock
    for server in _pool_servers.values():
        server.socket.close()  # our copy only: the parent's server keeps running for the parent
        _pool_inherited.append(server.proc)
    _pool_servers.clear()
    _pool_unavailable.clear()
    _pool_owner = os.getpid()
    _pool_lock = _thread.allocate_lock()  # another thread of the parent may have held it at fork


def close_pool() -> None:
    """Stop this process's pool servers (they restart on the next run); called at exit."""
    with _pool_lock:
        if _pool_owner != os.getpid():
            return
        servers = list(_pool_servers.values())
        _pool_servers.clear()
    for server in servers:
        server.close()


def _child_config(limits: _Limits, workdir: str, sandbox_id: int | None) -> dict[str, Any]:
    return {
        "workdir": workdir,
        "memory_bytes": limits.memory_mb * 1024 * 1024,
        "cpu_s": int(limits.timeout_s) + 2,
        "file_bytes": limits.max_file_mb * 1024 * 1024,
        "disk_mb": limits.disk_mb,
        "nproc": limits.max_processes,
        "nofile": limits.max_open_files,
        "sandbox_id": sandbox_id,
        "audit_hook": limits.audit_hook,
        "pooled": False,  # forked by a pool server (which then is the child's parent)
    }


def _collect(
    child: Any, deadline: float, max_output: int, on_exit: Callable[[], None]
) -> tuple[bytes, bytes, str | None]:
    """Read stdout (capped) and the stderr tail until both close, the deadline or the cap.

    When the child itself exits (seen through its pidfd, still unreaped) ``on_exit`` kills
    whatever it left behind, so stray grandchildren holding the pipes cannot stall us.
    """
    import selectors

    out, err = bytearray(), bytearray()
    pipes = {child.stdout_fd: out, child.stderr_fd: err}
    reason: str | None = None
    with selectors.DefaultSelector() as sel:
        for fd, buffer in pipes.items():
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ, buffer)
        if child.pidfd is not None:
            sel.register(child.pidfd, selectors.EVENT_READ, None)
        while reason is None and any(fd in sel.get_map() for fd in pipes):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                reason = "timeout"
                break
            for key, _ in sel.select(remaining):
                if key.data is None:  # the child exited: sweep up what it left running
                    sel.unregister(key.fd)
                    on_exit()
                else:
                    reason = _read_chunk(sel, key, out, err, max_output) or reason
    if len(out) > max_output:
        del out[max_output:]
    return bytes(out), bytes(err), reason


def _open_pidfd(pid: int) -> int | None:
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):  # Python/kernel without pidfd: fall back to EOF only
        return None


def _read_chunk(sel: Any, key: Any, out: bytearray, err: bytearray, max_output: int) -> str | None:
    try:
        chunk = os.read(key.fd, 65536)
    except BlockingIOError:
        return None
    if not chunk:
        sel.unregister(key.fd)
        return None
    buffer = key.data
    buffer += chunk
    if buffer is out:
        return "output truncated" if len(out) > max_output else None
    if len(err) > 2 * _STDERR_TAIL_BYTES:
        del err[:-_STDERR_TAIL_BYTES]
    return None


def _finish(child: Any, sandbox_id: int | None, deadline: float, reason: str | None) -> Any:
    """Wait for the child (unless a limit already fired), clean up, return its status.

    The group is killed while the child is still unreaped, so its pid (= process group id)
    cannot have been recycled by an unrelated process. Returns None on a timeout.
    """
    if reason is None and not child.wait_unreaped(deadline):
        reason = "timeout"
    _kill_everything(child.pid, sandbox_id)
    returncode = child.reap()
    return None if reason == "timeout" else returncode


def _wait_unreaped(pid: int, deadline: float) -> bool:
    """Poll until ``pid`` has exited without reaping it (waitid + WNOWAIT)."""
    delay = 0.001
    while True:
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except ChildProcessError:
            return True
        if info is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


def _kill_everything(pgid: int, sandbox_id: int | None) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    if sandbox_id is not None:
        _kill_uid(sandbox_id)


def _kill_uid(uid: int, rounds: int = 200) -> None:
    """SIGKILL every process whose real/effective/saved uid is ``uid`` until none is left."""
    for _ in range(rounds):
        victims = _pids_of_uid(uid)
        if not victims:
            return
        for pid in victims:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.005)


def _pids_of_uid(uid: int) -> list[int]:
    """Live (non-zombie) processes whose real, effective or saved uid is ``uid``."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and _status_matches(name, str(uid)):
            found.append(int(name))
    return found


def _status_matches(pid: str, uid: str) -> bool:
    """Whether process ``pid`` is live and has ``uid`` as real, effective or saved uid (read
    from the first lines of /proc/<pid>/status: this runs for every process, several times a
    program, so it parses only what it needs)."""
    try:
        fd = os.open(f"/proc/{pid}/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        text = os.read(fd, 4096)  # State and Uid are on the first lines
    except OSError:
        return False
    finally:
        os.close(fd)
    state_at, uid_at = text.find(b"\nState:"), text.find(b"\nUid:")
    if state_at < 0 or uid_at < 0:
        return False
    state = text[state_at + 7 : state_at + 16].lstrip()[:1]
    uids = text[uid_at + 5 : text.find(b"\n", uid_at + 1)].split()[:3]
    return state not in (b"Z", b"X", b"") and uid.encode() in uids


def _classify(stdout_b: bytes, stderr_b: bytes, reason: str | None, rc: int | None) -> ExecResult:
    stdout = stdout_b.decode("utf-8", errors="replace")
    stderr = stderr_b[-_STDERR_TAIL_BYTES:].decode("utf-8", errors="replace")
    error = reason or _exit_error(rc, stderr)
    return ExecResult(stdout=stdout, ok=error is None, error=error, stderr=stderr)


def _exit_error(rc: int | None, stderr: str) -> str | None:
    if rc == 0:
        return None
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    last = lines[-1] if lines else ""
    if rc == _SETUP_EXIT_CODE and last.startswith(_SETUP_MARK):
        return "sandbox setup failed: " + last[len(_SETUP_MARK):].strip()
    if "MemoryError" in stderr or "out of memory" in stderr.lower():
        return f"memory: {last}" if last else "memory"
    if rc is not None and rc < 0:
        return _signal_error(-rc)
    return f"exit code {rc}: {last}" if last else f"exit code {rc}"


def _signal_error(signum: int) -> str:
    if signum == signal.SIGXCPU:
        return "cpu time limit"
    try:
        name = signal.Signals(signum).name
    except ValueError:
        name = "unknown"
    return f"killed by signal {signum} ({name})"


def _pick_sandbox_id() -> int:
    """A random uid/gid, mapped in this user namespace, that no account and no process uses."""
    import grp
    import pwd
    import random

    low, high = _id_range()
    rng = random.SystemRandom()
    for _ in range(64):
        candidate = rng.randrange(low, high)
        if _unused_id(candidate, pwd, grp):
            return candidate
    raise RuntimeError("could not find a free sandbox uid")


def _unused_id(candidate: int, pwd: Any, grp: Any) -> bool:
    for lookup in (pwd.getpwuid, grp.getgrgid):
        try:
            lookup(candidate)
            return False
        except KeyError:
            pass
    return not _pids_of_uid(candidate)


def _id_range() -> tuple[int, int]:
    """The id interval to draw sandbox ids from: high ids if mapped, else the top of the map."""
    ranges = _mapped(("/proc/self/uid_map", "/proc/self/gid_map"))
    preferred = (1 << 20, (1 << 31) - 2)
    for start, end in ranges:
        if start <= preferred[0] and end >= preferred[1]:
            return preferred
    usable = [(max(start, 1000), end) for start, end in ranges if end - max(start, 1000) > 1000]
    if not usable:
        raise RuntimeError("no unprivileged uid range is mapped for the sandbox")
    start, end = max(usable, key=lambda pair: pair[1] - pair[0])
    return (start + end) // 2, end - 2  # stay clear of 65534 (nobody) at the very top


def _mapped(paths: Sequence[str]) -> list[tuple[int, int]]:
    """Intervals [start, end) of ids mapped in every one of the given id-map files."""
    per_file = []
    for path in paths:
        try:
            with open(path, encoding="ascii") as handle:
                rows = [line.split() for line in handle if line.strip()]
            per_file.append([(int(r[0]), int(r[0]) + int(r[2])) for r in rows])
        except OSError:
            per_file.append([(0, 1 << 32)])
    result = per_file[0]
    for other in per_file[1:]:
        overlaps = [(max(a, c), min(b, d)) for a, b in result for c, d in other]
        result = [(low, high) for low, high in overlaps if low < high]
    return result


def _remove_tree(path: str) -> None:
    import shutil

    def make_writable_and_retry(func: Callable[..., Any], target: str, _exc: Any) -> None:
        try:
            os.chmod(os.path.dirname(target), 0o700)
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, 0o700)
            func(target)
        except OSError:
            pass

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=make_writable_and_retry)
    else:
        shutil.rmtree(path, onerror=make_writable_and_retry)


# --------------------------------------------------------------------------------------
# Child side: the trusted bootstrap that runs before user code
# --------------------------------------------------------------------------------------


def _child_main(argv: list[str]) -> None:
    if len(argv) == 3 and argv[1] == _SERVER_FLAG:
        config, pipes = _serve(int(argv[2]))  # returns only in a forked child, once per program
    elif len(argv) == 3 and argv[1] == _CHILD_FLAG:
        config, pipes = json.loads(argv[2]), None
    else:
        os.write(2, b"rlzoo.sandbox: internal child entry point, use run_python()\n")
        os._exit(2)
    try:
        if pipes is not None:
            _become_fresh_child(config, *pipes)
        source, layers = _prepare_child(config)
    except BaseException as exc:  # fail closed: no user code runs without its sandbox
        os.write(2, f"{_SETUP_MARK} {type(exc).__name__}: {exc}\n".encode())
        os._exit(_SETUP_EXIT_CODE)
    sys._rlzoo_sandbox_layers = tuple(sorted(layers))  # type: ignore[attr-defined]
    filename = os.path.join(config["workdir"], _PROGRAM_NAME)
    if pipes is None:
        _run_user_code(source, filename)  # then the interpreter exits the usual way
    else:
        _run_user_code_and_exit(source, filename)


# The pool server ---------------------------------------------------------------------------


def _serve(control_fd: int) -> tuple[dict[str, Any], tuple[int, int, int]]:
    """The pool server's loop: fork one child per request. Returns only in such a child.

    The server runs no user code and keeps nothing of a request but the child's pid, sandbox
    uid and reply channel. Each child is reaped only when its caller says "reap" (after it has
    killed the child's process group and uid), so the pid the caller kills by is never
    recycled. When the caller goes away (its socket closes), the server kills and reaps every
    child it still has, and exits.
    """
    import array
    import gc
    import selectors
    import socket

    import ctypes  # the children's bootstrap needs both; importing them once here saves time
    import resource  # noqa: F401

    ctypes.CDLL(None, use_errno=True)
    server_pid = os.getpid()
    control = socket.socket(fileno=control_fd)
    jobs: dict[int, dict[str, Any]] = {}  # by channel fd: pid, sandbox_id, channel, pidfd
    gc.collect()
    gc.freeze()  # children then leave the server's objects alone (fewer copied pages)
    with selectors.DefaultSelector() as sel:
        sel.register(control, selectors.EVENT_READ, None)
        control.send(b"ready")
        while True:
            for key, _ in sel.select():
                job = key.data
                if job is None:
                    request = _receive_request(control, array, socket)
                    if request is None:  # the caller closed its end: stop
                        _stop_all(jobs)
                        os._exit(0)
                    if not request:  # malformed: ignored
                        continue
                    forked = _fork_job(request, sel, jobs)
                    if forked is not None:  # in the child: drop everything of the server's
                        for other in jobs.values():
                            other["channel"].close()
                            if other["pidfd"] is not None:
                                os.close(other["pidfd"])
                        control.close()
                        sel.close()
                        return forked[0], (forked[1], forked[2], server_pid)
                elif key.fd == job["channel"].fileno():
                    _on_channel(job, sel, jobs)
                else:  # the pidfd of a child the caller asked to reap: it has exited now
                    _reap_job(job, sel, jobs)


def _receive_request(control: Any, array: Any, socket: Any) -> Any:
    """(config, channel, stdout fd, stderr fd) from the caller; None when it has gone, () for
    a malformed request."""
    try:
        data, ancillary, _, _ = control.recvmsg(65536, socket.CMSG_SPACE(3 * 4))
    except ConnectionError:
        return None
    if not data:
        return None
    fds = array.array("i")
    for level, kind, payload in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    if len(fds) != 3:
        for fd in fds:
            os.close(fd)
        return ()
    return json.loads(data), socket.socket(fileno=fds[0]), fds[1], fds[2]


def _fork_job(request: Any, sel: Any, jobs: dict[int, dict[str, Any]]) -> Any:
    """Fork a child for one request. In the child: (config, stdout fd, stderr fd)."""
    import selectors

    config, channel, out_w, err_w = request
    try:
        pid = os.fork()
    except OSError as exc:
        os.close(out_w)
        os.close(err_w)
        _send_quietly(channel, f"error {exc.errno}".encode())
        channel.close()
        return None
    if pid == 0:
        channel.close()
        return config, out_w, err_w
    os.close(out_w)
    os.close(err_w)
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    job = {"pid": pid, "sandbox_id": config["sandbox_id"], "channel": channel, "pidfd": pidfd}
    jobs[channel.fileno()] = job
    sel.register(channel, selectors.EVENT_READ, job)
    if not _send_quietly(channel, f"pid {pid}".encode()):
        _on_channel(job, sel, jobs)  # nobody to report to: kill and reap
    return None


def _on_channel(job: dict[str, Any], sel: Any, jobs: dict[int, dict[str, Any]]) -> None:
    """The caller said "reap" (it killed everything), or went away (then kill here first)."""
    import selectors

    try:
        message = job["channel"].recv(16)
    except OSError:
        message = b""
    sel.unregister(job["channel"])
    if message != b"reap":
        _kill_everything(job["pid"], job["sandbox_id"])
    if job["pidfd"] is not None:  # reap once it has exited (it was SIGKILLed, so soon)
        sel.register(job["pidfd"], selectors.EVENT_READ, job)
    else:
        _reap_job(job, sel, jobs)


def _reap_job(job: dict[str, Any], sel: Any, jobs: dict[int, dict[str, Any]]) -> None:
    _, status = os.waitpid(job["pid"], 0)
    if job["pidfd"] is not None:
        sel.unregister(job["pidfd"])
        os.close(job["pidfd"])
        job["pidfd"] = None
    _send_quietly(job["channel"], f"status {os.waitstatus_to_exitcode(status)}".encode())
    jobs.pop(job["channel"].fileno(), None)
    job["channel"].close()


def _stop_all(jobs: dict[int, dict[str, Any]]) -> None:
    for job in jobs.values():
        _kill_everything(job["pid"], job["sandbox_id"])
    for job in jobs.values():
        os.waitpid(job["pid"], 0)


def _send_quietly(channel: Any, message: bytes) -> bool:
    import socket

    try:
        channel.send(message, socket.MSG_NOSIGNAL)
        return True
    except OSError:
        return False


def _become_fresh_child(config: dict[str, Any], out_w: int, err_w: int, server_pid: int) -> None:
    """In a child forked by the server: look like a freshly spawned child before the bootstrap.

    The same session, stdio, fds, environment and working folder a spawned child starts with;
    the server's other fds (its socket, other programs' channels) are closed here.
    """
    os.dup2(err_w, 2)  # first, so that a failure below is reported like any setup failure
    os.dup2(out_w, 1)
    null = os.open("/dev/null", os.O_RDONLY)
    os.dup2(null, 0)
    _close_fds_above_stderr()
    os.setsid()
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    _die_with_parent(libc)
    if os.getppid() != server_pid:  # the server died before we asked to die with it
        os._exit(1)
    os.chdir(config["workdir"])
    os.environ.clear()
    os.environ.update(_child_env(config["workdir"]))
    _fresh_stdio()


def _close_fds_above_stderr() -> None:
    """Close every fd but 0-2: up to the fd limit at once, then any /proc/self/fd still lists."""
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    os.closerange(3, soft if soft != resource.RLIM_INFINITY else 1 << 20)
    for name in os.listdir("/proc/self/fd"):  # above a since lowered limit, say
        if int(name) > 2:
            try:
                os.close(int(name))
            except OSError:  # the listing's own fd, closed by now
                pass


def _die_with_parent(libc: Any) -> None:
    """PR_SET_PDEATHSIG: a pooled child dies with its parent (so with the server). A uid change
    clears it, so it is set again after each one."""
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def _fresh_stdio() -> None:
    """New sys.stdin/stdout/stderr over fds 0-2, built the way interpreter start-up builds them
    (the server's were made for its own fds and may hold its state)."""
    import io

    for name, fd, mode in (("stdin", 0, "r"), ("stdout", 1, "w"), ("stderr", 2, "w")):
        old = getattr(sys, f"__{name}__")
        buffered = io.open(fd, mode + "b", -1, closefd=False)
        buffered.raw.name = f"<{name}>"
        stream = io.TextIOWrapper(
            buffered,
            encoding=old.encoding,
            errors=old.errors,
            newline="\n",
            line_buffering=old.line_buffering,
            write_through=old.write_through,
        )
        stream.mode = mode
        setattr(sys, name, stream)
        setattr(sys, f"__{name}__", stream)


def _prepare_child(config: dict[str, Any]) -> tuple[str, set[str]]:
    workdir = config["workdir"]
    with open(os.path.join(workdir, _PROGRAM_NAME), encoding="utf-8") as handle:
        source = handle.read()
    import ctypes  # trusted use here; the audit hook makes the module inert afterwards

    libc = ctypes.CDLL(None, use_errno=True)
    _set_rlimits(config, with_nproc=False)  # NPROC after the relay fork, which it would count
    layers = {"rlimits"}
    layers |= _enter_namespaces(ctypes, libc)
    if "mount_ns" in layers:
        layers |= _setup_mounts(ctypes, libc, config)
        if "tmpfs_workdir" in layers:
            _write_program(workdir, source)
    if "pid_ns" in layers:
        layers -= {"pid_ns"}
        layers |= _become_pid_namespace_init(ctypes, libc, config, layers)
    _set_rlimits(config, with_nproc=True)
    os.chdir(workdir)
    layers |= _drop_privileges(ctypes, libc, config, layers)
    if config["pooled"]:
        _die_with_parent(libc)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) == 0:
        layers.add("no_new_privs")
    _neutralise_process_spawning()
    if config["audit_hook"]:
        proc_pid = int(os.readlink("/proc/self"))  # differs from getpid() in a pid namespace
        sys.addaudithook(_make_audit_hook(workdir, os.getpid(), proc_pid))
        layers.add("audit_hook")
    return source, layers


def _set_rlimits(config: dict[str, Any], with_nproc: bool) -> None:
    import resource

    limits = {
        resource.RLIMIT_AS: (config["memory_bytes"], config["memory_bytes"]),
        resource.RLIMIT_CPU: (config["cpu_s"], config["cpu_s"] + 1),
        resource.RLIMIT_FSIZE: (config["file_bytes"], config["file_bytes"]),
        resource.RLIMIT_NOFILE: (config["nofile"], config["nofile"]),
        resource.RLIMIT_CORE: (0, 0),
    }
    if with_nproc:
        limits[resource.RLIMIT_NPROC] = (config["nproc"], config["nproc"])
    for which, (soft, hard) in limits.items():
        _, current_hard = resource.getrlimit(which)
        if current_hard != resource.RLIM_INFINITY:
            hard = min(hard, current_hard)
            soft = min(soft, hard)
        resource.setrlimit(which, (soft, hard))


def _enter_namespaces(ctypes: Any, libc: Any) -> set[str]:
    """New net, mount and pid namespaces (a user namespace first when not root). Best effort.

    ``pid_ns`` in the result only means the *next* child will be init of a new namespace.
    """
    rootful = os.geteuid() == 0
    uid, gid = os.getuid(), os.getgid()
    base = 0 if rootful else _CLONE_NEWUSER
    attempts = (
        base | _CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWPID,
        base | _CLONE_NEWNS | _CLONE_NEWNET,
        base | _CLONE_NEWNET,
    )
    for flags in attempts:
        if libc.unshare(flags) == 0:
            break
    else:
        return set()
    layers = {"net"} | ({"mount_ns"} if flags & _CLONE_NEWNS else set())
    if flags & _CLONE_NEWPID:
        layers.add("pid_ns")
    if not rootful:
        layers.add("userns")
        try:
            _write_id_maps(uid, gid)
        except OSError:
            layers.discard("mount_ns")  # without id maps the tmpfs cannot be owned by us
    return layers


def _write_id_maps(uid: int, gid: int) -> None:
    for path, text in (
        ("/proc/self/setgroups", "deny"),
        ("/proc/self/uid_map", f"{uid} {uid} 1"),
        ("/proc/self/gid_map", f"{gid} {gid} 1"),
    ):
        with open(path, "w", encoding="ascii") as handle:
            handle.write(text)


def _setup_mounts(ctypes: Any, libc: Any, config: dict[str, Any]) -> set[str]:
    """Private mount tree: everything read-only except a size-capped tmpfs work folder."""
    if libc.mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None) != 0:
        return set()
    layers = {"readonly_fs"} if _make_readonly(ctypes, libc) else set()
    owner = config["sandbox_id"] if config["sandbox_id"] is not None else os.getuid()
    group = config["sandbox_id"] if config["sandbox_id"] is not None else os.getgid()
    options = f"size={config['disk_mb']}m,mode=0700,uid={owner},gid={group}".encode()
    target = config["workdir"].encode()
    if libc.mount(b"tmpfs", target, b"tmpfs", _MS_NOSUID | _MS_NODEV, options) == 0:
        layers.add("tmpfs_workdir")
    elif _bind_writable(libc, target):  # keep the (on-disk) work folder writable
        layers.add("bind_workdir")
    return layers


def _bind_writable(libc: Any, target: bytes) -> bool:
    flags = _MS_BIND | _MS_NOSUID | _MS_NODEV
    if libc.mount(target, target, None, flags, None) != 0:
        return False
    return libc.mount(None, target, None, flags | _MS_REMOUNT, None) == 0


def _make_readonly(ctypes: Any, libc: Any) -> bool:
    class MountAttr(ctypes.Structure):
        _fields_ = [(name, ctypes.c_uint64) for name in ("set", "clr", "propagation", "userns")]

    attr = MountAttr(_MOUNT_ATTR_RDONLY, 0, 0, 0)
    libc.syscall.restype = ctypes.c_long
    status = libc.syscall(
        _SYS_MOUNT_SETATTR,
        ctypes.c_int(_AT_FDCWD),
        b"/",
        ctypes.c_uint(_AT_RECURSIVE),
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
    )
    return status == 0 or _remount_each_readonly(libc)


def _remount_each_readonly(libc: Any) -> bool:
    """Fallback for kernels without mount_setattr (< 5.12): bind-remount every mount ro."""
    keep = {"nosuid": _MS_NOSUID, "nodev": _MS_NODEV, "noexec": _MS_NOEXEC,
            "noatime": _MS_NOATIME, "nodiratime": _MS_NODIRATIME,
            "relatime": _MS_RELATIME, "strictatime": _MS_STRICTATIME}
    with open("/proc/self/mountinfo", encoding="utf-8", errors="surrogateescape") as handle:
        rows = [line.split() for line in handle]
    all_ok = True
    for row in rows:
        target = _unescape_mountinfo(row[4])
        flags = _MS_BIND | _MS_REMOUNT | _MS_RDONLY
        for option in row[5].split(","):
            flags |= keep.get(option, 0)
        if libc.mount(None, target, None, flags, None) != 0:
            all_ok = False
    return all_ok


def _unescape_mountinfo(field: str) -> bytes:
    raw = os.fsencode(field)
    out, i = bytearray(), 0
    while i < len(raw):
        if raw[i] == 0x5C and i + 4 <= len(raw) and raw[i + 1 : i + 4].isdigit():
            out.append(int(raw[i + 1 : i + 4], 8))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def _become_pid_namespace_init(
    ctypes: Any, libc: Any, config: dict[str, Any], layers: set[str]
) -> set[str]:
    """Fork: the child becomes PID 1 of the new pid namespace and goes on to run the program;
    this process stays outside as a relay that only waits and passes the exit status on.

    Nothing outside the namespace can be named (so not signalled) from inside it, and the
    kernel kills every process in it as soon as its init exits.
    """
    try:
        pid = os.fork()
    except OSError:
        return set()
    if pid != 0:
        _relay(pid, ctypes, libc, config, layers)
    found = {"pid_ns"}
    if "mount_ns" in layers:  # a /proc that shows only this namespace (fails if too revealing)
        flags = _MS_NOSUID | _MS_NODEV | _MS_NOEXEC
        if libc.mount(b"proc", b"/proc", b"proc", flags, None) == 0:
            found.add("private_proc")
    return found


def _relay(pid: int, ctypes: Any, libc: Any, config: dict[str, Any], layers: set[str]) -> None:
    """Wait for the namespace init and exit the same way it did. Never returns."""
    try:
        for fd in (0, 1):  # only the program's own descendants should hold the pipes
            os.close(fd)
        _drop_privileges(ctypes, libc, config, layers)
        if config["pooled"]:
            _die_with_parent(libc)
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        if code < 0:  # killed by a signal: die the same way
            signal.signal(-code, signal.SIG_DFL)
            os.kill(os.getpid(), -code)
            code = 128 - code
        os._exit(code)
    finally:
        os._exit(1)


def _write_program(workdir: str, source: str) -> None:
    """Put the program back into the fresh tmpfs so tracebacks can show source lines."""
    path = os.path.join(workdir, _PROGRAM_NAME)
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(source)


def _drop_privileges(ctypes: Any, libc: Any, config: dict[str, Any], layers: set[str]) -> set[str]:
    sandbox_id = config["sandbox_id"]
    if sandbox_id is None:
        if "userns" in layers and not _drop_capabilities(ctypes, libc):
            return {"caps_kept"}
        return set()
    path_fds = _open_import_dirs()
    os.setgroups([])
    os.setresgid(sandbox_id, sandbox_id, sandbox_id)
    os.setresuid(sandbox_id, sandbox_id, sandbox_id)
    if os.getuid() != sandbox_id or os.geteuid() != sandbox_id:
        raise PermissionError("could not switch to the sandbox uid")
    _reroute_import_dirs(path_fds)
    return {"uid"}


def _drop_capabilities(ctypes: Any, libc: Any) -> bool:
    """Clear every capability we hold in our own user namespace."""

    class Header(ctypes.Structure):
        _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]

    header = Header(_LINUX_CAPABILITY_VERSION_3, 0)
    data = (ctypes.c_uint32 * 6)()
    return libc.capset(ctypes.byref(header), data) == 0


def _open_import_dirs() -> dict[str, int]:
    """Open every import directory while still privileged (it may sit under a 0700 home)."""
    fds: dict[str, int] = {}
    for entry in list(sys.path):
        if isinstance(entry, str) and os.path.isdir(entry) and entry not in fds:
            fds[entry] = os.open(entry, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    return fds


def _reroute_import_dirs(fds: dict[str, int]) -> None:
    """Point unreadable import dirs at /proc/self/fd/N, which reaches them through the fd."""
    mapping = {}
    for entry, fd in fds.items():
        if os.access(entry, os.R_OK | os.X_OK):
            os.close(fd)
        else:
            mapping[entry] = f"/proc/self/fd/{fd}"
    if not mapping:
        return
    sys.path[:] = [_rerouted(entry, mapping) for entry in sys.path]
    for module in list(sys.modules.values()):
        package_path = getattr(module, "__path__", None)
        if isinstance(package_path, list):
            package_path[:] = [_rerouted(entry, mapping) for entry in package_path]
    sys.path_importer_cache.clear()


def _rerouted(entry: Any, mapping: dict[str, str]) -> Any:
    if not isinstance(entry, str):
        return entry
    for original, replacement in sorted(mapping.items(), key=lambda item: -len(item[0])):
        if entry == original or entry.startswith(original + "/"):
            return replacement + entry[len(original):]
    return entry


def _neutralise_process_spawning() -> None:
    """Pre-import _posixsubprocess (sympy needs ``import subprocess``) with a dead fork_exec.

    Its ``fork_exec`` raises no audit event, so it is replaced; re-importing the module is
    blocked by the audit hook. The OS limits (RLIMIT_NPROC under a private uid) back this up.
    """
    import _posixsubprocess

    def fork_exec(*_args: Any, **_kwargs: Any) -> None:
        raise PermissionError("rlzoo sandbox: process creation is blocked")

    _posixsubprocess.fork_exec = fork_exec  # type: ignore[attr-defined]


# Audit hook policy ---------------------------------------------------------------------

_BLOCKED_EVENTS = frozenset({
    "os.fork", "os.forkpty", "os.exec", "os.posix_spawn", "os.spawn", "os.system",
    "os.startfile", "subprocess.Popen", "os.killpg", "resource.setrlimit", "resource.prlimit",
    "gc.get_objects", "gc.get_referrers", "gc.get_referents", "fcntl.ioctl", "os.setns",
})
_BLOCKED_PREFIXES = ("socket.", "ctypes.", "_ctypes.")
_BLOCKED_IMPORTS = frozenset({
    "ctypes", "_ctypes", "_posixsubprocess", "_cffi_backend", "_xxsubinterpreters",
    "_xxinterpchannels", "_interpreters", "_interpchannels", "_interpqueues",
    "_testcapi", "_testinternalcapi", "_testmultiphase", "_testsinglephase",
})
# event -> ((path arg index, dir_fd arg index or None), ...) for paths that get modified.
_WRITE_EVENTS: dict[str, tuple[tuple[int, int | None], ...]] = {
    "os.remove": ((0, 1),), "os.rmdir": ((0, 1),), "os.mkdir": ((0, 2),),
    "os.rename": ((0, 2), (1, 3)), "os.link": ((0, 2), (1, 3)), "os.symlink": ((1, 2),),
    "os.truncate": ((0, None),), "os.chmod": ((0, 2),), "os.lchmod": ((0, None),),
    "os.chown": ((0, 3),), "os.lchown": ((0, None),), "os.utime": ((0, 3),),
    "os.mkfifo": ((0, 2),), "os.mknod": ((0, 3),), "os.chflags": ((0, None),),
    "os.lchflags": ((0, None),), "os.setxattr": ((0, None),), "os.removexattr": ((0, None),),
    "shutil.rmtree": ((0, 1),), "shutil.move": ((0, None), (1, None)),
    "shutil.copyfile": ((1, None),), "shutil.copymode": ((1, None),),
    "shutil.copystat": ((1, None),), "shutil.copytree": ((1, None),),
    "shutil.chown": ((0, None),), "shutil.make_archive": ((0, None),),
    "shutil.unpack_archive": ((1, None),),
}
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_WRITABLE_DEVICES = frozenset({"/dev/null"})


class SandboxViolation(PermissionError):
    """Raised by the audit hook for an operation the sandbox does not allow."""

    __module__ = "rlzoo.sandbox"  # the child loads this file under another name


class SandboxImportBlocked(ImportError):
    """Raised by the audit hook for a blocked import (an ImportError so try/except works)."""

    __module__ = "rlzoo.sandbox"


def _make_audit_hook(
    root: str, own_pid: int, proc_pid: int | None = None
) -> Callable[[str, tuple], None]:
    """Build the audit hook for a child whose writable folder is ``root``.

    ``own_pid`` is the pid the child may signal (itself); ``proc_pid`` is its number under
    /proc (different inside a pid namespace whose /proc is the host's). Functions are bound
    now so later monkeypatching of ``os`` does not change the policy.
    """
    resolve = _make_resolver()
    is_dir = os.path.isdir
    root = os.path.realpath(root)
    proc_prefix = "/proc/"
    own_proc = f"/proc/{own_pid if proc_pid is None else proc_pid}"

    def inside(path: str) -> bool:
        return path == root or path.startswith(root + "/")

    def foreign_proc(path: str) -> bool:
        if not path.startswith(proc_prefix):
            return False
        head = path[len(proc_prefix):].split("/", 1)[0]
        return head.isdigit() and path != own_proc and not path.startswith(own_proc + "/")

    def check_open(args: tuple) -> None:
        target, mode, flags = args[0], args[1], args[2]
        if isinstance(target, int):
            return  # an already open descriptor; its access mode was checked at open time
        path = resolve(target, None)
        writing = bool(flags & _WRITE_FLAGS) or (
            isinstance(mode, str) and any(c in mode for c in "wax+")
        )
        if foreign_proc(path):
            raise SandboxViolation(f"rlzoo sandbox: access to {path} is blocked")
        if inside(path) or (writing and path in _WRITABLE_DEVICES):
            return
        if writing:
            raise SandboxViolation(f"rlzoo sandbox: writing outside the work folder: {path}")
        if is_dir(path):
            raise SandboxViolation(f"rlzoo sandbox: opening a directory outside: {path}")

    def check_write_event(event: str, args: tuple) -> None:
        for path_index, fd_index in _WRITE_EVENTS[event]:
            dir_fd = args[fd_index] if fd_index is not None and fd_index < len(args) else None
            path = resolve(args[path_index], dir_fd)
            if not inside(path):
                raise SandboxViolation(f"rlzoo sandbox: {event} outside the work folder: {path}")

    def hook(event: str, args: tuple) -> None:
        if event == "open":
            check_open(args)
        elif event in _WRITE_EVENTS:
            check_write_event(event, args)
        elif event == "import":
            if args[0] in _BLOCKED_IMPORTS:
                raise SandboxImportBlocked(f"rlzoo sandbox: importing {args[0]} is blocked")
        elif event == "os.kill":
            if args[0] != own_pid:
                raise SandboxViolation("rlzoo sandbox: signalling other processes is blocked")
        elif event in _BLOCKED_EVENTS or event.startswith(_BLOCKED_PREFIXES):
            raise SandboxViolation(f"rlzoo sandbox: {event} is blocked")

    return hook


def _make_resolver() -> Callable[[Any, Any], str]:
    realpath, join, fspath, fsdecode = os.path.realpath, os.path.join, os.fspath, os.fsdecode
    readlink, getcwd = os.readlink, os.getcwd

    def resolve(target: Any, dir_fd: Any) -> str:
        """Absolute, symlink-free path for an audit-event path argument (or raise)."""
        if isinstance(target, int):
            return realpath(readlink(f"/proc/self/fd/{target}"))
        text = fsdecode(fspath(target))
        if "\0" in text:
            raise SandboxViolation("rlzoo sandbox: NUL in path")
        if not text.startswith("/"):
            use_cwd = dir_fd is None or (isinstance(dir_fd, int) and dir_fd < 0)
            base = getcwd() if use_cwd else readlink(f"/proc/self/fd/{dir_fd}")
            text = join(base, text)
        return realpath(text)

    return resolve


# Running the user program ----------------------------------------------------------------


def _run_user_code(source: str, filename: str) -> None:
    main = type(sys)("__main__")
    main.__dict__.update({"__builtins__": __builtins__, "__file__": filename})
    sys.modules["__main__"] = main
    sys.argv = [filename]
    try:
        code = compile(source, filename, "exec")
        del source
        exec(code, main.__dict__)
    except SystemExit:
        raise
    except BaseException as exc:  # report like the interpreter would, minus our own frames
        if isinstance(exc, MemoryError):
            main.__dict__.clear()
        exc = exc.with_traceback(_user_frames(exc.__traceback__))
        sys.excepthook(type(exc), exc, exc.__traceback__)
        raise SystemExit(1) from None


def _run_user_code_and_exit(source: str, filename: str) -> None:
    """Run the program, then end the process as the interpreter would end it (``Py_FinalizeEx``):
    wait for non-daemon threads, run atexit callbacks, flush stdio (exit code 120 if stdout
    cannot be), let ``__main__``'s objects go (their ``__del__`` runs), flush again. What it
    skips is tearing down every module and freeing the heap, which in a child forked from the
    server would copy every page of the server's memory: about a third of a pooled run's CPU.
    """
    try:
        _run_user_code(source, filename)
        code = 0
    except SystemExit as exc:
        code = _system_exit_code(exc)
    try:
        threading = sys.modules.get("threading")
        if threading is not None:
            threading._shutdown()
        import atexit

        atexit._run_exitfuncs()
        flushed = _flush_std_files()
        main = sys.modules.get("__main__")
        if main is not None:  # like _PyModule_ClearDict: underscore names first, values to None
            namespace = main.__dict__
            for first in (True, False):
                for name in [k for k in namespace if isinstance(k, str) and k != "__builtins__"]:
                    if not first or name.startswith("_"):
                        namespace[name] = None
        import gc

        gc.collect()  # the server's objects are frozen: this visits the program's only
        if not (_flush_std_files() and flushed):
            code = 120
    finally:
        os._exit(code & 0xFF)


def _system_exit_code(exc: SystemExit) -> int:
    """The exit status the interpreter gives an uncaught SystemExit (printing a non-int code)."""
    code = exc.code
    if code is None:
        return 0
    if isinstance(code, int):
        return code if -(1 << 63) <= code < (1 << 63) else -1
    try:
        print(code, file=sys.stderr)
    except Exception:
        pass
    return 1


def _flush_std_files() -> bool:
    """Flush sys.stdout and sys.stderr; False when stdout could not be flushed."""
    ok = True
    for name in ("stdout", "stderr"):
        stream = getattr(sys, name, None)
        if stream is None or getattr(stream, "closed", True):
            continue
        try:
            stream.flush()
        except Exception:
            if name == "stdout":
                sys.unraisablehook(sys.UnraisableHookArgs((*sys.exc_info(), None, stream)))
                ok = False
    return ok


def _user_frames(tb: Any) -> Any:
    own = os.path.abspath(__file__)
    while tb is not None and tb.tb_frame.f_code.co_filename == own:
        tb = tb.tb_next
    return tb

