"""The only door into zexus: the real pipeline (lex, parse, compile, run) as ``zx run`` drives it, without
zexus's debug noise. Everything else reaches zexus through here."""

from __future__ import annotations

import contextlib
import io
import os
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

from .errors import BcacheError

_T = TypeVar("_T")

# How much of the recursion limit is in use where zx's `run` command calls the parser, the compiler, the
# VM and the interpreter under `zx run FILE` (the console script, click's frames, run, one C-level entry):
# the limit minus the recursion room measured at the callee's level (990 of 1000 there, zexus 2.0.0,
# Python 3.11). call_as_zx gives a call the same room, so a program deep enough to reach the limit reaches
# it at the same point as under zx (and the parser recovers from its RecursionErrors alike).
ZX_RUN_USED = 10


class ZexusParseError(BcacheError):
    """The Zexus parser reported errors; nothing is compiled or cached."""

    def __init__(self, filename: str, errors: Sequence[Any]):
        self.filename = filename
        self.errors = [str(e) for e in errors]
        super().__init__(f"{filename}: " + "; ".join(self.errors))


# -- quiet(): zexus's prints go to a sink, per thread --------------------------------------------------


class _StdoutRouter:
    """Stands in for sys.stdout: writes from a thread inside quiet() go to its sink, all others to the stream."""

    def __init__(self, target: Any):
        self._target = target

    def _out(self) -> Any:
        sink = getattr(_local, "sink", None)
        return self._target if sink is None else sink

    def write(self, text: str) -> int:
        return int(self._out().write(text))

    def writelines(self, lines: Any) -> None:
        self._out().writelines(lines)

    def flush(self) -> None:
        self._out().flush()

    def __getattr__(self, name: str) -> Any:  # fileno, isatty, encoding, buffer, ...: the real stream's
        return getattr(self._target, name)


_local = threading.local()
_router_lock = threading.Lock()
_quiet_threads = 0
# Every router ever installed stays alive (one per stream wrapped): Python 3.11's print() holds
# sys.stdout as a borrowed reference while it writes, so a router (or stream) freed when another thread
# puts the stream back would be used after free (a segfault, measured).
_routers: list[_StdoutRouter] = []


def _router_for(stream: Any) -> _StdoutRouter:
    for router in _routers:
        if router._target is stream:
            return router
    router = _StdoutRouter(stream)
    _routers.append(router)
    return router


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow what zexus prints in this thread (import warnings, parser debug lines); other threads print as usual.

    Unlike contextlib.redirect_stdout, sys.stdout is not swapped for everyone: a router installed while any
    thread is inside quiet() sends only the quiet threads' writes to their sinks, and the stream is put
    back when the last one leaves (unless someone else replaced sys.stdout meanwhile; then theirs stays).
    """
    global _quiet_threads
    sink = io.StringIO()
    outer = getattr(_local, "sink", None)
    with _router_lock:
        if not isinstance(sys.stdout, _StdoutRouter):
            sys.stdout = _router_for(sys.stdout)
        _quiet_threads += 1
    _local.sink = sink
    try:
        yield sink
    finally:
        _local.sink = outer
        with _router_lock:
            _quiet_threads -= 1
            if _quiet_threads == 0:
                while isinstance(sys.stdout, _StdoutRouter):
                    sys.stdout = sys.stdout._target


# -- the stack headroom zx's run command has --------------------------------------------------------------


def _room() -> int:
    """How many more Python calls fit under the recursion limit from here (measured: ~0.1 ms per 1000)."""
    count = 0

    def dive() -> None:
        nonlocal count
        count += 1
        dive()

    try:
        dive()
    except RecursionError:
        pass
    return count


def call_as_zx(fn: Callable[..., _T], *args: Any, **kwargs: Any) -> _T:
    """Call fn with the recursion room it has when zx's run command calls it."""
    missing = ZX_RUN_USED - (sys.getrecursionlimit() - _room())  # _room's frame stands where fn's will
    if missing > 0:
        return _padded(missing, fn, args, kwargs)
    if missing == 0:
        return fn(*args, **kwargs)
    sys.setrecursionlimit(sys.getrecursionlimit() - missing)
    try:
        return fn(*args, **kwargs)
    finally:
        # The call may have raised the limit itself (zexus's Evaluator does): take back only our part.
        sys.setrecursionlimit(max(sys.getrecursionlimit() + missing, 100))


