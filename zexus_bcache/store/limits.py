"""Limits that hold after every put: whether a put went over, and which entries go, in policy order.

No SQL here: a backend runs the put's transaction and gives :func:`evict_after_put` what it needs
(diskcache's cull, but the order is the policy's and the totals come from triggers, not a scan).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import StoreError
from .queries import SETTING_NAMES, typed_settings

BATCH = 16  # candidates read at a time when only the byte total is over


class Limits(NamedTuple):
    """The limits every process reads fresh at each put (0 = unlimited)."""

    max_entries: int
    max_bytes: int
    policy: str

    def over(self, entries: int, total_bytes: int) -> bool:
        """Whether a store holding ``entries`` entries of ``total_bytes`` bytes breaks a limit."""
        too_many = self.max_entries and entries > self.max_entries
        return bool(too_many or (self.max_bytes and total_bytes > self.max_bytes))


@functools.lru_cache(maxsize=64)
def parse_limits(max_entries: Any, max_bytes: Any, policy: Any) -> Limits:
    """The limits from the settings' stored values (a setting not stored, or not valid: its default)."""
    given = zip(SETTING_NAMES, (max_entries, max_bytes, policy), strict=True)
    typed = typed_settings({name: value for name, value in given if value is not None})
    return Limits(int(typed["max_entries"]), int(typed["max_bytes"]), str(typed["policy"]))


Candidates = Callable[[str, int], list[tuple[str, int]]]  # (policy, n) -> first n (key, size) in eviction order


def evict_after_put(
    key: str,
    size: int,
    over: tuple[Limits, int, int],
    candidates: Candidates,
    delete: Callable[[list[str]], None],
) -> list[str]:
    """Delete entries in policy order until the store is within its limits; return their keys, first first.

    ``over`` is :func:`over_limits`' answer after putting ``key`` (``size`` bytes).
    As :meth:`Store.evict` does, an entry larger than the whole byte budget goes alone: it does not
    push every older entry out. Runs inside the put's transaction.
    """
    limits, entries, total_bytes = over
    evicted: list[str] = []
    if limits.max_bytes and size > limits.max_bytes:
        delete([key])
        evicted.append(key)
        entries, total_bytes = entries - 1, total_bytes - size
    while limits.over(entries, total_bytes):
        excess = entries - limits.max_entries if limits.max_entries else 0
        batch = candidates(limits.policy, max(excess, BATCH if excess <= 0 else excess))
        going = []
        for victim, victim_size in batch:
            if not limits.over(entries, total_bytes):
                break
            going.append(victim)
            entries, total_bytes = entries - 1, total_bytes - victim_size
        if not going:
            break  # nothing left to evict (the totals disagree with the rows: recount() repairs them)
        delete(going)
        evicted += going
    return evicted


def over_limits(totals_and_settings: tuple[Any, ...] | None) -> tuple[Limits, int, int] | None:
    """After a put, in its transaction: (limits, entries, bytes) if the store is over a limit, else None.

    ``totals_and_settings`` is the limits statement's row: the totals, then the stored settings.
    """
    if totals_and_settings is None:
        raise StoreError("the totals row is missing: Store.recount() (zexus-bcache doctor --repair) rebuilds it")
    entries, total_bytes, *stored = totals_and_settings
    limits = parse_limits(*stored)
    return (limits, entries, total_bytes) if limits.over(entries, total_bytes) else None
