"""fork() and SQLite: no thread of ours is inside SQLite, and no connection of ours is open, when a process forks.

A child inherits a copy of the parent's memory, not its threads: a SQLite mutex or transaction that
another thread held at the fork stays held in the child forever (its first write hung). Worse,
SQLite keeps one record per open database file and process (its POSIX lock state): a child that
opened a new connection would share the parent's record and believe it holds locks that POSIX
does not pass across fork, so another process could checkpoint and delete a WAL the child still
writes to. So :class:`ForkGate` makes a fork wait until no store operation runs (and holds new ones
back), every store then closes its connections, and the child starts with no SQLite state for
our files; the parent's threads reconnect on their next operation.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Callable
from threading import get_ident
from types import TracebackType

log = logging.getLogger("zexus_bcache")


class ForkGate:
    """Store operations enter (re-entrantly, many threads at once); a fork waits until none is inside.

    The way in takes no lock (it is on every lookup): a thread records its depth, then looks for a
    fork under way; a fork marks itself, then looks for recorded threads. Each does its write before
    its read, so (with the GIL ordering them) at least one of the two sees the other.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._depths: dict[int, int] = {}  # thread ident -> how deep it is inside (absent: outside)
        self._forking = 0  # forks waiting or under way (two threads may fork at once)

    def __enter__(self) -> None:
        ident = get_ident()
        depths = self._depths
        depth = depths.get(ident, 0)
        depths[ident] = depth + 1
        if self._forking and not depth:  # a fork is waiting or under way: step back until it is done
            del depths[ident]
            with self._lock:
                while self._forking:
                    self._changed.wait()
                depths[ident] = 1

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        ident = get_ident()
        depths = self._depths
        depth = depths[ident] - 1
        if depth:
            depths[ident] = depth
            return
        del depths[ident]
        if self._forking:
            with self._lock:
                self._changed.notify_all()

    def _others_inside(self, ident: int) -> bool:
        return any(other != ident for other in list(self._depths))

    def before_fork(self, release: Callable[[], None]) -> None:
        """Wait until no other thread is inside an operation, then call ``release`` (closing connections)."""
        ident = get_ident()
        with self._lock:
            self._forking += 1
            while self._others_inside(ident):
                self._changed.wait(0.05)
        if ident in self._depths:
            # fork() called from inside a store operation: its connection is in use, so it stays
            # open and the child abandons it (see SQLiteBackend.after_fork_in_child).
            log.debug("fork() inside a store operation: connections are not closed first")
            return
        try:
            release()
        except Exception:  # a fork must go ahead; the child abandons what could not be closed
            log.exception("closing the cache's connections before fork()")

    def after_fork_in_parent(self) -> None:
        with self._lock:
            self._forking -= 1
            self._changed.notify_all()

    def after_fork_in_child(self) -> None:
        """The child has only the forking thread: start with a fresh gate (its own depth kept)."""
        depth = self._depths.get(get_ident(), 0)
        self.__init__()  # type: ignore[misc]
        if depth:
            self._depths[get_ident()] = depth


GATE = ForkGate()


def register(before: Callable[[], None], after_in_child: Callable[[], None]) -> None:
    """Run ``before`` (under the gate) before every fork, ``after_in_child`` in every child."""
    if not hasattr(os, "register_at_fork"):
        return

    def child() -> None:
        GATE.after_fork_in_child()
        after_in_child()

    os.register_at_fork(
        before=lambda: GATE.before_fork(before), after_in_parent=GATE.after_fork_in_parent, after_in_child=child
    )
