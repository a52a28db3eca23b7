"""`zexus-bcache run` in-process prints what `zx run` prints (its banner removed) and exits with its status.

Every program runs under the venv's `zx` and under ours, first run (a miss) and second run (a hit), each
in a private cache and a private HOME (zexus writes ~/.zexus/config.json). zx's stdout loses its banner
(the progress lines listed in BANNER) and the debug lines zexus itself prints before the program starts
(NOISE_CHILD finds them by running zexus's own pre-run steps on the same source): what is left must
equal our stdout; stderr and the exit status must be equal as they are.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest
from zx_programs import corpus_programs, upstream_programs

ZX = Path(sys.executable).with_name("zx")
HERE = Path(__file__).parent
RUN_PROGRAMS = HERE / "run_programs"
TIMEOUT = 120
OURS = "import sys; from zexus_bcache.runner import main, exit_process; exit_process(main(sys.argv[1:]))"
STDIN_LINES = "line one\nline two\n"
BANNER = re.compile(
    r"Warning: cryptography library not installed\. Signature features will be limited\."
    r"|Install with: pip install cryptography"
    r"|🚀 Running .*|🔧 Execution mode: .*|📝 Syntax style: .*|🎯 Advanced parsing: .*|⚡ VM Mode: .*"
    r"|🔍 Detected syntax style: .*|Applied file flags \(@zexus\) overrides|Validating syntax\.\.\.( done)?"
    r"|Compiling to bytecode\.\.\. (done|unsupported|failed)|Bytecode: \d+ instructions, \d+ constants"
    r"|Initializing VM \(\w+ mode\)\.\.\. done|Executing on VM\.\.\.|Pre-compiling imported modules\.\.\..*"
)
RUST_VM = "⚠️  Rust VM: "


def run_ours(args: list[str], *, cwd: Path, env: dict[str, str], stdin: str | None = None,
             shell_prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """Our run in its own process (the one place that says how ours is started)."""
    command = [sys.executable, "-c", OURS, "run", *args]
    return _run((shell_prefix or []) + command, cwd, env, stdin)


def run_zx(args: list[str], *, cwd: Path, env: dict[str, str], stdin: str | None = None,
           shell_prefix: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    return _run((shell_prefix or []) + [str(ZX), "run", *args], cwd, env, stdin)


def _run(command: list[str], cwd: Path, env: dict[str, str], stdin: str | None) -> subprocess.CompletedProcess[str]:
    home = tempfile.mkdtemp(prefix="home", dir=Path(env["ZEXUS_BCACHE_PATH"]).parent)  # zexus writes ~/.zexus
    return subprocess.run(command, cwd=cwd, env={**env, "HOME": home}, input=stdin if stdin is not None else "",
                          capture_output=True, text=True, timeout=TIMEOUT)


def _env(cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZEXUS", "COLUMNS", "LINES"))}
    return {**env, "ZEXUS_BCACHE_PATH": str(cache), "PYTHONIOENCODING": "utf-8"}


def program_output(zx_stdout: str, noise: list[str]) -> str:
    """zx's stdout without its banner lines and without the lines zexus prints before the program starts."""
    lines = zx_stdout.splitlines(keepends=True)
    out: list[str] = []
    pending = list(noise)
    skip_continuation = False
    for line in lines:
        text = line.rstrip("\n")
        if skip_continuation and not text.startswith(("⚠", "🔄", "Executing")) and len(text) < 40:
            skip_continuation = False  # rich wrapped the Rust VM line: its tail is one short line
            continue
        skip_continuation = False
        if text.startswith(RUST_VM):
            skip_continuation = not text.rstrip().endswith(")")
            continue
        if BANNER.fullmatch(text):
            continue
        if text in pending:
            pending.remove(text)
            continue
        out.append(line)
    return "".join(out)


