"""The warm server: zexus imported once, a fresh forked child per ``zexus-bcache run``.

sccache's server and Spring's preloader, for Zexus: a per-user process that has paid Python's
start-up and zexus's ~0.5 s import once (``runner.preload()``), listens on a Unix socket in a private
directory (see serverlink.py), and for each run forks a child that becomes the client's process
(server_child.py) and runs ``runner.main``. The server itself never runs user code and never opens the
cache: SQLite connections and threads must not cross a fork, so each child opens its own.

One process, one thread, one selector: the listening socket, a wake-up socket for signals, and per run
the client's connection (control bytes: ``I``/``T``/``H`` relay SIGINT/SIGTERM/SIGHUP to the child's
process group, ``K`` kills it; end of stream = the client is gone, the child is killed) and a pidfd
that becomes readable when the child exits. Answers are lines: ``P <pid>`` (started), ``E <code>`` or
``K <signal>`` (how it ended), ``R <why>`` (refused), ``O <key=value ...>`` (ping, stop).

Command line (for tests; ``zexus-bcache server start|stop|status`` calls the same functions):
``python -m zexus_bcache.server start|stop|status|serve``.
"""

from __future__ import annotations

import functools
import gc
import os
import selectors
import signal
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from . import __version__, server_child, serverlink
from .serverlink import Paths, Unavailable

CONTROL = {ord("I"): signal.SIGINT, ord("T"): signal.SIGTERM, ord("H"): signal.SIGHUP, ord("K"): signal.SIGKILL}
REQUEST_TIMEOUT_S = 5.0  # a client has this long to send its request once connected


@dataclass
class Job:
    """One running child and the client waiting for it."""

    pid: int
    pidfd: int
    conn: socket.socket | None


def log(message: str) -> None:
    """One line in the server's log (its stderr is the log file)."""
    print(f"[{time.strftime('%Y-%m-%d %H:%M:%S')} pid {os.getpid()}] {message}", file=sys.stderr, flush=True)


def seconds(name: str, default: float) -> float:
    """A duration setting from the environment (a bad value is logged and the default used)."""
    raw = os.environ.get(name, "").strip()
    try:
        return max(0.1, float(raw)) if raw else default
    except ValueError:
        log(f"{name}={raw!r} is not a number of seconds: using {default:g}")
        return default


