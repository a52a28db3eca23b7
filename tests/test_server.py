"""The warm server with real processes: same runs as in-process, signals, failures, concurrency, other users.

Every test gets a private runtime directory (ZEXUS_BCACHE_RUNTIME_DIR) and cache, and stops every
server it started. Clients run as ``python -m zexus_bcache.client`` (what the console script calls).
"""

from __future__ import annotations

import ast
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from zexus_bcache import serverlink

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "corpus"
PROGRAMS = ["01_recursion_factorial", "16_strings_split_join", "25_try_catch_throw", "31_algo_sorting",
            "42_strings_ciphers_encoding"]  # fmt: skip
HEAVY = ("click", "rich", "sqlalchemy", "alembic", "zexus")
TIMEOUT = 120

pytestmark = pytest.mark.skipif(not serverlink.supported(), reason="the server needs Linux (SCM_RIGHTS, SO_PEERCRED)")


@pytest.fixture
def env(tmp_path: Path) -> Iterator[dict[str, str]]:
    """An environment with its own runtime directory (short: AF_UNIX paths are limited) and cache."""
    runtime = tempfile.mkdtemp(prefix="zxs-")
    os.chmod(runtime, 0o700)
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    e = dict(os.environ)
    e.pop(serverlink.ENV_SWITCH, None)
    e.update({serverlink.ENV_RUNTIME_DIR: runtime, "ZEXUS_BCACHE_PATH": str(cache / "bcache.db"),
              serverlink.ENV_IDLE: "120"})  # fmt: skip
    try:
        yield e
    finally:
        subprocess.run([sys.executable, "-m", "zexus_bcache.server", "stop"], env=e, capture_output=True, timeout=60)
        for pid_file in Path(runtime).glob("*.pid"):  # a server that did not stop (it should have): kill it
            _kill_server(int(pid_file.read_text()))
        shutil.rmtree(runtime, ignore_errors=True)


def _kill_server(pid: int) -> None:
    try:
        if b"zexus_bcache.server" in Path(f"/proc/{pid}/cmdline").read_bytes():
            os.kill(pid, signal.SIGKILL)
    except OSError:
        pass


def client(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zexus_bcache.client", *args], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT, cwd=kwargs.pop("cwd", ROOT), **kwargs)  # type: ignore[call-overload]  # fmt: skip


def server(command: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "zexus_bcache.server", command], env=env, capture_output=True,
                          text=True, timeout=TIMEOUT)  # fmt: skip


def servers(env: dict[str, str]) -> list[dict[str, str]]:
    """``server status`` as dicts (state, current, pid, served, running, ...)."""
    out = server("status", env).stdout
    return [dict(item.split("=", 1) for item in line.split()) for line in out.splitlines() if line.strip()]


def current(env: dict[str, str]) -> dict[str, str] | None:
    rows = [r for r in servers(env) if r.get("current") == "yes" and r.get("state") == "running"]
    return rows[0] if rows else None


def wait_for_server(env: dict[str, str], timeout: float = 60) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = current(env)
        if info:
            return info
        time.sleep(0.2)
    raise AssertionError(f"no server came up within {timeout} s: {servers(env)}")


def started(env: dict[str, str]) -> dict[str, str]:
    done = server("start", env)
    assert done.returncode == 0, done.stdout + done.stderr
    return wait_for_server(env)


def outcome(done: subprocess.CompletedProcess[str]) -> tuple[int, str, str]:
    return done.returncode, done.stdout, done.stderr


