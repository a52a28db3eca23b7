"""Our codec against zexus 2.0's .zxc format and pickle, on the corpus: time, size, fidelity, fuzz.

Run alone: python -m bench --only codec [--quick]
Encode/decode are timed side by side per program (medians of repeated batches). Fidelity runs
each program from fresh bytecode and from each format's bytes in separate processes (a new
process decodes what the parent encoded, as a cache does) and compares the output.
"""

from __future__ import annotations

import pickle
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from . import fuzz_codec
from ._common import ROOT, Program, fmt, fmt_ratio, median, progress, ratio, summary, table, timings

FORMATS = ("ours", "zxc", "pickle")
LABEL = {"ours": "ours (zexus_bcache.codec)", "zxc": "zexus .zxc", "pickle": "pickle"}


def _child(args: list[str], timeout: float) -> tuple[int, str]:
    try:
        p = subprocess.run([sys.executable, "-m", "bench._child", "fidelity", *args], capture_output=True,
                           text=True, timeout=timeout, cwd=ROOT)  # fmt: skip
    except subprocess.TimeoutExpired:
        return -1, "<timeout>"
    return p.returncode, p.stdout


def fidelity(progs: list[Program], blobs: dict[str, dict[str, bytes]], workdir: Path) -> dict[str, Any]:
    """Per program: does each format's decoded bytecode print what fresh bytecode prints?"""

    def one(p: Program) -> dict[str, Any]:
        t0 = time.perf_counter()
        fresh = _child(["fresh", str(p.path)], 30)
        took = time.perf_counter() - t0
        row: dict[str, Any] = {"program": p.name, "fresh_ok": fresh[0] == 0}
        if fresh[0] != 0:
            return row  # zexus's VM itself fails on it: nothing to compare
        for fmt_ in FORMATS:
            blob = blobs[p.name].get(fmt_)
            if blob is None:
                row[fmt_] = False
                continue
            f = workdir / f"{p.name}.{fmt_}"
            f.write_bytes(blob)
            # A lossy decode can loop forever: past 1.5 s + 3x the fresh run's time it counts as different.
            row[fmt_] = _child([fmt_, str(p.path), str(f)], timeout=1.5 + 3 * took) == fresh
        return row

    with ThreadPoolExecutor(max_workers=2) as pool:
        rows = list(pool.map(one, progs))
    compared = [r for r in rows if r["fresh_ok"]]
    out: dict[str, Any] = {"compared": len(compared), "not_runnable": [r["program"] for r in rows if not r["fresh_ok"]]}
    for fmt_ in FORMATS:
        out[fmt_] = sum(bool(r.get(fmt_)) for r in compared)
        out[f"{fmt_}_upstream"] = sum(bool(r.get(fmt_)) for r in compared if _upstream(progs, r["program"]))
    out["upstream_compared"] = sum(1 for r in compared if _upstream(progs, r["program"]))
    out["per_program"] = rows
    return out


def _upstream(progs: list[Program], name: str) -> bool:
    return next(p.upstream for p in progs if p.name == name)


