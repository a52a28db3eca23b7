"""Lossless, safe, deterministic, bounded encoding of zexus ``Bytecode`` to bytes and back.

Layout: a fixed header (magic, format version, flags, lengths, blake2b-128 checksum) and a
zlib-compressed body. The body is JSON, which the C parser reads quickly and safely; every value
that JSON cannot tell apart exactly (tuples, sets, big ints, non-finite floats, bytes, dicts with
non-string keys, enums, AST nodes, nested Bytecode) is a tagged array ``[tag, ...]``. The body is
``[opcodes, operands, value]``: every Bytecode's opcodes (one string, Opcode member n as
``chr(35 + n)``) and operands (a flat list), concatenated in walk order, then the value itself,
whose Bytecodes are ``["B", n_instructions, operand_fix, custom_ops, constants, constant_fix,
metadata, names, labels, extras]`` and take the next n opcodes and operands. Among the operands a
bare array is a tuple of plain values; the few tagged ones are listed by index, as in constants. So
decoding maps the opcodes and zips the instruction pairs of the whole payload in one C loop each,
instead of walking every instruction, or every Bytecode's, in Python. A string-keyed dict of plain
values is a bare JSON object, kept as parsed.

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
Payloads of earlier formats are refused as a clean CodecError; the compiler fingerprint includes
``FORMAT_VERSION``, so cache rows written by them are misses.
"""

from __future__ import annotations

import base64
import gc
import hashlib
import json
import struct
import threading
import zlib
from collections.abc import Callable
from operator import countOf
from typing import Any, NamedTuple, TypeVar

from . import codec_tree
from .codec_tree import (
    _AST_CLASS,
    _BYTECODE_FIELDS,
    _CUSTOM_OP,
    _ENUMS,
    _OP_BASE,
    _OP_BYTES,
    _OP_OF_BYTE,
    _SHAREABLE,
    MAX_COLLISIONS,
    MAX_DEPTH,
    Bytecode,
    bad,
)
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
    try:
        return _walk_with(codec_tree.Encoder(), value)
    except codec_tree.Rewalk:  # a shared dict: rare, not worth tracking where bare ones sit
        return _walk_with(codec_tree.Encoder(bare=False), value)


def _walk_with(enc: codec_tree.Encoder, value: Any) -> tuple[str, int]:
    if type(value) is Bytecode:
        root = enc.bytecode(value, 0)
    elif type(value) is list and all(type(b) is Bytecode for b in value):
        enc._count(value)
        root = ["M", *[enc.bytecode(b, 1) for b in value]]
    else:
        raise CodecError(f"expected a zexus Bytecode or a list of them, got {type(value).__name__}")
    tree = ["".join(enc.chars), enc.operands, root]
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


def _arity(v: list[Any], n: int) -> None:
    if len(v) != n:
        raise bad(f"tag {v[0]!r} takes {n - 1} fields, got {len(v) - 1}")


def _obj(v: Any) -> dict[str, Any]:
    if type(v) is not dict:
        raise bad("expected an object")
    return v


