"""Warm vs cold starts over the corpus: a new process, the program cached on disk by an earlier one.

Each sample is a new interpreter (``python -m bench._child warm``) that, for every persistent
cache in a rotating order, opens the cache (timed apart) and fetches the program (the warm
start), then lexes, parses and compiles the same source (the cold start; this process has never
parsed anything, so zexus's block cache is empty). Caches:

* ours (persistent): ``BytecodeCache(path).compile_source`` (source key, SELECT, decode);
* zexus (persistent): ``get_by_file(path)`` (stat + read + MD5 of the file, .zxc file, deserialize);
  its bytecode is lossy (see the codec section);
* diskcache+codec / diskcache+pickle: our source key, ``get``, decode / unpickle.

zexus (memory) and ours (memory): n/a (nothing survives the process).

Run alone: python -m bench --only warm [--quick]
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from ._common import ROOT, Program, fmt, fmt_ratio, median, progress, ratio, summary, table

IMPLS = ("ours (persistent)", "zexus (persistent)", "diskcache+codec", "diskcache+pickle")
OURS = IMPLS[0]


def fill(progs: list[Program], workdir: Path) -> dict[str, str]:
    """Every program cached by every implementation, as an earlier process would have left it."""
    import diskcache

    from zexus_bcache import keys, pipeline
    from zexus_bcache.cache import BytecodeCache

    with pipeline.quiet():
        from zexus.vm.cache import BytecodeCache as Upstream
    where = {OURS: str(workdir / "ours.db"), "zexus (persistent)": str(workdir / "zexus"),
             "diskcache+codec": str(workdir / "dc_codec"), "diskcache+pickle": str(workdir / "dc_pickle")}  # fmt: skip
    fingerprint = keys.compiler_fingerprint()
    with BytecodeCache(path=where[OURS]) as ours:
        for p in progs:
            ours.compile_source(p.source, str(p.path))
    upstream = Upstream(persistent=True, cache_dir=where["zexus (persistent)"])
    with diskcache.Cache(where["diskcache+codec"]) as dc_codec, diskcache.Cache(where["diskcache+pickle"]) as dc_pickle:
        for p in progs:
            upstream.put_by_file(str(p.path), [p.bytecode])
            key = keys.source_key(p.source, fingerprint, str(p.path))
            dc_codec.set(key, p.blob)
            dc_pickle.set(key, p.bytecode)
    return where


def run(progs: list[Program], quick: bool, workdir: Path) -> dict[str, Any]:
    repeat = 1 if quick else 3
    where = fill(progs, workdir)
    samples: dict[str, list[dict[str, Any]]] = {p.name: [] for p in progs}
    for r in range(repeat):
        for i, p in enumerate(progs):
            k = (r + i) % len(IMPLS)
            order = list(IMPLS[k:] + IMPLS[:k])
            spec = json.dumps({"program": str(p.path), "where": where, "order": order})
            done = subprocess.run([sys.executable, "-m", "bench._child", "warm", spec], capture_output=True,
                                  text=True, timeout=120, cwd=ROOT)  # fmt: skip
            if done.returncode != 0:
                raise RuntimeError(f"warm child failed on {p.name}: {done.stderr[-2000:]}")
            samples[p.name].append(json.loads(done.stdout.strip().splitlines()[-1]))
        progress(f"warm: pass {r + 1}/{repeat} over {len(progs)} programs done")
    result: dict[str, Any] = {"repeat": repeat, "programs": len(progs), "peers": {}, "per_program": {}}
    cold = {n: median(s["cold_s"] for s in ss) for n, ss in samples.items()}
    result["cold_ms"] = summary(cold.values(), 1e3)
    def hit_everywhere(impl: str) -> dict[str, list[dict[str, Any]]]:
        """The programs this cache served in every sample (a miss's time is not a warm start)."""
        return {n: ss for n, ss in samples.items() if all(s["ok"][impl] for s in ss)}

    for impl in IMPLS:
        served = hit_everywhere(impl)
        warm = {n: median(s["warm_s"][impl] for s in ss) for n, ss in served.items()}
        per_repeat = [median(ss[j]["cold_s"] / ss[j]["warm_s"][impl] for ss in served.values()) for j in range(repeat)]
        result["peers"][impl] = {
            "warm_ms": summary(warm.values(), 1e3),
            "open_ms": summary((median(s["open_s"][impl] for s in ss) for ss in served.values()), 1e3),
            "speedup": ratio([cold[n] / w for n, w in warm.items()], "higher", "cold / warm, per program"),
            "speedup_per_pass": per_repeat,
            "hits": sum(s["ok"][impl] for ss in samples.values() for s in ss),
            "samples": sum(len(ss) for ss in samples.values()),
        }
    ours = {n: median(s["warm_s"][OURS] for s in ss) for n, ss in hit_everywhere(OURS).items()}
    # The first decode in a process pays for cold code paths: the same warm start, made a second time.
    again = {n: median(s["warm_again_s"] for s in ss) for n, ss in hit_everywhere(OURS).items()
             if all(s.get("warm_again_s") for s in ss)}  # fmt: skip
    if again:
        result["peers"][OURS]["warm_again_ms"] = summary(again.values(), 1e3)
        result["peers"][OURS]["speedup_again"] = ratio([cold[n] / w for n, w in again.items()], "higher",
                                                       "cold / second warm start in the process, per program")  # fmt: skip
    for impl in IMPLS[1:]:
        warm = {n: median(s["warm_s"][impl] for s in ss) for n, ss in hit_everywhere(impl).items() if n in ours}
        result["peers"][impl]["ours_over_peer"] = ratio([ours[n] / warm[n] for n in warm], "lower",
                                                        f"{OURS} warm / this peer's warm, per program")  # fmt: skip
    result["import_ms"] = summary((s["import_s"] for ss in samples.values() for s in ss), 1e3)
    result["per_program"] = {n: {"cold_ms": cold[n] * 1e3,
                                 **{impl: median(s["warm_s"][impl] for s in ss) * 1e3 for impl in IMPLS}}
                             for n, ss in samples.items()}  # fmt: skip
    result["tables"] = tables(result)
    return result


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [["no cache (lex + parse + compile)", r["cold_ms"]["median"], r["cold_ms"]["p95"], "", "1", "", ""]]
    for impl, p in r["peers"].items():
        spread = f"{fmt(min(p['speedup_per_pass']))}–{fmt(max(p['speedup_per_pass']))}"
        rows.append([impl, p["warm_ms"]["median"], p["warm_ms"]["p95"], p["open_ms"]["median"],
                     fmt_ratio(p["speedup"]) + (f"; passes {spread}" if len(p["speedup_per_pass"]) > 1 else ""),
                     "—" if impl == OURS else fmt_ratio(p["ours_over_peer"]),
                     f"{p['hits']}/{p['samples']}" + (" (lossy)" if impl.startswith("zexus") else "")])  # fmt: skip
    ours = r["peers"][OURS]
    if "speedup_again" in ours:
        rows.insert(2, [f"{OURS}, again in the same process", ours["warm_again_ms"]["median"],
                        ours["warm_again_ms"]["p95"], "", fmt_ratio(ours["speedup_again"]), "", ""])  # fmt: skip
    rows.append(["ours (memory), zexus (memory)", "n/a: nothing survives the process", "", "", "", "", ""])
    out = [table(
        f"Warm vs cold start: a new process, {r['programs']} programs x {r['repeat']} processes",
        ["cache", "warm ms (median)", "p95 ms", "open ms", "cold/warm (median, min–max over programs)",
         f"{OURS} / peer", "hits"],
        rows,
        "Warm = fetch the program's bytecode from a cache an earlier process filled; cold = lex + parse + compile in "
        "the same process. Opening the cache is timed apart (open ms), interpreter start and imports are not "
        f"counted (import of zexus_bcache: median {fmt(r['import_ms']['median'])} ms). zexus's warm start "
        "goes through get_by_file (path-keyed: it also stats, reads and hashes the file). Ratios only over the "
        "programs a cache served in every sample (a miss is not a warm start). 'Again in the same process': "
        "a second warm start of the program after the first (front tier off), i.e. with the first decode of "
        "the process already paid. Higher cold/warm is better.",
        key=True,
    )]
    per = [[n, x["cold_ms"], *(x[i] for i in IMPLS)] for n, x in r["per_program"].items()]
    out.append(table("Warm start per program (ms, median over processes)", ["program", "cold", *IMPLS], per))
    return out
