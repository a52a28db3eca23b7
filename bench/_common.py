"""Shared helpers of the bench sections: the corpus, timing, statistics, the machine, and the peers.

The peers are the caches a user would otherwise pick, behind one small interface so that every
section runs ours and theirs on the same workload:

* ``ours (memory)``: ``zexus_bcache.BytecodeCache()`` (the front layer only);
* ``ours (persistent)``: ``BytecodeCache(path=...)``: front layer + SQLite store;
* ``ours (store only)``: the same with the front layer off (``max_size=0``): every hit is a
  SELECT and a decode, the level diskcache works at;
* ``zexus (memory)``: zexus 2.0's own ``zexus.vm.cache.BytecodeCache``;
* ``zexus (persistent)``: the same with ``persistent=True`` (its lossy ``.zxc`` files);
* ``diskcache+codec``: ``diskcache.Cache`` holding our codec's bytes (decoded on every get);
* ``diskcache+pickle``: ``diskcache.Cache`` holding the bytecode itself (diskcache pickles it).

A diskcache peer has no AST keying of its own: it is given our structural AST key.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def progress(message: str) -> None:
    """One progress line on stderr (stdout is for the tables)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------------- the corpus


def programs() -> list[Path]:
    """Our corpus plus the .zx programs that the zexus wheel installs."""
    ours = sorted((ROOT / "tests" / "corpus").glob("*.zx"))
    files = importlib.metadata.files("zexus") or []
    upstream = sorted(Path(str(f.locate())) for f in files if f.suffix == ".zx" and f.parts[0] == "tests")
    return ours + upstream


@dataclass
class Program:
    """One corpus program, parsed, compiled and encoded once."""

    name: str
    path: Path
    source: str
    tree: Any
    bytecode: Any
    blob: bytes  # our codec's bytes
    upstream: bool  # shipped by the zexus wheel, not in tests/corpus

    @property
    def n_instructions(self) -> int:
        return len(self.bytecode.instructions)


def corpus(quick: bool = False) -> tuple[list[Program], list[str]]:
    """Every program that zexus parses and compiles (and the names it skipped, with why).

    Quick mode keeps 6 programs spread over the range of sizes (by instruction count).
    """
    from zexus_bcache import codec, pipeline

    out: list[Program] = []
    skipped: list[str] = []
    for path in programs():
        source = path.read_text(encoding="utf-8")
        try:
            tree = pipeline.parse(source, str(path))
            bytecode = pipeline.compile_program(tree)
            blob = codec.encode(bytecode)
        except Exception as exc:  # zexus's parser or compiler rejects it: not a cache question
            skipped.append(f"{path.name} ({type(exc).__name__})")
            continue
        upstream = not path.is_relative_to(ROOT)
        out.append(Program(path.name, path, source, tree, bytecode, blob, upstream))
    if quick:
        by_size = sorted(out, key=lambda p: p.n_instructions)
        picks = {round(i * (len(by_size) - 1) / 5) for i in range(6)}
        out = [p for i, p in enumerate(by_size) if i in picks]
    return out, skipped


# ------------------------------------------------------------------------------------- timing


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


def timed_calls(calls: Iterable[Callable[[], object]], into: list[float], between: Callable[[], object] | None = None) -> None:
    """Time each call on its own (seconds), garbage collector off; ``between`` runs untimed after each."""
    import gc

    clock = time.perf_counter_ns
    gc.disable()
    try:
        for call in calls:
            start = clock()
            call()
            into.append((clock() - start) / 1e9)
            if between is not None:
                between()
    finally:
        gc.enable()


# --------------------------------------------------------------------------------- statistics


def median(xs: Iterable[float]) -> float:
    return statistics.median(list(xs))


def quantile(xs: Iterable[float], q: float) -> float:
    s = sorted(xs)
    if not s:
        return math.nan
    return s[min(len(s) - 1, int(round(q * (len(s) - 1))))]


def p95(xs: Iterable[float]) -> float:
    return quantile(xs, 0.95)