def run(progs: list[Program], quick: bool, workdir: Path) -> dict[str, Any]:
    from zexus_bcache import codec, pipeline

    with pipeline.quiet():
        from zexus.vm import binary_bytecode as zxc

    repeat, min_time = (5, 0.0005) if quick else (15, 0.002)
    rows: list[dict[str, Any]] = []
    blobs: dict[str, dict[str, bytes]] = {}
    for i, p in enumerate(progs):
        bc = p.bytecode
        made = {"ours": p.blob}
        try:
            made["zxc"] = zxc.serialize(bc)
        except Exception:
            pass
        try:
            made["pickle"] = pickle.dumps(bc, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            pass
        blobs[p.name] = made
        enc = {"ours": codec.encode, "zxc": zxc.serialize, "pickle": lambda b: pickle.dumps(b, protocol=5)}
        dec = {"ours": codec.decode, "zxc": zxc.deserialize, "pickle": pickle.loads}
        row: dict[str, Any] = {"program": p.name, "instructions": p.n_instructions}
        # Interleaved per program: machine noise hits the three formats alike.
        for f in FORMATS:
            if f not in made:
                row[f] = None
                continue
            blob = made[f]
            row[f] = {"size": len(blob),
                      "encode_us": median(timings(lambda e=enc[f]: e(bc), repeat, min_time)) * 1e6,
                      "decode_us": median(timings(lambda d=dec[f], b=blob: d(b), repeat, min_time)) * 1e6}  # fmt: skip
        rows.append(row)
        if i % 10 == 9:
            progress(f"codec: timed {i + 1}/{len(progs)} programs")

    def ratios(metric: str, peer: str) -> dict[str, Any]:
        xs = [r["ours"][metric] / r[peer][metric] for r in rows if r[peer] is not None]
        return ratio(xs, "lower", f"ours/{peer} {metric}, per program")

    result: dict[str, Any] = {"per_program": rows, "ratios": {}, "summary": {}}
    for peer in ("zxc", "pickle"):
        for metric in ("size", "encode_us", "decode_us"):
            result["ratios"][f"{metric}_ours_over_{peer}"] = ratios(metric, peer)
    for f in FORMATS:
        for metric in ("size", "encode_us", "decode_us"):
            result["summary"][f"{f}_{metric}"] = summary(r[f][metric] for r in rows if r[f] is not None)
    result["cannot_serialize"] = {f: [r["program"] for r in rows if r[f] is None] for f in FORMATS}

    progress(f"codec: fidelity runs ({len(progs)} programs x 4 processes)")
    result["fidelity"] = fidelity(progs, blobs, workdir)
    n_fuzz = 1500 if quick else 100_000
    progress(f"codec: fuzzing decode with {n_fuzz} mutated blobs")
    result["fuzz"] = fuzz_codec.run([p.blob for p in progs], n_fuzz, seed=1)
    result["tables"] = tables(result)
    return result


def tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    fid = r["fidelity"]
    s, q = r["summary"], r["ratios"]
    rows = []
    for f in FORMATS:
        n_ok = fid[f]
        cannot = r["cannot_serialize"][f]
        rows.append([LABEL[f], f"{n_ok}/{fid['compared']}" + (f" ({len(cannot)} cannot serialize)" if cannot else ""),
                     s[f"{f}_size"]["median"], s[f"{f}_encode_us"]["median"], s[f"{f}_decode_us"]["median"],
                     "—" if f == "ours" else fmt_ratio(q[f"size_ours_over_{f}"]),
                     "—" if f == "ours" else fmt_ratio(q[f"decode_us_ours_over_{f}"]),
                     "—" if f == "ours" else fmt_ratio(q[f"encode_us_ours_over_{f}"]),
                     "no (checked, whitelist)" if f == "ours" else ("no" if f == "zxc" else "yes (arbitrary code)")])  # fmt: skip
    out = [table(
        "Codec: ours vs zexus .zxc vs pickle (per program; medians over the corpus)",
        ["format", "runs identically", "size B", "encode µs", "decode µs", "size ours/peer", "decode ours/peer",
         "encode ours/peer", "decoding can run code"],
        rows,
        "'runs identically': the program's stdout from bytecode decoded in another process equals the one from "
        f"fresh bytecode ({fid['compared']} programs that zexus's VM runs; not runnable: "
        f"{', '.join(fid['not_runnable']) or 'none'}); a run past 1.5 s + 3x the fresh run's time counts as different "
        "(lossy .zxc bytecode often loops forever). Ratios: median (min–max over programs), lower is better for ours.",
        key=True,
    )]
    fz = r["fuzz"]
    out.append(table(
        "Codec fuzz: mutated, truncated and re-checksummed blobs",
        ["blobs", "decoded", "CodecError", "any other exception", "seconds"],
        [[fz["n"], fz["decoded"], fz["codec_errors"], fz["unexpected"], fz["seconds"]]],
        "; ".join(fz["unexpected_examples"]),
    ))
    per = []
    for row in r["per_program"]:
        per.append([row["program"], row["instructions"]] + [
            fmt(row[f][m]) if row[f] else "cannot" for f in FORMATS for m in ("size", "decode_us")])
    out.append(table("Codec per program", ["program", "instr", "ours B", "ours dec µs", ".zxc B", ".zxc dec µs",
                                             "pickle B", "pickle dec µs"], per))  # fmt: skip
    return out
