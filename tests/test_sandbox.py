"""Tests for rlzoo.sandbox: normal runs, failures, and hostile programs that must be contained.

Hostile programs are only run with the OS layers that make them safe: the audit hook blocks
fork/kill/writes/sockets first, and the "OS layers alone" variants (audit hook switched off)
run only where ``sandbox_layers()`` reports the kernel mechanism that contains them. As root
the kernel ignores RLIMIT_NPROC, so the hook-less fork bomb needs the private-uid layer.

Every test that runs a program runs twice: once with the child forked by the pool server, once
with a fresh interpreter per program (``sandbox.USE_POOL``); both must give the same results.
"""

from __future__ import annotations

import os
import signal
import socket
import time
import uuid

import pytest

from rlzoo import sandbox
from rlzoo.sandbox import ExecResult, run_many, run_python, sandbox_layers

AS_ROOT = os.geteuid() == 0
# not about how the child is started: run once, on the default path
PATH_INDEPENDENT = {
    "test_invalid_limits_are_rejected",
    "test_audit_hook_policy_in_process",
    "test_run_many_keeps_order_bounds_concurrency_and_time",  # the thread pool; slow
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.function.__name__ not in PATH_INDEPENDENT:
        metafunc.parametrize("start_path", ["pool", "spawn"], indirect=True)


@pytest.fixture(autouse=True)
def start_path(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """How children are started: forked by the pool server, or spawned one interpreter each."""
    path = getattr(request, "param", None)
    if path is not None:
        monkeypatch.setattr(sandbox, "USE_POOL", path == "pool")
    return path or ("pool" if sandbox.USE_POOL else "spawn")


@pytest.fixture(scope="module")
def layers() -> frozenset[str]:
    found = sandbox_layers()
    assert found, "the layer probe itself failed"
    return found


def _run_os_only(code: str, **limits: object) -> ExecResult:
    """Run with the audit hook off, so only the kernel-enforced layers apply."""
    return sandbox._execute(code, sandbox._Limits(audit_hook=False, **limits))


IDENTIFY = (
    "import os\n"
    "print(os.getpid(), os.getuid(), os.readlink('/proc/self/ns/pid'), flush=True)\n"
)


def _live_leftovers(first_line: str, wait_s: float = 2.0) -> list[int]:
    """Live processes left behind by a program that printed IDENTIFY's line first.

    They are found by pid namespace when the program had its own, by uid when it ran under a
    private uid, and by session / process group (its pid) otherwise. Waits a little, since
    killed processes take a moment to go.
    """
    pid_text, uid_text, pid_ns = first_line.split()
    own_ns = os.readlink("/proc/self/ns/pid") != pid_ns
    uid = int(uid_text) if int(uid_text) != os.getuid() else None
    session = None if own_ns else int(pid_text)
    deadline = time.monotonic() + wait_s
    while True:
        found = [
            pid
            for pid, stat in _proc_stats()
            if _belongs(pid, stat, pid_ns if own_ns else None, uid, session)
        ]
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def _proc_stats() -> list[tuple[int, list[str]]]:
    stats = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                stats.append((int(name), handle.read().rsplit(")", 1)[1].split()))
        except OSError:
            continue
    return stats


def _belongs(
    pid: int, stat: list[str], pid_ns: str | None, uid: int | None, session: int | None
) -> bool:
    state, pgrp, sid = stat[0], int(stat[2]), int(stat[3])
    if state in ("Z", "X"):
        return False
    if session is not None and session in (pgrp, sid):
        return True
    if pid_ns is not None:
        try:
            if os.readlink(f"/proc/{pid}/ns/pid") == pid_ns:
                return True
        except OSError:
            pass
    return uid is not None and sandbox._status_matches(str(pid), str(uid))


# ---------------------------------------------------------------------------------------
# Ordinary programs
# ---------------------------------------------------------------------------------------


def test_prints_the_answer():
    result = run_python("import math\nprint(sum(range(10)), math.comb(5, 2))", timeout_s=5)
    assert result == ExecResult(stdout="45 10\n", ok=True, error=None, stderr="")


def test_syntax_error_is_reported():
    result = run_python("def f(:\n    pass\n", timeout_s=5)
    assert not result.ok
    assert result.error.startswith("exit code 1: SyntaxError")


def test_exception_keeps_earlier_output_and_names_the_error():
    result = run_python("print('before')\nprint(1 / 0)\n", timeout_s=5)
    assert not result.ok
    assert result.stdout == "before\n"
    assert result.error == "exit code 1: ZeroDivisionError: division by zero"
    assert "program.py" in result.stderr and "sandbox.py" not in result.stderr


def test_nonzero_exit_code():
    result = run_python("import sys\nsys.exit(3)", timeout_s=5)
    assert (result.ok, result.error) == (False, "exit code 3")


def test_files_inside_the_work_folder_work_and_the_folder_is_removed():
    code = (
        "import os\n"
        "with open('notes.txt', 'w') as f:\n    f.write('hello')\n"
        "os.mkdir('sub'); os.rename('notes.txt', 'sub/n.txt')\n"
        "print(os.getcwd()); print(open('sub/n.txt').read())\n"
    )
    result = run_python(code, timeout_s=5)
    assert result.ok, result
    workdir, content = result.stdout.split()
    assert content == "hello"
    assert os.path.basename(workdir).startswith("rlzoo_sandbox_")
    assert not os.path.exists(workdir)


def test_file_size_limit():
    result = run_python("open('big', 'wb').write(b'x' * (3 * 2**20))", timeout_s=5, max_file_mb=1)
    assert not result.ok
    assert "File too large" in result.error


def test_invalid_limits_are_rejected():
    with pytest.raises(ValueError):
        run_python("print(1)", timeout_s=0)
    with pytest.raises(ValueError):
        run_many(["print(1)"], max_workers=0)


def test_layers_reported(layers):
    assert {"rlimits", "audit_hook"} <= layers
    if AS_ROOT:  # root must never run user code as root: the sandbox fails closed otherwise
        assert "uid" in layers


def test_sympy_with_site_packages():
    pytest.importorskip("sympy")
    code = "import sympy\nx = sympy.symbols('x')\nprint(sympy.solve(x**2 - 4, x))"
    result = run_python(code, timeout_s=20, site_packages=True)
    assert result.ok, result
    assert result.stdout == "[-2, 2]\n"
    assert not run_python("import sympy", timeout_s=5).ok  # -S: no site-packages by default


# ---------------------------------------------------------------------------------------
# Limits: time, memory, output
# ---------------------------------------------------------------------------------------


def test_infinite_loop_times_out_promptly():
    start = time.monotonic()
    result = run_python("while True:\n    pass\n", timeout_s=1.0)
    elapsed = time.monotonic() - start
    assert (result.ok, result.error) == (False, "timeout")
    assert 0.9 <= elapsed < 2.5


def test_memory_bomb_fails_with_memory_error():
    code = "chunks = []\nwhile True:\n    chunks.append(' ' * 10**7)\n"
    result = run_python(code, timeout_s=5, memory_mb=256)
    assert not result.ok
    assert result.error.startswith("memory")


def test_huge_output_is_truncated_and_marked_failed():
    start = time.monotonic()
    result = run_python("while True:\n    print('x' * 999)\n", timeout_s=5, max_output_bytes=10_000)
    assert (result.ok, result.error) == (False, "output truncated")
    assert len(result.stdout) == 10_000
    assert time.monotonic() - start < 3  # killed at the cap, not at the timeout


# ---------------------------------------------------------------------------------------
# Hostile programs
# ---------------------------------------------------------------------------------------

FORK_BOMB = IDENTIFY + (
    "while True:\n"
    "    try:\n"
    "        os.fork()\n"
    "    except OSError:\n"
    "        pass\n"
)


def _assert_fork_bomb_contained(result: ExecResult) -> None:
    assert not result.ok
    assert _live_leftovers(result.stdout.splitlines()[0]) == []


def test_fork_bomb_is_contained():
    start = time.monotonic()
    result = run_python(FORK_BOMB, timeout_s=1.5)
    assert time.monotonic() - start < 4
    assert result.error == "timeout"
    _assert_fork_bomb_contained(result)


def test_fork_bomb_is_contained_by_os_limits_alone(layers):
    if AS_ROOT and "uid" not in layers:
        pytest.skip("root without a private uid: the kernel would not enforce RLIMIT_NPROC")
    start = time.monotonic()
    result = _run_os_only(FORK_BOMB, timeout_s=1.5, max_processes=8)
    assert time.monotonic() - start < 4
    _assert_fork_bomb_contained(result)


def test_process_limit_is_enforced_by_the_kernel(layers):
    if AS_ROOT and "uid" not in layers:
        pytest.skip("root without a private uid: the kernel would not enforce RLIMIT_NPROC")
    code = (
        "import os, time\n"
        "made = 0\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        if os.fork() == 0:\n"
        "            time.sleep(30)\n"
        "            os._exit(0)\n"
        "        made += 1\n"
        "    except OSError:\n"
        "        break\n"
        "print(made)\n"
    )
    result = _run_os_only(code, timeout_s=5, max_processes=4)
    assert result.ok, result
    assert int(result.stdout) <= 3  # 4 tasks in all, the program itself included


def test_subprocess_is_blocked():
    code = "import subprocess\nprint(subprocess.run(['echo', 'escaped'], capture_output=True))"
    result = run_python(code, timeout_s=5)
    assert not result.ok
    assert "escaped" not in result.stdout


def _escape_path() -> str:
    return os.path.join("/tmp", f"rlzoo_escape_{uuid.uuid4().hex}")


def test_writing_outside_the_work_folder_fails():
    target = _escape_path()
    code = f"with open({target!r}, 'w') as f:\n    f.write('escaped')\n"
    try:
        result = run_python(code, timeout_s=5)
        assert not result.ok
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


def test_symlink_escape_fails():
    target = _escape_path()
    code = f"import os\nos.symlink({target!r}, 'link')\nopen('link', 'w').write('escaped')\n"
    try:
        result = run_python(code, timeout_s=5)
        assert not result.ok
        assert not os.path.exists(target)
    finally:
        if os.path.lexists(target):
            os.remove(target)


def test_writing_outside_fails_by_os_layers_alone(layers):
    if "readonly_fs" not in layers:
        pytest.skip("no read-only mount namespace on this machine")
    target = _escape_path()
    try:
        result = _run_os_only(f"open({target!r}, 'w').write('escaped')", timeout_s=5)
        assert not result.ok
        assert "Read-only file system" in result.error
        assert not os.path.exists(target)
    finally:
        if os.path.exists(target):
            os.remove(target)


@pytest.mark.parametrize("how", ["os.remove", "shutil.rmtree", "os.rename"])
def test_deleting_a_file_outside_fails(tmp_path, how):
    victim = tmp_path / "keep_me" / "data.txt"
    victim.parent.mkdir()
    victim.write_text("precious")
    os.chmod(tmp_path, 0o755)
    calls = {
        "os.remove": f"import os\nos.remove({str(victim)!r})",
        "shutil.rmtree": f"import shutil\nshutil.rmtree({str(victim.parent)!r})",
        "os.rename": f"import os\nos.rename({str(victim)!r}, 'stolen.txt')",
    }
    result = run_python(calls[how], timeout_s=5)
    assert not result.ok
    assert victim.read_text() == "precious"


def test_deleting_outside_fails_by_os_layers_alone(layers):
    if not {"readonly_fs", "uid"} & layers:
        pytest.skip("neither a read-only mount namespace nor a private uid here")
    victim = _escape_path()
    with open(victim, "w") as handle:
        handle.write("precious")
    try:
        result = _run_os_only(f"import os\nos.remove({victim!r})", timeout_s=5)
        assert not result.ok
        assert os.path.exists(victim)
    finally:
        os.remove(victim)


def _listening_socket() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.setblocking(False)
    return server


def _assert_no_connection(server: socket.socket) -> None:
    with pytest.raises(BlockingIOError):
        server.accept()


def _connect_code(port: int) -> str:
    return (
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}), timeout=1)\n"
        "print('connected')\n"
    )


