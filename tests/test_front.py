"""front: the thread-safe LRU of decoded bytecode, bounded by entries and bytes."""

from __future__ import annotations

import gc
import threading
import tracemalloc

import pytest
from zx_programs import corpus_programs

from zexus_bcache import codec, pipeline
from zexus_bcache import front as front_module
from zexus_bcache.front import FrontCache, deep_sizeof


def test_codec_measures_with_the_same_shared_singletons() -> None:
    """codec.encode_measured's size equals deep_sizeof only while both skip the same shared objects."""
    from zexus_bcache import codec_tree

    assert codec_tree.SHARED_IDS == front_module._SHARED_IDS


def test_lru_order_under_max_entries() -> None:
    front = FrontCache(max_entries=3, max_bytes=10**9, getsizeof=lambda v: 1)
    for k in "abc":
        front.put(k, k.upper())
    assert front.get("a") == "A"  # a becomes most recent
    assert front.put("d", "D") == ["b"]
    assert front.keys() == ["c", "a", "d"]
    assert front.get("b") is None


def test_byte_bound_evicts_oldest_until_it_fits() -> None:
    front = FrontCache(max_entries=100, max_bytes=100, getsizeof=len)
    front.put("a", "x" * 40)
    front.put("b", "x" * 40)
    assert front.put("c", "x" * 40) == ["a"]
    assert front.currsize == 80
    assert sorted(front.keys()) == ["b", "c"]


def test_oversized_value_is_refused_not_half_stored() -> None:
    front = FrontCache(max_entries=10, max_bytes=50, getsizeof=len)
    front.put("small", "x" * 10)
    assert front.put("big", "x" * 51) is None
    assert "big" not in front and "small" in front and front.currsize == 10


def test_replacing_a_key_keeps_accounting_right() -> None:
    front = FrontCache(max_entries=10, max_bytes=1000, getsizeof=len)
    front.put("k", "x" * 100)
    front.put("k", "x" * 30)
    assert front.currsize == 30 and len(front) == 1
    assert front.pop("k") and front.currsize == 0 and not front.pop("k")


def test_peek_does_not_touch() -> None:
    front = FrontCache(max_entries=2, max_bytes=1000, getsizeof=len)
    front.put("a", "1")
    front.put("b", "2")
    entry = front.peek("a")
    assert entry is not None and entry.access_count == 0
    front.put("c", "3")
    assert "a" not in front


def test_zero_entries_caches_nothing() -> None:
    front = FrontCache(max_entries=0, max_bytes=1000, getsizeof=len)
    assert front.put("a", "1") is None and len(front) == 0


def test_threads_keep_the_bounds() -> None:
    front = FrontCache(max_entries=50, max_bytes=5000, getsizeof=len)
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(2000):
                front.put(f"{n}-{i % 120}", "x" * (i % 90 + 1))
                front.get(f"{(n + 1) % 4}-{i % 120}")
                if i % 7 == 0:
                    front.pop(f"{n}-{(i * 3) % 120}")
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert len(front) <= 50 and front.currsize <= 5000
    assert front.currsize == sum(front.peek(k).size for k in front.keys())  # noqa: SIM118 - FrontCache is not iterable


def test_byte_accounting_matches_tracemalloc() -> None:
    """deep_sizeof of decoded bytecode against what tracemalloc sees decoding allocate."""
    errors = []
    for path in corpus_programs()[:12] or pytest.skip("corpus missing"):
        data = codec.encode(pipeline.compile_source(path.read_text(encoding="utf-8"), str(path)))
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        copies = [codec.decode(data) for _ in range(10)]
        gc.collect()
        allocated = (tracemalloc.get_traced_memory()[0] - before) / len(copies)
        tracemalloc.stop()
        estimate = deep_sizeof(copies[0])
        errors.append(abs(estimate - allocated) / allocated)
    worst = max(errors)
    print(f"front byte accounting vs tracemalloc: worst error {worst:.1%}, mean {sum(errors) / len(errors):.1%}")
    assert worst < 0.10
