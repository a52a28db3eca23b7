"""What a bench run produces: the goals of steps 1–5 judged on the measured numbers, results.md,
chart.png, and the README's performance section."""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ._common import fmt

OURS_AST = "ours (memory)"
OURS_WARM = "ours (persistent)"

# ------------------------------------------------------------------------------------- goals


def _goal(step: str, goal: str, target: str, section: str, measure: Callable[[dict[str, Any]], tuple[bool, str, float]]) -> dict[str, Any]:
    return {"step": step, "goal": goal, "target": target, "section": section, "measure": measure}


def _fidelity(r: dict[str, Any]) -> tuple[bool, str, float]:
    f = r["codec"]["fidelity"]
    measured = (f"ours {f['ours']}/{f['compared']} ({f['ours_upstream']}/{f['upstream_compared']} of them zexus's own "
                f"programs); .zxc {f['zxc']}/{f['compared']}; pickle {f['pickle']}/{f['compared']}")  # fmt: skip
    return f["compared"] > 0 and f["ours"] == f["compared"], measured, f["ours"] / max(1, f["compared"])


def _codec_ratio(name: str) -> Callable[[dict[str, Any]], tuple[bool, str, float]]:
    def measure(r: dict[str, Any]) -> tuple[bool, str, float]:
        x = r["codec"]["ratios"][name]
        return x["median"] < 1.0, f"{fmt(x['median'])}× (per program {fmt(x['min'])}–{fmt(x['max'])})", x["median"]

    return measure


def _fuzz(r: dict[str, Any]) -> tuple[bool, str, float]:
    z = r["codec"]["fuzz"]
    return (z["n"] > 0 and z["unexpected"] == 0,
            f"{z['n']} blobs: {z['unexpected']} other exceptions ({z['codec_errors']} CodecError, {z['decoded']} decoded)",
            float(z["unexpected"]))  # fmt: skip


def _store_ratio(name: str) -> Callable[[dict[str, Any]], tuple[bool, str, float]]:
    def measure(r: dict[str, Any]) -> tuple[bool, str, float]:
        x = r["store"]["ratios"][name]
        measured = f"{fmt(x['pooled'])}× (median per round {fmt(x['min'])}–{fmt(x['max'])})"
        if name == "store_get_over_dc_lru_get" and "bytes_level" in r["store"]:
            # Our get defers its LRU bookkeeping to a batched flush, which diskcache's LRU get does inline:
            # say what the comparison gives with that write counted.
            b = r["store"]["bytes_level"]
            with_flush = (b["store.get"]["median"] + b["flush per access"]["median"]) / b["dc_lru.get"]["median"]
            measured += f"; {fmt(with_flush)}× counting its deferred access write (flush, per access)"
        return x["pooled"] <= x["target"], measured, x["pooled"]

    return measure


WARM_GOAL = 30  # warm start vs lex+parse+compile, median over the corpus (issue 15)


def _warm(r: dict[str, Any]) -> tuple[bool, str, float]:
    x = r["warm"]["peers"][OURS_WARM]["speedup"]
    zexus = r["warm"]["peers"].get("zexus (persistent)", {}).get("speedup")
    extra = f"; zexus persistent {fmt(zexus['median'])}× (lossy)" if zexus and x["n"] else ""
    again = r["warm"]["peers"][OURS_WARM].get("speedup_again")
    if again:
        extra = f"; {fmt(again['median'])}× for a second warm start in the process (first decode paid)" + extra
    return x["median"] >= WARM_GOAL, f"{fmt(x['median'])}× (per program {fmt(x['min'])}–{fmt(x['max'])}){extra}", x["median"]


def _ast(r: dict[str, Any]) -> tuple[bool, str, float]:
    peers = r["seed"]["hit_vs_miss"]["peers"]
    x = peers[OURS_AST]["compile_over_hit"]
    z = peers["zexus (memory)"]["compile_over_hit"]
    measured = f"{fmt(x['median'])}× (per program {fmt(x['min'])}–{fmt(x['max'])}); zexus's own {fmt(z['median'])}×"
    return x["median"] >= 3, measured, x["median"]


