"""What the parts of a Store share: the rows it returns, the checksum, and the guard on its public methods."""

from __future__ import annotations

import functools
import zlib
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, Concatenate, NamedTuple, ParamSpec, TypeVar

from ..errors import BcacheError, StoreError
from .backend import database_errors

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from .backend import Backend
    from .pending import Pending


class StoredEntry(NamedTuple):
    """What serving a hit needs: the payload and what says whether it is usable (the rest: ``info``).

    A NamedTuple, not a dataclass, and only these columns: this is built on every store hit, and
    each extra column or a frozen dataclass costs the hot path measurable time (see bench_store.py).
    """

    key: str
    kind: str
    fingerprint: str
    codec_version: int
    checksum: str
    source_hash: str | None
    mem_size: int | None
    signature: str | None
    payload: bytes


make_entry: Callable[[Iterable[Any]], StoredEntry] = functools.partial(tuple.__new__, StoredEntry)


def checksum(payload: bytes) -> str:
    """The payload's checksum, stored next to it (what ``doctor`` compares): CRC-32, 8 hex digits.

    Since 0004 it only detects damage (before, it was the payload's content address, SHA-256):
    CRC-32 catches every burst of up to 32 flipped bits and misses random damage once in 2^32,
    at half SHA-256's cost on 11 KB (4.6 vs 9.7 µs measured, ~10% of a put with the cache
    misses of a real put). Nothing trusts it against tampering: a shared entry carries an HMAC
    over the payload's SHA-256 (see shared.py), and every codec payload its own blake2b-128.
    """
    return f"{zlib.crc32(payload):08x}"


_P = ParamSpec("_P")
_R = TypeVar("_R")


_S = TypeVar("_S", bound="StoreBase")


def public(method: Callable[Concatenate[_S, _P], _R]) -> Callable[Concatenate[_S, _P], _R]:
    """Refuse calls on a closed store and turn database errors into StoreError."""

    @functools.wraps(method)
    def wrapper(self: _S, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        if self._closed:
            raise StoreError(f"{self.name}: the store is closed")
        try:
            with self._gate:  # a fork waits until no store operation runs (see forks.py)
                return method(self, *args, **kwargs)
        except BcacheError:
            raise
        except database_errors() as exc:
            raise self._error(method.__name__, exc) from exc

    return wrapper


class StoreBase:
    """The state every part of :class:`~zexus_bcache.store.Store` uses (set by its ``__init__``)."""

    name: str
    dialect: str
    read_only: bool
    _closed: bool
    _backend: Backend
    _pending: Pending
    _gate: AbstractContextManager[None]

    def flush(self) -> None:
        """Write what is recorded in memory (the Store's, which the parts call before reading an order)."""
        raise NotImplementedError

    def _write_engine(self) -> Engine:
        return self._backend.write_engine()

    def _require_writable(self, what: str) -> None:
        if self.read_only:
            raise StoreError(f"{self.name}: {what} needs a writable store (opened read-only)")

    def _error(self, what: str, exc: BaseException) -> StoreError:
        return StoreError(f"{self.name}: {what} failed: {exc}")
