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
# The opcodes of a Bytecode are one string: Opcode members numbered 1.. in value order, member n as
# chr(_OP_BASE + n), all below 256, so the decoder maps the string's latin-1 bytes through a list in
# one C loop. Number 0 stands for an opcode that is not an Opcode member, listed apart.
_OP_BASE = 35  # "#": from here on, JSON escapes only the backslash
_OPS: list[Any] = [None, *sorted(_OPCODES.values())]
assert _OP_BASE + len(_OPS) <= 256, "too many opcodes for one latin-1 character each"
_CUSTOM_OP = chr(_OP_BASE)
_OPCHAR = [_CUSTOM_OP] * (max(_OPCODES) + 1)  # indexed by Opcode value
for _n, _member in enumerate(_OPS[1:], 1):
    _OPCHAR[_member] = chr(_OP_BASE + _n)
_OP_OF_BYTE: list[Any] = [None] * _OP_BASE + _OPS
_OP_BYTES = bytes(range(_OP_BASE, len(_OP_OF_BYTE)))
_SHAREABLE = frozenset("LdDSNB")
_UNSHAREABLE: list[Any] = ["!"]
_BARE: list[Any] = ["{"]
_PLAIN = frozenset((str, type(None), bool, int))  # JSON as they are (ints only below _BIG_INT)
_getsizeof = sys.getsizeof
_PAIR_SIZE = sys.getsizeof((None, None))


class Rewalk(Exception):
    """A dict encoded bare was met again (shared): encode the value again, without bare dicts."""


def _too_deep() -> CodecError:
    return CodecError(f"nesting deeper than {MAX_DEPTH} levels is not encoded")


class Encoder:
    """One encoding pass, which also sums what ``front.deep_sizeof`` would measure of the value.

    Mutable objects (lists, dicts, sets, AST nodes, Bytecode) are remembered by identity; the
    first time one is met again, its first encoding is marked in place as a definition
    ``["@", ref, tag, ...]`` and the repeat becomes ``["R", ref]``, so sharing is kept exactly.
    An object met again inside itself (a cycle) is refused: walkers of decoded bytecode would loop.

    With ``bare``, a string-keyed dict whose values all encode to JSON as they are is a bare JSON
    object, which the decoder keeps as parsed (no walk). A bare encoding cannot be marked as a
    definition, so meeting one again raises ``Rewalk``: the caller encodes again without bare dicts.
    """

    def __init__(self, bare: bool = True) -> None:
        self.bare = bare
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
        # Every Bytecode's opcodes and operands, concatenated in walk order: the decoder maps and
        # zips them in one C loop each instead of once per Bytecode.
        self.chars: list[str] = []
        self.operands: list[Any] = []  # a bare array is a tuple of plain values; tagged ones are listed

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
        if first is _BARE:
            raise Rewalk
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
                if self.bare and not countOf(map(type, items.values()), list):
                    self.memo[id(v)] = _BARE
                    return items  # type: ignore[return-value]
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
        fix: list[int] = []
        for i in _others(xs):
            e = self.value(xs[i], depth)
            if type(e) is list:
                fix.append(i)
            out[i] = e
        return out, fix

    def _operands(self, operands: Any, depth: int) -> list[int]:
        """Append operands to the shared list; return the indices (in operands) of the tagged ones."""
        self._count_all(operands)
        base = len(self.operands)
        self.operands += operands  # reserved first: nested Bytecodes append theirs after these
        fix: list[int] = []
        for i in _others(operands):
            x = operands[i]
            if type(x) is tuple and _plain_tuple(x):  # x itself is in met already (count_all above)
                self._count_all(x)
                self.operands[base + i] = list(x)
                continue
            e = self.value(x, depth)
            if type(e) is list:
                fix.append(i)
            self.operands[base + i] = e
        return fix

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
        # An Opcode is an IntEnum: it indexes _OPCHAR by its value, in a C loop.
        custom = [] if set(map(type, ops)) <= {_Opcode} else [i for i, op in enumerate(ops) if type(op) is not _Opcode]
        if not custom:
            self.chars.append("".join(map(_OPCHAR.__getitem__, ops)))
        else:
            self.chars.append("".join(_OPCHAR[op] if type(op) is _Opcode else _CUSTOM_OP for op in ops))
        # The decoder's order: tagged operands, custom opcodes, constants, then the other fields.
        out += [len(ops), self._operands(operands, depth + 2)]
        out.append([e for i in custom for e in (i, self.value(ops[i], depth + 2))])
        out += [*self._flat(constants, depth + 2)]
        out += [self.value(attrs[f], depth + 1) for f in _BYTECODE_FIELDS[2:]]
        extras = {k: x for k, x in attrs.items() if k not in _BYTECODE_FIELDS}
        out.append({k: self.value(x, depth + 1) for k, x in extras.items()})
        self.open.discard(id(bc))
        return out


def _others(xs: Any) -> list[int]:
    """Indices of the members that are not JSON as they are, found in one pass (most members are)."""
    return [i for i, x in enumerate(xs) if type(x) not in _PLAIN or (type(x) is int and not -_BIG_INT < x < _BIG_INT)]


def _plain_tuple(x: tuple[Any, ...]) -> bool:
    """Whether JSON keeps every member exactly: strings, None, bools, ints below _BIG_INT, finite floats."""
    for m in x:
        t = type(m)
        if t is int:
            if not -_BIG_INT < m < _BIG_INT:
                return False
        elif t is float:
            if not math.isfinite(m):
                return False
        elif t is not str and t is not bool and m is not None:
            return False
    return True


def bad(msg: str) -> CodecError:
    return CodecError(f"corrupt bytecode payload: {msg}")
