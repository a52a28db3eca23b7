"""Lossless, safe, deterministic, bounded encoding of zexus ``Bytecode`` to bytes and back.

Layout: a fixed header (magic, format version, flags, lengths, blake2b-128 checksum) and a
zlib-compressed body. The body is JSON, which the C parser reads quickly and safely; every value
that JSON cannot tell apart exactly (tuples, sets, big ints, non-finite floats, bytes, dicts with
non-string keys, enums, AST nodes, nested Bytecode) is a tagged array ``[tag, ...]``. A Bytecode
is ``["B", opcodes, operands, operand_fix, custom_ops, constants, constant_fix, metadata, names,
labels, extras]``: opcodes are one string (opcode v is ``chr(v + 32)``) and operands and constants
flat lists whose few tagged members are listed by index, so decoding rebuilds the instruction list
in C loops (``zip``/``map``) instead of walking every instruction in Python.

Decoding never imports or calls anything the data names: objects are rebuilt only from the
whitelists in ``codec_tree`` (``Bytecode``, zexus AST node classes, whitelisted enums), by creating
a bare instance and setting its attributes. A value that cannot be encoded exactly raises
``CodecError`` at encode time, so it is never cached. Shared mutable objects are kept; cyclic ones
are refused at encode and decode (walkers of decoded bytecode would loop).

Bounds (every payload, trusted or not; anything past them is a CodecError, at encode too):

* body: decompressed size <= ``MAX_RATIO`` x compressed size + ``RATIO_SLACK`` bytes, and
  <= ``MAX_RAW_BYTES`` in all; checked from the header before inflating anything;
* values: the decoded tree, counting a shared value once per reference, holds at most
  ``MAX_NODES_PER_BYTE`` x decompressed bytes + ``NODES_SLACK`` values (back-reference bombs);
* nesting: at most ``MAX_DEPTH`` levels, whatever the caller's stack depth (a decode that meets the
  interpreter's recursion limit is rerun on a fresh thread with its own headroom);
* hashing: at most ``MAX_COLLISIONS`` keys of one dict or set may share a hash value with another
  (hash flooding); string-keyed dicts are built by the JSON parser, their hashes are salted per process.

So decoding costs time and memory linear in the payload. Measured on the corpus (tracemalloc peak
of one decode): at most 10.1 bytes of memory per decompressed byte (median 6.5), 86 per payload
byte; the hostile cases (hash flood, repetition and back-reference bombs) are refused within
100 MB and without building their values (tests/test_codec.py).
Format 1 payloads (before the flat instruction layout) are refused as a clean CodecError; the
compiler fingerprint includes ``FORMAT_VERSION``, so cache rows written by format 1 are misses.
"""

from __future__ import annotations

import gc
import hashlib
import json
import struct
import threading
import zlib
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar

from . import codec_tree
from .codec_tree import MAX_COLLISIONS, MAX_DEPTH, Bytecode, bad
from .constants import FORMAT_VERSION
from .errors import CodecError

__all__ = ["MAX_COLLISIONS", "MAX_DEPTH", "Bytecode", "CodecError", "Encoded", "check", "decode", "encode",
           "encode_measured"]  # fmt: skip

MAGIC = b"ZXBC"
FLAG_ZLIB = 1

# magic, format version, flags, body length, raw (decompressed) length, checksum
_HEADER = struct.Struct(">4sHBxII16s")
HEADER_SIZE = _HEADER.size
_CHECKED_PREFIX = HEADER_SIZE - 16

MAX_RAW_BYTES = 64 * 1024 * 1024
MAX_RATIO = 16
RATIO_SLACK = 64 * 1024
MAX_NODES_PER_BYTE = 4
NODES_SLACK = 64 * 1024
_ZLIB_LEVEL = 1  # 47% less time than 6 for 11% more bytes (corpus median 4.5 KB of JSON)

T = TypeVar("T")


class Encoded(NamedTuple):
    """What one walk of a value yields: its payload, its in-memory size (as deep_sizeof) and its shape."""

    payload: bytes
    mem_size: int
    n_instructions: int
    n_constants: int


