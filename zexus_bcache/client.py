"""The ``zexus-bcache`` console script: ``run`` through the warm server, every other command to the CLI.

For ``run`` (unless ``--no-server`` or ``ZEXUS_BCACHE_SERVER=0``) the client connects to this setup's
server (serverlink.py), sends its command line, working directory, umask, environment and its own
stdin/stdout/stderr (SCM_RIGHTS), relays SIGINT/SIGTERM/SIGHUP (itself, through a pidfd, if the
server dies meanwhile), and exits with the child's status: its exit code, 130 when Ctrl-C ended the
run, or death by the signal that killed it. With no server it starts one in the background and
runs this one in-process, so a first run costs what an in-process run costs. Any server failure before
the program started means an in-process run with one warning: a run never fails because of the server.

This path imports nothing heavy (no click, rich, SQLAlchemy or zexus): runner.parse_argv, serverlink
and the socket module only.
"""

from __future__ import annotations

import os
import select
import signal
import socket
import sys
import time

from . import serverlink
from .serverlink import Paths, Unavailable

TYPE_CHECKING = False
if TYPE_CHECKING:
    from types import FrameType
    from typing import NoReturn, TextIO

FORWARD: dict[int, bytes] = {signal.SIGINT: b"I", signal.SIGTERM: b"T", signal.SIGHUP: b"H"}
KEPT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT)  # an ignored one stays ignored in the child
OFF = ("0", "off", "false", "no")
ANSWER_TIMEOUT_S = 30.0  # for the server to start the run once it has our request
FD_PATHS = ("/dev/fd/", "/proc/self/fd/")


def main(argv: list[str] | None = None) -> NoReturn:
    """The console script's entry point."""
    args = sys.argv[1:] if argv is None else list(argv)
    from . import runner

    parsed = runner.parse_argv(args)
    if parsed is None:  # not a run (or its --help): the click CLI, which exits by itself
        from .cli import main as cli_main

        cli_main(args=args, prog_name="zexus-bcache")
        raise SystemExit(0)
    if not parsed.no_server and os.environ.get(serverlink.ENV_SWITCH, "").strip().lower() not in OFF:
        code = Session().through_server(args) if serverlink.supported() else None
        if code is not None:
            _exit(code)
    in_process(args)


def in_process(args: list[str]) -> NoReturn:
    """Run here, as ``--no-server`` does."""
    from . import runner

    try:
        code = runner.main(args)
    except KeyboardInterrupt:
        code = 130
    runner.exit_process(code)


def warn(message: str) -> None:
    print(f"warning: zexus_bcache: server: {message}; running in-process", file=sys.stderr, flush=True)


def _exit(code: int) -> NoReturn:
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


def _die_like(signum: int) -> NoReturn:
    """End as the child ended, killed by signum: what the caller of an in-process run would have seen."""
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    try:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)
    except (OSError, ValueError):
        pass
    os._exit(128 + signum)  # a signal whose default is not to end the process: a shell's way of saying it