NOISE_CHILD = textwrap.dedent(
    """
    import contextlib, io, json, sys
    with contextlib.redirect_stdout(io.StringIO()):
        import zexus.evaluator
        from zexus.error_reporter import get_error_reporter
        from zexus.lexer import Lexer
        from zexus.parser import Parser
        from zexus.parser import strategy_context
        from zexus.runtime.file_flags import parse_file_flags
        from zexus.syntax_validator import SyntaxValidator
        from zexus.type_checker import StaticTypeChecker
        from zexus.vm.compiler import compile_ast_to_bytecode
    out = {}
    for name in sys.argv[1:]:
        source = open(name, encoding="utf-8").read()
        flags = parse_file_flags(source)
        sink = io.StringIO()
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(io.StringIO()):
            try:
                validator = SyntaxValidator()
                style = flags.get("syntax_style") or validator.suggest_syntax_style(source)
                if not get_error_reporter().check_brace_balance(source, name):
                    result = validator.validate_code(source, style)
                    if any(s["severity"] == "error" for s in result["suggestions"]):
                        fixed, fix = validator.auto_fix(source, style)
                        source = fixed if fix["applied_fixes"] > 0 else source
                    strategy_context._BLOCK_STATEMENTS_CACHE.clear()
                    parser = Parser(Lexer(source, filename=name), style, enable_advanced_strategies=True)
                    program = parser.parse_program()
                    if not parser.errors:
                        StaticTypeChecker().check(program)
                        if flags.get("use_vm", True):
                            compile_ast_to_bytecode(program, optimize=True)
                            zexus.evaluator.Evaluator(use_vm=False)
            except Exception:
                pass
        out[name] = sink.getvalue().splitlines()
    print(json.dumps(out))
    """
)


def noise_of(programs: list[Path], tmp: Path) -> dict[str, list[str]]:
    """What zexus's own pre-run steps print for each program (one process, the block cache emptied each time)."""
    done = subprocess.run([sys.executable, "-c", NOISE_CHILD, *map(str, programs)], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "HOME": str(tmp)})
    assert done.returncode == 0, done.stderr[-2000:]
    return {str(k): v for k, v in json.loads(done.stdout.splitlines()[-1]).items()}


@dataclass
class Case:
    """One program and how to run it: FILE as given, its args, its stdin, its working directory."""

    name: str
    program: Path
    args: tuple[str, ...] = ()
    stdin: str = STDIN_LINES
    zx_file: str | None = None  # FILE for zx when it differs (zx cannot read "-")
    our_file: str | None = None
    zx_args: tuple[str, ...] | None = None  # args for zx when they differ (zx needs "--" before option-like args)
    pipe: bool = False  # FILE is a pipe made by bash's <(cat PROGRAM)
    cacheable: bool = True


def _cases() -> list[Case]:
    cases = [Case(p.name, p) for p in corpus_programs()]
    cases += [Case("upstream/" + p.name, p, cacheable=False) for p in upstream_programs()]
    mine = {p.name: p for p in sorted(RUN_PROGRAMS.glob("*.zx"))}
    for name, p in mine.items():
        args = ("a1", "b 2", "ünï") if name == "args.zx" else ()
        cases.append(Case("mine/" + name, p, args=args, cacheable=False))
    args = mine["args.zx"]
    cases += [
        Case("options-after-file-go-to-the-program", args, args=("--timings", "-x"), zx_args=("--", "--timings", "-x")),
        Case("stdin-dash", mine["unicode.zx"], stdin=mine["unicode.zx"].read_text(encoding="utf-8"),
             zx_file="/dev/stdin", our_file="-"),
        Case("stdin-dev-stdin", mine["args.zx"], stdin=mine["args.zx"].read_text(encoding="utf-8"),
             zx_file="/dev/stdin", our_file="/dev/stdin"),
        Case("pipe-dev-fd", mine["unicode.zx"], pipe=True),
        Case("unicode-file-name", mine["unicode.zx"], our_file="prögrämmé ü.zx", zx_file="prögrämmé ü.zx"),
        Case("missing-file", mine["args.zx"], our_file="no-such-file.zx", zx_file="no-such-file.zx", cacheable=False),
    ]
    return cases


