"""zx run's steps, in zx run's order (zexus 2.0.0 ``zexus/cli/main.py`` ``run``), with bytecode from the cache.

Same messages and exit statuses as ``zx run``, minus its banner (the progress lines "Running FILE",
"Execution mode", "Validating syntax... done", "Compiling to bytecode... done", "Bytecode: N
instructions", "Initializing VM", "Rust VM", "Executing on VM...", "Applied file flags") and minus what
zexus prints by itself while importing, validating, parsing, type checking and compiling (debug lines):
what is left is what the program prints, and what zx says about the program (syntax warnings, parse
errors with FILE:LINE:COL, type diagnostics, VM fallbacks, runtime errors, the result), on the same
stream, through rich as zx prints it. A hit skips the parse, the type check and the compile: an entry
only exists for a program that parsed without errors, printed no type diagnostic and compiled.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from typing import Any

from . import pipeline
from .runner_args import RunArgs
from .runner_cache import CacheSession, setup_logging

STDIN_NAME = "/dev/stdin"  # FILE "-" is read from fd 0 and named as `zx run /dev/stdin` names it


class _Console:
    """zx's console for a run (render.LazyConsole), made on zx's first message: most runs have none, and
    importing render costs ~2 ms (csv, its dataclass) on every run's path."""

    _console: Any = None

    def print(self, *objects: Any, **kwargs: Any) -> None:
        if self._console is None:
            from .render import LazyConsole  # on zx's first message only (see the class docstring)

            self._console = LazyConsole()
        self._console.print(*objects, **kwargs)


def load_zexus() -> Any:
    """Import what zx run imports (quietly) and boot zexus's kernel as zx's CLI module does."""
    zx = pipeline._zexus()
    with pipeline.quiet():
        import zexus.config
        import zexus.error_reporter
        import zexus.hybrid_orchestrator
        import zexus.object
        import zexus.runtime.file_flags
        import zexus.syntax_validator
        import zexus.type_checker  # noqa: F401

        try:
            from zexus.kernel import get_kernel

            get_kernel().boot()
        except Exception:  # zx's CLI carries on without its kernel too
            pass
    return zx


def run(opts: RunArgs) -> int:
    """Run opts.file as ``zx run`` does; return its exit status."""
    setup_logging()
    file = STDIN_NAME if opts.file == "-" else opts.file
    load_zexus()
    from zexus.config import config

    config.__init__()  # re-read ~/.zexus/config.json as a new process would
    start = None if opts.file == "-" or file.startswith("/dev/") else file
    session = CacheSession(opts.cache, opts.shared, opts.shared_read_only, start, enabled=not opts.no_cache)
    t0 = time.perf_counter()
    state = _Run(opts, file, session)
    try:
        code = state.steps()
    finally:
        session.close()
    if opts.timings:
        run_s = time.perf_counter() - state.t_run if state.t_run else 0.0
        sys.stderr.write(session.report((state.t_run or time.perf_counter()) - t0, run_s, state.cacheable))
    return code