def test_opening_a_socket_fails():
    with _listening_socket() as server:
        result = run_python(_connect_code(server.getsockname()[1]), timeout_s=5)
        assert not result.ok
        assert "connected" not in result.stdout
        _assert_no_connection(server)
    assert not run_python("import socket\nsocket.socket()", timeout_s=5).ok


def test_network_blocked_by_os_layers_alone(layers):
    if "net" not in layers:
        pytest.skip("no private network namespace on this machine")
    with _listening_socket() as server:
        result = _run_os_only(_connect_code(server.getsockname()[1]), timeout_s=5)
        assert not result.ok
        assert "connected" not in result.stdout
        _assert_no_connection(server)


def _env_probe() -> str:
    """Prints the visible variables, then tries to read this test process's environment."""
    return (
        "import os\n"
        "print(sorted(os.environ))\n"
        "print(os.environ.get('RLZOO_SECRET'))\n"
        f"for pid in {{{os.getpid()}, os.getppid()}} - {{0}}:\n"
        "    try:\n"
        "        print(open(f'/proc/{pid}/environ').read())\n"
        "    except OSError as exc:\n"
        "        print('denied', type(exc).__name__)\n"
    )


def test_parent_environment_is_not_visible(monkeypatch):
    monkeypatch.setenv("RLZOO_SECRET", "s3cr3t-value-42")
    result = run_python(_env_probe(), timeout_s=5)
    assert result.ok, result
    lines = result.stdout.splitlines()
    assert lines[0] == "['HOME', 'LANG', 'PATH', 'PYTHONHASHSEED']"
    assert lines[1] == "None"
    assert lines[2:] and all(line.startswith("denied") for line in lines[2:])
    assert "s3cr3t-value-42" not in result.stdout