class Session:
    """One run through the server: connect, send, relay signals, wait for the status."""

    def __init__(self) -> None:
        self.sock: socket.socket | None = None
        self.pid = 0
        self.pidfd = -1
        self.server_pidfd = -1
        self.server_dead = False
        self.pending: list[bytes] = []
        self.interrupts = 0
        self.previous: dict[int, object] = {}

    def through_server(self, args: list[str]) -> int | None:
        """The run's exit status, or None to run in-process (a warning was printed if that is a failure)."""
        for signum in FORWARD:
            if signal.getsignal(signum) != signal.SIG_IGN:  # nohup, a background job: it stays ignored
                self.previous[signum] = signal.signal(signum, self._on_signal)
        try:
            code = self._run(args)
        finally:
            if self.sock is not None:
                self.sock.close()
            for fd in (self.pidfd, self.server_pidfd):
                if fd >= 0:
                    os.close(fd)
        if code is None:
            if self.interrupts:  # Ctrl-C before the program started: do not start it here either
                _exit(130)
            for signum, handler in self.previous.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
        return code

    def _run(self, args: list[str]) -> int | None:
        try:
            paths = Paths.current()
        except Unavailable as exc:
            warn(str(exc))
            return None
        try:
            self.sock = serverlink.connect(paths.socket)
        except FileNotFoundError:  # no server yet: start one for the next runs, run this one here
            _start_server(paths, stale=False)
            return None
        except ConnectionRefusedError:  # a socket file with nobody behind it: starting, or dead
            _start_server(paths, stale=True)
            return None
        except (OSError, Unavailable) as exc:
            warn(f"cannot connect to {paths.socket}: {exc}")
            return None
        try:
            self.server_pidfd = os.pidfd_open(serverlink.peer_pid(self.sock))
        except OSError:
            self.server_pidfd = -1  # gone already: the exchange below says so
        try:
            self._send(paths, args)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server may have answered (a stale server refuses) before reading it all: _wait says
        except OSError as exc:
            warn(f"cannot send the run to the server: {exc}")
            return None
        return self._wait()

    def _send(self, paths: Paths, args: list[str]) -> None:
        assert self.sock is not None
        fds, targets = _descriptors(args)
        umask = os.umask(0o022)
        os.umask(umask)
        fields = [
            b"run",
            paths.token.encode("utf-8", "surrogateescape"),
            os.getcwdb(),
            b"%o" % umask,
            b",".join(b"%d" % t for t in targets),
            ";".join(_stdio_spec(s) for s in (sys.stdin, sys.stdout, sys.stderr)).encode(),
            b"1" if getattr(sys.stdout, "write_through", False) else b"0",  # python -u
            b",".join(b"%d" % s for s in KEPT if signal.getsignal(s) == signal.SIG_IGN),
            os.fsencode(sys.argv[0] if sys.argv else "zexus-bcache"),
            b"%d" % len(args),
            *(os.fsencode(a) for a in args),
            *(k + b"=" + v for k, v in os.environb.items()),
        ]
        payload = serverlink.pack(fields)
        sent = socket.send_fds(self.sock, [payload], fds)
        self.sock.sendall(payload[sent:])

    def _wait(self) -> int | None:
        """Read the server's lines until the status; watch the server itself (a pidfd) to relay signals alone."""
        assert self.sock is not None
        self.sock.setblocking(False)
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        if self.server_pidfd >= 0:
            poller.register(self.server_pidfd, select.POLLIN)
        buffer = bytearray()
        child_code: int | None = None
        deadline = time.monotonic() + ANSWER_TIMEOUT_S
        while True:
            timeout_ms = None if self.pid else max(0.0, deadline - time.monotonic()) * 1e3
            events = poller.poll(timeout_ms)
            if not events and not self.pid:
                warn(f"no answer within {ANSWER_TIMEOUT_S:g} s")
                return None
            if any(fd == self.server_pidfd for fd, _ in events):
                poller.unregister(self.server_pidfd)
                self.server_dead = True  # the child (if any) goes on, holding its end: EOF when it ends
            try:
                lines = serverlink.read_lines(self.sock, buffer)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                lines = None
            if lines is None:
                return self._lost(child_code)
            for line in lines:
                tag, _, value = line.partition(b" ")
                if tag == b"P":
                    self._started(int(value))
                elif tag == b"X":
                    child_code = int(value)
                elif tag == b"E":
                    return int(value)
                elif tag == b"K":
                    return 130 if self.interrupts else _die_like(int(value))
                elif tag == b"R" and not self.pid:
                    if not value.startswith(b"stale"):  # a stale server stops itself: not a failure of the run
                        warn(f"the server refused the run ({value.decode(errors='replace')})")
                    return None

    def _started(self, pid: int) -> None:
        """The program runs from now on: never run it again in-process; relay what was held back."""
        self.pid = pid
        try:
            self.pidfd = os.pidfd_open(pid)  # to signal the child ourselves if the server dies
        except OSError:
            self.pidfd = -1
        pending, self.pending = self.pending, []
        for message in pending:
            self._relay(message)

    def _lost(self, child_code: int | None) -> int | None:
        """The connection ended without a status: before the start, run here; after it, say what we know."""
        if not self.pid:
            warn("the server closed the connection before starting the run")
            return None
        if child_code is not None:
            return child_code
        print("zexus-bcache: the server stopped while the program ran; its exit status is unknown", file=sys.stderr)
        return 1

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        if signum == signal.SIGINT:
            self.interrupts += 1
        message = b"K" if signum == signal.SIGINT and self.interrupts > 1 else FORWARD[signum]
        if self.pid:
            self._relay(message)
        else:
            self.pending.append(message)

    def _relay(self, message: bytes) -> None:
        if not self.server_dead and self.sock is not None:
            try:
                self.sock.send(message)
                return
            except OSError:
                pass
        if self.pidfd >= 0:  # the server is gone: the child is ours to signal
            signum = {v: k for k, v in FORWARD.items()}.get(message, signal.SIGKILL)
            try:
                signal.pidfd_send_signal(self.pidfd, signum)
            except OSError:
                pass


def _start_server(paths: Paths, *, stale: bool) -> None:
    """Start a server in the background unless one is starting; a dead one's socket earns a warning."""
    if serverlink.lock_held(paths.lock):
        return  # a server holds the lock but does not listen yet: it is starting
    if stale:
        warn("the server died (its socket was left behind); starting a new one")
    try:
        serverlink.spawn(paths)
    except OSError as exc:
        if not stale:
            warn(f"cannot start the server: {exc}")


def _descriptors(args: list[str]) -> tuple[list[int], list[int]]:
    """Our open stdin/stdout/stderr, and any /dev/fd/N the command line names (bash's ``<(...)``)."""
    wanted = [0, 1, 2]
    for arg in args:
        for prefix in FD_PATHS:
            if arg.startswith(prefix) and arg[len(prefix) :].isdigit():
                wanted.append(int(arg[len(prefix) :]))
    fds: list[int] = []
    for fd in dict.fromkeys(wanted):
        try:
            os.fstat(fd)
        except OSError:
            continue
        fds.append(fd)
    return fds, fds


def _stdio_spec(stream: TextIO | None) -> str:
    if stream is None:
        return "-"
    return f"{getattr(stream, 'encoding', None) or 'utf-8'}:{getattr(stream, 'errors', None) or 'strict'}"


if __name__ == "__main__":
    main()
