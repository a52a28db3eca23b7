"""The real Zexus pipeline (lex, parse, compile, run), with zexus's own debug noise kept out of stdout."""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Iterator, Sequence
from typing import Any

from .errors import BcacheError


class ZexusParseError(BcacheError):
    """The Zexus parser reported errors; nothing is compiled or cached."""

    def __init__(self, filename: str, errors: Sequence[Any]):
        self.filename = filename
        self.errors = [str(e) for e in errors]
        super().__init__(f"{filename}: " + "; ".join(self.errors))


@contextlib.contextmanager
def quiet() -> Iterator[io.StringIO]:
    """Swallow what zexus prints while importing and parsing (warnings, parser debug lines)."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink):
        yield sink


def _zexus() -> Any:
    # Importing zexus prints a warning about the optional cryptography library.
    with quiet():
        import zexus.evaluator
        import zexus.lexer
        import zexus.parser
        import zexus.vm.compiler
        import zexus.vm.vm
    return zexus


def parse(source: str, filename: str = "<string>") -> Any:
    """Lex and parse like ``zx run`` does; raise ZexusParseError when the parser reports errors."""
    zx = _zexus()
    with quiet():
        parser = zx.parser.Parser(
            zx.lexer.Lexer(source, filename=filename), "universal", enable_advanced_strategies=True
        )
        program = parser.parse_program()
    if parser.errors:
        raise ZexusParseError(filename, parser.errors)
    return program


def compile_program(program: Any, optimize: bool = True) -> Any:
    """Compile a parsed Program with zexus's VM compiler."""
    zx = _zexus()
    with quiet():
        return zx.vm.compiler.compile_ast_to_bytecode(program, optimize=optimize)


def compile_source(source: str, filename: str = "<string>", optimize: bool = True) -> Any:
    """Parse and compile in one step, uncached."""
    return compile_program(parse(source, filename), optimize=optimize)


_BUILTINS: dict[str, Any] | None = None


def _vm_builtins() -> dict[str, Any]:
    global _BUILTINS
    if _BUILTINS is None:
        zx = _zexus()
        with quiet():
            _BUILTINS = dict(zx.evaluator.Evaluator(use_vm=False).builtins)
    return _BUILTINS


def run_bytecode(
    bytecode: Any, filename: str = "<string>", args: Sequence[str] = (), optimize: bool = True
) -> Any:
    """Execute bytecode on zexus's VM set up as ``zx run`` sets it up; return the VM's result."""
    zx = _zexus()
    vm_mod = zx.vm.vm
    vm = vm_mod.VM(
        mode=vm_mod.VMMode.AUTO,
        use_jit=optimize,
        max_heap_mb=1000,
        debug=False,
        gas_limit=100_000_000,
    )
    vm.builtins.update(_vm_builtins())
    abs_file = os.path.abspath(filename) if filename and not filename.startswith("<") else filename
    vm.env["__file__"] = abs_file
    vm.env["__FILE__"] = abs_file
    vm.env["__MODULE__"] = "__main__"
    vm.env["__DIR__"] = os.path.dirname(abs_file) if abs_file else ""
    vm.env["__ARGS__"] = tuple(args)
    vm.env["__ARGV__"] = tuple(args)
    vm.env["__PACKAGE__"] = ""
    return vm.execute(bytecode, debug=False)


def evaluate_program(program: Any, filename: str, args: Sequence[str] = ()) -> Any:
    """Run a parsed program on zexus's tree-walking interpreter, as ``zx run`` falls back to it."""
    zx = _zexus()
    from zexus.object import Environment, List, String

    env = Environment()
    abs_file = os.path.abspath(filename)
    for name, value in (("__file__", abs_file), ("__FILE__", abs_file), ("__MODULE__", "__main__"),
                        ("__DIR__", os.path.dirname(abs_file)), ("__PACKAGE__", "")):
        env.set(name, String(value))
    argv = List([String(a) for a in args])
    env.set("__ARGS__", argv)
    env.set("__ARGV__", argv)
    return zx.evaluator.evaluate(program, env, debug_mode=False, use_vm=False)


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


_PREVIOUS_SHARED: list[Any] = []


def install(cache: Any = None) -> Any:
    """Make ``cache`` zexus's shared bytecode cache (the one ``EvaluatorBytecodeCompiler`` uses).

    Without an argument, a BytecodeCache keyed for the evaluator's compiler on the configured
    location (environment, then ``.zexus/bcache.toml`` of the working directory's project, else
    ``<project root>/.zexus/bcache.db``), with the configured shared tier if any, as
    ``zexus-bcache run`` opens it. Compilers created before the call keep the cache they already
    hold. Returns the installed cache; ``uninstall()`` restores what was there before.
    """
    if cache is None:
        from . import config
        from .cache import BytecodeCache

        cache = BytecodeCache(**config.cache_arguments(config.resolve()), compiler="evaluator")
    with quiet():
        from zexus.evaluator import bytecode_compiler
    _PREVIOUS_SHARED.append(bytecode_compiler._SHARED_CACHE)
    bytecode_compiler._SHARED_CACHE = cache
    return cache


def uninstall() -> None:
    """Restore the shared cache that the last ``install()`` replaced (flushing ours)."""
    if not _PREVIOUS_SHARED:
        return
    with quiet():
        from zexus.evaluator import bytecode_compiler
    ours = bytecode_compiler._SHARED_CACHE
    bytecode_compiler._SHARED_CACHE = _PREVIOUS_SHARED.pop()
    flush = getattr(ours, "flush", None)
    if flush is not None:
        flush()
