"""The codec's walkers: zexus objects to a JSON-ready tree (measuring their memory on the way) and back."""

from __future__ import annotations

import base64
import enum
import json
import math
import struct
import sys
from operator import countOf
from typing import Any

from .errors import CodecError

MAX_DEPTH = 400
# Keys of one decoded dict or set that may share a full hash value with an earlier key: past this,
# inserting them would cost O(n^2) comparisons (hash flooding), so the payload is refused.
MAX_COLLISIONS = 32
_BIG_INT = 1 << 63
# Opcode v is the character chr(v + 32): printable for the common opcodes, one JSON token for all.
_OP_SHIFT = 32
_CUSTOM_OP = chr(_OP_SHIFT)  # an instruction whose opcode is not an Opcode member (listed apart)
# Objects every program shares; must equal front._SHARED_IDS (a test checks) so sizes agree.
SHARED_IDS = frozenset(map(id, (None, True, False, *range(-5, 257))))


def _load_whitelists() -> tuple[type, dict[int, Any], dict[type, str], dict[str, type], dict[str, Any]]:
    from .pipeline import quiet

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
_OPCHAR = [chr(v + _OP_SHIFT) for v in range(max(_OPCODES) + 1)]
_OP_OF_CHAR: dict[str, Any] = {chr(v + _OP_SHIFT): m for v, m in _OPCODES.items()}
_OP_OF_CHAR[_CUSTOM_OP] = None
_SHAREABLE = frozenset("LdDSNB")
_UNSHAREABLE: list[Any] = ["!"]
_PLAIN = frozenset((str, type(None), bool, int))  # JSON as they are (ints only below _BIG_INT)
_CUSTOM_CODE = ord(_CUSTOM_OP) - _OP_SHIFT  # _OPCHAR[_CUSTOM_CODE] == _CUSTOM_OP
_getsizeof = sys.getsizeof
_PAIR_SIZE = sys.getsizeof((None, None))


def _too_deep() -> CodecError:
    return CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded")