class Server:
    """The accept / fork / reap loop of one token's server."""

    def __init__(self, paths: Paths, runner: ModuleType, lock_fd: int) -> None:
        self.paths = paths
        self.lock_fd = lock_fd  # held (flock) for the server's life; a child must not keep it held
        self.runner = runner
        self.idle_s = seconds(serverlink.ENV_IDLE, serverlink.DEFAULT_IDLE_S)
        self.check_s = seconds(serverlink.ENV_BUILD_CHECK, serverlink.DEFAULT_BUILD_CHECK_S)
        self.next_check = time.monotonic() + self.check_s
        self.jobs: dict[int, Job] = {}
        self.served = 0
        self.started = time.monotonic()
        self.last_activity = self.started
        self.stopping = False
        self.stop_signalled = False
        self.selector = selectors.DefaultSelector()
        self.listener: socket.socket | None = None
        self.inode = 0
        self.wake_r, self.wake_w = socket.socketpair()

    # -- life cycle ----------------------------------------------------------------------------

    def run(self) -> int:
        """Serve until idle for idle_s or stopped; 0 on a clean exit."""
        for s in (self.wake_r, self.wake_w):
            s.setblocking(False)
        signal.set_wakeup_fd(self.wake_w.fileno(), warn_on_full_buffer=False)
        for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(signum, self._on_signal)
        self.selector.register(self.wake_r, selectors.EVENT_READ, self._drain_wake)
        self._bind()
        log(f"serving {self.paths.socket} (idle exit after {self.idle_s:g} s)")
        try:
            while not (self.stopping and not self.jobs):
                if self.stop_signalled and not self.stopping:
                    self._stop("signal")
                self._check_build()
                now = time.monotonic()
                idle = self.last_activity + self.idle_s - now
                if idle <= 0 and not self.jobs and not self.stopping:
                    self._stop("idle")
                    continue
                timeout = self.next_check - now if self.jobs or self.stopping else min(idle, self.next_check - now)
                for key, _ in self.selector.select(max(0.0, timeout)):
                    try:
                        key.data()
                    except Exception as exc:  # one bad event must not end the server (nor the other runs)
                        log(f"internal error: {exc!r}")
        finally:
            self._unlink_socket()
            with _suppress():
                os.unlink(self.paths.pid)
        log(f"exit after {self.served} runs")
        return 0

    def _bind(self) -> None:
        with _suppress():
            os.unlink(self.paths.socket)  # a dead server's: we hold the lock, so no live one owns it
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listener.bind(self.paths.socket)
        os.chmod(self.paths.socket, 0o600)
        self.inode = os.stat(self.paths.socket).st_ino
        listener.listen(128)
        listener.setblocking(False)
        self.listener = listener
        self.selector.register(listener, selectors.EVENT_READ, self._accept)

    def _check_build(self) -> None:
        """An edited or upgraded zexus_bcache or zexus: no client will ask for this build again, so stop."""
        if time.monotonic() < self.next_check:
            return
        self.next_check = time.monotonic() + self.check_s
        if not self.stopping and serverlink.builds() not in self.paths.token:
            self._stop("zexus or zexus_bcache changed on disk: clients now start a server of the new build")

    def _stop(self, why: str) -> None:
        """Take no more requests; the loop ends once the running children are reaped."""
        if self.stopping:
            return
        log(f"stopping ({why}); {len(self.jobs)} runs still going")
        self.stopping = True
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()
            self.listener = None
        self._unlink_socket()

    def _unlink_socket(self) -> None:
        try:
            if os.stat(self.paths.socket).st_ino == self.inode:  # never a newer server's socket
                os.unlink(self.paths.socket)
        except OSError:
            pass

    def _on_signal(self, _signum: int, _frame: Any) -> None:
        self.stop_signalled = True  # the wake-up socket gets the loop out of select

    def _drain_wake(self) -> None:
        with _suppress():
            while self.wake_r.recv(512):
                pass

    # -- requests --------------------------------------------------------------------------------

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            conn, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        self.last_activity = time.monotonic()
        fds: list[int] = []
        try:
            conn.settimeout(REQUEST_TIMEOUT_S)
            uid = serverlink.peer_uid(conn)
            if uid != os.geteuid():
                log(f"refused a connection from uid {uid}")
                conn.sendall(b"R refused: another user\n")
                conn.close()
                return
            fields, fds = serverlink.read_request(conn)
            self._handle(conn, fields, fds)
        except (OSError, ValueError) as exc:
            log(f"bad request: {exc}")
            for fd in fds:
                with _suppress():
                    os.close(fd)
            conn.close()

    def _handle(self, conn: socket.socket, fields: list[bytes], fds: list[int]) -> None:
        kind = fields[0]
        if kind == b"run":
            request = server_child.Request.parse(fields[1:])
            if request.token != self.paths.token:
                # A client whose token names this socket but differs: this server is no use to it.
                conn.sendall(b"R stale: started for another Python, zexus, zexus_bcache or ZEXUS_* setting\n")
                for fd in fds:
                    os.close(fd)
                conn.close()
                self._stop("a client with another token")
                return
            self._fork(conn, request, fds)
            return
        for fd in fds:
            os.close(fd)
        if kind == b"ping":
            conn.sendall(self._info(fields[1] if len(fields) > 1 else b"").encode() + b"\n")
        elif kind == b"stop":
            conn.sendall(f"O stopping pid={os.getpid()} running={len(self.jobs)}\n".encode())
            self._stop("asked")
        else:
            conn.sendall(b"R unknown request\n")
        conn.close()

    def _info(self, token: bytes) -> str:
        match = "match" if token.decode("utf-8", "surrogateescape") == self.paths.token else "other"
        uptime = time.monotonic() - self.started
        return (f"O pid={os.getpid()} served={self.served} running={len(self.jobs)} uptime={uptime:.1f} "
                f"idle={self.idle_s:g} version={__version__} token={match} digest={self.paths.digest}")  # fmt: skip

    # -- children --------------------------------------------------------------------------------

    def _fork(self, conn: socket.socket, request: server_child.Request, fds: list[int]) -> None:
        sys.stdout.flush()  # nothing of ours may be left in a buffer the child would write out
        sys.stderr.flush()
        # A relayed signal must not reach the child while it still has the server's handlers: it stays
        # pending until the child has Python's own (server_child unblocks it just before the program).
        signal.pthread_sigmask(signal.SIG_BLOCK, server_child.RELAYED)
        pid = os.fork()
        if pid != 0:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, server_child.RELAYED)
        else:
            try:
                self._close_in_child(conn)
                server_child.run(request, fds, conn, self.runner)  # never returns
            finally:
                os._exit(server_child.EX_SOFTWARE)  # never back into the server's loop
        for fd in fds:
            os.close(fd)
        self.served += 1
        job = Job(pid, os.pidfd_open(pid), conn)
        self.jobs[pid] = job
        self.selector.register(job.pidfd, selectors.EVENT_READ, functools.partial(self._reap, job))
        try:
            conn.sendall(f"P {pid}\n".encode())
        except OSError:
            self._client_gone(job)
            return
        conn.setblocking(False)
        self.selector.register(conn, selectors.EVENT_READ, functools.partial(self._control, job))

    def _close_in_child(self, keep: socket.socket) -> None:
        """Drop every descriptor of the server's own in the child: another client's end must see its EOF."""
        self.selector.close()
        os.close(self.lock_fd)
        for s in (self.listener, self.wake_r, self.wake_w):
            if s is not None:
                s.close()
        for job in self.jobs.values():
            os.close(job.pidfd)
            if job.conn is not None and job.conn is not keep:
                job.conn.close()

    def _control(self, job: Job) -> None:
        assert job.conn is not None
        try:
            data = job.conn.recv(64)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._client_gone(job)
            return
        for byte in data:
            if byte in CONTROL:
                _signal_group(job.pid, CONTROL[byte])

    def _client_gone(self, job: Job) -> None:
        """Nobody waits for this run any more (the client was killed): end it, as a hang-up would."""
        if job.conn is not None:
            with _suppress():
                self.selector.unregister(job.conn)
            job.conn.close()
            job.conn = None
        _signal_group(job.pid, signal.SIGKILL)

    def _reap(self, job: Job) -> None:
        _, status = os.waitpid(job.pid, 0)
        self.selector.unregister(job.pidfd)
        os.close(job.pidfd)
        del self.jobs[job.pid]
        self.last_activity = time.monotonic()
        if job.conn is None:
            return
        with _suppress():
            self.selector.unregister(job.conn)
        answer = f"K {os.WTERMSIG(status)}" if os.WIFSIGNALED(status) else f"E {os.waitstatus_to_exitcode(status)}"
        with _suppress():
            job.conn.setblocking(True)
            job.conn.settimeout(REQUEST_TIMEOUT_S)
            job.conn.sendall(answer.encode() + b"\n")
        job.conn.close()