def summary(xs: Iterable[float], scale: float = 1.0) -> dict[str, float]:
    """median, p95, min, max, mean and n of a sample (times ``scale``, e.g. 1e6 for µs)."""
    s = [x * scale for x in xs]
    if not s:
        return {"median": math.nan, "p95": math.nan, "min": math.nan, "max": math.nan, "mean": math.nan, "n": 0}
    return {"median": statistics.median(s), "p95": p95(s), "min": min(s), "max": max(s),
            "mean": statistics.fmean(s), "n": len(s)}  # fmt: skip


def ratio(xs: Iterable[float], better: str, what: str) -> dict[str, Any]:
    """A ratio's summary over a sample of ratios, saying which direction is better."""
    assert better in ("lower", "higher", "closer to 1")
    return {**summary(xs), "better": better, "what": what}


def fmt(x: float, digits: int = 3) -> str:
    """A number for a table: a few significant digits, no scientific notation for usual sizes."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "n/a"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.{digits}f}"


def fmt_ratio(r: dict[str, Any]) -> str:
    """'0.42× (0.30–0.61)' from a ratio summary."""
    return f"{fmt(r['median'])}× ({fmt(r['min'])}–{fmt(r['max'])})"


# -------------------------------------------------------------------------------- the machine


def loadavg() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def machine() -> dict[str, Any]:
    """Cores, CPU model, Python and the versions of what is measured."""
    cpu = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for dist in ("zexus", "zexus-bcache", "sqlalchemy", "diskcache", "matplotlib"):
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    import sqlite3

    return {"cores": os.cpu_count(), "cpu": cpu, "python": platform.python_version(),
            "implementation": platform.python_implementation(), "platform": platform.platform(),
            "sqlite": sqlite3.sqlite_version, "versions": versions}  # fmt: skip


# ---------------------------------------------------------------------------------- the peers


def zexus_cache_class() -> type:
    """zexus 2.0's BytecodeCache, taking a precomputed key (a str) where it takes an AST node.

    Only the key function is overridden (a str is its own key); every other path — hit, miss,
    LRU, eviction, its .zxc disk layer — is upstream's code, so the by-key sections measure its
    tiers without its (expensive) AST hashing, and the AST sections still hash as upstream does.
    """
    from zexus_bcache import pipeline

    with pipeline.quiet():
        from zexus.vm.cache import BytecodeCache as Upstream

    class KeyedUpstream(Upstream):  # type: ignore[misc, valid-type]
        def _hash_ast(self, ast_node: Any) -> str:
            if isinstance(ast_node, str):
                return ast_node
            return super()._hash_ast(ast_node)

    return KeyedUpstream


class Peer:
    """One cache under test: by AST node (the seed's API) and by precomputed key."""

    name = ""
    persistent = False
    lossless = True
    note = ""

    def get(self, tree: Any) -> Any | None:
        raise NotImplementedError

    def put(self, tree: Any, bytecode: Any) -> None:
        raise NotImplementedError

    def invalidate(self, tree: Any) -> None:
        raise NotImplementedError

    def get_key(self, key: str) -> Any | None:
        raise NotImplementedError

    def put_key(self, key: str, bytecode: Any) -> None:
        raise NotImplementedError

    def close(self) -> None:
        pass


class Ours(Peer):
    def __init__(self, name: str, path: Path | None, max_size: int = 100_000, max_memory_mb: float = 4096) -> None:
        from zexus_bcache.cache import BytecodeCache

        self.name = name
        self.persistent = path is not None
        self.cache = BytecodeCache(max_size=max_size, max_memory_mb=max_memory_mb, path=path, strict=True)

    def get(self, tree: Any) -> Any | None:
        return self.cache.get(tree)

    def put(self, tree: Any, bytecode: Any) -> None:
        self.cache.put(tree, bytecode)

    def invalidate(self, tree: Any) -> None:
        self.cache.invalidate(tree)

    def get_key(self, key: str) -> Any | None:
        return self.cache.lookup(key)

    def put_key(self, key: str, bytecode: Any) -> None:
        self.cache.store_value(key, bytecode, kind="ast")

    def close(self) -> None:
        self.cache.close()


class Zexus(Peer):
    lossless = False  # its memory tier keeps the object; its disk tier is .zxc (lossy)

    def __init__(self, name: str, cache_dir: Path | None, max_size: int = 100_000, max_memory_mb: int = 4096) -> None:
        self.name = name
        self.persistent = cache_dir is not None
        self.lossless = cache_dir is None
        self.cache = zexus_cache_class()(max_size=max_size, max_memory_mb=max_memory_mb,
                                         persistent=cache_dir is not None, cache_dir=cache_dir)  # fmt: skip

    def get(self, tree: Any) -> Any | None:
        return self.cache.get(tree)

    def put(self, tree: Any, bytecode: Any) -> None:
        self.cache.put(tree, bytecode)

    def invalidate(self, tree: Any) -> None:
        self.cache.invalidate(tree)

    get_key = get
    put_key = put

    def forget_memory(self) -> None:
        """Empty its memory tier (its disk files stay): the next get is a disk hit."""
        self.cache._cache.clear()
        self.cache.stats.memory_bytes = 0
        self.cache.stats.total_entries = 0


class Diskcache(Peer):
    persistent = True

    def __init__(self, name: str, directory: Path, pickled: bool) -> None:
        import diskcache

        from zexus_bcache import keys

        self.name = name
        self.pickled = pickled
        self.dc = diskcache.Cache(str(directory), size_limit=1 << 40, cull_limit=0)
        self.fingerprint = keys.compiler_fingerprint()
        self._ast_key = keys.ast_key

    def get(self, tree: Any) -> Any | None:
        return self.get_key(self._ast_key(tree, self.fingerprint))

    def put(self, tree: Any, bytecode: Any) -> None:
        self.put_key(self._ast_key(tree, self.fingerprint), bytecode)

    def invalidate(self, tree: Any) -> None:
        self.dc.delete(self._ast_key(tree, self.fingerprint))

    def get_key(self, key: str) -> Any | None:
        if self.pickled:
            return self.dc.get(key)
        from zexus_bcache import codec

        blob = self.dc.get(key)
        return None if blob is None else codec.decode(blob)

    def put_key(self, key: str, bytecode: Any) -> None:
        if self.pickled:
            self.dc.set(key, bytecode)
        else:
            from zexus_bcache import codec

            self.dc.set(key, codec.encode(bytecode))

    def close(self) -> None:
        self.dc.close()


PEER_NAMES = ("ours (memory)", "ours (persistent)", "ours (store only)", "zexus (memory)", "zexus (persistent)",
              "diskcache+codec", "diskcache+pickle")  # fmt: skip


def make_peers(workdir: Path, tag: str, max_size: int = 100_000, names: Iterable[str] = PEER_NAMES) -> list[Peer]:
    """Fresh instances of the peers, each in its own directory under workdir."""
    out: list[Peer] = []
    for name in names:
        d = workdir / f"{tag}-{name.replace(' ', '_').replace('(', '').replace(')', '').replace('+', '_')}"
        d.mkdir(parents=True, exist_ok=True)
        if name == "ours (memory)":
            out.append(Ours(name, None, max_size))
        elif name == "ours (persistent)":
            out.append(Ours(name, d / "bcache.db", max_size))
        elif name == "ours (store only)":
            out.append(Ours(name, d / "bcache.db", 0))
        elif name == "zexus (memory)":
            out.append(Zexus(name, None, max_size))
        elif name == "zexus (persistent)":
            out.append(Zexus(name, d / "zxc", max_size))
        elif name == "diskcache+codec":
            out.append(Diskcache(name, d / "dc", pickled=False))
        elif name == "diskcache+pickle":
            out.append(Diskcache(name, d / "dc", pickled=True))
        else:
            raise ValueError(name)
    return out


def table(title: str, columns: list[str], rows: list[list[Any]], note: str = "", key: bool = False) -> dict[str, Any]:
    """A table for results.md (``key`` tables also go into the README)."""
    def cell(c: Any) -> Any:
        if isinstance(c, float):
            return fmt(c)
        if isinstance(c, int) and not isinstance(c, bool):
            return f"{c:,}"
        return c

    return {"title": title, "columns": columns, "rows": [[cell(c) for c in r] for r in rows], "note": note, "key": key}
