"""The shared tier on a PostgreSQL server: what a shared hit is worth, what it costs, what dedup would save.

``run(url)`` measures, on a throwaway database it creates on the server of ``url`` (the role must
be allowed CREATEDB) and drops afterwards:

* **shared hit vs cold compile**, per corpus program: a new machine's first lookup (a fresh local
  cache, the server holding the program): key, local miss, the server's row over the network,
  HMAC check, decode, copy into the local store and the front layer; against parsing and
  compiling the program. Ratios per program (lower is better), median, p95, min–max.
* **local vs shared hit latency**: the same lookup served by the local SQLite store (a process
  that has the entry locally, its front layer empty) and by the server (a process that has not).
* **near-identical sources**: many sources (each program with variants that differ only in
  comments and blank lines: other source keys, identical bytecode) written to the server; the
  bytes stored (one payload per entry, since migration 0004) against what storing each distinct
  payload once would take (the content dedup of revisions 0001-0003, dropped for put speed).

``python bench/bench_shared.py [URL] [--quick]`` prints the tables (URL defaults to
``$ZEXUS_BCACHE_TEST_PG_URL``).
"""

from __future__ import annotations

import json
import os
import secrets
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench._common import corpus, fmt, fmt_ratio, machine, progress, ratio, summary, table

KEY = secrets.token_hex(32)  # the bench's own HMAC key


@contextmanager
def _scratch_database(url: str) -> Iterator[str]:
    """A new database on the server of url, dropped at the end; its URL."""
    import sqlalchemy as sa

    from zexus_bcache.store import normalize_url

    admin = sa.make_url(normalize_url(url))
    name = "zexus_bench_" + secrets.token_hex(4)
    engine = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0")
        try:
            yield admin.set(database=name).render_as_string(hide_password=False)
        finally:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        engine.dispose()


def _variants(source: str, n: int) -> list[str]:
    """n sources that differ from source (and each other) only in comments and blank lines."""
    out = []
    for i in range(n):
        lines = source.splitlines()
        lines.insert(0, f"# variant {i}: same program, another source (key)")
        lines.append("\n" * (i % 3))
        out.append("\n".join(lines) + "\n")
    return out


def _wait_open(cache: Any) -> None:
    """Let a cache's shared tier finish connecting (not part of any lookup measured)."""
    cache.shared.get("0" * 64)


