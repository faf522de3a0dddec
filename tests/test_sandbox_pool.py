"""Tests for the sandbox's pool of forked children (rlzoo.sandbox, "pool server").

The hostile programs of tests/test_sandbox.py run on both paths there. Here: the two paths agree
on how a program ends (exit codes, atexit, __del__, threads, unflushed output) and on the layers
they report; a program cannot see or write to any fd of the server, nor signal it; a server that
died is replaced; a forked caller starts its own server; the servers stop when their caller
exits; the old path is the fallback when no server can start.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import subprocess
import sys
import time

import pytest

from rlzoo import sandbox
from rlzoo.sandbox import ExecResult, run_python, sandbox_layers


def _on_path(code: str, pool: bool, **limits: object) -> ExecResult:
    saved = sandbox.USE_POOL
    sandbox.USE_POOL = pool
    try:
        return sandbox._execute(code, sandbox._Limits(**{"timeout_s": 5.0, **limits}))
    finally:
        sandbox.USE_POOL = saved


def _server_pid(site_packages: bool = False) -> int:
    return sandbox._pool_servers[site_packages].proc.pid


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


ENDINGS = {
    "falls off the end": "print('done', end='')",  # no newline: flushed at exit
    "sys.exit(int)": "import sys\nprint('a')\nsys.exit(3)",
    "sys.exit(str)": "import sys\nsys.exit('bad input')",
    "sys.exit(300)": "import sys\nsys.exit(300)",  # 300 & 0xFF
    "sys.exit(None)": "import sys\nsys.exit()",
    "exception": "def f():\n    raise ValueError('no')\nf()",
    "atexit": "import atexit\natexit.register(print, 'at exit')\nprint('body')",
    "atexit raises": "import atexit\natexit.register(lambda: 1 / 0)\nprint('body')",
    "__del__ at exit": "class A:\n    def __del__(self):\n        print('del', flush=True)\na = A()\n",
    "os._exit drops buffered output": "import os\nprint('lost')\nos._exit(4)",
    "stdout closed": "import sys\nprint('x')\nsys.stdout.close()",
    "stdin is empty": "import sys\nprint(repr(sys.stdin.read()), sys.stdin.isatty())",
    "stdio objects": (
        "import sys\n"
        "for s in (sys.stdin, sys.stdout, sys.stderr):\n"
        "    print(s.name, s.mode, s.encoding, s.errors, s.line_buffering, s.write_through,"
        " s.buffer.raw.name, s is getattr(sys, '__' + s.name.strip('<>') + '__'))\n"
    ),
    "argv, cwd, environ": (
        "import os, sys\nprint(sys.argv[0] == os.path.join(os.getcwd(), 'program.py'),"
        " dict(os.environ) | {'HOME': ''}, os.environ['HOME'] == os.getcwd())"
    ),
    "interpreter state": "import sys\nprint(sys.path, sys.flags, sys.argv, __name__)",
    "session and umask": "import os\nprint(os.getsid(0) == os.getpgid(0), oct(os.umask(0o22)))",
}


def _same_in_any_run(result: ExecResult) -> ExecResult:
    """The result minus what differs between any two runs: work folder names, addresses."""

    def scrub(text: str) -> str:
        text = re.sub(r"/tmp/rlzoo_sandbox_\w+", "<workdir>", text)
        return re.sub(r"0x[0-9a-f]+", "<address>", text)

    return dataclasses.replace(result, stdout=scrub(result.stdout), stderr=scrub(result.stderr))


@pytest.mark.parametrize("name", sorted(ENDINGS))
def test_pool_and_spawn_end_programs_alike(name):
    code = ENDINGS[name]
    pooled, spawned = _on_path(code, pool=True), _on_path(code, pool=False)
    assert _same_in_any_run(pooled) == _same_in_any_run(spawned)


def test_pool_and_spawn_agree_on_the_edge_cases_above():
    """The ENDINGS give the results a fresh interpreter gives (checked by hand once, kept here)."""
    assert _on_path(ENDINGS["sys.exit(300)"], pool=True).error == "exit code 44"
    assert _on_path(ENDINGS["sys.exit(str)"], pool=True).error == "exit code 1: bad input"
    atexit_run = _on_path(ENDINGS["atexit"], pool=True)
    assert atexit_run.stdout == "body\nat exit\n" and atexit_run.ok
    assert _on_path(ENDINGS["__del__ at exit"], pool=True).stdout == "del\n"
    assert _on_path(ENDINGS["os._exit drops buffered output"], pool=True).stdout == ""


def test_both_paths_report_the_same_layers():
    saved = sandbox.USE_POOL
    try:
        sandbox.USE_POOL = False
        spawned = sandbox_layers()
        sandbox.USE_POOL = True
        pooled = sandbox_layers()
    finally:
        sandbox.USE_POOL = saved
    assert pooled == spawned and "rlimits" in pooled


FD_PROBE = (
    "import os\n"
    "fds = {}\n"
    "for name in os.listdir('/proc/self/fd'):\n"
    "    try:\n"
    "        fds[int(name)] = os.readlink('/proc/self/fd/' + name)\n"
    "    except OSError:\n"
    "        pass\n"
    "print(sorted(fds.items()))\n"
    "written = []\n"
    "for fd in range(3, 1024):\n"
    "    try:\n"
    "        os.write(fd, b'x')\n"
    "        written.append(fd)\n"
    "    except OSError:\n"
    "        pass\n"
    "print(written)\n"
    "try:\n"
    "    print(os.listdir('/proc/{server}/fd'))\n"
    "except OSError as exc:\n"
    "    print('denied', type(exc).__name__)\n"
    "try:\n"
    "    os.kill({server}, 9)\n"
    "except Exception as exc:\n"
    "    print('kill failed', type(exc).__name__)\n"
)


@pytest.mark.parametrize("audit_hook", [True, False])
def test_a_program_cannot_reach_the_servers_fds_or_signal_it(audit_hook):
    if not audit_hook and not {"uid", "pid_ns"} & sandbox_layers():
        pytest.skip("same uid and pid namespace as the server: only the audit hook stops it")
    run_python("print(1)")  # make sure the server runs
    server = _server_pid()
    result = _on_path(FD_PROBE.replace("{server}", str(server)), pool=True, audit_hook=audit_hook)
    assert result.ok, result
    fds_line, written_line, server_fds_line, kill_line = result.stdout.splitlines()
    fds = dict(eval(fds_line))  # noqa: S307  (our own repr of a list of pairs)
    pipes = {fd for fd, target in fds.items() if target.startswith("pipe:")}
    assert pipes <= {1, 2}
    assert not [t for t in fds.values() if t.startswith(("socket:", "anon_inode:"))], fds
    assert eval(written_line) == []  # noqa: S307  (no fd past stderr takes a write)
    assert server_fds_line.startswith("denied")
    assert kill_line.startswith("kill failed")
    assert _server_pid() == server and _alive(server)
    assert run_python("print(2)").stdout == "2\n"
    assert _server_pid() == server  # the same server served the next program


def test_a_killed_server_is_replaced():
    assert run_python("print(1)").ok
    old = _server_pid()
    os.kill(old, signal.SIGKILL)
    sandbox._pool_servers[False].proc.wait()
    assert run_python("print(2)") == ExecResult(stdout="2\n", ok=True, error=None, stderr="")
    assert _server_pid() != old


def test_a_server_dying_under_a_program_ends_the_program():
    assert run_python("print(1)").ok
    server = sandbox._pool_servers[False]
    killer = __import__("threading").Timer(0.5, os.kill, (server.proc.pid, signal.SIGKILL))
    killer.start()
    start = time.monotonic()
    result = run_python("import time\ntime.sleep(30)", timeout_s=10)
    killer.join()
    assert (result.ok, result.error) == (False, "sandbox server died")
    assert time.monotonic() - start < 5  # the child died with its server, not at the timeout
    assert run_python("print(3)").stdout == "3\n"


def test_a_forked_caller_gets_its_own_server():
    assert run_python("print(1)").ok
    parent_server = _server_pid()
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its result and its server, then leave without cleanup
        try:
            result = run_python("print(6 * 7)")
            os.write(write_end, f"{result.stdout.strip()} {_server_pid()}".encode())
            sandbox.close_pool()
        finally:
            os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as handle:
        answer, child_server = handle.read().split()
    os.waitpid(pid, 0)
    assert answer == "42"
    assert int(child_server) != parent_server
    assert _server_pid() == parent_server and _alive(parent_server)
    assert run_python("print(5)").stdout == "5\n"


def test_servers_stop_when_their_caller_exits():
    script = (
        "from rlzoo import sandbox\n"
        "assert sandbox.run_python('print(1)').ok\n"
        "print(sandbox._pool_servers[False].proc.pid)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    server = int(out.stdout)
    deadline = time.monotonic() + 5
    while _alive(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _alive(server)


def test_the_old_path_is_the_fallback_when_no_server_starts(monkeypatch):
    sandbox.close_pool()

    def cannot_start(self, site_packages):
        raise OSError("no server here")

    monkeypatch.setattr(sandbox._PoolServer, "__init__", cannot_start)
    monkeypatch.setattr(sandbox, "_pool_unavailable", {})
    assert run_python("print(7)") == ExecResult(stdout="7\n", ok=True, error=None, stderr="")
    assert not sandbox._pool_servers and False in sandbox._pool_unavailable


def test_the_switch_keeps_the_old_path(monkeypatch):
    sandbox.close_pool()
    monkeypatch.setattr(sandbox, "USE_POOL", False)
    assert run_python("print(8)").stdout == "8\n"
    assert not sandbox._pool_servers
    script = "from rlzoo import sandbox\nprint(sandbox.USE_POOL)"
    env = {**os.environ, "RLZOO_SANDBOX_POOL": "0"}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.stdout.strip() == "False"


def test_site_packages_has_its_own_server():
    pytest.importorskip("sympy")
    code = "import sympy\nprint(sympy.Integer(2) ** 10)"
    assert run_python(code, site_packages=True).stdout == "1024\n"
    assert not run_python("import sympy").ok  # the -S server has no site-packages
    assert _server_pid(True) != _server_pid(False)
