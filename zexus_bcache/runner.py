"""``zexus-bcache run`` in this process: the command line, the exit status, and the start-up a server pays once.

Importing this module is light (no zexus, SQLAlchemy, click or rich): a client or a server decides with
:func:`parse_argv` whether a command line is a run, then :func:`main` runs it here (zx run's steps are in
:mod:`zexus_bcache.runner_zx`, the cache's part in :mod:`zexus_bcache.runner_cache`) and
:func:`exit_process` ends the process without the interpreter's finalisation.
"""

from __future__ import annotations

import os
import sys

from .runner_args import RunArgs

TYPE_CHECKING = False  # typing costs ~6 ms to import on the client's path; mypy reads this as usual
if TYPE_CHECKING:
    from typing import NoReturn

PROG = "zexus-bcache"
USAGE = f"Usage: {PROG} run [OPTIONS] FILE [ARGS]..."
_GLOBAL_VALUES = {"--cache": "cache", "--shared": "shared"}
_GLOBAL_FLAGS = {"--shared-read-only": True, "--no-shared-read-only": False}
_RUN_FLAGS = {"--timings": "timings", "--no-optimize": "no_optimize", "--no-cache": "no_cache",
              "--refresh": "refresh", "--no-server": "no_server"}
EXIT_USAGE = 2  # click's exit status for a usage error
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports a program stopped by Ctrl-C


def parse_argv(argv: list[str]) -> RunArgs | None:
    """The run that ``argv`` (after the program name) asks for; None when it is not a run (hand it to click)."""
    out = RunArgs()
    i = 0
    while i < len(argv):  # global options, up to the command
        arg = argv[i]
        name, eq, value = arg.partition("=")
        if arg == "run":
            break
        if name in _GLOBAL_VALUES and arg.startswith("--"):
            if not eq:
                if i + 1 >= len(argv):
                    return None  # click says the option needs a value
                value = argv[i + 1]
                i += 1
            setattr(out, _GLOBAL_VALUES[name], value)
        elif arg in _GLOBAL_FLAGS:
            out.shared_read_only = _GLOBAL_FLAGS[arg]
        else:
            return None  # help, version, another command, or an option click reports
        i += 1
    else:
        return None  # no command: click prints the help
    i += 1
    while i < len(argv):  # run's options, up to FILE
        arg = argv[i]
        if arg == "--":
            i += 1
            break
        if arg == "-" or not arg.startswith("-"):
            break
        if arg in ("-h", "--help"):
            return None  # click prints run's help
        name = arg.partition("=")[0]
        if name in _RUN_FLAGS and name != arg:
            out.error = f"Option '{name}' does not take a value."
        elif name in _RUN_FLAGS:
            setattr(out, _RUN_FLAGS[name], True)
        else:
            out.error = f"No such option: {arg} (run's options go before FILE; see `{PROG} run -h`)"
        if out.error:
            return out
        i += 1
    if i >= len(argv):
        out.error = "Missing argument 'FILE'."
        return out
    out.file = argv[i]
    out.args = tuple(argv[i + 1 :])
    return out


def main(argv: list[str]) -> int:
    """Run ``zexus-bcache ARGV`` (a run command line) in this process with fds 0/1/2; return the exit status
    ``zx run`` would have. Other command lines are the click CLI's (see :func:`parse_argv`)."""
    parsed = parse_argv(list(argv))
    if parsed is None:
        return usage_error(f"not a run command line: {' '.join(argv)!r}")
    if parsed.error is not None:
        return usage_error(parsed.error)
    return execute(parsed)


def execute(parsed: RunArgs) -> int:
    """Run one parsed command line here; the exit status, never an exception or a traceback of ours."""
    if parsed.file != "-" and not os.path.exists(parsed.file):
        return usage_error(f"Invalid value for 'FILE': Path {parsed.file!r} does not exist.")
    try:
        from . import runner_zx

        return runner_zx.run(parsed)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except SystemExit as exc:  # zexus's exit_program() raises it with the program's status
        return exit_status(exc.code)
    except BrokenPipeError:  # the reader of our output left (`... | head`): click's answer, exit 1
        _silence_stdout()
        return 1
    except Exception as exc:  # a fault of ours: one line, never a traceback
        _write_err(f"Error: zexus-bcache run failed: {type(exc).__name__}: {exc}\n")
        return 1


def usage_error(message: str) -> int:
    """Print a usage error as click does (on stderr) and return its exit status, 2."""
    _write_err(f"{USAGE}\nTry '{PROG} run -h' for help.\n\nError: {message}\n")
    return EXIT_USAGE


def exit_status(code: object) -> int:
    """The status Python exits with for ``SystemExit(code)`` (a non-int is printed on stderr, status 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    _write_err(f"{code}\n")
    return 1


def preload() -> None:
    """Import what a run needs (zexus, our cache, SQLAlchemy, rich), so a server pays it once before forking."""
    from . import render, runner_cache, runner_zx

    runner_zx.load_zexus()
    runner_cache.preload()
    render.preload()  # errors and warnings of zx are printed through rich


def exit_process(code: int) -> NoReturn:
    """Flush stdout and stderr, then end the process now (no interpreter finalisation: ~165 ms saved)."""
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:
                stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said there
            pass
    os._exit(code & 0xFF if code >= 0 else 0xFF & code)


def _silence_stdout() -> None:
    """Point fd 1 at /dev/null so that a later flush does not fail again (Python's recipe for EPIPE)."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _write_err(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
        pass
