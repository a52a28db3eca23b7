"""The shared tier: a team's or a CI fleet's cache on a database server, behind the local cache.

A :class:`SharedTier` is a :class:`~zexus_bcache.store.Store` on a server URL (PostgreSQL) with
three things around it, because the network must never make a program slower or wrong:

* **Authenticated payloads.** Every entry written here carries a signature: HMAC-SHA256, under a
  key the clients hold, over the entry's key, kind, compiler fingerprint, codec version, memory
  size and the SHA-256 of the payload, recomputed by the reader from the bytes it received. A
  payload altered on the server, moved to another key, or unsigned is refused before anything
  decodes it, and counted (``auth_failures``).
* **Bounded waits.** Lookups run on a worker thread and the caller waits at most ``get_timeout``
  (the first, which connects and may migrate, ``open_timeout``); the driver's ``connect_timeout``
  and the server's ``statement_timeout`` bound the worker. After a failure the tier is "down" for
  ``retry_after`` seconds (a circuit breaker): a dead server costs one timeout, not one per
  lookup. Puts go to a bounded queue drained by a writer thread: a put never waits for the
  network; when the queue is full the entry is dropped and counted (``shared_dropped``).
* **One warning per kind of failure** (unreachable, schema, authentication, queue full) through
  ``logging``; every failure is also counted, and the caller carries on with its local tier.

A read-only tier (untrusted pull-request builds) never writes: no puts, no access-time flushes,
no migrations (a server schema that is not at this package's head is refused, not migrated).
This module imports SQLAlchemy only when a tier is actually opened.
"""

from __future__ import annotations

import atexit
import hashlib
import hmac
import importlib.util
import logging
import os
import queue
import threading
import time
import weakref
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from typing import TYPE_CHECKING, Any

from .errors import BcacheError, ConfigError, SchemaTooNewError

if TYPE_CHECKING:
    from .store import Store, StoredEntry

log = logging.getLogger("zexus_bcache")

MAX_PAYLOAD = 16 * 1024 * 1024  # larger payloads are refused before they are downloaded
MIN_KEY_BYTES = 16
_SIGNATURE_CONTEXT = b"zexus-bcache shared entry v1"


def sign(
    secret: bytes, *, key: str, kind: str, fingerprint: str, codec_version: int, mem_size: int | None, payload: bytes
) -> str:
    """The hex HMAC-SHA256 of an entry: what a reader checks before decoding its payload."""
    digest = hashlib.sha256(payload).hexdigest()
    fields = (key, kind, fingerprint, str(int(codec_version)), "" if mem_size is None else str(int(mem_size)), digest)
    message = _SIGNATURE_CONTEXT + b"".join(b"\0" + field.encode("utf-8", "surrogatepass") for field in fields)
    return hmac.new(secret, message, hashlib.sha256).hexdigest()


def verify(secret: bytes, entry: StoredEntry) -> bool:
    """Whether a stored entry's signature is right for its key, metadata and the payload as received.

    Anything the server hands back is data: a signature that is not 64 hex digits, or fields of the
    wrong type, make the entry unverified (a miss), never an exception in the caller.
    """
    signature = entry.signature
    if not isinstance(signature, str) or len(signature) != 64 or not signature.isascii():
        return False
    if not isinstance(entry.payload, (bytes, bytearray, memoryview)):
        return False
    try:
        expected = sign(
            secret,
            key=entry.key,
            kind=entry.kind,
            fingerprint=entry.fingerprint,
            codec_version=entry.codec_version,
            mem_size=entry.mem_size,
            payload=bytes(entry.payload),
        )
    except (TypeError, ValueError, AttributeError):  # a field of the wrong type or value: not ours
        return False
    return hmac.compare_digest(expected, signature)


