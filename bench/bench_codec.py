"""Our codec against zexus 2.0's .zxc format on the corpus: time, size and fidelity.

Run: python bench/bench_codec.py [--no-fidelity]
Encode/decode are timed side by side per program (medians of repeated batches); fidelity runs
each program from fresh bytecode and from each format's round trip in separate processes.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, median, programs, timings  # noqa: E402

from zexus_bcache import codec, integration  # noqa: E402

with integration.quiet():
    from zexus.vm import binary_bytecode as zxc

CHILD = ROOT / "tests" / "_fidelity_child.py"


def _run(args: list[str]) -> tuple[int, str]:
    try:
        p = subprocess.run([sys.executable, str(CHILD), *args], capture_output=True, text=True, timeout=15)
    except subprocess.TimeoutExpired:
        return -1, "<timeout>"
    return p.returncode, p.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-fidelity", action="store_true", help="skip the multi-process fidelity runs")
    args = parser.parse_args()
    rows = []
    same = {"ours": 0, "zxc": 0}
    compared = 0
    with tempfile.TemporaryDirectory() as tmp:
        for path in programs():
            try:
                bc = integration.compile_source(path.read_text(encoding="utf-8"), str(path))
            except Exception:
                continue
            ours = codec.encode(bc)
            try:
                theirs = zxc.serialize(bc)
            except Exception as exc:
                print(f"{path.name}: .zxc cannot serialize it ({exc})")
                continue
            te = median(timings(lambda: codec.encode(bc)))
            td = median(timings(lambda: codec.decode(ours)))
            ze = median(timings(lambda: zxc.serialize(bc)))
            zd = median(timings(lambda: zxc.deserialize(theirs)))
            rows.append((path.name, len(bc.instructions), len(ours), len(theirs), te, ze, td, zd))
            if not args.no_fidelity:
                fresh = _run(["fresh", str(path)])
                if fresh[0] != 0:
                    continue  # zexus's VM itself fails on it; nothing to compare
                compared += 1
                blob_ours, blob_zxc = Path(tmp, "o"), Path(tmp, "z")
                blob_ours.write_bytes(ours)
                blob_zxc.write_bytes(theirs)
                same["ours"] += _run(["decoded", str(path), str(blob_ours)]) == fresh
                same["zxc"] += _run(["zxc", str(path), str(blob_zxc)]) == fresh

    print(f"{'program':38} {'instr':>6} {'size':>7} {'.zxc':>7} {'enc µs':>8} {'.zxc':>8} {'dec µs':>8} {'.zxc':>8}")
    for name, n, so, sz, te, ze, td, zd in rows:
        print(f"{name:38} {n:6d} {so:7d} {sz:7d} {te*1e6:8.0f} {ze*1e6:8.0f} {td*1e6:8.0f} {zd*1e6:8.0f}")
    ratio = lambda i, j: [r[i] / r[j] for r in rows]  # noqa: E731
    for label, i, j in (("size", 2, 3), ("encode time", 4, 5), ("decode time", 6, 7)):
        xs = ratio(i, j)
        print(f"{label} ours/.zxc: median {statistics.median(xs):.2f}  (min {min(xs):.2f}, max {max(xs):.2f}, n={len(xs)})")
    if not args.no_fidelity:
        print(f"fidelity (stdout identical to fresh bytecode, decoded in another process): "
              f"ours {same['ours']}/{compared}, .zxc {same['zxc']}/{compared}")


if __name__ == "__main__":
    main()
