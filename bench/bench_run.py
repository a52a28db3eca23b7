"""``zx run`` vs ``zexus-bcache run``, as a user feels it: wall time of whole processes.

Three ways to run each corpus program, each a new process started by this one:

* ``zx run FILE`` (zexus 2.0's own command: no persistent cache, imports all of zexus every time);
* ``zexus-bcache run --no-server FILE``: in-process, warm (the program's bytecode is in the cache);
* ``zexus-bcache run FILE``: through the warm server (zexus imported once; a forked child per run), warm.

Every program is run once by each first (that fills the cache and starts the server, which is waited
for), then the three are interleaved, rotating which goes first, ``repeat`` times; the figure per
program is the median of its samples, and the ratios are taken per program against ``zx run``. Each
run's exit code and output are checked: our two modes must print the same thing, byte for byte.

``zexus-bcache`` is the installed console script when it already points at ``zexus_bcache.client``,
otherwise a script of the same shape (what pip generates) written into the work directory.

Run alone: python -m bench --only run [--quick]
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ._common import Program, fmt, fmt_ratio, median, progress, ratio, summary, table

MODES = ("zx run", "in-process (warm)", "server (warm)")
SERVER_GOAL, IN_PROCESS_GOAL = 0.4, 0.8
TIMEOUT_S = 300
CONSOLE_SCRIPT = """#!{python}
import sys
from zexus_bcache.client import main
if __name__ == "__main__":
    sys.exit(main())