def check_key(secret: bytes | str | None) -> bytes:
    """The HMAC key as bytes; ConfigError when there is none or it is too short to be a secret."""
    if secret is None or not secret:
        raise ConfigError(
            "the shared tier needs a key to authenticate payloads (ZEXUS_BCACHE_SHARED_KEY, or"
            " shared_key_file in .zexus/bcache.toml); refusing an unauthenticated shared tier"
        )
    data = secret.encode("utf-8") if isinstance(secret, str) else bytes(secret)
    if len(data) < MIN_KEY_BYTES:
        raise ConfigError(f"the shared tier's key must be at least {MIN_KEY_BYTES} bytes, not {len(data)}")
    return data


def server_url(url: str, *, connect_timeout: float, statement_timeout_ms: int) -> str:
    """The URL with libpq's connect_timeout and a server-side statement_timeout (unless given)."""
    import sqlalchemy as sa

    from .store import normalize_url

    try:
        parsed = sa.make_url(normalize_url(url))
    except (sa.exc.ArgumentError, ValueError):
        raise ConfigError("the shared tier's URL is not a database URL (postgresql://user@host/db)") from None
    if parsed.get_backend_name() != "postgresql":
        backend = parsed.get_backend_name()
        raise ConfigError(f"the shared tier needs a PostgreSQL URL (postgresql://...), not {backend!r}")
    if importlib.util.find_spec("psycopg") is None:
        raise ConfigError("the shared tier needs psycopg 3: pip install 'zexus-bcache[pg]'")
    query = dict(parsed.query)
    query.setdefault("connect_timeout", str(max(1, round(connect_timeout))))
    query.setdefault("application_name", "zexus-bcache")
    if "options" not in query:
        query["options"] = f"-c statement_timeout={int(statement_timeout_ms)}"
    return parsed.set(query=query).render_as_string(hide_password=False)


# A queued put: key, payload and Store.put's keyword arguments.
_Put = tuple[str, bytes, dict[str, Any]]


class _Worker:
    """One daemon thread running submitted calls in order (never joined at exit: a call stuck on a
    dead network must not hold the interpreter)."""

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], Future[Any]] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._calls.put((fn, future))
        return future

    def stop(self) -> None:
        self._calls.put(None)

    def _run(self) -> None:
        while (call := self._calls.get()) is not None:
            fn, future = call
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # handed to the waiting caller
                future.set_exception(exc)


