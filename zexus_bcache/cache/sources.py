"""What BytecodeCache is keyed by besides an AST node: source text (warm starts), files, tree patterns."""

from __future__ import annotations

import hashlib
import os
import time
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import keys, pipeline
from ..errors import ConfigError
from ..front import FrontCache, deep_sizeof


@dataclass
class CompileReport:
    """What compile_source did: the bytecode, the tier that served it (None = compiled), timings in seconds."""

    bytecode: Any
    tier: str | None
    key: str
    timings: dict[str, float]
    program: Any = None  # the parsed AST, when this call parsed it



class SourcesMixin:
    """BytecodeCache's compile_source/compile_file, zexus 2.0's file API and its pattern tier."""

    _front: FrontCache
    _file_keys: dict[str, set[str]]
    store: Any
    read_only: bool
    fingerprint: str
    max_memory_bytes: int

    if TYPE_CHECKING:

        def _warn(self, what: str, message: str) -> None: ...
        def _guard(self, what: str) -> AbstractContextManager[None]: ...
        def _count(self, name: str, n: int = 1) -> None: ...
        def _lookup(self, key: str, fingerprint: str) -> tuple[Any | None, str | None]: ...
        def _load(self, key: str, fingerprint: str) -> Any | None: ...
        def lookup(self, key: str, fingerprint: str | None = None) -> Any | None: ...
        def contains_key(self, key: str) -> bool: ...
        def key_for(self, ast_node: Any) -> str: ...
        def store_value(self, key: str, value: Any, *, kind: str, skip_disk: bool = False,
                        source_path: str | None = None, source_hash: str | None = None,
                        fingerprint: str | None = None) -> None: ...

    # ------------------------------------------------------------------ source-level cache (warm starts)

    def compile_source(self, source: str, filename: str | None = None, optimize: bool = True) -> Any:
        """Bytecode for Zexus source: a hit skips lexing, parsing and compiling; a miss compiles and stores."""
        return self.compile_source_report(source, filename, optimize).bytecode

    def compile_file(self, path: str | os.PathLike[str], optimize: bool = True) -> Any:
        """Bytecode for a .zx file, remembered with its path and content hash."""
        return self.compile_file_report(path, optimize).bytecode

    def compile_file_report(self, path: str | os.PathLike[str], optimize: bool = True) -> CompileReport:
        resolved = Path(path).resolve()
        source = resolved.read_text(encoding="utf-8")
        return self.compile_source_report(source, str(resolved), optimize, source_path=str(resolved))

    def compile_source_report(
        self, source: str, filename: str | None = None, optimize: bool = True, *, source_path: str | None = None
    ) -> CompileReport:
        """compile_source, also saying which tier served it and how long each step took."""
        if not isinstance(source, str):
            raise ConfigError(f"source must be a str, not {type(source).__name__}")
        t0 = time.perf_counter()
        fingerprint = keys.compiler_fingerprint(optimize=optimize, compiler="vm")
        key = keys.source_key(source, fingerprint, filename)
        t1 = time.perf_counter()
        bytecode, tier = self._lookup(key, fingerprint)
        t2 = time.perf_counter()
        report = CompileReport(bytecode, tier, key, {"key": t1 - t0, "lookup": t2 - t1})
        if source_path is not None:
            self._file_keys.setdefault(source_path, set()).add(key)
        if bytecode is not None:
            return report
        program = pipeline.parse(source, filename or "<string>")
        t3 = time.perf_counter()
        report.bytecode = pipeline.compile_program(program, optimize=optimize)
        t4 = time.perf_counter()
        source_hash = keys.content_hash(source.encode("utf-8", "surrogatepass"))
        self.store_value(key, report.bytecode, kind="source", source_path=source_path, source_hash=source_hash,
                         fingerprint=fingerprint)
        report.program = program
        report.timings.update(parse=t3 - t2, compile=t4 - t3, store=time.perf_counter() - t4)
        return report

    # ------------------------------------------------------------------ zexus 2.0's file API
    # A file entry's key covers the file's resolved path and the hash of its content, so an edited
    # file misses by construction (stale detection by content, not mtime).

    def _file_key(self, file_path: str | os.PathLike[str]) -> tuple[str, str, str] | None:
        """(key, resolved path, content hash), or None when the file cannot be read."""
        resolved = Path(file_path).resolve()
        try:
            content = keys.content_hash(resolved.read_bytes())
        except OSError:
            return None
        key = hashlib.blake2b(f"file\0{self.fingerprint}\0{resolved}\0{content}".encode(), digest_size=32)
        return key.hexdigest(), str(resolved), content

    def get_by_file(self, file_path: str | os.PathLike[str]) -> list[Any] | None:
        """Bytecode cached for a source file's current content, or None."""
        found = self._file_key(file_path)
        if found is None:
            self._count("misses")
            self._count("file_misses")
            return None
        key, resolved, _ = found
        value = self.lookup(key)
        self._count("file_hits" if value is not None else "file_misses")
        if value is None:
            return None
        self._file_keys.setdefault(resolved, set()).add(key)
        return list(value)

    def put_by_file(self, file_path: str | os.PathLike[str], bytecodes: list[Any]) -> None:
        """Cache the bytecode of a source file, remembering its path and content hash."""
        found = self._file_key(file_path)
        if found is None:
            return
        key, resolved, content = found
        self._file_keys.setdefault(resolved, set()).add(key)
        self.store_value(key, list(bytecodes), kind="file", source_path=resolved, source_hash=content)

    def invalidate_file(self, file_path: str | os.PathLike[str]) -> None:
        """Forget every cached version of a source file (file and compile_file entries)."""
        resolved = str(Path(file_path).resolve())
        for key in self._file_keys.pop(resolved, ()):
            self._front.pop(key)
        if self.store is not None and not self.read_only:
            with self._guard("put"):
                self.store.invalidate(source_path=resolved)

    def is_file_cached(self, file_path: str | os.PathLike[str]) -> bool:
        """Whether a source file has bytecode cached for its current content."""
        found = self._file_key(file_path)
        return found is not None and self.contains_key(found[0])

    # ------------------------------------------------------------------ the rest of zexus 2.0's API

    OVERSIZED_FATE = "it is not kept in memory (a persistent cache still stores it and serves it from there)"
    MAX_PATTERNS = 500  # zexus 2.0's bound on the pattern tier

    def _oversized(self, size: int, limit: int, what: str = "an entry") -> None:
        """Count a value larger than the whole in-memory limit, and say once what becomes of it."""
        self._count("oversized")
        self._warn(f"oversized {what}", f"{what} of {size} bytes exceeds the in-memory limit ({limit} bytes): "
                   f"{self.OVERSIZED_FATE}")

    def _hash_ast(self, ast_node: Any) -> str:
        """zexus 2.0's name for :meth:`key_for`."""
        return self.key_for(ast_node)

    def _pattern_front(self) -> FrontCache:
        """The pattern tier (memory only; 500 entries, a quarter of the memory limit, as zexus), made on first use."""
        front = self.__dict__.get("_patterns")
        if front is None:
            # The class of the entries' front layer: compat's keeps an oversized value, as the seed does.
            made = type(self._front)(self.MAX_PATTERNS, max(1, self.max_memory_bytes // 4))
            front = self.__dict__.setdefault("_patterns", made)
        return front

    def get_by_pattern(self, ast_node: Any) -> Any | None:
        """Bytecode that put_by_pattern stored for a tree of the same shape (compiled for *that* tree), or None."""
        from ..patterns import pattern_key

        key = pattern_key(ast_node)
        value = None if key is None else self._pattern_front().get(key)
        if value is not None:
            self._count("pattern_hits")
        return value

    def put_by_pattern(self, ast_node: Any, bytecode: Any) -> None:
        """Keep bytecode for every tree of this shape: literals and names masked (see patterns.py), memory only."""
        from ..patterns import pattern_key

        key = pattern_key(ast_node)
        if key is None:
            self._warn("pattern", "not keeping bytecode by pattern for a tree that has none (a cycle, mixed dict keys)")
            return
        front = self._pattern_front()
        size = deep_sizeof(bytecode)
        if size > front.max_bytes:
            self._oversized(size, front.max_bytes, "a pattern entry")
        front.put(key, bytecode, size)

    def get_file_cache_info(self, file_path: str | os.PathLike[str]) -> dict[str, Any] | None:
        """zexus 2.0's fields for the bytecode cached for a source file's current content, or None."""
        found = self._file_key(file_path)
        if found is None:
            return None
        key, resolved, content = found
        front = self._front.peek(key)
        if front is not None:
            value, cached_at = front.value, front.created_at
        elif self.store is not None:
            value = cached_at = None
            with self._guard("get"):
                info = self.store.info(key)
                cached_at = None if info is None else info["created_at"]
                # Counting the bytecodes means decoding them; the read counts as a use of the entry.
                value = None if info is None else self._load(key, self.fingerprint)
            if value is None:
                return None
        else:
            return None
        try:
            mtime: float | None = os.stat(resolved).st_mtime
        except OSError:
            mtime = None
        return {"file_path": resolved, "mtime": mtime, "content_hash": content, "bytecode_count": len(value),
                "cached_at": cached_at}