class Encoder:
    """One encoding pass, which also sums what ``front.deep_sizeof`` would measure of the value.

    Mutable objects (lists, dicts, sets, AST nodes, Bytecode) are remembered by identity; the
    first time one is met again, its first encoding is marked in place as a definition
    ``["@", ref, tag, ...]`` and the repeat becomes ``["R", ref]``, so sharing is kept exactly.
    An object met again inside itself (a cycle) is refused: walkers of decoded bytecode would loop.
    """

    def __init__(self) -> None:
        self.memo: dict[int, list[Any]] = {}
        self.open: set[int] = set()
        self.next_ref = 0
        self.in_set = 0
        # Every object met, repeats included; measured once at the end (size), in C loops: a
        # per-object id/set/getsizeof step in the walk cost more than the walk itself.
        self.met: list[Any] = []
        self._count = self.met.append
        self._count_all = self.met.extend
        self.pairs: list[tuple[Any, Any]] = []  # instructions: 2-tuples, all of one size

    @property
    def size(self) -> int:
        """What ``front.deep_sizeof`` measures of the value: each object met once, shared ones not counted."""
        by_id = dict(zip(map(id, self.met), self.met, strict=True))
        pair_ids = set(map(id, self.pairs))
        if not pair_ids.isdisjoint(by_id):  # an instruction tuple met elsewhere too (never seen)
            by_id.update(zip(map(id, self.pairs), self.pairs, strict=True))
            pair_ids.clear()
        for i in SHARED_IDS.intersection(by_id):
            del by_id[i]
        objs: Any = by_id.values()
        if not set(map(type, objs)).isdisjoint(_ENUM_NAME):  # enum members are shared by every program
            objs = [o for o in objs if type(o) not in _ENUM_NAME]
        return sum(map(_getsizeof, objs)) + len(pair_ids) * _PAIR_SIZE

    def _shared(self, v: Any, depth: int) -> list[Any] | None:
        """The back-reference for an object met before, else None (the caller remembers it)."""
        if depth > MAX_DEPTH:
            raise _too_deep()
        if self.in_set:
            raise CodecError(f"a {type(v).__name__} inside a set is not encoded (its order is not stable)")
        first = self.memo.get(id(v))
        if first is None:
            self._count(v)
            return None
        if first is _UNSHAREABLE:
            raise CodecError("a Bytecode's instruction or constant list referenced elsewhere is not encoded")
        if id(v) in self.open:
            raise CodecError(f"a {type(v).__name__} that contains itself (a cycle) is not encoded")
        if first[0] != "@":
            first[0:0] = ["@", self.next_ref]
            self.next_ref += 1
        return ["R", first[1]]

    def value(self, v: Any, depth: int) -> Any:
        t = type(v)
        if t is str or t is bool or v is None:
            self._count(v)
            return v
        if t is int:
            self._count(v)
            return v if -_BIG_INT < v < _BIG_INT else ["i", format(v, "x")]
        if t is float:
            self._count(v)
            return v if math.isfinite(v) else ["f", struct.pack(">d", v).hex()]
        if t is tuple:
            if depth > MAX_DEPTH:
                raise _too_deep()
            self._count(v)
            return ["T", *[self.value(x, depth + 1) for x in v]]
        if t is Bytecode:
            return self.bytecode(v, depth)
        if t in _ENUM_NAME:
            return ["E", _ENUM_NAME[t], v.name]
        if t is list or t is dict or t in _AST_NAME:
            ref = self._shared(v, depth)
            if ref:
                return ref
            self.open.add(id(v))
            out = self._container(v, t, depth + 1)
            self.open.discard(id(v))
            return out
        if t is set or t is frozenset:
            return self._set(v, t, depth)
        if t is bytes:
            self._count(v)
            return ["b", base64.b64encode(v).decode("ascii")]
        raise CodecError(f"cannot encode a value of type {t.__module__}.{t.__qualname__} exactly")

    def _container(self, v: Any, t: type, d: int) -> list[Any]:
        out: list[Any]
        if t is list:
            out = ["L"]
            self.memo[id(v)] = out
            for x in v:  # not a comprehension: one stack frame per nesting level
                out.append(self.value(x, d))
            return out
        if t is dict:
            if all(type(k) is str for k in v):
                items: dict[str, Any] = {}
                out = ["d", items]
                self.memo[id(v)] = out
                for k, x in v.items():
                    self._count(k)
                    items[k] = self.value(x, d)
                return out
            out = ["D"]
            self.memo[id(v)] = out
            for k, x in v.items():
                out.append(self.value(k, d))
                out.append(self.value(x, d))
            return out
        attrs: dict[str, Any] = {}
        out = ["N", _AST_NAME[t], attrs]
        self.memo[id(v)] = out
        state = vars(v)
        self._count(state)
        for k, x in state.items():
            self._count(k)
            attrs[k] = self.value(x, d)
        return out

    def _set(self, v: Any, t: type, depth: int) -> list[Any]:
        if depth > MAX_DEPTH:
            raise _too_deep()
        if t is set:
            ref = self._shared(v, depth)
            if ref:
                return ref
        else:
            self._count(v)
        self.in_set += 1
        try:
            members = sorted((self.value(x, depth + 1) for x in v), key=lambda e: json.dumps(e, allow_nan=False))
        finally:
            self.in_set -= 1
        out = ["S" if t is set else "F", *members]
        if t is set:
            self.memo[id(v)] = out
        return out

    def _flat(self, xs: Any, depth: int) -> tuple[list[Any], list[int]]:
        """Members encoded, and the indices of those that are tagged arrays (the decoder patches only those)."""
        self._count_all(xs)
        out = list(xs)
        # Most members are JSON as they are: only the others go through value(), found in one pass.
        others = [
            i for i, x in enumerate(xs) if type(x) not in _PLAIN or (type(x) is int and not -_BIG_INT < x < _BIG_INT)
        ]
        fix: list[int] = []
        for i in others:
            e = self.value(xs[i], depth)
            if type(e) is list:
                fix.append(i)
            out[i] = e
        return out, fix

    def bytecode(self, bc: Any, depth: int) -> list[Any]:
        ref = self._shared(bc, depth)
        if ref:
            return ref
        out: list[Any] = ["B"]
        self.memo[id(bc)] = out
        self.open.add(id(bc))
        attrs = vars(bc)
        missing = [f for f in _BYTECODE_FIELDS if f not in attrs]
        if missing:
            raise CodecError(f"Bytecode without {', '.join(missing)} is not encoded")
        self._count(attrs)
        self._count_all(attrs.keys())
        instructions, constants = attrs["instructions"], attrs["constants"]
        if type(instructions) is not list or type(constants) is not list:
            raise CodecError("Bytecode instructions and constants must be lists")
        for shared in (instructions, constants):
            if id(shared) in self.memo:
                raise CodecError("Bytecode sharing its instruction or constant list is not encoded")
            self.memo[id(shared)] = _UNSHAREABLE
            self._count(shared)
        if instructions and (set(map(type, instructions)) != {tuple} or set(map(len, instructions)) != {2}):
            bad = next(i for i in instructions if type(i) is not tuple or len(i) != 2)
            raise CodecError(f"instruction {bad!r} is not an (opcode, operand) pair")
        self.pairs += instructions
        ops, operands = zip(*instructions, strict=True) if instructions else ((), ())
        custom: list[Any] = []
        # An Opcode is an IntEnum: it indexes _OPCHAR by its value, in a C loop.
        if set(map(type, ops)) <= {_Opcode}:
            chars = "".join(map(_OPCHAR.__getitem__, ops))
        else:
            codes = list(ops)
            for i, op in enumerate(ops):
                if type(op) is not _Opcode:
                    custom += [i, self.value(op, depth + 2)]
                    codes[i] = _CUSTOM_CODE
            chars = "".join(map(_OPCHAR.__getitem__, codes))
        out += [chars, *self._flat(operands, depth + 2), custom, *self._flat(constants, depth + 2)]
        out += [self.value(attrs[f], depth + 1) for f in _BYTECODE_FIELDS[2:]]
        extras = {k: x for k, x in attrs.items() if k not in _BYTECODE_FIELDS}
        out.append({k: self.value(x, depth + 1) for k, x in extras.items()})
        self.open.discard(id(bc))
        return out