class _Run:
    """One run's state (zx keeps it in local variables of one long function; the steps here follow it)."""

    def __init__(self, opts: RunArgs, file: str, session: CacheSession):
        self.opts = opts
        self.file = file
        self.session = session
        self.console: Any = _Console()
        self.debug = False
        self.cacheable = False
        self.t_run = 0.0

    def steps(self) -> int:
        from zexus.error_reporter import ZexusError, get_error_reporter

        error_reporter = get_error_reporter()
        try:
            return self._steps(error_reporter)
        except ZexusError as e:
            from zexus.error_reporter import print_error

            print_error(e)
            return 1
        except Exception as e:
            self.console.print(f"[bold red]Unexpected Error:[/bold red] {e!s}")
            if self.debug:
                traceback.print_exc()
            return 1

    def _steps(self, error_reporter: Any) -> int:
        from zexus.config import config
        from zexus.runtime.file_flags import parse_file_flags
        from zexus.syntax_validator import SyntaxValidator

        console, file = self.console, self.file
        use_vm, vm_mode, no_optimize, precompile_modules = True, "auto", self.opts.no_optimize, False
        syntax_style, advanced_parsing = "auto", True
        if self.opts.file == "-":
            source_code = sys.stdin.read()
        else:
            with open(file) as f:  # as zx: the locale's encoding, universal newlines
                source_code = f.read()
        error_reporter.register_source(file, source_code)

        file_flags = parse_file_flags(source_code)
        vm_config: dict[str, Any] = {}
        if file_flags:
            if "use_vm" in file_flags:
                use_vm = bool(file_flags.get("use_vm"))
            if "vm_mode" in file_flags:
                vm_mode = str(file_flags.get("vm_mode")).lower()
            if "no_optimize" in file_flags:
                no_optimize = bool(file_flags.get("no_optimize"))
            if "precompile_modules" in file_flags:
                precompile_modules = bool(file_flags.get("precompile_modules"))
            if "syntax_style" in file_flags:
                syntax_style = str(file_flags.get("syntax_style"))
            if "advanced_parsing" in file_flags:
                advanced_parsing = bool(file_flags.get("advanced_parsing"))
            if "debug" in file_flags:
                dbg = file_flags.get("debug")
                if isinstance(dbg, str):
                    config.debug_level = dbg
                    self.debug = dbg != "none"
                else:
                    self.debug = bool(dbg)
                    config.enable_debug_logs = self.debug
            if "vm_config" in file_flags and isinstance(file_flags.get("vm_config"), dict):
                vm_config = dict(file_flags["vm_config"])

        validator = SyntaxValidator()
        with pipeline.quiet():
            if syntax_style == "auto":
                syntax_style = validator.suggest_syntax_style(source_code)
            brace_error = error_reporter.check_brace_balance(source_code, file)
        if brace_error:
            console.print("[bold red]❌ Structural error detected:[/bold red]")
            console.print(brace_error.format_error())
            return 1
        with pipeline.quiet():
            validation_result = validator.validate_code(source_code, syntax_style)
        if not validation_result["is_valid"]:
            console.print(
                f"[bold yellow]⚠️  Syntax warnings: {validation_result['error_count']} issue(s) found[/bold yellow]"
            )
            for suggestion in validation_result["suggestions"]:
                severity_emoji = "❌" if suggestion["severity"] == "error" else "⚠️"
                console.print(f"  {severity_emoji} Line {suggestion['line']}: {suggestion['message']}")
            if any(s["severity"] == "error" for s in validation_result["suggestions"]):
                console.print("[bold yellow]🛠️  Attempting auto-fix...[/bold yellow]")
                with pipeline.quiet():
                    fixed_code, fix_result = validator.auto_fix(source_code, syntax_style)
                if fix_result["applied_fixes"] > 0:
                    console.print(f"✅ [bold green]Applied {fix_result['applied_fixes']} fixes[/bold green]")
                    source_code = fixed_code
                else:
                    console.print("[bold red]❌ Could not auto-fix errors, attempting to run anyway...[/bold red]")

        # Only VM runs are cached (bytecode is what the cache holds); precompiling modules needs the AST.
        self.cacheable = use_vm and not precompile_modules and self.session.enabled
        parse_args = (source_code, syntax_style, advanced_parsing)
        bytecode = None
        if self.cacheable:
            self.session.key(source_code, syntax_style, advanced_parsing, not no_optimize)
            if not self.opts.refresh:
                bytecode = self.session.lookup()
        if self.opts.lookup_only:
            return 0
        program = None
        fallback_reason = None
        if bytecode is None:
            t_parse = time.perf_counter()
            crashed = False
            try:
                program = self._parse(*parse_args)
            except pipeline.ZexusParserCrash as exc:  # zx runs what the parser recovered; never cached
                program, crashed = exc.program, True
            except pipeline.ZexusParseError as exc:
                console.print("[bold red]❌ Critical parser errors detected, cannot continue:[/bold red]")
                for error in exc.errors:
                    _show_enriched_parser_error(console, error, error_reporter, file)
                return 1
            self.session.timings["parse"] = time.perf_counter() - t_parse
            if precompile_modules:
                self._precompile(program, use_vm)
            clean = self._type_check(program)
            if use_vm:
                t_compile = time.perf_counter()
                try:
                    bytecode = pipeline.compile_program(program, optimize=not no_optimize)
                except Exception as e:
                    if pipeline.is_unsupported_node(e):
                        console.print(f"[bold yellow]⚠️  VM fallback:[/bold yellow] {e}")
                    else:
                        console.print(f"[bold red]Bytecode compilation error:[/bold red] {e!s}")
                    if self.debug:
                        traceback.print_exc()
                    fallback_reason = str(e)
                self.session.timings["compile"] = time.perf_counter() - t_compile
                self.cacheable = self.cacheable and clean and not crashed and fallback_reason is None
                if self.cacheable and bytecode is not None:
                    self.session.store(bytecode, source_code, file)
        self.session.close()  # flushed now: the program may never return
        if self.opts.compile_only:
            return 0 if self.cacheable and bytecode is not None else 1
        self.t_run = time.perf_counter()
        return self._execute(bytecode, program, parse_args, fallback_reason, use_vm, vm_mode, no_optimize,
                             vm_config, error_reporter)

    def _parse(self, source: str, syntax_style: str, advanced: bool) -> Any:
        return pipeline.parse(source, self.file, syntax_style=syntax_style, advanced=advanced)

    def _reparse(self, source: str, syntax_style: str, advanced: bool) -> Any:
        """The AST of a hit, for the interpreter: it parsed cleanly when it was stored."""
        try:
            return self._parse(source, syntax_style, advanced)
        except pipeline.ZexusParserCrash as exc:
            return exc.program

    def _precompile(self, program: Any, use_vm: bool) -> None:
        try:
            from zexus.module_cache import precompile_modules as _precompile

            _precompile(program, os.path.abspath(self.file), compile_bytecode=use_vm)
        except Exception:  # zx ends its "Pre-compiling imported modules..." banner line with the warning
            pass

    def _type_check(self, program: Any) -> bool:
        """zx's static type check pass; True when it printed nothing (so a hit may skip it)."""
        try:
            from zexus.type_checker import StaticTypeChecker

            with pipeline.quiet():
                diagnostics = pipeline.call_as_zx(StaticTypeChecker().check, program)
            for d in diagnostics:
                if d.level == "error":
                    self.console.print(f"  [bold red]✗ {d}[/bold red]")
                else:
                    self.console.print(f"  [yellow]⚠ {d}[/yellow]")
        except Exception:  # as zx: the type checker never blocks execution (but then it is not cached)
            return False
        return not diagnostics

    def _execute(self, bytecode: Any, program: Any, parse_args: tuple[str, str, bool], fallback_reason: str | None,
                 use_vm: bool, vm_mode: str, no_optimize: bool, vm_config: dict[str, Any], error_reporter: Any) -> int:
        console, file, args = self.console, self.file, self.opts.args
        result: Any = None
        if bytecode is not None and fallback_reason is None:
            vm = pipeline.make_vm(file, args, optimize=not no_optimize, mode=vm_mode, debug=self.debug,
                                     vm_config=vm_config)
            try:
                result = pipeline.call_as_zx(vm.execute, bytecode, debug=self.debug)
            except Exception as e:
                console.print(f"[bold red]VM Execution error:[/bold red] {e!s}")
                if self.debug:
                    traceback.print_exc()
                fallback_reason = str(e)
        if fallback_reason is not None or bytecode is None:
            if fallback_reason is not None:
                console.print("[bold yellow]🔄 Falling back to interpreter execution...[/bold yellow]")
            if program is None:  # a hit: the AST is parsed only now that the interpreter needs it
                program = self._reparse(*parse_args)
            result = pipeline.evaluate_program(program, file, args, debug=self.debug, disable_vm=not use_vm)
        return self._report(result, error_reporter)

    def _report(self, result: Any, error_reporter: Any) -> int:
        from zexus.error_reporter import ErrorCategory, ZexusError, print_error
        from zexus.object import EvaluationError

        console, file = self.console, self.file
        if isinstance(result, EvaluationError):
            source_line = error_reporter.get_source_line(file, result.line) if result.line else None
            print_error(ZexusError(
                message=result.message, category=ErrorCategory.USER_CODE, filename=result.filename or file,
                line=result.line, column=result.column, source_line=source_line, suggestion=result.suggestion,
            ))
            return 1
        if result and hasattr(result, "inspect") and result.inspect() != "null":
            console.print(f"\n✅ [bold green]Result:[/bold green] {result.inspect()}")
        elif isinstance(result, str) and result:
            console.print(f"\n📤 [bold blue]Output:[/bold blue] {result}")
        elif hasattr(result, "value") and result.value is not None:
            console.print(f"\n📊 [bold blue]Result:[/bold blue] {result.value}")
        return 0


