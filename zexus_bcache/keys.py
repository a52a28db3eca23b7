"""Cache keys: the compiler fingerprint, the source key and the structural AST key.

A key must change whenever the compiler's output can change, and should change for nothing else.

* ``compiler_fingerprint``: everything outside the program that decides the output (the zexus
  distribution, the compile options, our codec format, a manual epoch), like CPython's magic
  number or ccache's compiler check.
* ``source_key``: the fingerprint and the exact source bytes. A hit on it skips parsing, ~90% of
  the cost of a cold start.
* ``ast_key``: the fingerprint and the values of a parsed tree, every attribute of every node
  except source positions (``POSITION_ATTRS``); iterative (no depth limit), refuses cycles.

All keys are SHA-256 digests, 64 hex characters. A collision would serve one program's bytecode
for another, silently, so we keep all 256 bits (truncating saves nothing at hash time). SHA-256
rather than BLAKE2b because hashlib's SHA-256 runs on the CPU's SHA instructions (x86 since
Goldmont/Zen/Ice Lake, ARMv8): measured here it hashes 20 KB in 12 us against BLAKE2b's 22 us.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import importlib.util
import json
import marshal
import operator
import os
import sys
from typing import Any

from .constants import FORMAT_VERSION
from .errors import KeyingError

CACHE_EPOCH = 1
"""Bump to invalidate every cached entry at once (ccache's hash prefix)."""

POSITION_ATTRS = frozenset({"line", "column", "token_line", "token_column"})
"""Instance attributes that record where a node came from, never what it means; not keyed.

Found by collecting every attribute name and value type on every object reachable from the
trees of all the real programs at hand (the .zx files zexus installs, the examples in its README,
tests/corpus): the parser sets ``line`` and ``column`` on nodes (Token objects carry the same two),
and nothing else positional. The evaluator also reads ``token_line``/``token_column`` as fallbacks
for error positions, so those are excluded too. The VM compiler reads none of them.
"""

_hash = hashlib.sha256


# --------------------------------------------------------------------------- fingerprint, source


def compiler_fingerprint(optimize: bool = True, compiler: str = "vm") -> str:
    """Digest of everything besides the program that decides the cached output."""
    return _compiler_fingerprint(bool(optimize), str(compiler))


@functools.cache
def _compiler_fingerprint(optimize: bool, compiler: str) -> str:
    fields = {
        "epoch": CACHE_EPOCH,
        # The distribution's version: zexus.__version__ still says 1.8.4 in zexus 2.0.0.
        "zexus": distribution_version("zexus"),
        "compiler": compiler,
        "optimize": optimize,
        "codec": FORMAT_VERSION,
    }
    return _hash(json.dumps(fields, sort_keys=True).encode("ascii")).hexdigest()


def distribution_version(name: str) -> str:
    """The installed version of distribution ``name`` (whose top-level package is also ``name``).

    Read from the ``<name>-<version>.dist-info/METADATA`` beside the imported package, without
    importlib.metadata, whose import alone (email, zipfile, csv, ...) costs ~14 ms of a warm start;
    anything unusual (an egg, a zip, no dist-info there) asks importlib.metadata.
    """
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    if origin:
        site = os.path.dirname(os.path.dirname(origin))
        prefix = name.replace("-", "_").lower() + "-"
        try:
            candidates = [e for e in os.listdir(site) if e.lower().startswith(prefix) and e.endswith(".dist-info")]
        except OSError:
            candidates = []
        if len(candidates) == 1:
            try:
                with open(os.path.join(site, candidates[0], "METADATA"), encoding="utf-8") as f:
                    for line in f:
                        if line.startswith("Version:"):
                            return line.partition(":")[2].strip()
                        if not line.strip():
                            break  # end of the headers
            except OSError:
                pass
    from importlib import metadata

    return metadata.version(name)


def source_key(source: str | bytes, fingerprint: str, filename: str | None = None) -> str:
    """Digest of the fingerprint and the exact source bytes.

    ``filename`` is accepted and deliberately not hashed: on zexus 2.0 the same source compiled
    under different names (its own path, another directory, ``<string>``) gives identical bytecode
    for every real program: instructions, constants, nested function bytecode, AST nodes kept as
    constants and metadata alike (the lexer keeps the name for error reports only, and the VM sets
    ``__file__`` at run time). tests/test_keys.py keeps checking this on the whole corpus.
    """
    data = source.encode("utf-8", "surrogatepass") if isinstance(source, str) else bytes(source)
    h = _hash(b"source\0%d:%s\0" % (len(fingerprint), fingerprint.encode("utf-8", "surrogatepass")))
    h.update(data)
    return h.hexdigest()


# --------------------------------------------------------------------------- ast_key


class _Marker:
    """A stack entry that tells the walker to do something, rather than a value to write."""

    __slots__ = ("arg", "kind")

    def __init__(self, kind: int, arg: Any):
        self.kind = kind
        self.arg = arg


_LEAVE, _BEGIN_MEMBER, _END_MEMBER, _END_SET = range(4)

# What the walker does with each type, decided once per type by _kind().
_K_ATOM, _K_NODE, _K_LIST, _K_TUPLE, _K_DICT, _K_SET, _K_ENUM, _K_MARK, _K_BAD = range(9)
_KINDS: dict[type, int] = {
    str: _K_ATOM,
    type(None): _K_ATOM,
    int: _K_ATOM,
    bool: _K_ATOM,
    float: _K_ATOM,
    bytes: _K_ATOM,
    list: _K_LIST,
    tuple: _K_TUPLE,
    dict: _K_DICT,
    set: _K_SET,
    frozenset: _K_SET,
    bytearray: _K_SET,
    _Marker: _K_MARK,
}

_AST_MODULE = "zexus.zexus_ast"
# Parser-made objects found in real trees outside zexus.zexus_ast: AstNodeShim holds contract and
# entity properties and storage variables; Token is listed so a token left in a node is keyed too.
_EXTRA_NODE_CLASSES = frozenset({("zexus.parser.strategy_context", "AstNodeShim"), ("zexus.zexus_token", "Token")})

# Header tuples. In the walker's output only headers are tuples (atoms never are), and the first
# item tells them apart: a 16-byte digest of class and attribute names for a node, an int else.
_H_PREFIX, _H_LIST, _H_TUPLE, _H_DICT, _H_SET, _H_FROZENSET, _H_BYTEARRAY, _H_ENUM, _H_MEMBERS = range(9)
_LIST_HEADERS = tuple((_H_LIST, size) for size in range(64))
_TUPLE_HEADERS = tuple((_H_TUPLE, size) for size in range(64))

MAX_VISITS = 20_000_000
"""Containers and nodes one key may visit (shared subtrees count each time): a guard against
pathological sharing (a chain of diamonds doubles per level), far above any real program."""

# A layout says how to write the nodes of one class that have one set of attribute names:
# (header, getter of the written attributes sorted by name, p1, p2, shape). p1 and p2 are two
# names the instance must have besides those the getter fetches (the positional ones, or written
# names standing in): an equal attribute count, p1 and p2 present and no KeyError from the getter
# prove the instance has exactly the layout's names. Shape: 2 = the getter returns a tuple,
# 1 = a single value, 0 = nothing is written.
_Layout = tuple[tuple[bytes], Any, Any, Any, int]
_NOT_A_NAME = object()  # never a key of an instance __dict__: sends a layout to the exact path

# node class -> {attribute count: the layout last seen with that count}
_BY_CLASS: dict[type, dict[int, _Layout]] = {}
# (node class, attribute names in instance order) -> layout
_LAYOUTS: dict[tuple[type, tuple[Any, ...]], _Layout] = {}


def _kind(t: type) -> int:
    kind = _KINDS.get(t)
    if kind is None:
        if issubclass(t, enum.Enum):
            kind = _K_ENUM
        elif t.__module__ == _AST_MODULE or (t.__module__, t.__qualname__) in _EXTRA_NODE_CLASSES:
            kind = _K_NODE
            _BY_CLASS.setdefault(t, {})
        else:
            kind = _K_BAD
        _KINDS[t] = kind
    return kind


def _make_layout(t: type, names: tuple[Any, ...]) -> _Layout:
    if not all(type(name) is str for name in names):
        raise KeyingError(f"a {t.__qualname__} has an attribute whose name is not a str")
    written = sorted(name for name in names if name not in POSITION_ATTRS)
    positional = sorted(name for name in names if name in POSITION_ATTRS)
    definition = "\0".join((f"{t.__module__}.{t.__qualname__}", *written))
    header = (_hash(definition.encode("utf-8", "surrogatepass")).digest()[:16],)
    if not names or len(positional) > 2:
        p1 = p2 = _NOT_A_NAME
    else:
        p1, p2 = (positional + written + written)[:2] if len(names) > 1 else (names[0], names[0])
    getter = operator.itemgetter(*written) if written else None
    return (header, getter, p1, p2, min(len(written), 2))


def _layout(t: type, d: dict[str, Any]) -> _Layout:
    """The layout for exactly this instance's names; becomes the class's layout for that count."""
    names = tuple(d)
    layout = _LAYOUTS.get((t, names))
    if layout is None:
        layout = _LAYOUTS[(t, names)] = _make_layout(t, names)
    _BY_CLASS[t][len(names)] = layout
    return layout


def _exact(t: type, d: dict[str, Any]) -> tuple[tuple[bytes], tuple[Any, ...]]:
    """Header and written values of a node, the slow way (new layout or names differ)."""
    header, getter, _, _, shape = _layout(t, d)
    if shape == 2:
        return header, getter(d)
    return header, (getter(d),) if shape == 1 else ()


def _probe_refcount() -> int | None:
    """What sys.getrefcount shows in the walker for a value that only its parent holds.

    None where refcounts cannot be trusted for this (not CPython, free-threaded builds, and 3.14+
    where stack references may be borrowed), or where a shared value would not show more.
    """
    if sys.implementation.name != "cpython" or sys.version_info >= (3, 14):
        return None
    if sys.version_info >= (3, 13):  # the first release with free-threaded builds
        import sysconfig

        if sysconfig.get_config_var("Py_GIL_DISABLED"):
            return None
    counts = []
    for holders in (1, 2):
        parent = [_Marker(_LEAVE, None)] * holders
        stack = [parent[0]]
        pop = stack.pop
        refcount = sys.getrefcount
        v = pop()  # the same steps as in ast_key's loop
        counts.append(refcount(v))
        del v
    return counts[0] if counts[1] > counts[0] else None


_UNSHARED_REFCOUNT = _probe_refcount()


def _always_shared(value: Any) -> int:
    return sys.maxsize


def ast_key(node: Any, fingerprint: str) -> str:
    """Digest of the fingerprint and the structure of a parsed tree, positions excluded.

    The walk is iterative and writes a flat list that ``marshal`` turns into bytes in C (format 2,
    which writes no object references, so equal values always give equal bytes). Atoms (None,
    bool, int, float, str, bytes) go into the list as they are and marshal tags them by type and
    prefixes their lengths; a node or container first writes a header tuple (for a node, a digest
    of its class and written attribute names; else a kind and a size), then its children (last
    first: children are pushed in order and popped in reverse, which is just as unambiguous).
    Only headers are tuples, so two different trees never write the same list.

    The key is a function of the tree's values: an object reached twice is written twice, as a
    copy would be. Keying the sharing instead would make the key depend on the process's history:
    zexus's parser shares cached statement blocks differently in the first and in later parses of
    the same program (tests/corpus/45_large_program.zx: equal trees, 19 shared references against
    18). The compiler reads values, so sharing cannot change the code it emits; like positions, it
    only shows in AST nodes the compiler keeps as constants. A cycle raises KeyingError (zexus's
    parser makes none and its compiler recurses through the tree): the caller compiles uncached.
    Only an object that more than its parent holds can close a cycle; on CPython the walker tells
    those apart by reference count and tracks only them (a memo of every object costs a quarter
    of the walk).

    Cost: about a third of compiling the same tree (see tests/test_keys.py). Both are Python walks
    over the same objects, and a bare loop that only visits each object once already costs a fifth
    of compiling; the C serializers measured (json with a C ``default``, pickle) are slower still.

    A set's members are written and digested one by one and the digests sorted, so insertion
    order does not matter. Raises KeyingError for any object it cannot write exactly (types other
    than those above, zexus nodes and enums), for cycles and past MAX_VISITS.
    """
    out: list[Any] = [(_H_PREFIX, "ast", fingerprint)]
    a = out.append
    on_path: set[int] = set()  # ids of the possibly shared objects whose subtree is being written
    visits = 0
    stack: list[Any] = [node]
    pop = stack.pop
    push = stack.append
    extend = stack.extend
    kind_of = _KINDS.get
    by_class = _BY_CLASS
    unshared = _UNSHARED_REFCOUNT
    refcount = sys.getrefcount if unshared is not None else _always_shared
    if unshared is None:
        unshared = 0
    list_headers, tuple_headers = _LIST_HEADERS, _TUPLE_HEADERS
    K_ATOM, K_NODE, K_LIST, K_TUPLE, K_DICT, K_SET = _K_ATOM, _K_NODE, _K_LIST, _K_TUPLE, _K_DICT, _K_SET

    while stack:
        v = pop()
        t = type(v)
        k = kind_of(t)
        # The common kinds first and inline: this loop is the cache's hot path.
        if k == K_ATOM:
            a(v)
            continue
        if k is None:
            k = _kind(t)
        if k <= K_SET:  # a node or a container
            visits += 1
            if refcount(v) > unshared:  # more than its parent holds it: it could close a cycle
                oid = id(v)
                if oid in on_path:
                    raise KeyingError(f"the tree has a cycle through a {t.__qualname__}")
                if visits > MAX_VISITS:
                    raise KeyingError(f"the tree unfolds to more than {MAX_VISITS} nodes and containers")
                on_path.add(oid)
                push(_Marker(_LEAVE, oid))
            if k == K_NODE:
                try:
                    d = v.__dict__
                except AttributeError:
                    raise KeyingError(f"cannot key a {t.__qualname__} without a __dict__") from None
                layout = by_class[t].get(len(d))
                if layout is not None:
                    header, getter, p1, p2, shape = layout
                    if p1 in d and p2 in d:
                        try:
                            if shape == 2:
                                extend(getter(d))
                            elif shape == 1:
                                push(getter(d))
                            a(header)
                            continue
                        except KeyError:  # as many names as an earlier instance, but other ones
                            pass
                header, values = _exact(t, d)
                extend(values)
                a(header)
            elif k == K_LIST:
                size = len(v)
                a(list_headers[size] if size < 64 else (_H_LIST, size))
                extend(v)
            elif k == K_TUPLE:
                size = len(v)
                a(tuple_headers[size] if size < 64 else (_H_TUPLE, size))
                extend(v)
            elif k == K_DICT:
                a((_H_DICT, len(v)))
                for item in v.items():
                    extend(item)
            elif t is bytearray:
                a((_H_BYTEARRAY, bytes(v)))
            else:
                a((_H_SET if t is set else _H_FROZENSET, len(v)))
                frame: tuple[Any, list[Any]] = (out, [])
                push(_Marker(_END_SET, frame))
                for member in v:
                    push(_Marker(_END_MEMBER, frame))
                    push(member)
                    push(_Marker(_BEGIN_MEMBER, frame))
            continue
        if k == _K_MARK:
            if v.kind == _LEAVE:
                on_path.remove(v.arg)
            elif v.kind == _BEGIN_MEMBER:
                out = []
                a = out.append
            elif v.kind == _END_MEMBER:
                v.arg[1].append(_digest(out))
            else:  # _END_SET
                out, digests = v.arg
                a = out.append
                a((_H_MEMBERS, *sorted(digests)))
            continue
        if k == _K_ENUM:
            a((_H_ENUM, f"{t.__module__}.{t.__qualname__}", v.name))
            continue
        raise KeyingError(f"cannot key a value of type {t.__module__}.{t.__qualname__} exactly")

    return _digest(out).hex()


def _digest(out: list[Any]) -> bytes:
    return _hash(marshal.dumps(out, 2)).digest()


def storable(key: Any) -> bool:
    """Whether key can be a database key: a str that encodes (no lone surrogates)."""
    if not isinstance(key, str):
        return False
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def content_hash(data: bytes) -> str:
    """The content hash stored with an entry made from a source or a file: hex blake2b-256."""
    return hashlib.blake2b(data, digest_size=32).hexdigest()