def test_parent_environment_hidden_by_os_layers_alone(monkeypatch, layers):
    if not {"uid", "private_proc"} & layers:
        pytest.skip("same uid and same /proc as the parent: only the audit hook hides it")
    monkeypatch.setenv("RLZOO_SECRET", "s3cr3t-value-42")
    result = _run_os_only(_env_probe(), timeout_s=5)
    assert result.ok, result
    assert "s3cr3t-value-42" not in result.stdout
    assert all(line.startswith("denied") for line in result.stdout.splitlines()[2:])


def _kill_parent_code() -> str:
    """Sends SIGKILL to this test process (by its real pid) and to getppid(), if nonzero."""
    return (
        "import os, signal\n"
        f"for pid in {{{os.getpid()}, os.getppid()}} - {{0}}:\n"
        "    os.kill(pid, signal.SIGKILL)\n"
        "print('sent')\n"
    )


def test_killing_the_parent_fails_and_parent_survives():
    result = run_python(_kill_parent_code(), timeout_s=5)
    # Had the signal been delivered, this test process would be dead by now.
    assert not result.ok
    assert "sent" not in result.stdout
    os.kill(os.getpid(), 0)


def test_killing_the_parent_fails_by_os_layers_alone(layers):
    if not {"uid", "pid_ns"} & layers:
        pytest.skip("same uid and pid namespace as the parent: only the audit hook stops it")
    result = _run_os_only(_kill_parent_code(), timeout_s=5)
    assert not result.ok
    assert "Operation not permitted" in result.error or "No such process" in result.error
    os.kill(os.getpid(), 0)