CASES = _cases()


@dataclass
class Outcome:
    zx: subprocess.CompletedProcess[str]
    miss: subprocess.CompletedProcess[str]
    hit: subprocess.CompletedProcess[str]
    cache: Path
    noise: list[str]


def _one(case: Case, workdir: Path, noise: list[str], template: Path) -> Outcome:
    workdir.mkdir(parents=True)
    for part in template.parent.glob(template.name + "*"):  # an empty cache, migrated once for all cases
        shutil.copyfile(part, workdir / part.name.replace(template.name, "bcache.db"))
    program = workdir / case.program.name
    shutil.copyfile(case.program, program)
    if case.our_file and not case.our_file.startswith(("-", "/dev/")) and case.our_file != "no-such-file.zx":
        shutil.copyfile(case.program, workdir / case.our_file)
    env = _env(workdir / "bcache.db")
    prefix = ["bash", "-c", 'p=$1; shift; "$@" <(cat "$p")', "bash", program.name] if case.pipe else None
    ours_file = [] if case.pipe else [case.our_file or program.name]
    zx_file = [] if case.pipe else [case.zx_file or program.name]
    zx_args = list(case.zx_args if case.zx_args is not None else case.args)
    zx = run_zx(zx_file + zx_args, cwd=workdir, env=env, stdin=case.stdin, shell_prefix=prefix)
    miss = run_ours(ours_file + list(case.args), cwd=workdir, env=env, stdin=case.stdin, shell_prefix=prefix)
    hit = run_ours(ours_file + list(case.args), cwd=workdir, env=env, stdin=case.stdin, shell_prefix=prefix)
    return Outcome(zx, miss, hit, workdir / "bcache.db", noise)


class _Outcomes(dict[str, Outcome]):
    """Each case run under zx and ours (miss, then hit) the first time a test asks for it.

    On demand, not all up front: under xdist every worker builds this module fixture, and running
    every case in each of them did the whole corpus twice (~150 s per worker on 2 cores).
    """

    def __init__(self, root: Path, template: Path, noise: dict[str, list[str]]) -> None:
        super().__init__()
        self.root, self.template, self.noise = root, template, noise

    def __missing__(self, name: str) -> Outcome:
        i, case = next((i, c) for i, c in enumerate(CASES) if c.name == name)
        self[name] = _one(case, self.root / f"case{i}", self.noise.get(str(case.program), []), self.template)
        return self[name]


@pytest.fixture(scope="module")
def outcomes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Outcome]:
    from zexus_bcache.cache import BytecodeCache

    root = tmp_path_factory.mktemp("fidelity")
    template = root / "template.db"
    BytecodeCache(path=template).close()
    return _Outcomes(root, template, noise_of(sorted({c.program for c in CASES}), root))


def _entries(cache: Path) -> tuple[int, dict[str, int]]:
    from zexus_bcache.cache import BytecodeCache

    with BytecodeCache(path=cache) as c:
        stats = c.get_stats()
        return c.size(), stats


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_same_output_and_status_as_zx_run(case: Case, outcomes: dict[str, Outcome]) -> None:
    got = outcomes[case.name]
    expected = program_output(got.zx.stdout, got.noise)
    for run in (got.miss, got.hit):
        assert run.returncode == got.zx.returncode, run.stderr[-3000:]
        assert run.stdout == expected
        if case.name == "missing-file":  # a usage error, in each command's own words
            assert run.returncode == 2 and "Path 'no-such-file.zx' does not exist" in run.stderr
        else:
            assert run.stderr == got.zx.stderr
    if case.name == "missing-file":
        return
    assert expected.strip() or got.zx.stderr.strip(), "nothing printed: the comparison proves nothing"
    if case.cacheable:
        assert got.zx.returncode == 0
        entries, stats = _entries(got.cache)
        assert entries == 1 and stats["misses"] == 1 and stats["store_hits"] == 1, stats