class Decoder:
    """One decoding pass over a parsed body; ``nodes`` counts values as if shared ones were copied.

    ``chars`` and ``operands`` are every Bytecode's opcodes and operands, concatenated in walk order.
    Each Bytecode takes the next ``n`` of them as it is met; ``finish`` then builds every instruction
    pair in one ``zip`` and hands out the slices.
    """

    def __init__(self, max_nodes: int, chars: Any, operands: Any) -> None:
        self.memo: dict[int, Any] = {}
        self.weight: dict[int, int] = {}
        self.open: set[int] = set()
        self.nodes = 0
        self.max_nodes = max_nodes
        if type(chars) is not str or type(operands) is not list or len(operands) != len(chars):
            raise bad("malformed instructions")
        try:
            codes = chars.encode("latin-1")
        except UnicodeEncodeError:
            raise bad("unknown opcode (not a latin-1 character)") from None
        unknown = codes.translate(None, _OP_BYTES)
        if unknown:
            raise bad(f"unknown opcode {unknown[0] - _OP_BASE}")
        self.ops = list(map(_OP_OF_BYTE.__getitem__, codes))
        self.chars = chars
        # Every array is a tuple, but for the tagged values the Bytecodes list (turned back on the way).
        self.operands = [tuple(x) if type(x) is list else x for x in operands]
        self.pos = 0
        self.pending: list[tuple[dict[str, Any], int, int]] = []

    def finish(self) -> None:
        """Give every decoded Bytecode its instructions, once all of them took theirs."""
        if self.pos != len(self.ops):
            raise bad("instructions not accounted for by the Bytecodes")
        instructions = list(zip(self.ops, self.operands, strict=True))
        for state, start, end in self.pending:
            state["instructions"] = instructions[start:end]

    def value(self, v: Any, depth: int) -> Any:
        # A bare JSON object or a scalar where a tagged array is expected is kept as parsed: it can only
        # be a dict of strings or a scalar, which is harmless (format 1 did the same).
        if type(v) is not list:
            return v
        if depth > MAX_DEPTH:
            raise bad(f"nesting deeper than {MAX_DEPTH} levels")
        self.nodes += len(v)
        d = depth + 1
        tag = v[0] if v else None
        if tag == "T":
            if not countOf(map(type, v), list):  # the usual operand: a pair of plain values
                return tuple(v[1:])
            return tuple([x if type(x) is not list else self.value(x, d) for x in v[1:]])
        if tag == "L":
            return [x if type(x) is not list else self.value(x, d) for x in v[1:]]
        if tag == "d":
            _arity(v, 2)
            return {k: (x if type(x) is not list else self.value(x, d)) for k, x in _obj(v[1]).items()}
        if tag == "B":
            return self.bytecode(v, d)
        if tag == "R":
            return self.reference(v)
        if tag == "N":
            _arity(v, 3)
            cls = _AST_CLASS.get(v[1]) if type(v[1]) is str else None
            if cls is None:
                raise bad(f"unknown AST node class {v[1]!r}")
            node: Any = object.__new__(cls)
            node.__dict__.update({k: self.value(x, d) for k, x in _obj(v[2]).items()})
            return node
        if tag == "E":
            _arity(v, 3)
            members = _ENUMS.get(v[1]) if type(v[1]) is str else None
            if members is None or type(v[2]) is not str or v[2] not in members.__members__:
                raise bad(f"unknown enum member {v[1]!r}.{v[2]!r}")
            return members.__members__[v[2]]
        if tag == "D":
            if len(v) % 2 != 1:
                raise bad("odd dict item list")
            keys = self._hashable([self.value(k, d) for k in v[1::2]])
            return dict(zip(keys, [self.value(x, d) for x in v[2::2]], strict=True))
        if tag == "S":
            return set(self._hashable([self.value(x, d) for x in v[1:]]))
        if tag == "F":
            return frozenset(self._hashable([self.value(x, d) for x in v[1:]]))
        if tag == "@":
            return self.definition(v, d)
        return _scalar(v, tag)

    def reference(self, v: list[Any]) -> Any:
        _arity(v, 2)
        ref = v[1]
        if type(ref) is not int or ref not in self.memo:
            cycle = ref in self.open
            raise bad("a reference to a value being defined (a cycle)" if cycle else f"dangling reference {ref!r}")
        self.nodes += self.weight[ref]
        if self.nodes > self.max_nodes:
            raise bad(f"shared references expand to over {self.max_nodes} values")
        return self.memo[ref]

    def definition(self, v: list[Any], d: int) -> Any:
        """``["@", ref, tag, ...]``: decode the value, then let later references reach it."""
        if len(v) < 3 or type(v[1]) is not int or v[1] in self.memo or v[1] in self.open:
            raise bad("malformed reference definition")
        ref, body = v[1], v[2:]
        if type(body[0]) is not str or body[0] not in _SHAREABLE:
            raise bad(f"tag {body[0]!r} cannot be shared")
        self.open.add(ref)
        before = self.nodes
        obj = self.value(body, d - 1)
        self.open.discard(ref)
        self.memo[ref] = obj
        self.weight[ref] = self.nodes - before
        return obj

    def _hashable(self, keys: list[Any]) -> list[Any]:
        """Keys for a dict or set, refused when many share a hash (inserting them would be quadratic)."""
        if len(keys) > MAX_COLLISIONS and len(keys) - len(set(map(hash, keys))) > MAX_COLLISIONS:
            raise bad(f"more than {MAX_COLLISIONS} keys of one dict or set share hash values (hash flooding)")
        return keys

    def _patch(self, xs: Any, fix: Any, d: int) -> None:
        """Decode in place the tagged members of a flat list; every array in it must be listed in fix."""
        if type(xs) is not list or type(fix) is not list:
            raise bad("malformed Bytecode")
        if countOf(map(type, xs), list) != len(fix):
            raise bad("an array not listed for decoding in a Bytecode list")
        prev = -1
        for i in fix:
            if type(i) is not int or i <= prev or i >= len(xs) or type(xs[i]) is not list:
                raise bad("bad patch index in a Bytecode list")
            xs[i] = self.value(xs[i], d)
            prev = i

    def bytecode(self, v: list[Any], d: int) -> Any:
        _arity(v, 10)
        _, n, ofix, custom, constants, cfix, metadata, names, labels, extras = v
        start = self.pos
        if type(n) is not int or not 0 <= n <= len(self.ops) - start or type(ofix) is not list:
            raise bad("malformed Bytecode")
        if type(custom) is not list or type(extras) is not dict or type(constants) is not list:
            raise bad("malformed Bytecode")
        self.pos = end = start + n
        if len(custom) != 2 * self.chars.count(_CUSTOM_OP, start, end):
            raise bad("malformed Bytecode")
        self.nodes += 2 * n + len(constants)
        operands = self.operands
        prev = -1
        for i in ofix:
            if type(i) is not int or not prev < i < n or type(operands[start + i]) is not tuple:
                raise bad("bad patch index in a Bytecode list")
            operands[start + i] = self.value(list(operands[start + i]), d)
            prev = i
        ops = self.ops
        it = iter(custom)
        for i, op in zip(it, it, strict=True):
            if type(i) is not int or not 0 <= i < n or ops[start + i] is not None:
                raise bad("bad custom opcode index")
            ops[start + i] = self.value(op, d)
        self._patch(constants, cfix, d)
        bc: Any = object.__new__(Bytecode)
        state = bc.__dict__
        state.update(instructions=None, constants=constants)  # instructions: see finish
        state.update(metadata=self.value(metadata, d), names=self.value(names, d), labels=self.value(labels, d))
        for k, x in extras.items():
            if k in _BYTECODE_FIELDS:
                raise bad(f"duplicate Bytecode field {k!r}")
            state[k] = self.value(x, d)
        self.pending.append((state, start, end))
        return bc


