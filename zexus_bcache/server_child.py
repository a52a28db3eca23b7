"""One run in a child forked by the warm server: become the client's process, run, exit.

The child takes over what a new process started by the client would have had: its stdin, stdout and
stderr (and any ``/dev/fd/N`` the command line names), working directory, umask, environment and
command line; its own session (so a signal reaches every process it starts); Python's start-up
signal handlers; and ``sys.stdin``/``stdout``/``stderr`` rebuilt as Python builds them at start-up
(buffering follows whether the client's stdout is a terminal). Then ``runner.main`` and
``runner.exit_process``: the child never returns into the server.
"""

from __future__ import annotations

import io
import os
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any

EX_SOFTWARE = 70  # the child failed before or after the program, in our own code
RELAYED = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}  # blocked by the server across the fork


@dataclass
class Request:
    """What a client sends for one run (see client.py for the other side)."""

    token: str
    cwd: bytes
    umask: int
    targets: list[int]  # the descriptor number each received fd takes in the child, in order
    stdio: list[str]  # "encoding:errors" of the client's sys.stdin, stdout, stderr ("-": None)
    unbuffered: bool
    ignored: list[int]  # signals the client ignores (nohup, a background job): the child ignores them too
    argv0: str
    argv: list[str]
    env: dict[bytes, bytes]

    @classmethod
    def parse(cls, fields: list[bytes]) -> Request:
        """From the fields after the kind; ValueError on anything malformed."""
        token, cwd, umask, targets, stdio, unbuffered, ignored, argv0, n = fields[:9]
        count = int(n)
        argv = fields[9 : 9 + count]
        if len(argv) != count:
            raise ValueError("truncated argv")
        env: dict[bytes, bytes] = {}
        for item in fields[9 + count :]:
            key, sep, value = item.partition(b"=")
            if not sep or not key:
                raise ValueError("malformed environment entry")
            env[key] = value
        stdio_list = os.fsdecode(stdio).split(";")
        if len(stdio_list) != 3:
            raise ValueError("stdio must describe 3 streams")
        return cls(
            token=os.fsdecode(token),
            cwd=cwd,
            umask=int(umask, 8),
            targets=[int(t) for t in targets.split(b",")] if targets else [],
            stdio=stdio_list,
            unbuffered=unbuffered == b"1",
            ignored=[int(x) for x in ignored.split(b",")] if ignored else [],
            argv0=os.fsdecode(argv0),
            argv=[os.fsdecode(a) for a in argv],
            env=env,
        )


def run(request: Request, fds: list[int], conn: socket.socket, runner: ModuleType) -> None:
    """Become the client's process and run; always ends the process (never returns)."""
    code = EX_SOFTWARE
    try:
        old = conn.detach()
        conn = socket.socket(fileno=fcntl_dupfd(old))  # clear of the targets too
        os.close(old)
        conn.settimeout(5.0)
        os.setsid()
        _signals_as_at_start(request.ignored)
        _install_fds(request.targets, fds)
        os.environb.clear()
        os.environb.update(request.env)
        time.tzset()  # TZ is the client's now
        os.umask(request.umask)
        _stdio(request)
        sys.argv = [request.argv0, *request.argv]
        try:
            os.chdir(request.cwd)
        except OSError as exc:
            print(f"zexus-bcache: cannot enter {os.fsdecode(request.cwd)}: {exc.strerror}", file=sys.stderr, flush=True)
            code = 1
        else:
            _clear_parser_cache()
            code = _main(runner, request.argv)
        try:
            conn.sendall(f"X {code}\n".encode())  # the client's fallback if the server is gone before reporting
        except OSError:
            pass
        runner.exit_process(code)
    except BaseException:  # our own failure around the program: say it where the user sees it
        try:
            traceback.print_exc()
            sys.stderr.flush()
        except BaseException:  # nothing left to report to
            pass
    finally:
        os._exit(code)


def _main(runner: ModuleType, argv: list[str]) -> int:
    try:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, RELAYED)  # one that came meanwhile is delivered here
        return int(runner.main(argv))
    except SystemExit as exc:  # as the interpreter turns it into a status
        if exc.code is None or isinstance(exc.code, int):
            return exc.code or 0
        print(exc.code, file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130  # what a shell reports for a process that Ctrl-C ended
    except BaseException:
        traceback.print_exc()
        return 1


def _signals_as_at_start(ignored: list[int]) -> None:
    """The dispositions a new Python process started by the client would have (the server changed some)."""
    signal.set_wakeup_fd(-1)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT, signal.SIGCHLD):
        signal.signal(signum, signal.SIG_DFL)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    for number in ignored:  # inherited through exec, as Python itself keeps them ignored
        if number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
            signal.signal(number, signal.SIG_IGN)


def _install_fds(targets: list[int], fds: list[int]) -> None:
    """Each received fd onto its target number; standard streams the client did not have are closed."""
    # Move them out of the way first: a received fd may already sit on another one's target.
    moved = [fcntl_dupfd(fd) for fd in fds]
    for fd in fds:
        os.close(fd)
    for fd, target in zip(moved, targets, strict=True):
        os.dup2(fd, target, inheritable=True)
        os.close(fd)
    for std in (0, 1, 2):
        if std not in targets:
            try:
                os.close(std)
            except OSError:
                pass


def fcntl_dupfd(fd: int) -> int:
    """A duplicate of fd numbered 256 or above (clear of any target a client can name)."""
    import fcntl

    return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 256)


def _stream(fd: int, spec: str, write: bool, unbuffered: bool, name: str) -> io.TextIOWrapper | None:
    """A text stream on fd as Python's start-up makes sys.stdin/stdout/stderr (pylifecycle.c create_stdio)."""
    if spec == "-":
        return None
    encoding, _, errors = spec.partition(":")
    try:
        raw = io.FileIO(fd, "wb" if write else "rb", closefd=False)
    except OSError:
        return None
    raw.name = name  # as create_stdio names it
    buffer: Any = raw  # python -u: stdout and stderr write through
    if not (write and unbuffered):
        buffer = io.BufferedWriter(raw) if write else io.BufferedReader(raw)
    line_buffering = write and not unbuffered and (name == "<stderr>" or raw.isatty())
    stream = io.TextIOWrapper(buffer, encoding, errors or "strict", "\n", line_buffering, write and unbuffered)
    stream.mode = "w" if write else "r"  # type: ignore[misc]
    return stream


def _stdio(request: Request) -> None:
    streams = [
        _stream(fd, spec, fd != 0, request.unbuffered, name)
        for fd, spec, name in zip((0, 1, 2), request.stdio, ("<stdin>", "<stdout>", "<stderr>"), strict=True)
    ]
    sys.stdin = sys.__stdin__ = streams[0]  # type: ignore[misc]
    sys.stdout = sys.__stdout__ = streams[1]  # type: ignore[misc]
    sys.stderr = sys.__stderr__ = streams[2]  # type: ignore[misc]


def _clear_parser_cache() -> None:
    """zexus's process-wide parsed-block cache starts empty, as in a new process (the server parses nothing)."""
    strategy = sys.modules.get("zexus.parser.strategy_context")
    cache = getattr(strategy, "_BLOCK_STATEMENTS_CACHE", None)
    if cache is not None:
        cache.clear()
