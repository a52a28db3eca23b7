"""python -m bench: every section in one run; results.json, results.md and chart.png under --out."""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

from . import SECTIONS, report
from ._common import ROOT, corpus, loadavg, machine, progress

NOISE = ("the machine is shared with other work and was not quiet during the run: absolute times move by tens of "
         "percent between runs. Every comparison interleaves or rotates the implementations so that noise hits "
         "them alike, reports medians (p95 and min–max beside them), and ratios taken in the same run are the "
         "figures to trust, not single absolute times.")  # fmt: skip
LEGACY = ("load.json", "warm.json")  # what the scripts of steps 3 and 5 wrote before this suite


def shared(quick: bool, pg_url: str | None) -> dict[str, Any]:
    """The shared (PostgreSQL) tier, measured by bench/bench_shared.py when a server is given."""
    url = pg_url or os.environ.get("ZEXUS_BCACHE_TEST_PG_URL")
    if not url:
        return {"skipped": "no PostgreSQL server: set ZEXUS_BCACHE_TEST_PG_URL or pass --pg-url"}
    if importlib.util.find_spec("bench.bench_shared") is None:
        return {"skipped": "bench/bench_shared.py does not exist yet"}
    module = importlib.import_module("bench.bench_shared")
    result = module.run(url, quick=quick)
    return result if isinstance(result, dict) else {"result": result}


def run_section(name: str, args: argparse.Namespace, progs: list[Any], workdir: Path) -> dict[str, Any]:
    from zexus_bcache import pipeline

    where = workdir / name
    where.mkdir()
    with pipeline.quiet():  # zexus's own prints stay out of the tables
        if name == "codec":
            from . import bench_codec

            return bench_codec.run(progs, args.quick, where)
        if name == "store":
            from . import bench_store

            return bench_store.run(progs, args.quick, where)
        if name == "seed":
            from . import bench_seed

            return bench_seed.run(progs, args.quick, where)
        if name == "warm":
            from . import bench_warm

            return bench_warm.run(progs, args.quick, where)
        if name == "load":
            from . import bench_load

            return bench_load.run([p.blob for p in progs if not p.upstream], args.quick, where)
        if name == "run":
            from . import bench_run

            return bench_run.run(progs, args.quick, where)
        if name == "shared":
            return shared(args.quick, args.pg_url)
    raise ValueError(name)


def write(results: dict[str, Any], out: Path, update_readme: bool) -> None:
    """results.json, results.md and chart.png under out (the latest run only); the README if asked."""
    out.mkdir(parents=True, exist_ok=True)
    for legacy in LEGACY:
        (out / legacy).unlink(missing_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1, default=str), encoding="utf-8")
    markdown = report.render_markdown(results)
    (out / "results.md").write_text(markdown, encoding="utf-8")
    report.chart(results, out / "chart.png")
    print(markdown)
    if update_readme:
        report.update_readme(ROOT / "README.md", report.readme_section(results, out, ROOT))
        progress("README.md performance section rewritten")


def rerender(args: argparse.Namespace) -> int:
    results = json.loads((args.out / "results.json").read_text(encoding="utf-8"))
    for name, section in results["sections"].items():  # the tables again, from the numbers
        if name != "shared" and "tables" in section:
            section["tables"] = importlib.import_module(f"bench.bench_{name}").tables(section)
    results["goals"] = report.evaluate_goals(results["sections"])
    if args.update_readme and results["meta"]["sections"] != list(SECTIONS):
        progress("--update-readme needs a run of every section: README not touched")
        args.update_readme = False
    write(results, args.out, args.update_readme)
    return 0


def byte_compile_ours() -> None:
    """Write zexus_bcache's .pyc files first, as an installed wheel has them.

    An editable install run with PYTHONDONTWRITEBYTECODE (set on some machines) would otherwise
    compile our modules from source in every child process: ~15 ms counted against us in each
    new process's open, while zexus and diskcache, installed by pip, load their .pyc files.
    """
    import compileall

    import zexus_bcache

    compileall.compile_dir(Path(zexus_bcache.__file__).parent, quiet=1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    ap.add_argument("--quick", action="store_true", help="fewer programs, repeats and processes (under 60 s)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results", help="where results go (overwritten)")
    ap.add_argument("--only", nargs="+", choices=SECTIONS, metavar="SECTION", help=f"some of: {' '.join(SECTIONS)}")
    ap.add_argument("--update-readme", action="store_true", help="rewrite the README's performance section")
    ap.add_argument("--pg-url", help="PostgreSQL URL for the shared section (default $ZEXUS_BCACHE_TEST_PG_URL)")
    ap.add_argument("--rerender", action="store_true",
                    help="measure nothing: judge the goals and rewrite results.md, chart.png (and the README) "
                         "from --out's results.json")  # fmt: skip
    args = ap.parse_args(argv)
    if args.rerender:
        return rerender(args)
    selected = [s for s in SECTIONS if not args.only or s in args.only]
    byte_compile_ours()
    t0 = time.perf_counter()
    meta: dict[str, Any] = {"mode": "quick" if args.quick else "full", "started": time.strftime("%Y-%m-%d %H:%M %Z"),
                            "loadavg_start": loadavg(), "machine": machine(), "noise": NOISE, "sections": selected,
                            "argv": sys.argv[1:] if argv is None else argv}  # fmt: skip
    progress(f"{meta['mode']} run: {', '.join(selected)}; load average {meta['loadavg_start']}")
    sections: dict[str, Any] = {}
    failed = False
    with tempfile.TemporaryDirectory(prefix="zexus-bench-") as tmp:
        progs, skipped = corpus(args.quick)
        meta["programs"] = len(progs)
        meta["programs_note"] = (f"{sum(not p.upstream for p in progs)} from tests/corpus, "
                                 f"{sum(p.upstream for p in progs)} shipped with zexus"
                                 + (f"; not compilable by zexus, left out: {', '.join(skipped)}" if skipped else "")
                                 + ("; quick mode: 6 programs spread over the sizes" if args.quick else ""))  # fmt: skip
        for name in selected:
            progress(f"section {name} ...")
            t_s = time.perf_counter()
            try:
                result = run_section(name, args, progs, Path(tmp))
            except Exception:
                failed = True
                result = {"error": traceback.format_exc()}
                progress(f"section {name} FAILED:\n{result['error']}")
            result["elapsed_s"] = time.perf_counter() - t_s
            sections[name] = result
            progress(f"section {name}: {result['elapsed_s']:.1f} s")
    meta["loadavg_end"] = loadavg()
    meta["wall_s"] = time.perf_counter() - t0
    results = {"meta": meta, "goals": report.evaluate_goals(sections), "sections": sections}

    if args.update_readme and args.only:
        progress("--update-readme needs every section: README not touched")
        failed = True
    write(results, args.out, args.update_readme and not args.only)
    progress(f"done in {meta['wall_s']:.0f} s; results in {args.out}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