def run(url: str, quick: bool = False) -> dict[str, Any]:
    """Measure the shared tier on the server of url; JSON-able results with tables."""
    from zexus_bcache import codec, keys, pipeline
    from zexus_bcache.cache import BytecodeCache
    from zexus_bcache.store import Store

    programs, skipped = corpus(quick)
    rounds = 3 if quick else 7
    options = {"retry_after": 60.0, "get_timeout": 10.0, "drain_timeout": 60.0}
    results: dict[str, Any] = {"quick": quick, "rounds": rounds, "programs": len(programs), "skipped": skipped}
    with _scratch_database(url) as db, tempfile.TemporaryDirectory(prefix="zexus-bench-shared-") as tmp:
        work = Path(tmp)
        progress(f"shared: filling the server with {len(programs)} programs")
        with BytecodeCache(path=work / "writer.db", shared=db, shared_key=KEY, shared_options=options) as writer:
            for p in programs:
                writer.compile_source(p.source, p.name)
            writer.flush()
            assert writer.stats.shared_puts == len(programs), writer.stats

        cold: dict[str, list[float]] = {p.name: [] for p in programs}
        shared_hit: dict[str, list[float]] = {p.name: [] for p in programs}
        local_hit: dict[str, list[float]] = {p.name: [] for p in programs}
        for r in range(rounds):
            progress(f"shared: round {r + 1}/{rounds}")
            for p in programs:
                t0 = time.perf_counter()
                pipeline.compile_program(pipeline.parse(p.source, p.name))
                cold[p.name].append(time.perf_counter() - t0)
            local_db = work / f"client{r}.db"
            with BytecodeCache(path=local_db, shared=db, shared_key=KEY, shared_options=options) as client:
                _wait_open(client)
                for p in programs:
                    t0 = time.perf_counter()
                    report = client.compile_source_report(p.source, p.name)
                    shared_hit[p.name].append(time.perf_counter() - t0)
                    assert report.tier == "shared", (p.name, report.tier)
            # The same machine later: the entries are local now; a new process (empty front layer).
            with BytecodeCache(path=local_db, shared=db, shared_key=KEY, shared_options=options) as client:
                _wait_open(client)
                for p in programs:
                    t0 = time.perf_counter()
                    report = client.compile_source_report(p.source, p.name)
                    local_hit[p.name].append(time.perf_counter() - t0)
                    assert report.tier == "store", (p.name, report.tier)

        def med(xs: list[float]) -> float:
            return sorted(xs)[len(xs) // 2]

        speed = ratio([med(shared_hit[n]) / med(cold[n]) for n in cold], "lower", "shared hit time / cold compile time")
        results["shared_vs_cold"] = speed
        results["cold_compile_ms"] = summary([med(v) for v in cold.values()], 1e3)
        results["shared_hit_ms"] = summary([x for v in shared_hit.values() for x in v], 1e3)
        results["local_hit_ms"] = summary([x for v in local_hit.values() for x in v], 1e3)
        results["shared_vs_local"] = ratio(
            [med(shared_hit[n]) / med(local_hit[n]) for n in cold], "lower", "shared hit time / local store hit time"
        )

        progress("shared: dedup")
        variants = 3 if quick else 10
        dedup_db_url = db
        with Store(dedup_db_url) as store:
            store.clear()
            fingerprint = keys.compiler_fingerprint(optimize=True, compiler="vm")
            identical = 0
            for p in programs:
                for source in [p.source, *_variants(p.source, variants)]:
                    bytecode = pipeline.compile_program(pipeline.parse(source, p.name))
                    payload = codec.encode(bytecode)
                    identical += payload == p.blob
                    key = keys.source_key(source, fingerprint)
                    store.put(key, payload, kind="source", fingerprint=fingerprint, codec_version=codec.FORMAT_VERSION,
                              n_instructions=len(bytecode.instructions), n_constants=len(bytecode.constants))
            (n_entries, per_entry), = store.query("SELECT COUNT(*), COALESCE(SUM(payload_size), 0) FROM entries")[1]
            distinct = "SELECT checksum, MAX(octet_length(payload)) AS size FROM entries GROUP BY checksum"
            (n_distinct, once), = store.query(f"SELECT COUNT(*), COALESCE(SUM(size), 0) FROM ({distinct}) AS d")[1]
            (table_bytes,), = store.query("SELECT pg_total_relation_size('entries')")[1]
        results["dedup"] = {
            "sources": int(n_entries),
            "variants_per_program": variants,
            "identical_bytecode": int(identical),
            "distinct_payloads": int(n_distinct),
            "bytes_one_payload_per_entry": int(per_entry),
            "bytes_by_checksum": int(once),
            "saved_fraction": round(1 - int(once) / int(per_entry), 4) if per_entry else 0.0,
            "entries_table_bytes_on_disk": int(table_bytes),
        }
    results["machine"] = machine()
    results["tables"] = _tables(results)
    return results


def _tables(r: dict[str, Any]) -> list[dict[str, Any]]:
    s, c, loc, d = r["shared_hit_ms"], r["cold_compile_ms"], r["local_hit_ms"], r["dedup"]
    speed, vs_local = r["shared_vs_cold"], r["shared_vs_local"]
    return [
        table(
            "Shared tier (PostgreSQL on this machine): a new machine's first lookup vs compiling",
            ["", "median", "p95", "min–max"],
            [
                ["cold compile (parse + compile), ms", c["median"], c["p95"], f"{fmt(c['min'])}–{fmt(c['max'])}"],
                ["shared hit (fetch, HMAC, decode, copy locally), ms", s["median"], s["p95"], f"{fmt(s['min'])}–{fmt(s['max'])}"],
                ["shared hit / cold compile, per program", speed["median"], speed["p95"], f"{fmt(speed['min'])}–{fmt(speed['max'])}"],
            ],
            note=f"{r['programs']} programs × {r['rounds']} rounds; each round a new local cache (its first lookups).",
            key=True,
        ),
        table(
            "Hit latency by tier (front layer empty: a new process)",
            ["tier", "median ms", "p95 ms", "min–max ms"],
            [
                ["local store (SQLite)", loc["median"], loc["p95"], f"{fmt(loc['min'])}–{fmt(loc['max'])}"],
                ["shared (PostgreSQL, loopback)", s["median"], s["p95"], f"{fmt(s['min'])}–{fmt(s['max'])}"],
                ["shared / local, per program", vs_local["median"], vs_local["p95"], fmt_ratio(vs_local)],
            ],
            note="Loopback: a real network adds its round trip to every shared hit (one query per hit).",
        ),
        table(
            "Near-identical sources on the server: bytes stored, and what content dedup would save",
            ["sources", "identical bytecode", "distinct payloads", "stored (one payload per entry)", "each distinct payload once", "dedup would save"],
            [[d["sources"], d["identical_bytecode"], d["distinct_payloads"], d["bytes_one_payload_per_entry"],
              d["bytes_by_checksum"], f"{100 * d['saved_fraction']:.1f}%"]],
            note=f"Each program plus {d['variants_per_program']} variants differing only in comments and blank lines. "
                 "Since migration 0004 each entry holds its own payload: a put is one upsert of one row "
                 "(see the store section); the bytes stay bounded by max_bytes.",
        ),
    ]


def _print(results: dict[str, Any]) -> None:
    for t in results["tables"]:
        print(f"\n{t['title']}")
        widths = [max(len(str(x)) for x in col) for col in zip(t["columns"], *t["rows"])]
        for row in [t["columns"], *t["rows"]]:
            print("  " + "  ".join(str(x).ljust(w) for x, w in zip(row, widths)))
        if t["note"]:
            print(f"  ({t['note']})")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    target = args[0] if args else os.environ.get("ZEXUS_BCACHE_TEST_PG_URL", "")
    if not target:
        sys.exit("usage: bench_shared.py POSTGRESQL_URL [--quick] (or set ZEXUS_BCACHE_TEST_PG_URL)")
    out = run(target, quick="--quick" in sys.argv)
    _print(out)
    if "--json" in sys.argv:
        print(json.dumps(out, indent=1, default=str))