def in_process(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return client(["run", "--no-server", *args], env, **kwargs)


# ----------------------------------------------------------------------------------------- same runs


def test_first_and_second_runs_match_in_process(env: dict[str, str], tmp_path: Path) -> None:
    bad = tmp_path / "bad.zx"
    bad.write_text('print("before")\nif (true) {\n  print("x")\n', encoding="utf-8")
    uni = tmp_path / "unicode.zx"
    uni.write_text('let s = "héllo wörld ✓ 你好"\nprint(s)\nprint(len(s))\n', encoding="utf-8")
    files = [str(CORPUS / f"{name}.zx") for name in PROGRAMS] + [str(bad), str(uni)]
    want = {f: outcome(in_process([f], env)) for f in files}
    assert want[str(bad)][0] != 0, "a file with unbalanced braces should fail (the reference run)"

    first = client(["run", files[0]], env)  # no server yet: runs here and starts one
    assert outcome(first) == want[files[0]]
    before = int(wait_for_server(env)["served"])
    for round_ in ("first through the server (cache miss in the child)", "second (cache hit)"):
        for f in files:
            assert outcome(client(["run", f], env)) == want[f], f"{round_}: {f}"
    info = current(env)
    assert info is not None and int(info["served"]) == before + 2 * len(files), servers(env)


def test_args_stdin_and_cwd_reach_the_program(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "echo.zx"
    prog.write_text('print(__ARGS__)\nlet line = input()\nprint("got " + line)\n', encoding="utf-8")
    started(env)
    args = ["run", str(prog), "alpha", "--beta", "gamma delta", "ünï"]
    want = in_process(args[1:], env, input="from stdin ✓\n", cwd=tmp_path)
    got = client(args, env, input="from stdin ✓\n", cwd=tmp_path)
    assert outcome(got) == outcome(want)
    assert "got from stdin ✓" in got.stdout and "gamma delta" in got.stdout
    assert int(wait_for_server(env)["served"]) == 1


def test_a_program_read_from_dev_fd(env: dict[str, str], tmp_path: Path) -> None:
    source = (CORPUS / "01_recursion_factorial.zx").read_bytes()
    started(env)
    r, w = os.pipe()
    os.write(w, source)  # fits the pipe's buffer
    os.close(w)
    try:
        got = client(["run", f"/dev/fd/{r}"], env, pass_fds=(r,))
    finally:
        os.close(r)
    want = in_process([str(CORPUS / "01_recursion_factorial.zx")], env)
    assert got.returncode == want.returncode == 0, got.stderr
    assert got.stdout == want.stdout
    assert int(wait_for_server(env)["served"]) == 1


# --------------------------------------------------------------------------------------- signals


def _children(pid: int) -> set[int]:
    try:
        return {int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()}
    except OSError:
        return set()


def _forked(pid: int, timeout: float = 60.0) -> set[int]:
    """The server's children once it has forked one for a run (empty if it did not within timeout)."""
    deadline = time.monotonic() + timeout
    while not _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return _children(pid)


def test_ctrl_c_kills_the_child_and_exits_130(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "forever.zx"
    prog.write_text("let i = 0\nwhile (true) {\n  i = i + 1\n}\n", encoding="utf-8")
    pid = int(started(env)["pid"])
    proc = subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", str(prog)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
    try:
        children = _forked(pid)
        assert children, "the server never forked a child for the run"
        time.sleep(0.3)  # into the loop
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGINT)  # a second Ctrl-C kills it outright
            proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == 130
    deadline = time.monotonic() + 10
    while children & _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not children & _children(pid), "the child still runs"
    assert all(not Path(f"/proc/{c}").exists() or b"Z" in _state(c) for c in children)


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().split(b")")[-1].split()[0]
    except OSError:
        return b"Z"


def test_sigterm_to_the_client_ends_the_run_as_it_would_end_in_process(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "forever.zx"
    prog.write_text("while (true) {\n}\n", encoding="utf-8")
    pid = int(started(env)["pid"])
    proc = subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", str(prog)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    try:
        children = _forked(pid)
        assert children
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()
    assert proc.returncode == -signal.SIGTERM  # relayed; the child died of it, and so does the client
    deadline = time.monotonic() + 10
    while children & _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not children & _children(pid)


def test_a_client_that_ignores_ctrl_c_runs_a_child_that_ignores_it(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "loop.zx"
    prog.write_text('let i = 0\nwhile (i < 30000) {\n  i = i + 1\n}\nprint("done " + string(i))\n', encoding="utf-8")
    pid = int(started(env)["pid"])
    ignore = lambda: signal.signal(signal.SIGINT, signal.SIG_IGN)  # noqa: E731  (nohup, a background job)
    proc = subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", str(prog)], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, preexec_fn=ignore)  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while not _children(pid) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.02)
        running = _children(pid)
        proc.send_signal(signal.SIGINT)
        for child in running:  # the child itself ignores it too, as an in-process run would
            try:
                os.kill(child, signal.SIGINT)
            except ProcessLookupError:
                pass
        out, err = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert running, "the run ended before it could be interrupted"
    assert (proc.returncode, out) == (0, "done 30000\n"), err
    assert int(current(env)["served"]) == 1  # type: ignore[index]


def test_a_client_killed_outright_takes_its_run_with_it(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "forever.zx"
    prog.write_text("while (true) {\n}\n", encoding="utf-8")
    pid = int(started(env)["pid"])
    proc = subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", str(prog)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    children = _forked(pid)
    assert children
    proc.kill()
    proc.wait(timeout=10)
    deadline = time.monotonic() + 10
    while _children(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not _children(pid)


# -------------------------------------------------------------------------------------- failures


def test_a_killed_server_costs_one_warning_and_is_replaced(env: dict[str, str]) -> None:
    prog = str(CORPUS / "16_strings_split_join.zx")
    want = outcome(in_process([prog], env))
    pid = int(started(env)["pid"])
    os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    code, out, err = outcome(client(["run", prog], env))
    assert (code, out) == want[:2]
    warnings = [line for line in err.splitlines() if "server" in line and "warning" in line]
    assert len(warnings) == 1, err
    assert err.replace(warnings[0] + "\n", "", 1) == want[2]
    info = wait_for_server(env)
    assert int(info["pid"]) != pid
    assert outcome(client(["run", prog], env)) == want
    assert int(current(env)["served"]) == 1  # type: ignore[index]


def test_runs_outlive_a_killed_server_and_its_lock(env: dict[str, str], tmp_path: Path) -> None:
    prog = tmp_path / "forever.zx"
    prog.write_text('print("started")\nwhile (true) {\n}\n', encoding="utf-8")
    pid = int(started(env)["pid"])
    proc = subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", str(prog)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        children = _forked(pid)
        assert children
        os.kill(pid, signal.SIGKILL)
        # The running child does not hold the server's lock: the next run sees a dead server and starts one.
        other = str(CORPUS / "01_recursion_factorial.zx")
        code, out, err = outcome(client(["run", other], env))
        assert (code, out) == outcome(in_process([other], env))[:2]
        assert "server died" in err
        assert int(wait_for_server(env)["pid"]) != pid
        proc.send_signal(signal.SIGINT)  # no server to relay it: the client signals its child itself
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    deadline = time.monotonic() + 10
    while any(Path(f"/proc/{c}").exists() and _state(c) != b"Z" for c in children) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(Path(f"/proc/{c}").exists() and _state(c) != b"Z" for c in children)


def test_a_server_of_another_setup_is_not_used(env: dict[str, str]) -> None:
    prog = str(CORPUS / "01_recursion_factorial.zx")
    other = dict(env, ZEXUS_VM_WARNINGS="all")  # zexus reads it at import: another server's business
    started(other)
    want = outcome(in_process([prog], env))
    assert outcome(client(["run", prog], env)) == want
    rows = servers(env)
    foreign = [r for r in rows if r["state"] == "running" and r["current"] == "no"]
    assert len(foreign) == 1 and foreign[0]["served"] == "0" and foreign[0]["token"] == "other"


def test_a_stale_server_on_our_socket_is_refused_and_stops(env: dict[str, str]) -> None:
    prog = str(CORPUS / "01_recursion_factorial.zx")
    digest = _digest(env)
    other = dict(env, ZEXUS_VM_WARNINGS="all")
    stale = subprocess.Popen([sys.executable, "-P", "-m", "zexus_bcache.server", "serve", "--digest", digest],
                             env=other, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        sock = Path(env[serverlink.ENV_RUNTIME_DIR]) / f"s-{digest}.sock"
        deadline = time.monotonic() + 60
        while not sock.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert sock.exists()
        want = outcome(in_process([prog], env))
        code, out, err = outcome(client(["run", prog], env))
        assert (code, out) == want[:2]  # run in-process, the same program
        # Without a warning, unless the stale server stopped before it could answer (a race on a
        # loaded machine): then the one warning a server failure gives.
        assert err == want[2] or (err.count("\n") == 1 and err.startswith("warning: zexus_bcache: server:")), err
        assert stale.wait(timeout=30) == 0  # it knows it is no use here and stops
    finally:
        if stale.poll() is None:
            stale.kill()
            stale.wait()


def _digest(env: dict[str, str]) -> str:
    code = "from zexus_bcache import serverlink; print(serverlink.Paths.current().digest)"
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          timeout=60, check=True).stdout.strip()  # fmt: skip


def test_an_unsafe_runtime_directory_is_refused(env: dict[str, str], tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    os.chmod(open_dir, 0o777)
    prog = str(CORPUS / "01_recursion_factorial.zx")
    want = outcome(in_process([prog], env))
    code, out, err = outcome(client(["run", prog], dict(env, **{serverlink.ENV_RUNTIME_DIR: str(open_dir)})))
    assert (code, out) == want[:2]
    assert "open to other users" in err and err.count("warning") == want[2].count("warning") + 1
    assert not list(open_dir.iterdir())


def test_a_server_whose_build_changed_on_disk_stops(env: dict[str, str]) -> None:
    quick = dict(env, ZEXUS_BCACHE_SERVER_BUILD_CHECK="0.2")
    pid = int(started(quick)["pid"])
    module = ROOT / "zexus_bcache" / "__main__.py"  # as an edit of an editable install would
    st = module.stat()
    os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    try:
        deadline = time.monotonic() + 30
        while Path(f"/proc/{pid}").exists() and _state(pid) != b"Z" and time.monotonic() < deadline:
            time.sleep(0.1)
        gone = not Path(f"/proc/{pid}").exists() or _state(pid) == b"Z"
    finally:
        os.utime(module, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert gone, "the server of the old build still runs"


def test_switched_off_runs_start_no_server(env: dict[str, str]) -> None:
    prog = str(CORPUS / "01_recursion_factorial.zx")
    want = outcome(in_process([prog], env))
    assert outcome(client(["run", prog], dict(env, ZEXUS_BCACHE_SERVER="0"))) == want
    time.sleep(1)
    assert not list(Path(env[serverlink.ENV_RUNTIME_DIR]).glob("*.sock"))


def test_an_idle_server_exits_by_itself(env: dict[str, str]) -> None:
    quick = dict(env, **{serverlink.ENV_IDLE: "1"})
    pid = int(started(quick)["pid"])
    deadline = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists() and _state(pid) != b"Z" and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not Path(f"/proc/{pid}").exists() or _state(pid) == b"Z"
    assert not list(Path(env[serverlink.ENV_RUNTIME_DIR]).glob("*.sock"))


# ----------------------------------------------------------------------------------- concurrency


def test_eight_clients_at_once(env: dict[str, str]) -> None:
    files = [str(CORPUS / f"{PROGRAMS[i % len(PROGRAMS)]}.zx") for i in range(8)]
    want = {f: outcome(in_process([f], env)) for f in set(files)}
    started(env)
    procs = [subprocess.Popen([sys.executable, "-m", "zexus_bcache.client", "run", f], env=env, cwd=ROOT,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for f in files]  # fmt: skip
    try:
        results = [p.communicate(timeout=TIMEOUT) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    for f, p, (out, err) in zip(files, procs, results, strict=True):
        assert (p.returncode, out, err) == want[f], f
    assert int(current(env)["served"]) == 8  # type: ignore[index]


# ----------------------------------------------------------------------------------- other users


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user (setuid)")
def test_a_client_of_another_uid_is_refused(env: dict[str, str]) -> None:
    info = started(env)
    runtime = Path(env[serverlink.ENV_RUNTIME_DIR])
    sock = runtime / f"s-{info['digest']}.sock"
    nobody = 65534
    assert _as_user(nobody, str(sock)) == "PermissionError", "the private directory keeps other users out"
    # Even with the directory and socket opened up by mistake, the server checks the peer's uid.
    os.chmod(runtime, 0o711)
    os.chmod(sock, 0o666)
    try:
        assert _as_user(nobody, str(sock)) == "R refused: another user"
    finally:
        os.chmod(runtime, 0o700)
        os.chmod(sock, 0o600)
    assert current(env)["served"] == "0"  # type: ignore[index]


def _as_user(uid: int, path: str) -> str:
    """What a process of uid gets when it asks the server at path to run a program."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: no pytest machinery, just the socket
        try:
            os.close(r)
            os.setgid(uid)
            os.setuid(uid)
            answer = "no answer"
            try:
                with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
                    s.settimeout(10)
                    s.connect(path)
                    try:
                        s.sendall(serverlink.pack([b"run", b"x", b"/", b"22", b"", b"-;-;-", b"0", b"", b"zx", b"0"]))
                    except BrokenPipeError:
                        pass  # the server answered and hung up before reading a byte: its answer is waiting
                    answer = s.recv(200).decode().strip() or "closed"
            except PermissionError:
                answer = "PermissionError"
            except OSError as exc:
                answer = type(exc).__name__
            os.write(w, answer.encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        out = f.read().decode()
    os.waitpid(pid, 0)
    return out


# ------------------------------------------------------------------------------------------ light


def test_the_client_imports_nothing_heavy(env: dict[str, str]) -> None:
    started(env)
    prog = str(CORPUS / "01_recursion_factorial.zx")
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "zexus_bcache.client", "run", prog], env=env,
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)  # fmt: skip
    assert done.returncode == 0, done.stderr
    imported = {line.rsplit("|", 1)[1].strip() for line in done.stderr.splitlines() if line.startswith("import time:")}
    assert "zexus_bcache.serverlink" in imported
    heavy = sorted(m for m in imported if m.split(".")[0] in HEAVY)
    assert not heavy, f"the client imported {heavy}"
    assert current(env)["served"] == "1"  # type: ignore[index]


def test_every_setting_zexus_reads_at_import_is_in_the_token() -> None:
    """Scan zexus for os.environ / os.getenv outside functions: each variable must be in the token."""
    import zexus

    found: set[str] = set()
    for path in Path(zexus.__file__).parent.rglob("*.py"):
        try:
            tree = ast.parse(path.read_text(encoding="utf-8", errors="replace"))
        except SyntaxError:
            continue
        found |= _import_time_env_reads(tree)
    assert found, "the scan found nothing: it no longer sees zexus's reads"
    assert found <= set(serverlink.ZEXUS_IMPORT_ENV), found - set(serverlink.ZEXUS_IMPORT_ENV)
    for name in serverlink.ZEXUS_IMPORT_ENV:
        assert f"{name}=" in serverlink.token({name: "x"})


def _import_time_env_reads(node: ast.AST) -> set[str]:
    out: set[str] = set()
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(child, ast.Call) and child.args and isinstance(child.args[0], ast.Constant):
            func = ast.unparse(child.func)
            if func in ("os.environ.get", "os.getenv", "environ.get", "getenv"):
                out.add(str(child.args[0].value))
        is_environ = isinstance(child, ast.Subscript) and ast.unparse(child.value) in ("os.environ", "environ")
        if is_environ and isinstance(child.slice, ast.Constant):  # type: ignore[attr-defined]
            out.add(str(child.slice.value))  # type: ignore[attr-defined]
        out |= _import_time_env_reads(child)
    return out