def _show_enriched_parser_error(console: Any, error_str: str, error_reporter: Any, filename: str) -> None:
    """A parser error with its source line and a caret, as zx's ``_show_enriched_parser_error`` prints it."""
    import re

    match = re.match(r"Line\s+(\d+):(\d+)\s*-\s*(.*)", error_str, re.DOTALL)
    if not match:
        console.print(f"  ❌ {error_str}")
        return
    line_num, col_num, message = int(match.group(1)), int(match.group(2)), match.group(3).strip()
    source_line = error_reporter.get_source_line(filename, line_num)
    red, cyan, bold, reset = "\033[91m", "\033[96m", "\033[1m", "\033[0m"
    if not sys.stderr.isatty():  # zx decides colours by stderr, though it prints on stdout
        red = cyan = bold = reset = ""
    parts = [f"  {red}❌ {bold}ParseError{reset} at {cyan}{filename}:{line_num}:{col_num}{reset}"]
    if source_line is not None:
        parts.append(f"     {line_num} | {source_line}")
        caret_pad = " " * (len(str(line_num)) + 3 + max(0, col_num - 1))
        parts.append(f"     {caret_pad}{red}^{reset}")
    parts.append(f"     {message}")
    console.print("\n".join(parts))


class _Recorder:
    """A console for warm: keeps what zx would have printed (markup stripped), to give as the reason."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def print(self, *objects: Any, **_kwargs: Any) -> None:
        import re

        text = " ".join(str(o) for o in objects)
        self.lines.extend(line for line in re.sub(r"\[/?[a-z ]+\]", "", text).splitlines() if line.strip())


def prepare(
    file: str, cache: Any, *, optimize: bool = True, refresh: bool = False, dry: bool = False
) -> tuple[str, str | None, str | None]:
    """Look up, compile and store ``file`` exactly as ``zexus-bcache run`` would, without running it.

    For ``warm``: the entry is made under the run's own key (zx's parse options, the type check's
    promise), so a later run hits it. Returns (status, reason, key): status "cached" (a hit),
    "compiled" (stored now) or "failed" (not cacheable: zx refused it, the type check spoke, the
    VM compiler cannot compile it; reason says what zx said). ``dry``: look up only ("cached" or
    "would compile"), compiling nothing.
    """
    load_zexus()
    opts = RunArgs(file=file, no_optimize=not optimize, refresh=refresh, compile_only=True, lookup_only=dry)
    session = CacheSession(None, None, None, None, cache=cache)
    state = _Run(opts, file, session)
    recorder = _Recorder()
    state.console = recorder
    with pipeline.quiet():  # zexus's own print_error goes to stdout
        code = state.steps()
    if session.tier is not None:
        return "cached", None, session.key_value
    if dry:
        return ("would compile" if code == 0 else "failed"), None, session.key_value
    if code == 0 and session.stored:
        return "compiled", None, session.key_value
    reason = "; ".join(recorder.lines[:3]) or ("not cacheable" if code == 0 else "zx refused it")
    return "failed", reason, session.key_value