def _load_clean(r: dict[str, Any]) -> tuple[bool, str, float]:
    ours = [x for x in r["load"]["rows"] if x["impl"] in ("store", "facade", "facade+front")]
    errors = sum(x["errors"] for x in ours)
    wrong = sum(x["wrong"] for x in ours)
    ops = sum(x["ops"] for x in ours)
    procs = sorted({x["processes"] for x in ours})
    return (bool(ours) and errors == 0 and wrong == 0,
            f"{errors} errors, {wrong} wrong reads in {ops:,} ops ({'/'.join(map(str, procs))} processes)",
            float(errors + wrong))  # fmt: skip


def _load_throughput(r: dict[str, Any]) -> tuple[bool, str, float]:
    xs = {k: v for k, v in r["load"]["ratios"].items() if k.startswith("store / diskcache")}
    worst = min(v["of_medians"] for v in xs.values())
    measured = "; ".join(f"{k.split('@ ')[1]}: {fmt(v['of_medians'])}× (rounds {fmt(v['min'])}–{fmt(v['max'])})"
                         for k, v in xs.items())  # fmt: skip
    return worst >= 1.0, measured, worst


def _run_ratio(name: str, target: float) -> Callable[[dict[str, Any]], tuple[bool, str, float]]:
    def measure(r: dict[str, Any]) -> tuple[bool, str, float]:
        x = r["run"]["ratios"][name]
        return x["median"] <= target, f"{fmt(x['median'])}× (per program {fmt(x['min'])}–{fmt(x['max'])})", x["median"]

    return measure


GOALS = [
    _goal("1 codec", "every corpus program runs identically from decoded bytecode", "all programs", "codec", _fidelity),
    _goal("1 codec", "encoded size vs zexus .zxc", "< 1.0× (smaller)", "codec", _codec_ratio("size_ours_over_zxc")),
    _goal("1 codec", "decode time vs zexus .zxc", "< 1.0× (faster)", "codec", _codec_ratio("decode_us_ours_over_zxc")),
    _goal("1 codec", "fuzz: mutated blobs raise only CodecError", "0 other exceptions", "codec", _fuzz),
    _goal("2 store", "front hit vs diskcache get", "≤ 0.10×", "store", _store_ratio("front_hit_over_dc_get")),
    _goal("2 store", "store get (cold front) vs diskcache get (default)", "≤ 1.0×", "store",
          _store_ratio("store_get_over_dc_get")),
    _goal("2 store", "store get vs diskcache get (LRU policy)", "≤ 0.25×", "store",
          _store_ratio("store_get_over_dc_lru_get")),
    _goal("2 store", "store put vs diskcache set", "≤ 0.75×", "store", _store_ratio("store_put_over_dc_set")),
    _goal("3 warm", "warm start (new process, store hit) vs cold lex+parse+compile", f"≥ {WARM_GOAL}× (median)", "warm", _warm),
    _goal("3 warm", "AST-keyed hit (key + front lookup) vs compiling the same AST", "≥ 3× (median)", "seed", _ast),
    _goal("5 load", "many processes: errors and wrong reads (store, façade)", "0 and 0", "load", _load_clean),
    _goal("5 load", "store throughput vs diskcache under N processes", "≥ 1.0× at every N", "load", _load_throughput),
    _goal("12 run", "`zexus-bcache run` through the warm server vs `zx run` (wall, warm)", "≤ 0.4× (median)", "run",
          _run_ratio("server_over_zx", 0.4)),
    _goal("12 run", "`zexus-bcache run --no-server` in-process vs `zx run` (wall, warm)", "≤ 0.8× (median)", "run",
          _run_ratio("in_process_over_zx", 0.8)),
]


