"""Regenerate the command output shown in README.md and docs/*.md by running the commands.

Every ```console block whose lines start with ``$ `` is a transcript: each ``$ COMMAND`` is run (by
bash, from the repository's root, in document order, one fresh cache per document) and the lines
after it are replaced with what it printed (stdout, then stderr). ``<!-- docs: COMMAND -->``
comments are set-up steps run in order but not shown. ``/tmp/tour`` in a command stands for the
document's own scratch directory, and is written back as ``/tmp/tour`` in the output; paths inside
the checkout are written relative to it. Masked when checking: times, ages, dates, Unix times and
measured in-memory sizes (``mem_size``) and the database file's size (parallel writers grow it
differently), which differ from one run to the next.

    python docs/gen_docs.py            # rewrite the blocks
    python docs/gen_docs.py --check    # exit 1, with a diff, if a block differs from today's output

``tests/test_docs.py`` runs the check, comparing with times, ages and dates masked: a doc cannot
show output that the commands no longer print.
"""

from __future__ import annotations

import difflib
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = ("README.md", "docs/CLI_TOUR.md")
TOUR = "/tmp/tour"
COLUMNS = "100"
TIMEOUT = 300

_BLOCK = re.compile(r"(```console\n)(.*?)(```)", re.S)
_SETUP = re.compile(r"<!-- docs: (.*?) -->")
# What changes from one run to the next: durations, ages, dates, rates per second.
_VOLATILE = [
    (re.compile(r"\b\d+(?:\.\d+)?[smhdw] ago\b|\bjust now\b"), "<age>"),
    (re.compile(r"\d+(?:\.\d+)?(?:\s?)(?:ms|µs|us|s)\b"), "<time>"),
    (re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[+-]\d{2}:?\d{2}|Z)?"), "<date>"),
    (re.compile(r'("(?:[a-z_]*(?:seconds|_s|_at|_ms|time|last_access|last_zeroed|mem_size)[a-z_]*)":\s*)[-0-9.e]+'),
     r"\1<n>"),
    (re.compile(r"\b1[0-9]{9}\.[0-9]+\b"), "<unix time>"),
    (re.compile(r"((?:in memory \(estimate\)|database file)\s+)[0-9.]+ [KMG]?i?B"), r"\1<size>"),
    (re.compile(r'("(?:database_bytes|file_bytes|database_file_bytes)":\s*)[0-9]+'), r"\1<n>"),
]


@dataclass
class Step:
    command: str
    shown: bool
    output: str = ""


def _steps(text: str) -> list[Step]:
    """The document's set-up steps and shown commands, in order."""
    steps: list[tuple[int, Step]] = [(m.start(), Step(m.group(1), False)) for m in _SETUP.finditer(text)]
    for block in _BLOCK.finditer(text):
        for line in block.group(2).splitlines():
            if line.startswith("$ "):
                steps.append((block.start(), Step(line[2:], True)))
    steps.sort(key=lambda pair: pair[0])
    return [step for _, step in steps]


def _environment(tour: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ZEXUS_BCACHE_", "PYTEST"))}
    bindir = str(Path(sys.executable).parent)
    env.update(
        PATH=bindir + os.pathsep + env.get("PATH", ""),
        ZEXUS_BCACHE_PATH=f"{tour}/bcache.db",
        ZEXUS_BCACHE_SERVER="0",
        COLUMNS=COLUMNS,
        LINES="50",
        TERM="dumb",
        NO_COLOR="1",
        TZ="UTC",
    )
    env.pop("FORCE_COLOR", None)
    return env


def run_steps(steps: list[Step]) -> None:
    """Run every step in a fresh scratch directory, filling in each shown step's output."""
    tour = tempfile.mkdtemp(prefix="zexus-bcache-tour-")
    try:
        env = _environment(tour)
        for step in steps:
            done = subprocess.run(
                ["bash", "-c", step.command.replace(TOUR, tour)],
                cwd=ROOT, env=env, capture_output=True, text=True, timeout=TIMEOUT, stdin=subprocess.DEVNULL,
            )
            # The tour's scratch directory reads as /tmp/tour, and the checkout's own path as relative paths.
            output = (done.stdout + done.stderr).replace(tour, TOUR).replace(f"{ROOT}/", "")
            step.output = "\n".join(line.rstrip() for line in output.rstrip("\n").splitlines())
    finally:
        shutil.rmtree(tour, ignore_errors=True)


def render(text: str) -> str:
    """The document with every transcript block replaced by today's output."""
    steps = _steps(text)
    run_steps(steps)
    shown = iter([s for s in steps if s.shown])

    def fill(block: re.Match[str]) -> str:
        lines = block.group(2).splitlines()
        if not any(line.startswith("$ ") for line in lines):
            return block.group(0)
        out = []
        for line in lines:
            if line.startswith("$ "):
                step = next(shown)
                out.append(line)
                if step.output:
                    out.append(step.output)
        return block.group(1) + "\n".join(out) + "\n" + block.group(3)

    return _BLOCK.sub(fill, text)


def mask(text: str) -> str:
    """Text with what differs between two runs of the same commands (times, ages, dates) masked."""
    for pattern, replacement in _VOLATILE:
        text = pattern.sub(replacement, text)
    # Columns re-align when a masked field changes width: compare words, not spacing.
    text = re.sub(r"─+", "─", text)
    return re.sub(r"[ \t]+", " ", text)


def check(documents: tuple[str, ...] = DOCUMENTS) -> list[str]:
    """Unified diffs (masked) of every document whose transcripts differ from today's output."""
    diffs = []
    for name in documents:
        text = (ROOT / name).read_text(encoding="utf-8")
        fresh = render(text)
        if mask(fresh) != mask(text):
            diffs.append(
                "".join(
                    difflib.unified_diff(
                        text.splitlines(True), fresh.splitlines(True), fromfile=name, tofile=name + " (today)"
                    )
                )
            )
    return diffs


def main(argv: list[str]) -> int:
    if argv[1:] == ["--check"]:
        diffs = check()
        for diff in diffs:
            print(diff)
        return 1 if diffs else 0
    if argv[1:]:
        print(__doc__)
        return 2
    for name in DOCUMENTS:
        path = ROOT / name
        path.write_text(render(path.read_text(encoding="utf-8")), encoding="utf-8")
        print(f"rewrote {name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
