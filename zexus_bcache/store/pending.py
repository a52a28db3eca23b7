"""What a store records in memory until a flush writes it: last access and hits per key, counter deltas.

No I/O here. Reads stay read-only (diskcache's LRU get is a write transaction per hit, ~6x slower):
each hit is recorded as (latest time, +n) and written later in one batch, so LRU/LFU order stays
right without a write per read.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from .. import constants
from ..errors import ConfigError

log = logging.getLogger("zexus_bcache")

MAX_KEYS = 100_000  # access records kept after failed flushes before they are dropped
_COUNTER_NAMES = frozenset(constants.COUNTERS)

Accesses = dict[str, list[Any]]  # key -> [last access time, hits]


class Pending:
    """Unsaved accesses and counter deltas, and when they are due to be flushed."""

    def __init__(self, flush_every: int, flush_interval: float) -> None:
        self.flush_every = max(1, int(flush_every))
        self.flush_interval = float(flush_interval)
        self.keep_accesses = True  # False for a read-only store: its access times could never be saved
        self.reset()

    def reset(self) -> None:
        """Start empty, with a new lock (also in a forked child: the parent's lock may be held)."""
        self.lock = threading.Lock()
        self.accesses: Accesses = {}
        self.counters: dict[str, int] = {}
        self.n = 0  # records since the last flush
        self.next_flush = time.time() + self.flush_interval

    def hit(self, key: str, counter: str | None = None) -> bool:
        """Record one use of ``key`` (and +1 on ``counter``); return whether a flush is due."""
        now = time.time()
        with self.lock:
            if counter is not None:
                self.counters[counter] = self.counters.get(counter, 0) + 1
            if not self.keep_accesses:
                return False  # counters stay in memory
            hit = self.accesses.get(key)
            if hit is None:
                self.accesses[key] = [now, 1]
            else:
                if now > hit[0]:  # another thread may have recorded a later use while we waited
                    hit[0] = now
                hit[1] += 1
            self.n += 1
            return self.n >= self.flush_every or now >= self.next_flush

    def add(self, deltas: Mapping[str, int]) -> bool:
        """Add to counters (names checked); return whether a flush is due."""
        now = time.time()
        with self.lock:
            for name, delta in deltas.items():
                if name not in _COUNTER_NAMES:
                    raise ConfigError(f"unknown counter {name!r}; known: {', '.join(constants.COUNTERS)}")
                self.counters[name] = self.counters.get(name, 0) + int(delta)
            self.n += 1
            return self.n >= self.flush_every or now >= self.next_flush

    def due(self, now: float) -> bool:
        """Whether something is recorded and its flush is due."""
        return bool(self.n) and (self.n >= self.flush_every or now >= self.next_flush)

    def take(self) -> tuple[Accesses, dict[str, int]]:
        """Everything recorded (counters that add up to 0 left out); the record starts empty."""
        with self.lock:
            accesses, self.accesses = self.accesses, {}
            deltas, self.counters = self.counters, {}
            self.n = 0
            self.next_flush = time.time() + self.flush_interval
        return accesses, {name: delta for name, delta in deltas.items() if delta}

    def restore(self, accesses: Accesses, deltas: Mapping[str, int], name: str) -> None:
        """Put back what a failed flush took, merged with what arrived meanwhile."""
        with self.lock:
            for key, (when, hits) in accesses.items():
                hit = self.accesses.get(key)
                if hit is None:
                    self.accesses[key] = [when, hits]
                else:
                    hit[0] = max(hit[0], when)
                    hit[1] += hits
            for counter, delta in deltas.items():
                self.counters[counter] = self.counters.get(counter, 0) + delta
            if len(self.accesses) > MAX_KEYS:
                log.warning("%s: dropping %d unsaved access records", name, len(self.accesses))
                self.accesses.clear()

    def forget(self, keys: Iterable[str] | None = None) -> None:
        """Drop the access records of ``keys`` (entries that are gone), or all of them."""
        with self.lock:
            if keys is None:
                self.accesses.clear()
            else:
                for key in keys:
                    self.accesses.pop(key, None)

    def drop(self) -> int:
        """Forget everything recorded; return how many keys and counters that was."""
        with self.lock:
            lost = len(self.accesses) + len(self.counters)
            self.accesses.clear()
            self.counters.clear()
            self.n = 0
        return lost

    def counter_deltas(self) -> dict[str, int]:
        with self.lock:
            return dict(self.counters)

    def reset_counters(self) -> None:
        with self.lock:
            self.counters.clear()

    def n_accesses(self) -> int:
        with self.lock:
            return len(self.accesses)

    def applied(self, info: dict[str, Any]) -> dict[str, Any]:
        """An entry's info with this process's unsaved uses of it."""
        with self.lock:
            hit = self.accesses.get(info["key"])
            if hit is not None:
                info["last_access"] = max(info["last_access"], hit[0])
                info["access_count"] += hit[1]
        return info