def test_audit_hook_policy_in_process(tmp_path):
    """The hook's decisions, checked by calling it directly (it is never installed here)."""
    root = tmp_path / "work"
    root.mkdir()
    (root / "out").symlink_to("/etc")
    hook = sandbox._make_audit_hook(str(root), own_pid=4242)
    write = os.O_WRONLY | os.O_CREAT
    allowed = [
        ("open", (str(root / "a.txt"), "w", write)),
        ("open", ("/etc/hostname", "r", os.O_RDONLY)),
        ("open", ("/dev/null", "w", write)),
        ("os.remove", (str(root / "a.txt"), -1)),
        ("os.kill", (4242, signal.SIGTERM)),
        ("import", ("json", None, None, None, None)),
    ]
    for event, args in allowed:
        hook(event, args)
    blocked = [
        ("open", ("/tmp/x_" + uuid.uuid4().hex, "w", write)),
        ("open", (str(root / "out" / "passwd"), "a", write)),
        ("open", (str(root / ".." / "x"), None, write)),
        ("open", ("/etc", None, os.O_RDONLY)),
        ("open", ("/proc/1/environ", "r", os.O_RDONLY)),
        ("os.rename", (str(root / "a"), "/tmp/b", -1, -1)),
        ("shutil.rmtree", ("/tmp", None)),
        ("os.kill", (1, signal.SIGKILL)),
        ("os.fork", ()),
        ("os.system", (b"true",)),
        ("socket.__new__", (None, 2, 1, 0)),
        ("ctypes.dlopen", ("libc.so.6",)),
    ]
    for event, args in blocked:
        with pytest.raises(PermissionError):
            hook(event, args)
    with pytest.raises(ImportError):
        hook("import", ("_posixsubprocess", None, None, None, None))


# ---------------------------------------------------------------------------------------
# Many programs
# ---------------------------------------------------------------------------------------


def test_run_many_keeps_order_bounds_concurrency_and_time():
    sleeper = "import time\nstart = time.time()\ntime.sleep(0.5)\nprint({i}, start, time.time())\n"
    codes = [sleeper.format(i=i) for i in range(7)] + ["while True:\n    pass\n"]
    # a generous timeout: on a loaded machine the interpreter's start-up counts against it; the
    # overlap of the measured spans below, not wall time, proves the programs ran in parallel
    results = run_many(codes, timeout_s=4.0, max_workers=2)
    assert [r.ok for r in results] == [True] * 7 + [False]
    assert results[-1].error == "timeout"
    spans = []
    for i, result in enumerate(results[:7]):
        index, begin, end = result.stdout.split()
        assert int(index) == i
        spans.append((float(begin), float(end)))
    running_at_starts = [sum(1 for b, e in spans if b <= begin < e) for begin, _ in spans]
    assert max(running_at_starts) == 2  # two really ran at once, never more than max_workers
