"""The shared tier on a real PostgreSQL server: hits shared between local caches, authenticated
payloads, read-only clients, bounded waits, and many processes surviving the server's death.

The tests that need PostgreSQL skip without ZEXUS_BCACHE_TEST_PG_URL (see conftest.py); the
process test starts a server of its own (so it may kill it) with .ci/postgres.sh.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bytecode_compare import assert_same
from zx_programs import corpus_programs

from zexus_bcache import cache as cache_mod
from zexus_bcache import codec, pipeline
from zexus_bcache.cache import BytecodeCache
from zexus_bcache.errors import ConfigError
from zexus_bcache.shared import SharedTier, sign, verify
from zexus_bcache.store import Store

KEY = "test-key-0123456789abcdef"
FAST = {"retry_after": 60.0, "get_timeout": 5.0, "drain_timeout": 10.0}
PROGRAMS = [p.read_text(encoding="utf-8") for p in corpus_programs()[:4]]


def client(tmp_path: Path, name: str, url: str, **kwargs: Any) -> BytecodeCache:
    """A cache with its own local SQLite file and the shared tier at url."""
    options = {**FAST, **kwargs.pop("shared_options", {})}
    kwargs.setdefault("shared_key", KEY)
    return BytecodeCache(path=tmp_path / name / "bcache.db", shared=url, shared_options=options, **kwargs)


def server_rows(url: str, statement: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            result = conn.execute(sa.text(statement), params)
            return [tuple(r) for r in result] if result.returns_rows else []
    finally:
        engine.dispose()


def snapshot(url: str) -> dict[str, Any]:
    """Everything a client could have written on the server."""
    return {
        "entries": server_rows(
            url, "SELECT key, checksum, md5(payload), signature, last_access, access_count FROM entries ORDER BY key"
        ),
        "counters": server_rows(url, "SELECT name, value FROM counters ORDER BY name"),
        "settings": server_rows(url, "SELECT name, value FROM settings ORDER BY name"),
    }


@pytest.fixture
def filled(tmp_path: Path, pg_url: str) -> Iterator[tuple[str, list[str]]]:
    """The shared server holding PROGRAMS, written by a first client; (url, their keys)."""
    with client(tmp_path, "writer", pg_url) as writer:
        keys = [writer.compile_source_report(source).key for source in PROGRAMS]
        assert writer.shared.flush(timeout=120)  # a loaded machine may take a while; the test needs them all
        assert writer.stats.shared_puts == len(PROGRAMS)
    yield pg_url, keys


@pytest.fixture
def decodes(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """Every payload the cache decodes from now on."""
    seen: list[bytes] = []
    real = codec.decode

    def recording(payload: bytes) -> Any:
        seen.append(bytes(payload))
        return real(payload)

    monkeypatch.setattr(cache_mod.codec, "decode", recording)
    return seen


# -- tiers --------------------------------------------------------------------------------------


def test_a_local_miss_is_a_shared_hit_copied_locally(tmp_path: Path, filled: tuple[str, list[str]]) -> None:
    url, keys = filled
    with client(tmp_path, "reader", url) as reader:
        report = reader.compile_source_report(PROGRAMS[0])
        assert report.tier == "shared" and "parse" not in report.timings  # nothing was compiled
        assert_same(report.bytecode, pipeline.compile_source(PROGRAMS[0]))
        assert reader.compile_source_report(PROGRAMS[0]).tier == "front"
        stats = reader.get_stats()
        assert (stats["shared_hits"], stats["misses"], stats["shared_misses"], stats["hits"]) == (1, 0, 0, 2)
        assert stats["puts"] == 0 and stats["shared_puts"] == 0  # a copy is not a put
    with Store(tmp_path / "reader" / "bcache.db", read_only=True) as local:
        info = local.info(keys[0])
        assert info is not None and info["mem_size"] and info["n_instructions"] > 0
        assert local.counters()["shared_hits"] == 1  # persisted with the other counters
    with client(tmp_path, "reader", url) as again:  # served by its own store now
        assert again.compile_source_report(PROGRAMS[0]).tier == "store"
        assert (again.stats.shared_hits, again.stats.store_hits) == (1, 1)  # counters are persisted, summed


def test_a_miss_everywhere_is_one_miss_and_a_put_reaches_both(tmp_path: Path, pg_url: str) -> None:
    with client(tmp_path, "a", pg_url) as a:
        report = a.compile_source_report(PROGRAMS[1])
        assert report.tier is None
        a.flush()
        stats = a.get_stats()
        assert (stats["misses"], stats["shared_misses"], stats["puts"], stats["shared_puts"]) == (1, 1, 1, 1)
        local = a.store.info(report.key)
    assert local is not None and local["signature"] is None  # local entries are not signed
    with Store(pg_url, read_only=True) as server:
        entry = server.get(report.key)
        assert entry is not None and entry.payload == codec.encode(report.bytecode)
        assert verify(KEY.encode(), entry)
        assert entry.source_hash == local["source_hash"]


TAMPERING = ["altered payload", "payload swapped between keys", "no signature", "wrong key"]


@pytest.mark.parametrize("how", TAMPERING)
def test_a_payload_failing_its_hmac_is_a_miss_counted_and_never_decoded(
    tmp_path: Path, filled: tuple[str, list[str]], decodes: list[bytes], how: str, caplog: pytest.LogCaptureFixture
) -> None:
    url, keys = filled
    first, second = keys[0], keys[1]
    (c1,), (c2,) = (server_rows(url, "SELECT checksum FROM entries WHERE key = :k", k=k)[0] for k in (first, second))
    other_payload = server_rows(url, "SELECT payload FROM entries WHERE key = :k", k=second)[0][0]
    key = KEY
    if how == "altered payload":  # valid bytecode of another program, under the first's checksum
        server_rows(url, "UPDATE entries SET payload = :p WHERE key = :k", p=other_payload, k=first)
    elif how == "payload swapped between keys":  # the first key now holds the second's payload and checksum
        server_rows(url, "UPDATE entries SET payload = :p, checksum = :c WHERE key = :k", p=other_payload, c=c2, k=first)
    elif how == "no signature":
        server_rows(url, "UPDATE entries SET signature = NULL WHERE key = :k", k=first)
    else:
        key = "another-key-0123456789abcdef"
    caplog.set_level(logging.WARNING, logger="zexus_bcache")
    with client(tmp_path, "victim", url, shared_key=key) as victim:
        report = victim.compile_source_report(PROGRAMS[0])
        assert report.tier is None  # compiled here: the shared entry was refused
        assert decodes == []  # nothing from the server was decoded
        assert_same(report.bytecode, pipeline.compile_source(PROGRAMS[0]))
        stats = victim.get_stats()
        assert (stats["auth_failures"], stats["shared_hits"], stats["misses"]) == (1, 0, 1)
        if how == "wrong key":  # every entry fails: counted each time, warned once
            for source in PROGRAMS[1:3]:
                assert victim.compile_source_report(source).tier is None
            assert victim.stats.auth_failures == 3
    assert decodes == []
    auth_warnings = [r for r in caplog.records if "signature" in r.getMessage()]
    assert len(auth_warnings) == 1, [r.getMessage() for r in caplog.records]


def test_signature_covers_key_metadata_and_payload() -> None:
    fields = dict(key="k", kind="source", fingerprint="fp", codec_version=1, mem_size=10, payload=b"abc")
    secret = KEY.encode()
    base = sign(secret, **fields)
    assert len(base) == 64 and base == sign(secret, **fields)
    for name, other in [("key", "k2"), ("kind", "ast"), ("fingerprint", "fp2"), ("codec_version", 2), ("mem_size", 11), ("payload", b"abd")]:
        assert sign(secret, **{**fields, name: other}) != base, name
    assert sign(b"x" * 16, **fields) != base


@pytest.mark.parametrize(
    "field, value",
    [
        ("signature", "é" * 64),  # non-ASCII: hmac.compare_digest raised TypeError on str
        ("signature", "ab"),
        ("signature", b"\x00" * 64),
        ("mem_size", "lots"),
        ("codec_version", None),
        ("payload", "not bytes"),
        ("key", None),
    ],
)
def test_a_malformed_server_row_is_unverified_not_a_crash(field: str, value: Any) -> None:
    """Whatever a tampered server returns, verify() says False; it never raises into the caller."""
    from zexus_bcache.store import StoredEntry

    secret = KEY.encode()
    fields = dict(key="k", kind="source", fingerprint="fp", codec_version=1, mem_size=10, payload=b"abc")
    good = StoredEntry(checksum="c", source_hash=None, signature=sign(secret, **fields), **fields)
    assert verify(secret, good)
    assert verify(secret, good._replace(**{field: value})) is False


def test_read_only_client_writes_nothing_to_the_server(tmp_path: Path, filled: tuple[str, list[str]]) -> None:
    url, keys = filled
    before = snapshot(url)
    with client(tmp_path, "pr-build", url, shared_read_only=True) as pr:
        assert pr.compile_source_report(PROGRAMS[0]).tier == "shared"
        assert pr.compile_source_report(PROGRAMS[1]).tier == "shared"
        new = pr.compile_source_report(PROGRAMS[0] + "\nprint(1)\n")
        assert new.tier is None  # compiled, stored locally only
        assert pr.store.info(new.key) is not None
        pr.flush()
        assert pr.stats.shared_puts == 0
    assert snapshot(url) == before


def test_read_only_client_refuses_a_server_that_is_not_at_head(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="zexus_bcache")
    with client(tmp_path, "pr-build", pg_url, shared_read_only=True) as pr:
        for source in PROGRAMS[:2]:
            assert pr.compile_source_report(source).tier is None
        assert pr.stats.shared_errors == 1  # refused once, then not asked again
    tables = server_rows(pg_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    assert tables == []  # not migrated
    messages = [r.getMessage() for r in caplog.records if "shared tier" in r.getMessage()]
    assert len(messages) == 1 and "needs migrating" in messages[0]


def test_no_key_no_shared_tier_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.delenv("ZEXUS_BCACHE_SHARED_KEY", raising=False)
    monkeypatch.delenv("ZEXUS_BCACHE_SHARED_KEY_FILE", raising=False)
    caplog.set_level(logging.WARNING, logger="zexus_bcache")
    cache = BytecodeCache(path=tmp_path / "c.db", shared="postgresql://nobody@127.0.0.1:1/none")
    assert cache.shared is None and "needs a key" in (cache.shared_error or "")
    assert cache.compile_source_report(PROGRAMS[0]).tier is None  # works, locally
    cache.close()
    assert len([r for r in caplog.records if "shared tier disabled" in r.getMessage()]) == 1
    with pytest.raises(ConfigError, match="needs a key"):
        BytecodeCache(path=tmp_path / "c.db", shared="postgresql://nobody@127.0.0.1:1/none", strict=True)
    with pytest.raises(ConfigError, match="at least 16 bytes"):
        SharedTier("postgresql://nobody@127.0.0.1:1/none", key="short")


def test_key_from_a_file_in_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key_file = tmp_path / "shared.key"
    key_file.write_text(KEY + "\n")
    monkeypatch.delenv("ZEXUS_BCACHE_SHARED_KEY", raising=False)
    monkeypatch.setenv("ZEXUS_BCACHE_SHARED_KEY_FILE", str(key_file))
    cache = BytecodeCache(path=tmp_path / "c.db", shared="postgresql://nobody@127.0.0.1:1/none")
    assert cache.shared is not None and cache.shared.secret == KEY.encode()
    cache.close()


# -- bounded waits --------------------------------------------------------------------------------


@pytest.fixture
def blackhole() -> Iterator[str]:
    """A URL whose server accepts TCP connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    try:
        yield f"postgresql+psycopg://nobody:pw@127.0.0.1:{port}/none"
    finally:
        listener.close()