def _with_headroom(fn: Callable[[Any], T], arg: Any, too_deep: CodecError) -> T:
    """fn(arg), rerun on a new thread if the caller's stack is too deep for it (the result must not depend on it)."""
    try:
        return fn(arg)
    except RecursionError:
        pass
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["value"] = fn(arg)
        except RecursionError:
            box["error"] = too_deep
        except BaseException as exc:  # re-raised in the caller's thread
            box["error"] = exc

    thread = threading.Thread(target=run, name="zexus-bcache-codec", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _walk(value: Any) -> tuple[str, int]:
    enc = codec_tree.Encoder()
    if type(value) is Bytecode:
        tree = enc.bytecode(value, 0)
    elif type(value) is list and all(type(b) is Bytecode for b in value):
        enc._count(value)
        tree = ["M", *[enc.bytecode(b, 1) for b in value]]
    else:
        raise CodecError(f"expected a zexus Bytecode or a list of them, got {type(value).__name__}")
    return json.dumps(tree, ensure_ascii=True, allow_nan=False, check_circular=False, separators=(",", ":")), enc.size


def encode_measured(value: Any) -> Encoded:
    """Encode a Bytecode (or a list of them) exactly, measuring it on the way; raise CodecError otherwise."""
    raw, size = _with_headroom(_walk, value, CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded"))
    raw_bytes = raw.encode("ascii")
    if len(raw_bytes) > MAX_RAW_BYTES:
        raise CodecError(f"encoded bytecode is {len(raw_bytes)} bytes, over the {MAX_RAW_BYTES} byte limit")
    body = zlib.compress(raw_bytes, _ZLIB_LEVEL)
    if len(raw_bytes) > MAX_RATIO * len(body) + RATIO_SLACK:
        raise CodecError(f"encoded bytecode compresses over {MAX_RATIO}:1, more than the decoder accepts")
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_ZLIB, len(body), len(raw_bytes), b"")[:_CHECKED_PREFIX]
    bytecodes = value if type(value) is list else [value]
    shape = sum(len(b.instructions) for b in bytecodes), sum(len(b.constants) for b in bytecodes)
    return Encoded(prefix + _checksum(prefix, body) + body, size, *shape)


def encode(value: Any) -> bytes:
    """Encode a Bytecode (or a list of them) exactly; raise CodecError for anything else."""
    return encode_measured(value).payload


def _checksum(prefix: bytes, body: bytes) -> bytes:
    h = hashlib.blake2b(prefix, digest_size=16)
    h.update(body)
    return h.digest()


def check(data: bytes) -> bytes:
    """Validate header, bounds and checksum; return the decompressed body (raises CodecError)."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    if len(data) < HEADER_SIZE:
        raise CodecError(f"truncated bytecode payload: {len(data)} bytes, shorter than the {HEADER_SIZE}-byte header")
    magic, version, flags, body_len, raw_len, digest = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise CodecError(f"not a zexus_bcache payload: bad magic {magic!r}")
    if version != FORMAT_VERSION:
        raise CodecError(f"unsupported payload format version {version} (this build reads {FORMAT_VERSION})")
    if flags & ~FLAG_ZLIB:
        raise CodecError(f"unknown payload flags {flags:#x}")
    actual = len(data) - HEADER_SIZE
    if body_len != actual:
        kind = "truncated" if actual < body_len else "oversized"
        raise CodecError(f"{kind} bytecode payload: header says {body_len} body bytes, found {actual}")
    if raw_len > MAX_RAW_BYTES:
        raise CodecError(f"payload claims {raw_len} bytes, over the {MAX_RAW_BYTES} byte limit")
    if flags & FLAG_ZLIB and raw_len > MAX_RATIO * body_len + RATIO_SLACK:
        raise CodecError(f"payload claims {raw_len} bytes from {body_len}: over the {MAX_RATIO}:1 expansion limit")
    body = data[HEADER_SIZE:]
    if _checksum(data[:_CHECKED_PREFIX], body) != digest:
        raise CodecError("bytecode payload checksum mismatch (corrupt data)")
    if not flags & FLAG_ZLIB:
        raw = body
    else:
        inflater = zlib.decompressobj()
        try:
            raw = inflater.decompress(body, raw_len)
        except zlib.error as exc:
            raise bad(f"bad compressed body ({exc})") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise bad("compressed body longer than its declared size")
    if len(raw) != raw_len:
        raise bad(f"body is {len(raw)} bytes, header says {raw_len}")
    return raw


def _rebuild(raw: bytes) -> Any:
    """Parse and rebuild a checked body; RecursionError is left to the caller (see _with_headroom)."""
    try:
        tree = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"invalid body ({exc})") from None
    if type(tree) is not list or not tree or tree[0] not in ("B", "M"):
        raise bad("top level is not a Bytecode")
    dec = codec_tree.Decoder(MAX_NODES_PER_BYTE * len(raw) + NODES_SLACK)
    # Rebuilding allocates thousands of containers, none garbage: without this, a collection of
    # the oldest generation (the whole heap of zexus and SQLAlchemy objects) can land mid-decode.
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = dec.value(tree, 0) if tree[0] == "B" else [dec.value(b, 1) for b in tree[1:]]
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise bad(f"malformed value ({exc})") from None
    finally:
        if collecting:
            gc.enable()
    if type(result) is Bytecode:
        return result
    if not all(type(b) is Bytecode for b in result):
        raise bad("list member is not a Bytecode")
    return result


def decode(data: bytes) -> Any:
    """Decode bytes made by ``encode``; any problem raises CodecError naming it."""
    return _with_headroom(_rebuild, check(data), bad("nesting too deep"))