def _padded(frames: int, fn: Callable[..., _T], args: Any, kwargs: Any) -> _T:
    """fn called ``frames`` frames deeper than our caller would call it (one frame per level)."""
    if frames > 1:
        return _padded(frames - 1, fn, args, kwargs)
    return fn(*args, **kwargs)


# -- the pipeline ----------------------------------------------------------------------------------------


def _zexus() -> Any:
    # Importing zexus prints a warning about the optional cryptography library.
    with quiet():
        import zexus.evaluator
        import zexus.lexer
        import zexus.parser
        import zexus.parser.strategy_context
        import zexus.vm.compiler
        import zexus.vm.vm
    return zexus


class ZexusParserCrash(ZexusParseError):
    """The parser hit Python's recursion limit and carried on with what it had: never cached.

    zexus's parser catches the RecursionError (printing a traceback, or falling back to its other
    engine), so the AST depends on how deep the stack was. ``program`` is that AST, for a caller that
    runs it anyway, as zx run does.
    """

    def __init__(self, filename: str, program: Any):
        super().__init__(filename, ["the parser crashed (RecursionError) and recovered; the result is not cacheable"])
        self.program = program


def parse(source: str, filename: str = "<string>", *, syntax_style: str = "universal", advanced: bool = True) -> Any:
    """Lex and parse as ``zx run`` does in a fresh process; raise ZexusParseError when the parser reports
    errors, ZexusParserCrash when it recovered from a RecursionError.

    The parser's process-wide cache of parsed blocks is emptied first: a block parsed earlier in this
    process would otherwise be reused with the line and column of its first file, so the same source
    would give different AST constants (and payloads) depending on what the process parsed before.
    """
    zx = _zexus()
    _watch_parser_crashes()
    with quiet():
        zx.parser.strategy_context._BLOCK_STATEMENTS_CACHE.clear()
        parser = zx.parser.Parser(
            zx.lexer.Lexer(source, filename=filename), syntax_style, enable_advanced_strategies=advanced
        )
        log = parser._log

        def _log(message: Any, *args: Any, **kwargs: Any) -> Any:
            if "maximum recursion depth" in str(message):  # "Advanced parsing failed, falling back: <error>"
                _local.crashed = True
            return log(message, *args, **kwargs)

        parser._log = _log
        _local.parsing, _local.crashed = True, False
        try:
            program = call_as_zx(parser.parse_program)
        finally:
            _local.parsing = False
    if parser.errors:
        raise ZexusParseError(filename, parser.errors)
    if _local.crashed:
        raise ZexusParserCrash(filename, program)
    return program


def _watch_parser_crashes() -> None:
    """Wrap traceback.print_exc (once) to notice a RecursionError that the parser prints and swallows."""
    import traceback

    if getattr(traceback.print_exc, "_zexus_bcache", False):
        return
    original = traceback.print_exc

    def print_exc(*args: Any, **kwargs: Any) -> None:
        exc_type = sys.exc_info()[0]
        if getattr(_local, "parsing", False) and exc_type is not None and issubclass(exc_type, RecursionError):
            _local.crashed = True
        original(*args, **kwargs)

    print_exc._zexus_bcache = True  # type: ignore[attr-defined]
    traceback.print_exc = print_exc


def compile_program(program: Any, optimize: bool = True) -> Any:
    """Compile a parsed Program with zexus's VM compiler."""
    zx = _zexus()
    with quiet():
        return call_as_zx(zx.vm.compiler.compile_ast_to_bytecode, program, optimize=optimize)


def compile_source(source: str, filename: str = "<string>", optimize: bool = True) -> Any:
    """Parse and compile in one step, uncached."""
    return compile_program(parse(source, filename), optimize=optimize)


def _vm_builtins() -> dict[str, Any]:
    """The builtins zx run gives the VM: a new interpreter's (none if it cannot be made, as in zx)."""
    zx = _zexus()
    try:
        with quiet():
            return dict(zx.evaluator.Evaluator(use_vm=False).builtins)
    except Exception:  # zx run carries on with the VM's own builtins
        return {}