def bad(msg: str) -> CodecError:
    return CodecError(f"corrupt bytecode payload: {msg}")


def _arity(v: list[Any], n: int) -> None:
    if len(v) != n:
        raise bad(f"tag {v[0]!r} takes {n - 1} fields, got {len(v) - 1}")


def _obj(v: Any) -> dict[str, Any]:
    if type(v) is not dict:
        raise bad("expected an object")
    return v


class Decoder:
    """One decoding pass over a parsed body; ``nodes`` counts values as if shared ones were copied."""

    def __init__(self, max_nodes: int) -> None:
        self.memo: dict[int, Any] = {}
        self.weight: dict[int, int] = {}
        self.open: set[int] = set()
        self.nodes = 0
        self.max_nodes = max_nodes

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
        _arity(v, 11)
        _, chars, operands, ofix, custom, constants, cfix, metadata, names, labels, extras = v
        if type(chars) is not str or type(operands) is not list or len(operands) != len(chars):
            raise bad("malformed Bytecode")
        if type(custom) is not list or type(extras) is not dict or len(custom) != 2 * chars.count(_CUSTOM_OP):
            raise bad("malformed Bytecode")
        self.nodes += 2 * len(chars) + len(constants)
        self._patch(operands, ofix, d)
        try:
            ops = list(map(_OP_OF_CHAR.__getitem__, chars))
        except KeyError as exc:
            raise bad(f"unknown opcode {ord(exc.args[0]) - _OP_SHIFT}") from None
        it = iter(custom)
        for i, op in zip(it, it, strict=True):
            if type(i) is not int or not 0 <= i < len(ops) or ops[i] is not None:
                raise bad("bad custom opcode index")
            ops[i] = self.value(op, d)
        self._patch(constants, cfix, d)
        bc: Any = object.__new__(Bytecode)
        state = bc.__dict__
        state.update(instructions=list(zip(ops, operands, strict=True)), constants=constants)
        state.update(metadata=self.value(metadata, d), names=self.value(names, d), labels=self.value(labels, d))
        for k, x in extras.items():
            if k in _BYTECODE_FIELDS:
                raise bad(f"duplicate Bytecode field {k!r}")
            state[k] = self.value(x, d)
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