"""


def _zexus_bcache(workdir: Path) -> list[str]:
    """The command that a user's ``zexus-bcache`` runs (the installed script if it is the client's)."""
    installed = Path(sys.executable).with_name("zexus-bcache")
    if installed.exists() and "zexus_bcache.client" in installed.read_text(encoding="utf-8", errors="replace"):
        return [str(installed)]
    script = workdir / "zexus-bcache"
    script.write_text(CONSOLE_SCRIPT.format(python=sys.executable), encoding="utf-8")
    script.chmod(0o700)
    return [str(script)]


def _commands(workdir: Path, path: Path) -> dict[str, list[str]]:
    ours = _zexus_bcache(workdir)
    return {
        MODES[0]: [str(Path(sys.executable).with_name("zx")), "run", str(path)],
        MODES[1]: [*ours, "run", "--no-server", str(path)],
        MODES[2]: [*ours, "run", str(path)],
    }


def _time(command: list[str], env: dict[str, str], cwd: Path) -> tuple[float, int, bytes]:
    t0 = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True, timeout=TIMEOUT_S)
    return time.perf_counter() - t0, done.returncode, done.stdout


def _server(command: str, env: dict[str, str]) -> str:
    done = subprocess.run([sys.executable, "-m", "zexus_bcache.server", command], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    return done.stdout


def _served(env: dict[str, str]) -> int:
    """Runs served by every server so far: the running ones say it, the ones that exited logged it.

    An edit of the checkout during the bench changes the build: its server stops and the next run
    starts another (that run goes in-process), so one server's count is not the bench's.
    """
    lines = _server("status", env).splitlines()
    rows = [dict(item.split("=", 1) for item in line.split() if "=" in item) for line in lines]
    running = sum(int(r.get("served", 0)) for r in rows if r.get("state") == "running")
    exited = 0
    for log in Path(env["ZEXUS_BCACHE_RUNTIME_DIR"]).glob("s-*.log"):
        for line in log.read_text(encoding="utf-8", errors="replace").splitlines():
            if "] exit after " in line:
                exited += int(line.split("] exit after ")[1].split()[0])
    return running + exited


def run(progs: list[Program], quick: bool, workdir: Path) -> dict[str, Any]:
    chosen = [p for p in progs if not p.upstream][: 4 if quick else None]
    repeat = 2 if quick else 3
    runtime = tempfile.mkdtemp(prefix="zxb-")  # short: a socket path must fit in 108 bytes
    (workdir / "cache").mkdir(mode=0o700)
    env = dict(os.environ, ZEXUS_BCACHE_RUNTIME_DIR=runtime, ZEXUS_BCACHE_PATH=str(workdir / "cache" / "bcache.db"),
               ZEXUS_BCACHE_SERVER_IDLE="600")  # fmt: skip
    env.pop("ZEXUS_BCACHE_SERVER", None)
    commands = {p.name: _commands(workdir, p.path) for p in chosen}
    samples: dict[str, dict[str, list[float]]] = {p.name: {m: [] for m in MODES} for p in chosen}
    checks: dict[str, dict[str, Any]] = {}
    reference: dict[str, dict[str, tuple[int, bytes]]] = {}
    try:
        start = _server("start", env)
        progress(f"run: {start.strip()}")
        for p in chosen:  # warm: the cache holds every program, the server runs
            outs = reference[p.name] = {m: _time(commands[p.name][m], env, workdir)[1:] for m in MODES}
            checks[p.name] = {"exit_codes": {m: o[0] for m, o in outs.items()},
                              "ours_same_output": outs[MODES[1]] == outs[MODES[2]]}  # fmt: skip
        served_before = _served(env)
        for r in range(repeat):
            for i, p in enumerate(chosen):
                k = (r + i) % len(MODES)
                for mode in MODES[k:] + MODES[:k]:
                    wall, code, out = _time(commands[p.name][mode], env, workdir)
                    samples[p.name][mode].append(wall)
                    if mode != MODES[0] and (code, out) != reference[p.name][MODES[1]]:
                        checks[p.name]["ours_same_output"] = False
            progress(f"run: pass {r + 1}/{repeat} over {len(chosen)} programs done")
        served = _served(env) - served_before
    finally:
        progress(f"run: {_server('stop', env).strip()}")
        shutil.rmtree(runtime, ignore_errors=True)
    per = {n: {m: median(s[m]) * 1e3 for m in MODES} for n, s in samples.items()}
    result: dict[str, Any] = {
        "programs": len(chosen),
        "repeat": repeat,
        "per_program_ms": per,
        "wall_ms": {m: summary(x[m] for x in per.values()) for m in MODES},
        "ratios": {
            "in_process_over_zx": ratio(
                [x[MODES[1]] / x[MODES[0]] for x in per.values()], "lower", "in-process warm / zx run, per program"
            ),
            "server_over_zx": ratio(
                [x[MODES[2]] / x[MODES[0]] for x in per.values()], "lower", "server warm / zx run, per program"
            ),
        },
        "checks": checks,
        "served_by_server": served,
        "server_runs_expected": repeat * len(chosen),
        "command": " ".join(commands[chosen[0].name][MODES[2]][:-2]) if chosen else "",
    }
    result["tables"] = tables(result)
    return result


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    zx = r["wall_ms"][MODES[0]]
    rows = [[MODES[0], zx["median"], zx["p95"], "1", ""]]
    goals = ((MODES[1], "in_process_over_zx", IN_PROCESS_GOAL), (MODES[2], "server_over_zx", SERVER_GOAL))
    for mode, key, goal in goals:
        w = r["wall_ms"][mode]
        rows.append([mode, w["median"], w["p95"], fmt_ratio(r["ratios"][key]), f"≤ {fmt(goal)}×"])
    same = sum(1 for c in r["checks"].values() if c["ours_same_output"])
    codes = sum(1 for c in r["checks"].values() if len(set(c["exit_codes"].values())) == 1)
    out = [table(
        f"`zexus-bcache run` vs `zx run`: whole processes, {r['programs']} corpus programs x {r['repeat']} "
        "interleaved runs",
        ["command", "wall ms (median over programs)", "p95 ms", "/ zx run (median per program, min–max)", "goal"],
        rows,
        f"Wall time of a new process from start to exit, as a shell runs it (stdin from /dev/null, output captured); "
        f"warm = the program's bytecode already in the cache and, for the server, the server already running. "
        f"Same exit code under all three: {codes}/{r['programs']} programs; in-process and server print the "
        f"same bytes: {same}/{r['programs']}; runs the server served: {r['served_by_server']} of "
        f"{r['server_runs_expected']}.",
        key=True,
    )]
    per = [[n, *(x[m] for m in MODES), x[MODES[1]] / x[MODES[0]], x[MODES[2]] / x[MODES[0]]]
           for n, x in r["per_program_ms"].items()]  # fmt: skip
    out.append(table("`run` per program (ms, median over runs)", ["program", *MODES, "in-process / zx", "server / zx"],
                     per))  # fmt: skip
    return out