class SharedTier:
    """A shared store on a server: signed puts through a bounded queue, verified gets with bounded waits."""

    def __init__(
        self,
        url: str,
        *,
        key: bytes | str | None,
        read_only: bool = False,
        count: Callable[[str, int], None] | None = None,
        connect_timeout: float = 3.0,
        statement_timeout_ms: int = 5000,
        get_timeout: float = 2.0,
        open_timeout: float = 20.0,
        retry_after: float = 30.0,
        queue_size: int = 1024,
        drain_timeout: float = 5.0,
        max_payload: int = MAX_PAYLOAD,
    ) -> None:
        """Check the key and URL now (ConfigError); connect in the background (failures are warnings)."""
        self.secret = check_key(key)
        self.url = server_url(url, connect_timeout=connect_timeout, statement_timeout_ms=statement_timeout_ms)
        import sqlalchemy as sa

        self.name = sa.make_url(self.url).set(query={}).render_as_string(hide_password=True)
        self.read_only = read_only
        self.get_timeout = float(get_timeout)
        self.open_timeout = float(open_timeout)
        self.retry_after = float(retry_after)
        self.drain_timeout = float(drain_timeout)
        self.max_payload = int(max_payload)
        self.counts: dict[str, int] = {}
        self._count_cb = count
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._store: Store | None = None
        self._disabled: str | None = None  # a permanent refusal (schema): no retries
        self._down_until = 0.0
        self._closed = False
        self._io = _Worker("zexus-bcache-shared-io")
        self._opening: Future[Store] | None = self._io.submit(self._open)  # connect while the program starts up
        self._queue: queue.Queue[_Put] = queue.Queue(maxsize=max(1, int(queue_size)))
        self._writer: threading.Thread | None = None
        if not read_only:
            self._writer = threading.Thread(target=self._write_loop, name="zexus-bcache-shared-writer", daemon=True)
            self._writer.start()
        _LIVE.add(self)

    # -- plumbing ------------------------------------------------------------------------------

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counts[name] = self.counts.get(name, 0) + n
        if self._count_cb is not None:
            try:
                self._count_cb(name, n)
            except Exception:  # statistics must never break a lookup
                log.debug("counting %s failed", name, exc_info=True)

    def _warn(self, kind: str, message: str) -> None:
        with self._lock:
            if kind in self._warned:
                return
            self._warned.add(kind)
        log.warning("zexus_bcache: shared tier %s: %s", self.name, message)

    def _failed(self, what: str, exc: BaseException) -> None:
        """Count a failure and mark the tier down for retry_after seconds (the circuit breaker)."""
        self._count("shared_errors")
        if isinstance(exc, SchemaTooNewError) or (isinstance(exc, BcacheError) and "needs migrating" in str(exc)):
            self._disabled = str(exc)
            self._warn("schema", f"{exc}; working from the local tier only")
            return
        self._down_until = time.monotonic() + self.retry_after
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        reason = reason.removeprefix(self.name + ": ")  # the store's messages start with its name
        self._warn(
            "unreachable",
            f"{what} failed ({reason}); working from the local tier, retrying every {self.retry_after:g} s",
        )

    @property
    def available(self) -> bool:
        """Whether the tier may be asked now: open or openable, not closed, not in back-off."""
        return not self._closed and self._disabled is None and time.monotonic() >= self._down_until

    def _open(self) -> Store:
        """The store on the server, opened on the io thread (read-only: never migrates)."""
        store = self._store
        if store is not None:
            return store
        from .store import Store

        store = Store(self.url, read_only=self.read_only, flush_every=4096, flush_interval=10.0)
        self._store = store
        return store

    def _call(self, what: str, fn: Callable[[Store], Any]) -> tuple[bool, Any]:
        """Run fn(store) on the io thread, waiting a bounded time; (ok, result)."""
        if not self.available:
            return False, None
        opening = self._opening
        if opening is not None:  # the first call waits for the connection started at construction
            try:
                opening.result(self.open_timeout)
            except FutureTimeout:
                self._failed("connecting", TimeoutError(f"no connection within {self.open_timeout:g} s"))
                return False, None
            except Exception as exc:
                if self._opening is opening:  # one caller reports it; a later call connects again
                    self._opening = None
                    self._failed("connecting", exc)
                return False, None
            self._opening = None
        timeout = self.get_timeout if self._store is not None else self.open_timeout

        def task() -> Any:
            return fn(self._open())

        future = self._io.submit(task)
        try:
            return True, future.result(timeout)
        except FutureTimeout:
            self._failed(what, TimeoutError(f"no answer within {timeout:g} s"))
        except Exception as exc:  # any failure of the server, the driver or the network
            self._failed(what, exc)
        return False, None

    # -- reading -------------------------------------------------------------------------------

    def get(self, key: str, fingerprint: str | None = None) -> StoredEntry | None:
        """The verified entry under key, or None (a miss, the tier unavailable, or a bad signature).

        Nothing here decodes a payload: the caller decodes only what this returned.
        """
        # The row's size first, the payload only if it is not over max_payload (one statement).
        ok, found = self._call("lookup", lambda store: store.get_limited(key, self.max_payload))
        if not ok:
            return None
        entry, size = found
        if entry is None and size is not None:
            self._count("auth_failures")
            message = f"entry {key[:12]} has a {size}-byte payload, over {self.max_payload}; refused, not downloaded"
            self._warn("oversized", message)
            return None
        if entry is None:
            self._count("shared_misses")
            return None
        if not verify(self.secret, entry):
            self._count("auth_failures")
            what = "has no signature" if not entry.signature else "fails its signature check"
            self._warn(
                "auth",
                f"entry {key[:12]} {what} (written without the key, altered or moved on the server);"
                " refused, not decoded",
            )
            return None
        if fingerprint is not None and entry.fingerprint != fingerprint:
            self._count("shared_misses")
            return None
        return entry

    # -- writing -------------------------------------------------------------------------------

    def put(
        self,
        key: str,
        payload: bytes,
        *,
        kind: str,
        fingerprint: str,
        codec_version: int,
        n_instructions: int,
        n_constants: int,
        mem_size: int | None = None,
        source_hash: str | None = None,
    ) -> bool:
        """Queue an entry for the server; never waits. False if it was not queued (read-only, down, full)."""
        if self.read_only or self._closed or self._disabled is not None:
            return False
        if time.monotonic() < self._down_until:
            self._count("shared_dropped")
            return False
        meta = dict(
            kind=kind, fingerprint=fingerprint, codec_version=codec_version, n_instructions=n_instructions,
            n_constants=n_constants, mem_size=mem_size, source_hash=source_hash,
        )
        item: _Put = (key, bytes(payload), meta)
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self._count("shared_dropped")
            self._warn("queue", f"the write queue is full ({self._queue.maxsize} entries); dropping puts")
            return False
        return True

    def _write_loop(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is _STOP:
                    return
                self._write(item)
            finally:
                self._queue.task_done()

    def _write(self, item: _Put) -> None:
        if not self.available:
            self._count("shared_dropped")
            return
        key, payload, meta = item
        signed = {name: meta[name] for name in ("kind", "fingerprint", "codec_version", "mem_size")}
        signature = sign(self.secret, key=key, payload=payload, **signed)

        def put(store: Store) -> None:
            # Insert if absent: a writer (with the wrong key, say) never replaces an entry there.
            store.put(key, payload, signature=signature, replace=False, **meta)

        ok, _ = self._call("put", put)
        if not ok:
            return
        self._count("shared_puts")  # the server enforced its limits in the put's own transaction

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (at most timeout, default drain_timeout) until every queued put was written or dropped."""
        deadline = time.monotonic() + (self.drain_timeout if timeout is None else timeout)
        with self._queue.all_tasks_done:
            while self._queue.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._queue.all_tasks_done.wait(left)
        return True

    @property
    def pending(self) -> int:
        """Puts queued and not written yet."""
        return self._queue.unfinished_tasks

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued (bounded by timeout, default drain_timeout), then release the server."""
        if self._closed:
            return
        limit = self.drain_timeout if timeout is None else timeout
        start = time.monotonic()
        if self._writer is not None:
            drained = self.flush(limit)
            self._closed = True
            if not drained:
                lost = self._discard_queue()
                if lost:
                    self._count("shared_dropped", lost)
                    self._warn("close", f"closing with {lost} puts not written (the server did not take them in time)")
            try:
                self._queue.put_nowait(_STOP)
            except queue.Full:
                pass
        self._closed = True
        _LIVE.discard(self)
        store, self._store = self._store, None
        if store is None:
            self._io.stop()
            return
        if not self.available:
            store.drop_pending()  # the server is gone: do not wait for it (nor warn again) to save access times
        closing = self._io.submit(store.close)
        self._io.stop()
        try:
            closing.result(max(0.1, limit - (time.monotonic() - start)))
        except Exception:  # stuck or failed: leave it to its daemon thread, never block the exit on it
            from . import store as store_mod

            store_mod._LIVE.discard(store)

    def _discard_queue(self) -> int:
        lost = 0
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return lost
            lost += 1
            self._queue.task_done()

    def __repr__(self) -> str:
        mode = "read-only" if self.read_only else "read-write"
        state = "closed" if self._closed else "disabled" if self._disabled else "down" if not self.available else "up"
        return f"<SharedTier {self.name} {mode} {state}>"


_STOP: Any = object()
_LIVE: weakref.WeakSet[SharedTier] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tier in list(_LIVE):
        try:
            tier.close()
        except Exception:  # at exit there is no one left to tell but the log
            log.exception("closing %r at exit", tier)


def _disable_after_fork() -> None:
    """A forked child has none of its parent's threads: its copies of the tiers go quiet (local tier only)."""
    for tier in list(_LIVE):
        tier._closed = True
        tier._store = None
    _LIVE.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_disable_after_fork)