def _scalar(v: list[Any], tag: Any) -> Any:
    if tag == "i":
        _arity(v, 2)
        try:
            return int(v[1], 16)
        except (TypeError, ValueError):
            raise bad(f"bad big int {v[1]!r}") from None
    if tag == "f":
        _arity(v, 2)
        try:
            return struct.unpack(">d", bytes.fromhex(v[1]))[0]
        except (TypeError, ValueError, struct.error):
            raise bad(f"bad float {v[1]!r}") from None
    if tag == "b":
        _arity(v, 2)
        try:
            return base64.b64decode(v[1], validate=True)
        except (TypeError, ValueError):
            raise bad("bad bytes value") from None
    raise bad(f"unknown tag {tag!r}")


def _rebuild(raw: bytes) -> Any:
    """Parse and rebuild a checked body; RecursionError is left to the caller (see _with_headroom)."""
    # Parsing and rebuilding allocate thousands of containers and free the parsed tree at the end, all
    # garbage-free: with the collector on, gen-0 passes would walk the half-built tree (and may
    # escalate to the oldest generation, the whole heap of zexus and SQLAlchemy objects); paused, the
    # next pass sees only what decode returns.
    collecting = gc.isenabled()
    gc.disable()
    try:
        return _parse(raw)
    finally:
        if collecting:
            gc.enable()


def _parse(raw: bytes) -> Any:
    try:
        tree = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad(f"invalid body ({exc})") from None
    if type(tree) is not list or len(tree) != 3 or type(tree[2]) is not list or not tree[2]:
        raise bad("top level is not a Bytecode")
    chars, operands, root = tree
    if root[0] not in ("B", "M"):
        raise bad("top level is not a Bytecode")
    try:
        dec = Decoder(MAX_NODES_PER_BYTE * len(raw) + NODES_SLACK, chars, operands)
        result = dec.value(root, 0) if root[0] == "B" else [dec.value(b, 1) for b in root[1:]]
        dec.finish()
    except (TypeError, ValueError, AttributeError, IndexError) as exc:
        raise bad(f"malformed value ({exc})") from None
    if type(result) is Bytecode:
        return result
    if not all(type(b) is Bytecode for b in result):
        raise bad("list member is not a Bytecode")
    return result


def decode(data: bytes) -> Any:
    """Decode bytes made by ``encode``; any problem raises CodecError naming it."""
    return _with_headroom(_rebuild, check(data), bad("nesting too deep"))
