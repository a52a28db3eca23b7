"""Lossless, safe, deterministic encoding of zexus ``Bytecode`` to bytes and back.

Layout: a fixed header (magic, format version, flags, lengths, blake2b-128 checksum) and a
zlib-compressed body. The body is JSON, which the C parser reads quickly and safely; every value
that JSON cannot tell apart exactly (tuples, sets, big ints, non-finite floats, bytes, dicts with
non-string keys, enums, AST nodes, nested Bytecode) is a tagged array ``[tag, ...]``.

Decoding never imports or calls anything the data names: objects are rebuilt only from the
whitelists below (``Bytecode``, zexus AST node classes, whitelisted enums), by creating a bare
instance and setting its attributes. A value that cannot be encoded exactly raises ``CodecError``
at encode time, so it is never cached. Shared or cyclic mutable objects are refused.
"""

from __future__ import annotations

import base64
import enum
import gc
import hashlib
import json
import math
import struct
import threading
import zlib
from typing import Any

from .errors import CodecError

MAGIC = b"ZXBC"
FORMAT_VERSION = 1
FLAG_ZLIB = 1

# magic, format version, flags, body length, raw (decompressed) length, checksum
_HEADER = struct.Struct(">4sHBxII16s")
HEADER_SIZE = _HEADER.size
_CHECKED_PREFIX = HEADER_SIZE - 16

MAX_RAW_BYTES = 256 * 1024 * 1024
MAX_DEPTH = 400
_BIG_INT = 1 << 63
_ZLIB_LEVEL = 6


def _load_whitelists() -> tuple[type, dict[int, Any], dict[type, str], dict[str, type], dict[str, type]]:
    from .integration import quiet

    with quiet():
        from zexus import zexus_ast, zexus_token
        from zexus.parser import strategy_context
        from zexus.vm import bytecode as bytecode_mod

    bytecode_cls = bytecode_mod.Bytecode
    opcodes = {member.value: member for member in bytecode_mod.Opcode}
    ast_names = {
        cls: name
        for name, cls in sorted(vars(zexus_ast).items())
        if isinstance(cls, type) and issubclass(cls, zexus_ast.Node) and cls.__module__ == zexus_ast.__name__
    }
    # Plain attribute bags the parser puts into real trees (contract properties, tokens).
    for extra in (strategy_context.AstNodeShim, zexus_token.Token):
        assert extra.__name__ not in {c.__name__ for c in ast_names}
        ast_names[extra] = extra.__name__
    enums = {
        name: cls
        for module in (bytecode_mod, zexus_ast)
        for name, cls in sorted(vars(module).items())
        if isinstance(cls, type) and issubclass(cls, enum.Enum) and cls.__module__ == module.__name__
    }
    return bytecode_cls, opcodes, ast_names, {v: k for k, v in ast_names.items()}, enums


Bytecode, _OPCODES, _AST_NAME, _AST_CLASS, _ENUMS = _load_whitelists()
_ENUM_NAME = {cls: name for name, cls in _ENUMS.items()}
_Opcode = _ENUMS["Opcode"]
_BYTECODE_FIELDS = ("instructions", "constants", "metadata", "names", "labels")


# --------------------------------------------------------------------------- encode


_UNSHAREABLE: list[Any] = ["!"]