def evaluate_goals(sections: dict[str, Any]) -> list[dict[str, Any]]:
    """Each goal judged on the measured numbers: met True/False, or None when its section did not run."""
    out = []
    for g in GOALS:
        row = {k: g[k] for k in ("step", "goal", "target", "section")}
        result = sections.get(g["section"])
        if not isinstance(result, dict) or "error" in result or skipped(result):
            why = "section not run" if result is None else ("section failed" if "error" in (result or {}) else "skipped")
            row.update(met=None, measured=f"not measured ({why})", value=None)
        else:
            try:
                met, measured, value = g["measure"](sections)
            except (KeyError, ValueError, ZeroDivisionError, TypeError) as exc:
                row.update(met=None, measured=f"not measured ({type(exc).__name__}: {exc})", value=None)
            else:
                row.update(met=bool(met), measured=measured, value=value)
        out.append(row)
    return out


def skipped(section: Any) -> str | None:
    """Why a section did not run (its "skipped" is a sentence; a section may use the key for other things)."""
    why = section.get("skipped") if isinstance(section, dict) else None
    return why if isinstance(why, str) else None


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**not met**", None: "not measured"}[met]


# ---------------------------------------------------------------------------------- markdown


def md_table(t: dict[str, Any], level: str = "###") -> str:
    lines = [f"{level} {t['title']}", ""]
    lines.append("| " + " | ".join(t["columns"]) + " |")
    lines.append("|" + "|".join("---" for _ in t["columns"]) + "|")
    for row in t["rows"]:
        cells = [fmt(c) if isinstance(c, float) else str(c) for c in row]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    if t.get("note"):
        lines += ["", t["note"]]
    return "\n".join(lines) + "\n"


def goals_table(goals: list[dict[str, Any]]) -> str:
    lines = ["| step | goal | target | measured | verdict |", "|---|---|---|---|---|"]
    for g in goals:
        lines.append(f"| {g['step']} | {g['goal']} | {g['target']} | {g['measured']} | {verdict(g['met'])} |")
    return "\n".join(lines) + "\n"


def machine_statement(meta: dict[str, Any]) -> str:
    m = meta["machine"]
    v = m["versions"]
    start, end = meta["loadavg_start"], meta["loadavg_end"]
    return (f"{m['cores']} cores ({m['cpu']}), {m['implementation']} {m['python']}, SQLite {m['sqlite']}; zexus "
            f"{v['zexus']}, SQLAlchemy {v['sqlalchemy']}, diskcache {v['diskcache']}. Load average (1, 5, 15 min) "
            f"{', '.join(map(str, start))} at the start, {', '.join(map(str, end))} at the end. "
            f"**Noise:** {meta['noise']}")  # fmt: skip


def render_markdown(results: dict[str, Any]) -> str:
    meta = results["meta"]
    out = [f"# zexus_bcache bench ({meta['mode']} run, {meta['started']}, {meta['wall_s']:.0f} s)", "",
           machine_statement(meta), "", f"Programs: {meta['programs']} ({meta['programs_note']}).", "",
           "## Goals of steps 1–5", "", goals_table(results["goals"])]  # fmt: skip
    for name, section in results["sections"].items():
        out.append(f"## {name}" + (f" ({section['elapsed_s']:.0f} s)" if "elapsed_s" in section else ""))
        out.append("")
        if skipped(section):
            out.append(f"skipped: {skipped(section)}\n")
            continue
        if "error" in section:
            out.append(f"failed:\n\n```\n{section['error']}\n```\n")
            continue
        tables = section.get("tables")
        if tables:
            out += [md_table(t) for t in tables]
        else:  # a section that brings no tables (the shared tier's may not): its numbers as they are
            out.append("```json\n" + json.dumps({k: v for k, v in section.items() if k != "elapsed_s"}, indent=1,
                                                default=str)[:6000] + "\n```\n")  # fmt: skip
    return "\n".join(out)


# ------------------------------------------------------------------------------------- chart


