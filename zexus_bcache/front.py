"""The in-memory front layer: a thread-safe LRU of decoded Bytecode, bounded by entries and bytes."""

from __future__ import annotations

import enum
import os
import sys
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

_ATOMIC = (int, float, complex, bool, str, bytes, type(None))


# What deep_sizeof does with an object of a given type, decided once per type.
_SKIP, _LEAF, _ITEMS, _MAPPING, _ATTRS = range(5)
_HOW: dict[type, int] = {list: _ITEMS, tuple: _ITEMS, set: _ITEMS, frozenset: _ITEMS, dict: _MAPPING}
# Singletons every program shares: None, the bools and CPython's cached small ints.
_SHARED_IDS = frozenset(map(id, (None, True, False, *range(-5, 257))))


def _how(t: type) -> int:
    if issubclass(t, (enum.Enum, type)):
        how = _SKIP  # shared by every program
    elif t in _HOW:
        how = _HOW[t]
    elif issubclass(t, _ATOMIC):
        how = _LEAF
    else:
        how = _ATTRS
    _HOW[t] = how
    return how


def deep_sizeof(obj: Any) -> int:
    """Bytes held by ``obj`` and everything it alone references (shared singletons are not counted)."""
    seen: set[int] = set()  # not a copy of _SHARED_IDS: copying it cost more than measuring a small value
    total = 0
    stack = [obj]
    pop, push, extend = stack.pop, stack.append, stack.extend
    getsizeof = sys.getsizeof
    how_of = _HOW.get
    shared = _SHARED_IDS
    while stack:
        o = pop()
        i = id(o)
        if i in seen:
            continue
        seen.add(i)
        t = type(o)
        how = how_of(t)
        if how is None:
            how = _how(t)
        if how == _LEAF:
            if i not in shared:
                total += getsizeof(o)
        elif how == _ITEMS:
            total += getsizeof(o)
            extend(o)
        elif how == _MAPPING:
            total += getsizeof(o)
            extend(o.keys())
            extend(o.values())
        elif how == _ATTRS:
            total += getsizeof(o)
            d = getattr(o, "__dict__", None)
            if d is not None:
                push(d)
    return total


@dataclass(slots=True)
class FrontEntry:
    """A cached value with its size and access record."""

    value: Any
    size: int
    created_at: float
    last_access: float
    access_count: int = 0


class FrontCache:
    """LRU order is one OrderedDict with ``move_to_end`` on touch; a value larger than the bound is refused."""

    def __init__(
        self,
        max_entries: int,
        max_bytes: int,
        getsizeof: Callable[[Any], int] = deep_sizeof,
    ) -> None:
        if max_entries < 0 or max_bytes < 0:
            raise ValueError("front cache bounds must not be negative")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.getsizeof = getsizeof
        self.currsize = 0
        self.hits = 0
        self._data: OrderedDict[Hashable, FrontEntry] = OrderedDict()
        self._lock = threading.Lock()
        _LIVE.add(self)

    def get(self, key: Hashable) -> Any | None:
        """The value for key (made most recent), or None."""
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                return None
            self._data.move_to_end(key)
            self.hits += 1
            entry.access_count += 1
            entry.last_access = time.time()
            return entry.value

    def put(self, key: Hashable, value: Any, size: int | None = None) -> list[Hashable] | None:
        """Insert or replace; return the keys evicted to make room, or None if the value cannot fit."""
        if size is None:
            size = self.getsizeof(value)
        if size > self.max_bytes or self.max_entries == 0:
            with self._lock:
                self._remove(key)
            return None
        now = time.time()
        with self._lock:
            self._remove(key)
            evicted = []
            while self._data and (len(self._data) >= self.max_entries or self.currsize + size > self.max_bytes):
                old_key, old = self._data.popitem(last=False)
                self.currsize -= old.size
                evicted.append(old_key)
            self._data[key] = FrontEntry(value, size, now, now)
            self.currsize += size
            return evicted

    def _remove(self, key: Hashable) -> bool:
        entry = self._data.pop(key, None)
        if entry is None:
            return False
        self.currsize -= entry.size
        return True

    def pop(self, key: Hashable) -> bool:
        """Drop key; True if it was there."""
        with self._lock:
            return self._remove(key)

    def peek(self, key: Hashable) -> FrontEntry | None:
        """The entry for key without touching its LRU position."""
        with self._lock:
            return self._data.get(key)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()
            self.currsize = 0

    def keys(self) -> list[Hashable]:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)


_LIVE: weakref.WeakSet[FrontCache] = weakref.WeakSet()


def _reset_locks_after_fork() -> None:
    """A forked child has only the forking thread: a lock another thread held would never be released."""
    for front in list(_LIVE):
        front._lock = threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_reset_locks_after_fork)
