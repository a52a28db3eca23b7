"""The bench still works: `python -m bench --quick` runs every section and judges every goal from its numbers.

Nothing here checks how fast anything is (CI machines are noisy); only that the suite runs, that
its numbers are real measurements (finite, positive), and that each goal's verdict follows from
the measured figure and its target.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from bench import SECTIONS, report  # noqa: E402
from bench.__main__ import shared  # noqa: E402

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
PG_URL = os.environ.get("ZEXUS_BCACHE_TEST_PG_URL")


def _bench(out: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # Bounded, but not by what a quick run takes on an idle machine: a busy one (load 6 on 2 cores) took over 180 s.
    return subprocess.run([sys.executable, "-m", "bench", "--quick", "--out", str(out), *extra], cwd=ROOT,
                          capture_output=True, text=True, timeout=600, env=env)  # fmt: skip


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Any], str]]:
    out = tmp_path_factory.mktemp("bench")
    # The shared tier has its own test below: without a server here, this run's time is predictable.
    env = {k: v for k, v in os.environ.items() if k != "ZEXUS_BCACHE_TEST_PG_URL"}
    done = _bench(out, env=env)
    assert done.returncode == 0, done.stderr[-4000:]
    yield out, json.loads((out / "results.json").read_text(encoding="utf-8")), done.stdout


def _summaries(node: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], dict[str, Any]]]:
    """Every statistics dict (one with a median) in a result, with where it is."""
    if isinstance(node, dict):
        if "median" in node and "min" in node and "max" in node:
            yield path, node
        for k, v in node.items():
            yield from _summaries(v, (*path, str(k)))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _summaries(v, (*path, str(i)))


def _is_timing_or_ratio(path: tuple[str, ...], s: dict[str, Any]) -> bool:
    name = path[-1] if path else ""
    return ("better" in s or name.endswith(("_us", "_ms", "_s")) or
            (len(path) >= 2 and (path[-2] in ("bytes_level", "bytecode_level")
                                 or path[-2].endswith(("_us", "_ms", "_s")))))  # fmt: skip


def test_quick_run_has_every_section_with_real_numbers(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = quick_run
    sections = results["sections"]
    assert list(sections) == list(SECTIONS)
    assert report.skipped(sections["shared"])
    for name in SECTIONS:
        if name == "shared":
            continue
        section = sections[name]
        assert "error" not in section, section.get("error")
        assert section["tables"], name
        checked = {"timing": 0, "ratio": 0}
        for path, s in _summaries(section):
            assert s["n"] > 0, (name, path)
            for key in ("median", "min", "max", "p95"):
                assert math.isfinite(s[key]), (name, path, key, s)
            if _is_timing_or_ratio(path, s):
                assert s["min"] > 0 and s["median"] > 0, (name, path, s)
                assert s["min"] <= s["median"] <= s["max"], (name, path, s)
                checked["ratio" if "better" in s else "timing"] += 1
        assert checked["ratio"] > 0 and checked["timing"] + checked["ratio"] >= 3, (name, checked)
    meta = results["meta"]
    assert meta["machine"]["cores"] and meta["machine"]["cpu"] and meta["machine"]["versions"]["zexus"]
    assert meta["loadavg_start"] and meta["loadavg_end"] and meta["noise"]


def test_quick_run_writes_markdown_and_a_png(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    out, results, stdout = quick_run
    md = (out / "results.md").read_text(encoding="utf-8")
    assert "## Goals of steps 1–5" in md and "**Noise:**" in md
    for name in SECTIONS:
        assert f"## {name}" in md
    assert md.strip() in stdout  # the tables go to stdout, progress to stderr
    png = (out / "chart.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 10_000


def test_every_goal_is_judged_from_the_measured_numbers(quick_run: tuple[Path, dict[str, Any], str]) -> None:
    _, results, _ = quick_run
    goals = results["goals"]
    assert [g["goal"] for g in goals] == [g["goal"] for g in report.GOALS]
    for g in goals:
        assert g["met"] in (True, False), g  # every section ran: nothing "not measured"
        assert g["measured"] and not g["measured"].startswith("not measured")
    # The verdicts are a function of the numbers in results.json, nothing else.
    assert report.evaluate_goals(results["sections"]) == json.loads(json.dumps(goals))
    store = results["sections"]["store"]["ratios"]
    by_goal = {g["goal"]: g for g in goals}
    x = store["store_put_over_dc_set"]
    assert by_goal["store put vs diskcache set"]["met"] == (x["pooled"] <= 0.75)
    warm = results["sections"]["warm"]["peers"]["ours (persistent)"]["speedup"]["median"]
    assert by_goal["warm start (new process, store hit) vs cold lex+parse+compile"]["met"] == (warm >= report.WARM_GOAL)


# ------------------------------------------------------------------ the goal evaluation, on made-up numbers


def _r(m: float, **extra: Any) -> dict[str, Any]:
    return {"median": m, "p95": m, "min": m * 0.9, "max": m * 1.1, "mean": m, "n": 5, **extra}


def synthetic(good: bool) -> dict[str, Any]:
    """Sections with exactly the fields the goals read; every goal met (good) or every goal missed."""
    g = good
    store = {name: _r(x, pooled=x, target=t) for name, x, t in (
        ("front_hit_over_dc_get", 0.08 if g else 0.2, 0.10),
        ("store_get_over_dc_get", 1.0 if g else 1.01, 1.0),  # at the target is met
        ("store_get_over_dc_lru_get", 0.2 if g else 0.3, 0.25),
        ("store_put_over_dc_set", 0.7 if g else 1.1, 0.75))}  # fmt: skip
    return {
        "codec": {"fidelity": {"compared": 10, "ours": 10 if g else 9, "ours_upstream": 2, "upstream_compared": 2,
                               "zxc": 1, "pickle": 10},
                  "ratios": {"size_ours_over_zxc": _r(0.5 if g else 1.0), "decode_us_ours_over_zxc": _r(0.5 if g else 1.5)},
                  "fuzz": {"n": 100, "unexpected": 0 if g else 1, "codec_errors": 99, "decoded": 0}},
        "store": {"ratios": store, "bytes_level": {"store.get": _r(10.0), "flush per access": _r(4.0), "dc_lru.get": _r(60.0)}},
        "warm": {"peers": {"ours (persistent)": {"speedup": _r(report.WARM_GOAL if g else report.WARM_GOAL - 0.1)}}},
        "run": {"ratios": {"server_over_zx": _r(0.4 if g else 0.41), "in_process_over_zx": _r(0.8 if g else 0.81)}},
        "seed": {"hit_vs_miss": {"peers": {"ours (memory)": {"compile_over_hit": _r(3.0 if g else 2.9)},
                                           "zexus (memory)": {"compile_over_hit": _r(0.6)}}}},
        "load": {"rows": [{"impl": "store", "processes": 4, "errors": 0, "wrong": 0 if g else 2, "ops": 1000},
                          {"impl": "facade", "processes": 4, "errors": 0, "wrong": 0, "ops": 100}],
                 "ratios": {"store / diskcache @ 4 processes": _r(1.2, of_medians=1.2),
                            "store / diskcache @ 8 processes": _r(1.0 if g else 0.99, of_medians=1.0 if g else 0.99)}},
    }  # fmt: skip


def test_goals_met_on_good_numbers() -> None:
    goals = report.evaluate_goals(synthetic(good=True))
    assert [g["met"] for g in goals] == [True] * len(report.GOALS), [g for g in goals if not g["met"]]


def test_goals_missed_on_bad_numbers() -> None:
    goals = report.evaluate_goals(synthetic(good=False))
    assert [g["met"] for g in goals] == [False] * len(report.GOALS), [g for g in goals if g["met"]]


def test_goals_of_a_section_not_run_are_not_measured() -> None:
    sections = synthetic(good=True)
    del sections["warm"]
    sections["load"] = {"error": "Traceback ..."}
    goals = {g["goal"]: g for g in report.evaluate_goals(sections)}
    assert goals["warm start (new process, store hit) vs cold lex+parse+compile"]["met"] is None
    assert goals["store throughput vs diskcache under N processes"]["met"] is None
    assert goals["store put vs diskcache set"]["met"] is True


def test_readme_markers_are_replaced_and_nothing_else(tmp_path: Path) -> None:
    readme = tmp_path / "README.md"
    readme.write_text("# x\n\nbefore\n<!-- bench:begin (generated) -->\nold\n<!-- bench:end -->\nafter\n")
    report.update_readme(readme, "new body")
    assert readme.read_text() == "# x\n\nbefore\n<!-- bench:begin (generated) -->\nnew body\n<!-- bench:end -->\nafter\n"


def test_shared_section_says_why_it_is_skipped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ZEXUS_BCACHE_TEST_PG_URL", raising=False)
    assert "ZEXUS_BCACHE_TEST_PG_URL" in shared(quick=True, pg_url=None)["skipped"]


@pytest.mark.skipif(not PG_URL, reason="no PostgreSQL server (ZEXUS_BCACHE_TEST_PG_URL) for the shared section")
def test_shared_section_runs_on_a_server(tmp_path: Path) -> None:
    done = _bench(tmp_path, "--only", "shared", "--pg-url", PG_URL or "")
    assert done.returncode == 0, done.stderr[-4000:]
    section = json.loads((tmp_path / "results.json").read_text())["sections"]["shared"]
    assert "error" not in section and not report.skipped(section), section
    assert section.get("tables"), section
    assert "## shared" in (tmp_path / "results.md").read_text()