def chart(results: dict[str, Any], path: Path) -> None:
    """The key ratios and latencies, medians with min–max error bars (Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    s = results["sections"]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    fig.suptitle(f"zexus_bcache vs peers ({results['meta']['mode']} run, {results['meta']['started']}; "
                 f"{results['meta']['machine']['cores']} cores, noisy shared machine): medians; blue = ours, grey = peers")  # fmt: skip

    def bars(ax: Any, labels: list[str], med: list[float], lo: list[float], hi: list[float], title: str,
             ylabel: str, log: bool = True, line: float | None = None) -> None:  # fmt: skip
        colors = ["tab:blue" if lab.startswith(("ours", "store", "facade")) else
                  "tab:orange" if lab.startswith("no cache") else "tab:gray" for lab in labels]  # fmt: skip
        err = [[max(0.0, m - a) for m, a in zip(med, lo, strict=True)], [max(0.0, b - m) for m, b in zip(med, hi, strict=True)]]
        ax.bar(range(len(labels)), med, yerr=err, color=colors, capsize=3)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(ylabel, fontsize=9)
        if log:
            ax.set_yscale("log")
            ticks = matplotlib.ticker.FuncFormatter(lambda v, _pos: fmt(v))
            ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(ticks)
            ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
            ax.tick_params(axis="y", which="both", labelsize=7)
        if line is not None:
            ax.axhline(line, color="tab:red", linestyle="--", linewidth=1, label=f"goal {fmt(line)}×")
            top = max([*hi, line]) * (2.0 if log else 1.15)
            ax.set_ylim(top=top)
            ax.legend(fontsize=8, loc="upper right")

    def empty(ax: Any, title: str) -> None:
        ax.set_title(title, fontsize=10)
        ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()

    ok = lambda name: name in s and "tables" in s[name]  # noqa: E731
    ax = axes[0][0]
    if ok("warm"):
        p = s["warm"]["peers"]
        names = [n for n in p if p[n]["speedup"]["n"]]
        bars(ax, names, [p[n]["speedup"]["median"] for n in names], [p[n]["speedup"]["min"] for n in names],
             [p[n]["speedup"]["max"] for n in names], "Warm start: cold / warm, new process (bars: min–max over programs)", "× faster (higher is better)",
             line=30)  # fmt: skip
    else:
        empty(ax, "Warm start")
    ax = axes[0][1]
    if ok("seed"):
        p = s["seed"]["hit_vs_miss"]["peers"]
        names = list(p)
        x = [p[n]["compile_over_hit"] for n in names]
        bars(ax, names, [r["median"] for r in x], [r["min"] for r in x], [r["max"] for r in x],
             "AST-keyed hit: compile / hit (bars: min–max over programs)", "× (higher is better)", line=3)
    else:
        empty(ax, "AST-keyed hit vs compile")
    ax = axes[0][2]
    if ok("store"):
        b = s["store"]["bytecode_level"]
        names = [n[: -len(" get")] for n in b if n.endswith(" get")]
        rm = [b[f"{n} get"]["round_medians"] for n in names]
        bars(ax, names, [b[f"{n} get"]["median"] for n in names], [min(x) for x in rm], [max(x) for x in rm],
             "Bytecode get by key, front and store tiers (bars: rounds)", "µs per get (lower is better)")
    else:
        empty(ax, "Get latency")
    ax = axes[1][0]
    if ok("seed"):
        rows = s["seed"]["memory"]["per_program"]
        xs = [r["instructions"] for r in rows]
        for key, label, marker in (("real", "real (tracemalloc)", "o"), ("ours", "ours: front accounting", "x"),
                                   ("zexus", "zexus: its estimate", "^")):  # fmt: skip
            ax.scatter(xs, [r[key] / 1024 for r in rows], label=label, marker=marker, s=18)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("instructions", fontsize=9)
        ax.set_ylabel("KiB per entry", fontsize=9)
        ax.set_title("Memory per entry vs instruction count", fontsize=10)
        ax.legend(fontsize=8)
    else:
        empty(ax, "Memory per entry")
    ax = axes[1][1]
    if ok("seed"):
        p = s["seed"]["workload_80_20"]["peers"]
        names = list(p)
        bars(ax, names, [p[n]["mean_us"]["median"] for n in names], [p[n]["mean_us"]["min"] for n in names],
             [p[n]["mean_us"]["max"] for n in names], "80/20 workload: mean time per request (bars: runs)", "µs (lower is better)")
    else:
        empty(ax, "80/20 workload")
    ax = axes[1][2]
    if ok("load"):
        rows = s["load"]["rows"]
        labels = [f"{r['impl']} ×{r['processes']}" for r in rows]
        rounds = [r["ops_per_s_rounds"] for r in rows]
        bars(ax, labels, [r["ops_per_s"] for r in rows], [min(x) for x in rounds], [max(x) for x in rounds],
             "Many processes: throughput (bars: rounds)", "ops/s (higher is better)")
    else:
        empty(ax, "Many processes")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -------------------------------------------------------------------------------------- README

BEGIN = re.compile(r"<!-- bench:begin[^>]*-->")
END = "<!-- bench:end -->"


def readme_section(results: dict[str, Any], out_dir: Path, root: Path) -> str:
    meta = results["meta"]
    try:
        chart_link = (out_dir / "chart.png").resolve().relative_to(root).as_posix()
        md_link = (out_dir / "results.md").resolve().relative_to(root).as_posix()
    except ValueError:
        chart_link, md_link = "bench/results/chart.png", "bench/results/results.md"
    met = sum(1 for g in results["goals"] if g["met"])
    lines = [
        f"Generated from a {meta['mode']} run of `python -m bench` on {meta['started']} ({meta['wall_s']:.0f} s wall "
        f"time); every table puts ours and the peers on the same workload in the same run. {machine_statement(meta)}",
        "",
        f"Peers: zexus {meta['machine']['versions']['zexus']}'s own `BytecodeCache` in memory and with "
        "`persistent=True` (its `.zxc` files), and diskcache holding our codec's bytes or pickling the bytecode. "
        f"Programs: {meta['programs']} ({meta['programs_note']}). Every table of the run, with per-program figures: "
        f"[{md_link}]({md_link}); the numbers: `{md_link[:-len('results.md')]}results.json`.",
        "",
        f"### Goals of steps 1–5: {met} of {len(results['goals'])} met",
        "",
        goals_table(results["goals"]),
        f"![key ratios, medians with min–max bars]({chart_link})",
        "",
    ]
    for name, section in results["sections"].items():
        if skipped(section):
            lines += [f"**{name}**: skipped: {skipped(section)}", ""]
            continue
        for t in section.get("tables", []):
            if t.get("key"):
                lines.append(md_table(t, "####"))
    lines += [
        "#### Reproduce",
        "",
        "```sh",
        ".venv/bin/pip install -q -e '.[bench]'",
        ".venv/bin/python -m bench --update-readme   # the full run, a few minutes; rewrites this section",
        ".venv/bin/python -m bench --quick           # under a minute, what tests/test_bench.py runs",
        ".venv/bin/python -m bench --only warm seed  # some sections (codec store seed warm load shared)",
        "```",
        "",
        "Results go to `bench/results/` (results.json, results.md, chart.png; the latest run only). The shared "
        "(PostgreSQL) section runs when `ZEXUS_BCACHE_TEST_PG_URL` or `--pg-url` is set.",
    ]
    return "\n".join(lines)


def update_readme(readme: Path, body: str) -> None:
    """Replace what is between the bench markers, nothing else."""
    text = readme.read_text(encoding="utf-8")
    begin = BEGIN.search(text)
    if begin is None or END not in text[begin.end():]:
        raise SystemExit(f"{readme}: no <!-- bench:begin ... --> ... {END} markers")
    end = text.index(END, begin.end())
    readme.write_text(text[: begin.end()] + "\n" + body.strip() + "\n" + text[end:], encoding="utf-8")


def finite_positive(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > 0
