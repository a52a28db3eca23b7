"""Store.get / Store.put against diskcache, side by side on the same payloads.

Run: /tmp/venv/bin/python bench/bench_store.py [--n 1000] [--rounds 5]

Targets (from the issue): Store.get <= 1.0x diskcache get (default policy) and <= 0.25x its
LRU get; Store.put <= 0.75x diskcache set. Every get pass starts from a freshly opened
instance ("cold": nothing of ours in memory); rounds alternate between the implementations
so that machine noise hits them alike. Medians and p95 are per call, over all rounds.
"""

from __future__ import annotations

import argparse
import gc
import random
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import diskcache

from zexus_bcache import integration
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.store import Store, checksum

Timings = dict[str, list[float]]


def payloads(n: int, seed: int = 1234) -> list[tuple[str, bytes]]:
    """n (key, payload) pairs: 2-20 KB, half random bytes and half repeated text (bytecode-like)."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        size = rng.randint(2_000, 20_000)
        noise = rng.randbytes(size // 2)
        text = (b"LOAD_CONST STORE_NAME CALL_FUNCTION " * (size // 36 + 1))[: size - len(noise)]
        payload = noise + text
        out.append((checksum(payload + b"key"), payload))
    return out


def timed(calls: Iterable[Callable[[], object]], into: list[float]) -> None:
    """Time each call (in microseconds) with the garbage collector off."""
    gc.disable()
    try:
        for call in calls:
            start = time.perf_counter_ns()
            call()
            into.append((time.perf_counter_ns() - start) / 1000)
    finally:
        gc.enable()


def store_put(store: Store, key: str, payload: bytes) -> None:
    """One Store.put with the metadata a real put carries."""
    store.put(key, payload, kind="source", fingerprint="f" * 32, codec_version=1,
              n_instructions=len(payload) // 8, n_constants=7, source_path="/src/prog.zx",
              source_hash="h" * 32)  # fmt: skip


def front_cache(keys: list[str]) -> BytecodeCache:
    """An in-memory BytecodeCache holding real decoded bytecode (corpus programs) under every key."""
    programs = sorted((Path(__file__).resolve().parent.parent / "tests" / "corpus").glob("*.zx"))
    bytecodes = [integration.compile_source(p.read_text(encoding="utf-8"), str(p)) for p in programs]
    cache = BytecodeCache(max_size=len(keys), max_memory_mb=4096)
    for i, key in enumerate(keys):
        cache.store_value(key, bytecodes[i % len(bytecodes)], kind="source")
    return cache


def run(n: int, rounds: int, root: Path) -> Timings:
    """Measure every operation for ``rounds`` alternating rounds."""
    data = payloads(n)
    t: Timings = {name: [] for name in ("store.put", "dc.set", "store.get", "dc.get", "dc_lru.get")}
    t["flush per access"] = []
    t["front.hit"] = []
    store_path, dc_dir, lru_dir = root / "store.db", root / "dc", root / "dc_lru"

    for r in range(rounds):
        # Writes: fresh databases each round, store and diskcache alternating which goes first.
        for which in (("store", "dc") if r % 2 == 0 else ("dc", "store")):
            if which == "store":
                with Store(root / f"put{r}.db") as store:
                    timed((lambda k=k, p=p: store_put(store, k, p) for k, p in data), t["store.put"])
            else:
                with diskcache.Cache(str(root / f"dcput{r}")) as cache:
                    timed((lambda k=k, p=p: cache.set(k, p) for k, p in data), t["dc.set"])

    with Store(store_path) as store:
        for key, payload in data:
            store_put(store, key, payload)
    with diskcache.Cache(str(dc_dir)) as cache, diskcache.Cache(
        str(lru_dir), eviction_policy="least-recently-used"
    ) as lru:
        for key, payload in data:
            cache.set(key, payload)
            lru.set(key, payload)

    keys = [key for key, _ in data]
    front = front_cache(keys)
    for r in range(rounds):
        timed((lambda k=k: front.lookup(k) for k in random.Random(r).sample(keys, len(keys))), t["front.hit"])
        order = random.Random(r).sample(keys, len(keys))
        # Automatic flushes are kept out of the per-call figures: the batch that writes the
        # recorded accesses is timed on its own and reported per access.
        with Store(store_path, flush_every=10**9, flush_interval=1e9) as store:
            timed((lambda k=k: store.get(k) for k in order), t["store.get"])
            batch: list[float] = []
            timed([store.flush], batch)
            t["flush per access"].append(batch[0] / len(order))
        with diskcache.Cache(str(dc_dir)) as cache:
            timed((lambda k=k: cache.get(k) for k in order), t["dc.get"])
        with diskcache.Cache(str(lru_dir), eviction_policy="least-recently-used") as lru:
            timed((lambda k=k: lru.get(k) for k in order), t["dc_lru.get"])
    return t


def report(t: Timings) -> None:
    """Print medians, p95 and the ratios against the targets."""

    def med(name: str) -> float:
        return statistics.median(t[name])

    def p95(name: str) -> float:
        return statistics.quantiles(t[name], n=20)[-1]

    print(f"{'operation':<24}{'median µs':>11}{'p95 µs':>10}{'mean µs':>10}{'calls':>8}")
    for name in ("front.hit", "store.get", "dc.get", "dc_lru.get", "store.put", "dc.set"):
        mean = statistics.fmean(t[name])
        print(f"{name:<24}{med(name):>11.2f}{p95(name):>10.2f}{mean:>10.2f}{len(t[name]):>8}")
    print(f"{'flush, per access':<24}{med('flush per access'):>11.2f}"
          "   (the batch that saves the hits' times and counts, amortised)")  # fmt: skip
    print()
    checks = [
        ("store.get / dc.get (default)", med("store.get") / med("dc.get"), 1.0),
        ("store.get / dc.get (LRU)", med("store.get") / med("dc_lru.get"), 0.25),
        ("store.put / dc.set", med("store.put") / med("dc.set"), 0.75),
        ("front hit / dc.get (default)", med("front.hit") / med("dc.get"), 0.10),
    ]
    for label, ratio, target in checks:
        verdict = "ok" if ratio <= target else "MISSED"
        print(f"{label:<30}{ratio:>8.2f}x   target <= {target:.2f}x   {verdict}")


def main() -> None:
    """Parse arguments, run, report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000, help="payloads (default 1000)")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds (default 5)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_store_") as tmp:
        report(run(args.n, args.rounds, Path(tmp)))


if __name__ == "__main__":
    main()