def package_name(abs_file: str) -> str:
    """``__PACKAGE__`` as zx run sets it: the first part of the file's path relative to the working directory."""
    try:
        rel_path = os.path.relpath(abs_file)
    except (OSError, ValueError):
        return ""
    parts = rel_path.replace("\\", "/").split("/")
    return parts[0] if len(parts) > 1 else ""


def make_vm(
    filename: str, args: Sequence[str] = (), *, optimize: bool = True, mode: str = "auto", debug: bool = False,
    vm_config: dict[str, Any] | None = None,
) -> Any:
    """A VM set up as ``zx run`` sets it up for ``filename`` (builtins, mode, limits, module variables)."""
    zx = _zexus()
    from zexus.runtime.file_flags import apply_vm_config

    vm_mod = zx.vm.vm
    modes = {"auto": vm_mod.VMMode.AUTO, "stack": vm_mod.VMMode.STACK,
             "register": vm_mod.VMMode.REGISTER, "parallel": vm_mod.VMMode.PARALLEL}
    builtins = _vm_builtins()
    vm = vm_mod.VM(
        mode=modes.get(mode, modes["auto"]), use_jit=optimize, max_heap_mb=1000, debug=debug, gas_limit=100_000_000
    )
    if builtins:
        vm.builtins.update(builtins)
    apply_vm_config(vm, vm_config or {})
    abs_file = os.path.abspath(filename)
    vm.env["__file__"] = abs_file
    vm.env["__FILE__"] = abs_file
    vm.env["__MODULE__"] = "__main__"
    vm.env["__DIR__"] = os.path.dirname(abs_file)
    vm.env["__ARGS__"] = tuple(args)
    vm.env["__ARGV__"] = tuple(args)
    vm.env["__PACKAGE__"] = package_name(abs_file)
    return vm


def run_bytecode(
    bytecode: Any, filename: str = "<string>", args: Sequence[str] = (), optimize: bool = True
) -> Any:
    """Execute bytecode on zexus's VM set up as ``zx run`` sets it up; return the VM's result."""
    vm = make_vm(filename, args, optimize=optimize)
    return call_as_zx(vm.execute, bytecode, debug=False)


def evaluate_program(
    program: Any, filename: str, args: Sequence[str] = (), *, debug: bool = False, disable_vm: bool = False
) -> Any:
    """Run a parsed program on zexus's interpreter as ``zx run`` does (``use_vm=false``, or when the VM failed)."""
    zx = _zexus()
    from zexus.object import Environment, List, String

    env = Environment()
    abs_file = os.path.abspath(filename)
    for name, value in (("__file__", abs_file), ("__FILE__", abs_file), ("__MODULE__", "__main__"),
                        ("__DIR__", os.path.dirname(abs_file))):
        env.set(name, String(value))
    argv = List([String(a) for a in args])
    env.set("__ARGS__", argv)
    env.set("__ARGV__", argv)
    env.set("__PACKAGE__", String(package_name(abs_file)))
    if disable_vm:
        with contextlib.suppress(Exception):  # as zx run: best effort
            env.disable_vm = True
    return call_as_zx(zx.evaluator.evaluate, program, env, debug_mode=debug, use_vm=False)


def is_unsupported_node(exc: BaseException) -> bool:
    """Whether a compile error means "the VM compiler does not support this", where zx falls back."""
    zx = _zexus()
    return isinstance(exc, zx.vm.compiler.UnsupportedNodeError)


def result_markup(result: Any) -> str | None:
    """The rich markup ``zx run`` prints after the program for a meaningful result, or None."""
    if result is None:
        return None
    if hasattr(result, "inspect"):
        text = result.inspect()
        return None if text == "null" else f"\n✅ [bold green]Result:[/bold green] {text}"
    if isinstance(result, str):
        return f"\n📤 [bold blue]Output:[/bold blue] {result}" if result else None
    value = getattr(result, "value", None)
    return None if value is None else f"\n📊 [bold blue]Result:[/bold blue] {value}"