@pytest.mark.parametrize("name", ["brace_unbalanced.zx", "parse_error.zx", "lexer_error.zx", "parse_error_noise.zx"])
def test_refused_programs_are_refused_with_file_line_col_and_never_cached(
    name: str, outcomes: dict[str, Outcome]
) -> None:
    got = outcomes["mine/" + name]
    assert got.zx.returncode == 1 and got.miss.returncode == 1
    assert re.search(re.escape(name) + r":\d+:\d+", got.miss.stdout + got.miss.stderr)
    assert not got.cache.exists() or _entries(got.cache)[0] == 0


def test_a_parser_crash_runs_as_under_zx_and_is_never_cached(tmp_path: Path) -> None:
    # 400 nested parentheses: zexus's parser hits the recursion limit, prints a traceback and carries on with
    # what it has (x is null). The AST depends on the stack, so it must not be cached.
    program = tmp_path / "deep.zx"
    program.write_text('print("deep");\nlet x = ' + "(" * 400 + "1" + ")" * 400 + ";\nprint(x);\n", encoding="utf-8")
    env = _env(tmp_path / "bcache.db")
    zx = run_zx([program.name], cwd=tmp_path, env=env)
    assert "RecursionError" in zx.stderr, "zexus no longer crashes on this program: make it deeper"
    for _ in range(2):
        ours = run_ours([program.name], cwd=tmp_path, env=env)
        assert (ours.returncode, ours.stdout, ours.stderr) == (zx.returncode, program_output(zx.stdout, []), zx.stderr)
    assert _entries(tmp_path / "bcache.db")[0] == 0


QUIET_CHILD = textwrap.dedent(
    """
    import sys, threading
    from zexus_bcache import pipeline
    original = sys.stdout
    sources = [open(p, encoding="utf-8").read() for p in sys.argv[2:]]
    done = threading.Event()

    def compile_many():
        try:
            for _ in range(int(sys.argv[1])):
                for source in sources:
                    pipeline.compile_source(source, "noisy.zx")
        finally:
            done.set()

    def print_lines():
        n = 0
        while not done.is_set() or n < 2000:
            print(f"line {n}")
            n += 1
        print(f"printed {n}")

    threads = [threading.Thread(target=compile_many), threading.Thread(target=print_lines)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print("restored", sys.stdout is original)
    """
)


def test_quiet_keeps_other_threads_output_and_restores_stdout(tmp_path: Path) -> None:
    noisy = [p for p in upstream_programs() if p.name in ("test_security_features.zx", "test_phase4_vfs.zx")]
    assert noisy, "zexus no longer installs the noisy programs"
    done = subprocess.run([sys.executable, "-c", QUIET_CHILD, "3", *map(str, noisy)], capture_output=True, text=True,
                          timeout=TIMEOUT, env={**os.environ, "HOME": str(tmp_path)})
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    printed = int(next(line for line in lines if line.startswith("printed ")).split()[1])
    numbered = [line for line in lines if line.startswith("line ")]
    assert numbered == [f"line {i}" for i in range(printed)], "lines of the printing thread were lost"
    assert lines[-1] == "restored True"
    assert len(lines) == printed + 2, "zexus's own prints leaked: " + repr(set(lines) - set(numbered))[:500]


PAYLOAD_CHILD = textwrap.dedent(
    """
    import sys
    from zexus_bcache import codec, pipeline
    for p in sys.argv[1:]:
        print(p, codec.encode(pipeline.compile_source(open(p, encoding="utf-8").read(), p)).hex())
    """
)


def test_identical_sources_give_identical_payloads_whatever_was_parsed_before(tmp_path: Path) -> None:
    programs = [str(p) for p in corpus_programs()]

    def payloads(order: list[str]) -> dict[str, str]:
        done = subprocess.run([sys.executable, "-c", PAYLOAD_CHILD, *order], capture_output=True, text=True,
                              timeout=TIMEOUT, env={**os.environ, "HOME": str(tmp_path)})
        assert done.returncode == 0, done.stderr[-2000:]
        return dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith("/"))

    assert payloads(programs) == payloads(programs[::-1])