class _Encoder:
    """One encoding pass.

    Mutable objects (lists, dicts, sets, AST nodes, Bytecode) are remembered by identity; the
    first time one is met again, its first encoding is marked in place as a definition
    ``["@", ref, tag, ...]`` and the repeat becomes ``["R", ref]``. So shared and cyclic
    references are kept exactly, and a program with no sharing pays nothing when decoded.
    """

    def __init__(self) -> None:
        self.memo: dict[int, list[Any]] = {}
        self.next_ref = 0
        self.in_set = 0

    def _shared(self, v: Any, depth: int) -> list[Any] | None:
        """The back-reference for an object met before, else None (and the object is remembered by caller)."""
        if depth > MAX_DEPTH:
            raise CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded")
        if self.in_set:
            raise CodecError(f"a {type(v).__name__} inside a set is not encoded (its order is not stable)")
        first = self.memo.get(id(v))
        if first is None:
            return None
        if first is _UNSHAREABLE:
            raise CodecError("a Bytecode's instruction or constant list referenced elsewhere is not encoded")
        if first[0] != "@":
            first[0:0] = ["@", self.next_ref]
            self.next_ref += 1
        return ["R", first[1]]

    def value(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str or t is bool or v is None:
            return v
        if t is int:
            return v if -_BIG_INT < v < _BIG_INT else ["i", format(v, "x")]
        if t is float:
            return v if math.isfinite(v) else ["f", struct.pack(">d", v).hex()]
        if t is tuple:
            if depth > MAX_DEPTH:
                raise CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded")
            return ["T", *[self.value(x, depth + 1) for x in v]]
        if t is list:
            ref = self._shared(v, depth)
            if ref:
                return ref
            out: list[Any] = ["L"]
            self.memo[id(v)] = out
            for x in v:
                out.append(self.value(x, depth + 1))
            return out
        if t is dict:
            ref = self._shared(v, depth)
            if ref:
                return ref
            if all(type(k) is str for k in v):
                items: dict[str, Any] = {}
                out = ["d", items]
                self.memo[id(v)] = out
                for k, x in v.items():
                    items[k] = self.value(x, depth + 1)
                return out
            out = ["D"]
            self.memo[id(v)] = out
            for k, x in v.items():
                out.append(self.value(k, depth + 1))
                out.append(self.value(x, depth + 1))
            return out
        if t is Bytecode:
            return self.bytecode(v, depth)
        if t in _AST_NAME:
            ref = self._shared(v, depth)
            if ref:
                return ref
            attrs: dict[str, Any] = {}
            out = ["N", _AST_NAME[t], attrs]
            self.memo[id(v)] = out
            for k, x in vars(v).items():
                attrs[k] = self.value(x, depth + 1)
            return out
        if t in _ENUM_NAME:
            return ["E", _ENUM_NAME[t], v.name]
        if t is set or t is frozenset:
            if depth > MAX_DEPTH:
                raise CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded")
            if t is set:
                ref = self._shared(v, depth)
                if ref:
                    return ref
            self.in_set += 1
            try:
                members = sorted(
                    (self.value(x, depth + 1) for x in v), key=lambda e: json.dumps(e, allow_nan=False)
                )
            finally:
                self.in_set -= 1
            out = ["S" if t is set else "F", *members]
            if t is set:
                self.memo[id(v)] = out
            return out
        if t is bytes:
            return ["b", base64.b64encode(v).decode("ascii")]
        raise CodecError(f"cannot encode a value of type {t.__module__}.{t.__qualname__} exactly")

    def bytecode(self, bc: Any, depth: int) -> list[Any]:
        ref = self._shared(bc, depth)
        if ref:
            return ref
        out: list[Any] = ["B"]
        self.memo[id(bc)] = out
        attrs = vars(bc)
        missing = [f for f in _BYTECODE_FIELDS if f not in attrs]
        if missing:
            raise CodecError(f"Bytecode without {', '.join(missing)} is not encoded")
        instructions, constants = attrs["instructions"], attrs["constants"]
        if type(instructions) is not list or type(constants) is not list:
            raise CodecError("Bytecode instructions and constants must be lists")
        for shared in (instructions, constants):
            if id(shared) in self.memo:
                raise CodecError("Bytecode sharing its instruction or constant list is not encoded")
            self.memo[id(shared)] = _UNSHAREABLE
        flat: list[Any] = []
        for ins in instructions:
            if type(ins) is not tuple or len(ins) != 2:
                raise CodecError(f"instruction {ins!r} is not an (opcode, operand) pair")
            op, operand = ins
            flat.append(op.value if type(op) is _Opcode else ["o", self.value(op, depth + 2)])
            flat.append(self.value(operand, depth + 2))
        out.append(flat)
        out.append([self.value(c, depth + 2) for c in constants])
        out.append(self.value(attrs["metadata"], depth + 1))
        out.append(self.value(attrs["names"], depth + 1))
        out.append(self.value(attrs["labels"], depth + 1))
        out.append({k: self.value(x, depth + 1) for k, x in attrs.items() if k not in _BYTECODE_FIELDS})
        return out


def encode(value: Any) -> bytes:
    """Encode a Bytecode (or a list of them) exactly; raise CodecError for anything else."""
    if type(value) is Bytecode:
        tree = _Encoder().bytecode(value, 0)
    elif type(value) is list and all(type(b) is Bytecode for b in value):
        enc = _Encoder()
        tree = ["M", *[enc.bytecode(b, 1) for b in value]]
    else:
        raise CodecError(f"expected a zexus Bytecode or a list of them, got {type(value).__name__}")
    try:
        raw = json.dumps(tree, ensure_ascii=True, allow_nan=False, check_circular=False, separators=(",", ":"))
    except (ValueError, RecursionError) as exc:  # pragma: no cover - guarded by the encoder
        raise CodecError(f"cannot serialize: {exc}") from exc
    raw_bytes = raw.encode("ascii")
    if len(raw_bytes) > MAX_RAW_BYTES:
        raise CodecError(f"encoded bytecode is {len(raw_bytes)} bytes, over the {MAX_RAW_BYTES} byte limit")
    body = zlib.compress(raw_bytes, _ZLIB_LEVEL)
    prefix = _HEADER.pack(MAGIC, FORMAT_VERSION, FLAG_ZLIB, len(body), len(raw_bytes), b"")[:_CHECKED_PREFIX]
    return prefix + _checksum(prefix, body) + body


def _checksum(prefix: bytes, body: bytes) -> bytes:
    h = hashlib.blake2b(prefix, digest_size=16)
    h.update(body)
    return h.digest()


# --------------------------------------------------------------------------- decode


def _bad(msg: str) -> CodecError:
    return CodecError(f"corrupt bytecode payload: {msg}")


_STATE = threading.local()


def _dec(v: Any, depth: int) -> Any:
    if type(v) is not list:
        if type(v) is dict:
            raise _bad("untagged object")
        return v
    if depth > MAX_DEPTH:
        raise _bad(f"nesting deeper than {MAX_DEPTH} levels")
    d = depth + 1
    tag = v[0] if v else None
    if tag == "T":
        return tuple([x if type(x) is not list else _dec(x, d) for x in v[1:]])
    if tag == "L":
        return [x if type(x) is not list else _dec(x, d) for x in v[1:]]
    if tag == "d":
        return {k: (x if type(x) is not list else _dec(x, d)) for k, x in _obj(v).items()}
    if tag == "B":
        return _dec_bytecode(v, d)
    if tag == "E":
        _arity(v, 3)
        members = _ENUMS.get(v[1])
        if members is None or type(v[2]) is not str or v[2] not in members.__members__:
            raise _bad(f"unknown enum member {v[1]!r}.{v[2]!r}")
        return members.__members__[v[2]]
    if tag == "N":
        _arity(v, 3)
        cls = _AST_CLASS.get(v[1]) if type(v[1]) is str else None
        if cls is None:
            raise _bad(f"unknown AST node class {v[1]!r}")
        node = object.__new__(cls)
        node.__dict__.update({k: _dec(x, d) for k, x in _obj(v[2]).items()})
        return node
    if tag == "D":
        if len(v) % 2 != 1:
            raise _bad("odd dict item list")
        it = iter(v[1:])
        return {_dec(k, d): _dec(x, d) for k, x in zip(it, it)}
    if tag == "R":
        _arity(v, 2)
        try:
            return _STATE.memo[v[1]]
        except (KeyError, TypeError):
            raise _bad(f"dangling reference {v[1]!r}") from None
    if tag == "@":
        return _dec_definition(v, d)
    if tag == "i":
        _arity(v, 2)
        try:
            return int(v[1], 16)
        except (TypeError, ValueError):
            raise _bad(f"bad big int {v[1]!r}") from None
    if tag == "f":
        _arity(v, 2)
        try:
            return struct.unpack(">d", bytes.fromhex(v[1]))[0]
        except (TypeError, ValueError, struct.error):
            raise _bad(f"bad float {v[1]!r}") from None
    if tag == "S":
        return {_dec(x, d) for x in v[1:]}
    if tag == "F":
        return frozenset(_dec(x, d) for x in v[1:])
    if tag == "b":
        _arity(v, 2)
        try:
            return base64.b64decode(v[1], validate=True)
        except (TypeError, ValueError):
            raise _bad("bad bytes value") from None
    raise _bad(f"unknown tag {tag!r}")


def _dec_definition(v: list[Any], d: int) -> Any:
    """``["@", ref, tag, ...]``: make the object, remember it, then fill it (so cycles resolve)."""
    if len(v) < 3 or type(v[1]) is not int or v[1] in _STATE.memo:
        raise _bad("malformed reference definition")
    ref, body = v[1], v[2:]
    tag = body[0]
    memo = _STATE.memo
    obj: Any
    if tag == "L":
        obj = memo[ref] = []
        obj.extend(_dec(x, d) for x in body[1:])
    elif tag == "d":
        obj = memo[ref] = {}
        obj.update((k, _dec(x, d)) for k, x in _obj(body).items())
    elif tag == "D":
        if len(body) % 2 != 1:
            raise _bad("odd dict item list")
        obj = memo[ref] = {}
        it = iter(body[1:])
        for k, x in zip(it, it):
            key = _dec(k, d)
            obj[key] = _dec(x, d)
    elif tag == "S":
        obj = memo[ref] = set()
        obj.update(_dec(x, d) for x in body[1:])
    elif tag == "N":
        _arity(body, 3)
        cls = _AST_CLASS.get(body[1]) if type(body[1]) is str else None
        if cls is None:
            raise _bad(f"unknown AST node class {body[1]!r}")
        obj = memo[ref] = object.__new__(cls)
        obj.__dict__.update((k, _dec(x, d)) for k, x in _obj(body[2]).items())
    elif tag == "B":
        obj = memo[ref] = object.__new__(Bytecode)
        _dec_bytecode(body, d, obj)
    else:
        raise _bad(f"tag {tag!r} cannot be shared")
    return obj


def _obj(v: Any) -> dict[str, Any]:
    if type(v) is list:
        if len(v) != 2:
            raise _bad("malformed dict")
        v = v[1]
    if type(v) is not dict:
        raise _bad("expected an object")
    return v


def _arity(v: list[Any], n: int) -> None:
    if len(v) != n:
        raise _bad(f"tag {v[0]!r} takes {n - 1} fields, got {len(v) - 1}")


def _dec_op(op: Any, d: int) -> Any:
    if type(op) is int:
        try:
            return _OPCODES[op]
        except KeyError:
            raise _bad(f"unknown opcode {op}") from None
    if type(op) is list and len(op) == 2 and op[0] == "o":
        return _dec(op[1], d)
    raise _bad(f"bad opcode {op!r}")


def _dec_bytecode(v: list[Any], d: int, bc: Any = None) -> Any:
    _arity(v, 7)
    _, flat, constants, metadata, names, labels, extras = v
    if type(flat) is not list or len(flat) % 2 or type(constants) is not list or type(extras) is not dict:
        raise _bad("malformed Bytecode")
    it = iter(flat)
    ops = _OPCODES
    try:
        instructions = [
            (
                ops[o] if type(o) is int else _dec_op(o, d),
                a if type(a) is not list else _dec(a, d),
            )
            for o, a in zip(it, it)
        ]
    except KeyError as exc:
        raise _bad(f"unknown opcode {exc.args[0]}") from None
    if bc is None:
        bc = object.__new__(Bytecode)
    bc.__dict__.update(
        instructions=instructions,
        constants=[c if type(c) is not list else _dec(c, d) for c in constants],
        metadata=_dec(metadata, d),
        names=_dec(names, d),
        labels=_dec(labels, d),
    )
    for k, x in extras.items():
        if k in _BYTECODE_FIELDS:
            raise _bad(f"duplicate Bytecode field {k!r}")
        bc.__dict__[k] = _dec(x, d)
    return bc


def check(data: bytes) -> bytes:
    """Validate header and checksum; return the decompressed body (raises CodecError)."""
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
            raise _bad(f"bad compressed body ({exc})") from None
        if inflater.unconsumed_tail or not inflater.eof:
            raise _bad("compressed body longer than its declared size")
    if len(raw) != raw_len:
        raise _bad(f"body is {len(raw)} bytes, header says {raw_len}")
    return raw


def decode(data: bytes) -> Any:
    """Decode bytes made by ``encode``; any problem raises CodecError naming it."""
    raw = check(data)
    try:
        tree = json.loads(raw)
    except RecursionError:
        raise _bad("nesting too deep") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise _bad(f"invalid body ({exc})") from None
    if type(tree) is not list or not tree or tree[0] not in ("B", "M", "@"):
        raise _bad("top level is not a Bytecode")
    _STATE.memo = {}
    # Rebuilding allocates thousands of containers, none garbage: without this, a collection of
    # the oldest generation (the whole heap of zexus and SQLAlchemy objects) can land mid-decode
    # and cost several milliseconds.
    collecting = gc.isenabled()
    gc.disable()
    try:
        result = _dec(tree, 0) if tree[0] != "M" else [_dec(b, 1) for b in tree[1:]]
    except RecursionError:
        raise _bad("nesting too deep") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise _bad(f"malformed value ({exc})") from None
    finally:
        _STATE.memo = {}
        if collecting:
            gc.enable()
    if type(result) is Bytecode:
        return result
    if type(result) is not list:
        raise _bad("top level is not a Bytecode")
    if not all(type(b) is Bytecode for b in result):
        raise _bad("list member is not a Bytecode")
    return result