def _signal_group(pid: int, signum: int) -> None:
    """Signal the child's process group (everything the program started), or the child before its setsid."""
    try:
        os.killpg(pid, signum)
    except ProcessLookupError:
        with _suppress():
            os.kill(pid, signum)


class _suppress:
    """contextlib.suppress(OSError), without importing contextlib into every forked child's path."""

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> bool:
        return kind is not None and issubclass(kind, OSError)


# ------------------------------------------------------------------------------- serve / start / stop


def serve(digest: str | None = None) -> int:
    """The server process's main (started detached by a client or by ``start``); 0 when it exits cleanly."""
    os.closerange(3, 1 << 16)  # nothing the client that spawned us had open (pipes a caller waits on)
    os.umask(0o077)
    os.chdir("/")
    try:
        paths = Paths.current()
        if digest:  # bind under another token's name: how tests make a stale server
            paths = paths.with_digest(digest)
    except Unavailable as exc:
        log(f"cannot serve: {exc}")
        return 1
    try:
        os.close(os.pidfd_open(os.getpid()))  # Linux 5.3+: how the loop learns that a child ended
    except OSError as exc:
        log(f"cannot serve: this kernel has no pidfd_open ({exc.strerror})")
        return 1
    import fcntl

    lock = os.open(paths.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return 0  # another server for this token is running or starting: it serves
    if os.fstat(2).st_size > 1 << 20:
        os.ftruncate(2, 0)
    with open(paths.pid, "w", encoding="ascii") as f:
        f.write(f"{os.getpid()}\n")
    log(f"starting: zexus_bcache {__version__}, Python {sys.version.split()[0]} ({sys.executable})")
    try:
        from . import runner

        runner.preload()
    except Exception as exc:  # logged; clients run in-process meanwhile
        import traceback

        log(f"preload failed: {exc!r}\n{traceback.format_exc()}")
        os.unlink(paths.pid)
        return 1
    _warn_threads()
    gc.collect()
    gc.freeze()  # the preloaded heap stays shared with the children (no copy-on-write by the collector)
    return Server(paths, runner, lock).run()


def _warn_threads() -> None:
    threading = sys.modules.get("threading")
    if threading is not None and threading.active_count() > 1:
        log(f"warning: {threading.active_count() - 1} threads run after preload; a forked child gets none of them")


def start(wait_s: float = 30.0) -> tuple[int, str]:
    """Start this setup's server unless it runs (exit code, message)."""
    try:
        paths = Paths.current()
    except Unavailable as exc:
        return 1, f"cannot start the server: {exc}"
    info = serverlink.ping(paths)
    if info is None:
        if not serverlink.lock_held(paths.lock):
            serverlink.spawn(paths)
        deadline = time.monotonic() + wait_s
        while info is None and time.monotonic() < deadline:
            time.sleep(0.05)
            info = serverlink.ping(paths)
        if info is None:
            return 1, f"the server did not start within {wait_s:g} s; see {paths.log}"
        return 0, f"started: pid {info['pid']}, socket {paths.socket}"
    return 0, f"already running: pid {info['pid']}, socket {paths.socket}"


def stop(wait_s: float = 10.0) -> tuple[int, str]:
    """Stop every server of ours (each finishes its running programs first); (exit code, message)."""
    try:
        every = serverlink.all_paths()
    except Unavailable as exc:
        return 1, f"cannot reach the servers: {exc}"
    said: list[str] = []
    for paths in every:
        try:
            answer = serverlink.ask(paths, b"stop", 2.0)
        except (OSError, Unavailable):
            answer = []
        if not serverlink.lock_held(paths.lock):
            for leftover in (paths.socket, paths.pid):
                with _suppress():
                    os.unlink(leftover)
            continue
        deadline = time.monotonic() + wait_s
        while serverlink.lock_held(paths.lock) and time.monotonic() < deadline:
            time.sleep(0.05)
        pid = answer[0].decode().split("pid=")[-1].split()[0] if answer and b"pid=" in answer[0] else "?"
        still = serverlink.lock_held(paths.lock)
        said.append(f"{'still finishing its runs' if still else 'stopped'}: pid {pid} ({paths.digest})")
        if still:
            return 1, "; ".join(said)
    return 0, "; ".join(said) if said else "no server was running"


def status() -> tuple[int, list[dict[str, str]]]:
    """Every server of ours: (0 if this setup's server runs, else 1; one dict per server)."""
    try:
        every = serverlink.all_paths()
    except Unavailable as exc:
        return 1, [{"state": "unavailable", "why": str(exc)}]
    rows: list[dict[str, str]] = []
    for i, paths in enumerate(every):
        info = serverlink.ping(paths)
        if info is None and not os.path.exists(paths.socket):
            continue
        state = "running" if info else ("starting" if serverlink.lock_held(paths.lock) else "stale socket")
        rows.append({"state": state, "current": "yes" if i == 0 else "no", "socket": paths.socket,
                     "log": paths.log, **(info or {})})  # fmt: skip
    return (0 if rows and rows[0]["current"] == "yes" and rows[0]["state"] == "running" else 1), rows


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    command = args[0] if args else ""
    if command == "serve":
        return serve(args[args.index("--digest") + 1] if "--digest" in args else None)
    commands: dict[str, Callable[[], tuple[int, Any]]] = {"start": start, "stop": stop, "status": status}
    if command not in commands:
        print("usage: python -m zexus_bcache.server start|stop|status|serve", file=sys.stderr)
        return 2
    code, out = commands[command]()
    for line in out if isinstance(out, list) else [out]:
        print(" ".join(f"{k}={v}" for k, v in line.items()) if isinstance(line, dict) else line)
    return code


if __name__ == "__main__":
    sys.exit(main())
