"""Shared helpers of the bench scripts: program discovery and robust timing."""

from __future__ import annotations

import importlib.metadata
import statistics
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def programs() -> list[Path]:
    """Our corpus plus the .zx programs that the zexus wheel installs."""
    ours = sorted((ROOT / "tests" / "corpus").glob("*.zx"))
    files = importlib.metadata.files("zexus") or []
    upstream = sorted(Path(str(f.locate())) for f in files if f.suffix == ".zx" and f.parts[0] == "tests")
    return ours + upstream


def timings(fn: Callable[[], object], repeat: int = 25, min_time: float = 0.002) -> list[float]:
    """Seconds per call, one sample per batch; batches are sized to last at least min_time."""
    fn()
    n = 1
    while True:
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        if time.perf_counter() - t0 >= min_time or n >= 1 << 16:
            break
        n *= 2
    out = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        out.append((time.perf_counter() - t0) / n)
    return out


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]