@pytest.fixture
def refused() -> str:
    """A URL where nothing listens."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"postgresql+psycopg://nobody:pw@127.0.0.1:{port}/none"


@pytest.mark.parametrize("server", ["blackhole", "refused"])
def test_a_dead_server_costs_one_bounded_wait_then_nothing(
    tmp_path: Path, server: str, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    url = request.getfixturevalue(server)
    caplog.set_level(logging.WARNING, logger="zexus_bcache")
    options = {"connect_timeout": 2.0, "open_timeout": 1.0, "get_timeout": 1.0, "drain_timeout": 0.5}
    cache = client(tmp_path, "c", url, shared_options=options)
    t0 = time.monotonic()
    first = cache.compile_source_report(PROGRAMS[0])
    first_lookup = time.monotonic() - t0
    assert first.tier is None and first_lookup < 2.5  # one wait, at most about open_timeout
    waits = []
    for source in PROGRAMS[1:]:
        t0 = time.monotonic()
        assert cache.compile_source_report(source).tier is None
        waits.append(time.monotonic() - t0)
    # The breaker is open: compiling only, no network. A lookup that waited on the server would
    # take get_timeout at least (the blackhole); a compile takes ~30 ms, but a busy machine has
    # stretched one to 0.63 s, so the bound is the wait itself, and the error count says the rest.
    assert max(waits) < options["get_timeout"]
    t0 = time.monotonic()
    cache.close()
    assert time.monotonic() - t0 < 2.0
    stats = cache.stats
    assert stats.shared_errors == 1 and stats.misses == len(PROGRAMS) and stats.shared_hits == 0
    assert stats.shared_dropped == len(PROGRAMS)  # puts while down are dropped, not queued
    shared = [r.getMessage() for r in caplog.records if "shared tier" in r.getMessage()]
    assert len(shared) == 1 and "local tier" in shared[0], shared


def test_puts_never_wait_and_a_full_queue_drops_and_counts(tmp_path: Path, blackhole: str) -> None:
    tier = SharedTier(blackhole, key=KEY, queue_size=2, connect_timeout=2.0, open_timeout=5.0, drain_timeout=0.2)
    took = []
    for i in range(10):
        t0 = time.monotonic()
        tier.put(f"k{i}", b"payload", kind="source", fingerprint="fp", codec_version=1, n_instructions=1, n_constants=0)
        took.append(time.monotonic() - t0)
    assert max(took) < 0.05
    assert tier.counts.get("shared_dropped", 0) >= 7  # one taken by the (stuck) writer, two queued
    t0 = time.monotonic()
    tier.close()
    assert time.monotonic() - t0 < 1.5
    assert tier.counts["shared_dropped"] + tier.counts.get("shared_puts", 0) + tier.counts.get("shared_errors", 0) >= 9


def test_a_failed_server_is_retried_after_the_back_off(tmp_path: Path, filled: tuple[str, list[str]], refused: str) -> None:
    url, _ = filled
    cache = client(tmp_path, "c", url, shared_options={"retry_after": 0.5})
    tier = cache.shared
    assert tier is not None
    tier._failed("lookup", ConnectionError("simulated"))  # as if the server had just failed
    assert cache.compile_source_report(PROGRAMS[0]).tier is None  # in back-off: not asked
    time.sleep(0.6)
    assert cache.compile_source_report(PROGRAMS[1]).tier == "shared"  # asked again, and it answers
    cache.close()


# -- many processes, one server, and its death ------------------------------------------------------

CHILD = Path(__file__).parent / "_shared_child.py"


def spawn(args: dict[str, Any], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(CHILD), json.dumps(args)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )


def result_of(child: subprocess.Popen[str], timeout: float = 180) -> dict[str, Any]:
    out, err = child.communicate(timeout=timeout)
    assert child.returncode == 0, err[-3000:]
    lines = [line for line in out.splitlines() if line.startswith("RESULT ")]
    assert lines, (out[-2000:], err[-2000:])
    return json.loads(lines[-1].removeprefix("RESULT "))


def test_processes_share_hits_through_one_server_and_survive_its_death(tmp_path: Path, own_pg_server: Any) -> None:
    programs = [str(p) for p in corpus_programs()]
    reference = {
        Path(p).name: hashlib.sha256(codec.encode(pipeline.compile_source(Path(p).read_text(encoding="utf-8")))).hexdigest()
        for p in programs
    }
    env = dict(os.environ, ZEXUS_BCACHE_SHARED_KEY=KEY, PYTHONPATH=os.pathsep.join(sys.path))
    url = own_pg_server.url
    children: list[subprocess.Popen[str]] = []
    try:
        # A compiles everything; the server gets it all.
        a = spawn({"db": str(tmp_path / "a.db"), "url": url, "programs": programs}, env)
        children.append(a)
        first = result_of(a)
        assert first["errors"] == [] and first["warnings"] == []
        assert {r["tier"] for r in first["results"]} == {None}
        assert first["stats"]["shared_puts"] == len(programs) and first["stats"]["shared_dropped"] == 0
        # B, C, D at once, each with its own empty local cache: every program is a shared hit.
        others = [spawn({"db": str(tmp_path / f"{n}.db"), "url": url, "programs": programs}, env) for n in "bcd"]
        children += others
        for result in map(result_of, others):
            assert result["errors"] == [] and result["warnings"] == []
            assert {r["tier"] for r in result["results"]} == {"shared"}
            assert {r["name"]: r["digest"] for r in result["results"]} == reference
            stats = result["stats"]
            assert (stats["shared_hits"], stats["misses"], stats["shared_errors"], stats["auth_failures"]) == (len(programs), 0, 0, 0)
        # Mid-run death: B, C, D (local copies) and E (empty) each do part, then the server dies.
        go = tmp_path / "go"
        half = len(programs) // 2
        extra = ["let shared_tier_gone = 41\nprint(shared_tier_gone + 1)\n"]
        late = [
            spawn({"db": str(tmp_path / f"{n}.db"), "url": url, "programs": programs, "split": half, "go_file": str(go),
                   "extra": extra}, env)
            for n in "bcde"
        ]
        children += late
        for child in late:
            assert child.stdout is not None and child.stdout.readline().strip() == "READY"
        own_pg_server.stop("immediate")
        go.touch()
        for name, result in zip("bcde", map(result_of, late)):
            assert result["errors"] == [], (name, result["errors"])
            served = {r["name"]: r for r in result["results"]}
            assert {n: served[n]["digest"] for n in reference} == reference, name  # correct results
            tiers = [r["tier"] for r in result["results"]]
            if name == "e":  # fetched the first half while the server lived, compiled the rest
                assert tiers[:half] == ["shared"] * half and None in tiers[half:]
                assert len(result["warnings"]) == 1 and "local tier" in result["warnings"][0], result["warnings"]
                assert result["stats"]["shared_errors"] == 1
            else:  # everything from the local tier; the one program nobody had: compiled
                assert set(tiers[:-1]) <= {"front", "store"} and tiers[-1] is None
                assert len(result["warnings"]) <= 1
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()


# -- a tampered server: oversized rows and writers without the key ------------------------------


def test_an_oversized_payload_is_refused_before_it_is_downloaded(
    tmp_path: Path, filled: tuple[str, list[str]], decodes: list[bytes], caplog: pytest.LogCaptureFixture
) -> None:
    url, keys = filled
    huge = os.urandom(1024) * (20 * 1024)  # 20 MiB swapped in on the server
    server_rows(url, "UPDATE entries SET payload = :p WHERE key = :k", p=huge, k=keys[0])
    with Store(url) as raw:  # what the tier asks: the size, not the payload
        entry, size = raw.get_limited(keys[0], 16 * 1024 * 1024)
        assert entry is None and size == len(huge)
        small, small_size = raw.get_limited(keys[1], 16 * 1024 * 1024)
        assert small is not None and small_size == len(small.payload)
    caplog.set_level(logging.WARNING, logger="zexus_bcache")
    with client(tmp_path, "victim", url) as victim:
        assert victim.compile_source_report(PROGRAMS[0]).tier is None  # compiled here
        assert victim.compile_source_report(PROGRAMS[1]).tier == "shared"  # the others still come
        assert victim.stats.auth_failures == 1
    assert all(len(payload) < 1024 * 1024 for payload in decodes)
    assert sum("over 16777216" in r.getMessage() for r in caplog.records) == 1


def test_a_writer_with_the_wrong_key_cannot_overwrite_an_entry(tmp_path: Path, filled: tuple[str, list[str]]) -> None:
    url, keys = filled
    before = snapshot(url)["entries"]
    intruder = SharedTier(url, key="the-wrong-key-0123456789", retry_after=60.0, get_timeout=5.0, drain_timeout=10.0)
    try:
        other = pipeline.compile_source('print("not what you asked for")\n')
        payload = codec.encode(other)
        for key in keys:
            shape = dict(n_instructions=1, n_constants=1)
            assert intruder.put(key, payload, kind="source", fingerprint="fp", codec_version=1, **shape)
        assert intruder.flush(timeout=60)
    finally:
        intruder.close()
    assert [row[:3] for row in snapshot(url)["entries"]] == [row[:3] for row in before], "no entry was replaced"
    with client(tmp_path, "reader", url) as reader:
        report = reader.compile_source_report(PROGRAMS[0])
        assert report.tier == "shared" and reader.stats.auth_failures == 0
        assert_same(report.bytecode, pipeline.compile_source(PROGRAMS[0]))
