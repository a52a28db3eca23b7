"""Cache keys: the compiler fingerprint, the source key and the structural AST key."""

from __future__ import annotations

import copy
import enum
import functools
import importlib.metadata
import json
import math
import os
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from zx_programs import all_programs

from zexus_bcache import constants, keys, pipeline
from zexus_bcache.errors import BcacheError, KeyingError

with pipeline.quiet():
    from zexus import zexus_ast
    from zexus.parser import strategy_context
    from zexus.vm.bytecode import Bytecode, Opcode

AstNodeShim = strategy_context.AstNodeShim
FP = "0" * 64  # a fingerprint for the unit tests; the program tests use the real one
CHILD_TIMEOUT = 60


def key(value: Any) -> str:
    return keys.ast_key(value, FP)


def fresh_parse(source: str, filename: str) -> Any:
    """Parse with zexus's process-wide block cache emptied first."""
    strategy_context._BLOCK_STATEMENTS_CACHE.clear()
    return pipeline.parse(source, filename)


@functools.cache
def programs() -> tuple[tuple[str, str], ...]:
    """(path, source) of every real program zexus 2.0 parses."""
    found = []
    for path in all_programs():
        source = path.read_text(encoding="utf-8")
        try:
            pipeline.parse(source, str(path))
        except pipeline.ZexusParseError:
            continue  # a few upstream test programs use syntax zexus 2.0 rejects
        found.append((str(path), source))
    return tuple(found)


@functools.cache
def compilable() -> tuple[tuple[str, str], ...]:
    """The programs zexus 2.0's VM compiler also compiles."""
    found = []
    for path, source in programs():
        try:
            pipeline.compile_program(fresh_parse(source, path))
        except Exception:  # the compiler has no support for a few upstream constructs
            continue
        found.append((path, source))
    return tuple(found)


def node(cls: type, **attrs: Any) -> Any:
    """An instance of a zexus AST class with exactly these attributes, in this order."""
    obj = object.__new__(cls)
    obj.__dict__.update(attrs)
    return obj


# --------------------------------------------------------------------------- canonical dumps


def is_ast(value: Any) -> bool:
    t = type(value)
    return t.__module__ == zexus_ast.__name__ or t is AstNodeShim


def dump(value: Any) -> Any:
    """A by-value, type-exact dump of a compiler output, leaving out only what the key leaves out.

    Bytecode (instructions, constants, nested function bytecode, metadata, names, labels), AST
    nodes kept as constants (all attributes but positions), floats by their bits, sets sorted.
    """
    t = type(value)
    if t is float:
        return ("float", struct.pack("<d", value).hex())
    if value is None or t in (bool, int, str, bytes):
        return (t.__name__, value)
    if isinstance(value, enum.Enum):
        return ("enum", f"{t.__module__}.{t.__qualname__}", value.name)
    if t in (list, tuple):
        return (t.__name__, tuple(dump(x) for x in value))
    if t is dict:
        return ("dict", tuple((dump(k), dump(x)) for k, x in value.items()))
    if t in (set, frozenset):
        return (t.__name__, tuple(sorted(repr(dump(x)) for x in value)))
    if t is Bytecode or is_ast(value):
        attrs = sorted((n, x) for n, x in vars(value).items() if not (is_ast(value) and n in keys.POSITION_ATTRS))
        return (f"{t.__module__}.{t.__qualname__}", tuple((n, dump(x)) for n, x in attrs))
    raise AssertionError(f"unexpected {t.__module__}.{t.__qualname__} in compiler output")


def by_value(value: Any) -> Any:
    """A copy with no sharing and no positions on AST nodes (what the key reads of a tree)."""
    t = type(value)
    if t in (list, tuple, set, frozenset):
        return t(by_value(x) for x in value)
    if t is dict:
        return {by_value(k): by_value(x) for k, x in value.items()}
    if t is Bytecode or is_ast(value):
        kept = {n: x for n, x in vars(value).items() if not (is_ast(value) and n in keys.POSITION_ATTRS)}
        return node(t, **{n: by_value(x) for n, x in kept.items()})
    return value


def embeds_ast(value: Any) -> bool:
    t = type(value)
    if is_ast(value):
        return True
    if t in (list, tuple, set, frozenset):
        return any(embeds_ast(x) for x in value)
    if t is dict:
        return any(embeds_ast(x) for x in value.values())
    if t is Bytecode:
        return embeds_ast(value.instructions) or embeds_ast(value.constants)
    return False


def assert_same_output(bc1: Any, bc2: Any) -> bool:
    """Equal compiler output: structurally, and byte for byte once encoded by our codec.

    The codec writes AST nodes kept as constants with all their attributes and sharing, which the
    key leaves out; where the output holds none, the encodings must match as they are. Returns
    whether it did.
    """
    from zexus_bcache import codec

    assert dump(bc1) == dump(bc2)
    assert codec.encode(by_value(bc1)) == codec.encode(by_value(bc2))
    if embeds_ast(bc1):
        return False
    assert codec.encode(bc1) == codec.encode(bc2)
    return True


# --------------------------------------------------------------------------- compiler fingerprint


@pytest.fixture
def fresh_fingerprints():
    keys._compiler_fingerprint.cache_clear()
    yield
    keys._compiler_fingerprint.cache_clear()


def test_fingerprint_is_a_cached_hex_digest(fresh_fingerprints):
    fp = keys.compiler_fingerprint()
    assert len(fp) == 64 and int(fp, 16) >= 0
    before = keys._compiler_fingerprint.cache_info().hits
    assert keys.compiler_fingerprint(optimize=True, compiler="vm") == fp
    assert keys._compiler_fingerprint.cache_info().hits == before + 1


def test_fingerprint_changes_with_each_input(fresh_fingerprints, monkeypatch):

    base = keys.compiler_fingerprint()
    seen = {base, keys.compiler_fingerprint(optimize=False), keys.compiler_fingerprint(compiler="evaluator")}
    assert len(seen) == 3

    monkeypatch.setattr(keys, "CACHE_EPOCH", keys.CACHE_EPOCH + 1)
    keys._compiler_fingerprint.cache_clear()
    seen.add(keys.compiler_fingerprint())
    monkeypatch.undo()

    monkeypatch.setattr(keys, "FORMAT_VERSION", constants.FORMAT_VERSION + 1)
    keys._compiler_fingerprint.cache_clear()
    seen.add(keys.compiler_fingerprint())
    monkeypatch.undo()

    real_version = keys.distribution_version
    monkeypatch.setattr(keys, "distribution_version", lambda dist: "2.0.1" if dist == "zexus" else real_version(dist))
    keys._compiler_fingerprint.cache_clear()
    seen.add(keys.compiler_fingerprint())
    monkeypatch.undo()

    keys._compiler_fingerprint.cache_clear()
    assert len(seen) == 6
    assert keys.compiler_fingerprint() == base


def test_fingerprint_uses_the_distribution_version_not_zexus_version(fresh_fingerprints, monkeypatch):
    import zexus

    base = keys.compiler_fingerprint()
    monkeypatch.setattr(zexus, "__version__", "0.0.0-not-the-real-one", raising=False)
    keys._compiler_fingerprint.cache_clear()
    assert keys.compiler_fingerprint() == base


@pytest.mark.parametrize("dist", ["zexus", "sqlalchemy", "click", "zexus_bcache"])
def test_distribution_version_agrees_with_importlib_metadata(dist):
    # zexus_bcache is an editable install here (no dist-info beside the package): the fallback.
    assert keys.distribution_version(dist) == importlib.metadata.version(dist)


def test_distribution_version_of_a_missing_distribution_is_an_error():
    with pytest.raises(importlib.metadata.PackageNotFoundError):
        keys.distribution_version("no_such_distribution_zb")


# --------------------------------------------------------------------------- source key


def test_source_key_covers_the_exact_bytes_and_the_fingerprint():
    fp = keys.compiler_fingerprint()
    source = 'let greeting = "héllo";\nprint(greeting);\n'
    k = keys.source_key(source, fp)
    assert len(k) == 64
    assert keys.source_key(source.encode("utf-8"), fp) == k
    assert keys.source_key(source, fp, filename="/a/b.zx") == k
    variants = [source + " ", source.replace("héllo", "hello"), source.replace("\n", "\r\n"), source[:-1], ""]
    assert len({k, *(keys.source_key(v, fp) for v in variants)}) == len(variants) + 1
    assert keys.source_key(source, keys.compiler_fingerprint(optimize=False)) != k
    assert keys.source_key("\ud800", fp) != keys.source_key("\ufffd", fp)  # lone surrogates keyed exactly


def test_filename_does_not_change_the_compiled_bytecode():
    """The finding behind source_key ignoring the filename, checked on every real program."""
    from zexus_bcache import codec

    checked = 0
    for path, source in compilable():
        outputs = []
        for name in (path, "/somewhere/else/renamed.zx", "<string>"):
            outputs.append(pipeline.compile_program(fresh_parse(source, name)))
        encoded = {codec.encode(bc) for bc in outputs}
        assert len(encoded) == 1, path
        assert len({repr(dump(bc)) for bc in outputs}) == 1, path
        checked += 1
    assert checked >= 40


# --------------------------------------------------------------------------- AST key on real programs


def test_there_are_real_programs_to_check():
    assert len(programs()) >= 45
    assert len(compilable()) >= 40


def test_same_program_same_key_whatever_was_parsed_before():
    fp = keys.compiler_fingerprint()
    first = {path: keys.ast_key(fresh_parse(source, path), fp) for path, source in programs()}
    # Again, now with the block cache full of every program's blocks (nodes get reused) ...
    again = {path: keys.ast_key(pipeline.parse(source, path), fp) for path, source in programs()}
    # ... and in the other order, each program parsed right after a different one.
    reverse = {path: keys.ast_key(pipeline.parse(source, path), fp) for path, source in reversed(programs())}
    assert first == again == reverse
    assert len(set(first.values())) == len(first)  # and different programs key differently


_CHILD = r"""
import json, sys
from zexus_bcache import keys, pipeline
paths = json.loads(sys.argv[1])
fp = keys.compiler_fingerprint()
result = {"<fingerprint>": fp, "<set>": keys.ast_key({"alpha", "beta", "gamma", "delta", "x" * 40}, fp)}
for path in paths:
    with open(path, encoding="utf-8") as f:
        result[path] = keys.ast_key(pipeline.parse(f.read(), path), fp)
print(json.dumps(result))
"""


def test_keys_are_the_same_in_other_processes_and_hash_seeds():
    fp = keys.compiler_fingerprint()
    paths = [path for path, _ in programs()]
    expected = {path: keys.ast_key(fresh_parse(source, path), fp) for path, source in programs()}
    expected["<fingerprint>"] = fp
    expected["<set>"] = keys.ast_key({"alpha", "beta", "gamma", "delta", "x" * 40}, fp)
    runs = [("0", paths), ("random", paths), ("4242", list(reversed(paths)))]
    children = [
        subprocess.Popen(
            [sys.executable, "-c", _CHILD, json.dumps(order)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONHASHSEED=seed),
        )
        for seed, order in runs
    ]
    for child, (seed, _) in zip(children, runs):
        try:
            stdout, stderr = child.communicate(timeout=CHILD_TIMEOUT)
        except subprocess.TimeoutExpired:
            for c in children:
                c.kill()
            raise
        assert child.returncode == 0, stderr[-2000:]
        got = json.loads(stdout.strip().splitlines()[-1])
        assert got == expected, f"PYTHONHASHSEED={seed}"


def test_compiling_does_not_change_the_key():
    fp = keys.compiler_fingerprint()
    for path, source in compilable():
        tree = fresh_parse(source, path)
        before = keys.ast_key(tree, fp)
        pipeline.compile_program(tree)
        assert keys.ast_key(tree, fp) == before, path


_OTHER_OPERATOR = {"+": "-", "-": "+", "*": "/", "/": "*", "%": "*", "==": "!=", "!=": "==", "<": "<=",
                   "<=": "<", ">": ">=", ">=": ">", "&&": "||", "||": "&&", "!": "-", "and": "or", "or": "and"}


def tree_objects(tree: Any) -> Iterator[Any]:
    """Every node-like object in a tree (each once), children pushed after their parent is yielded."""
    stack, seen = [tree], set()
    while stack:
        v = stack.pop()
        if id(v) in seen or isinstance(v, (str, int, float, bool, type(None))):
            continue
        seen.add(id(v))
        if isinstance(v, (list, tuple)):
            stack.extend(v)
        elif isinstance(v, dict):
            stack.extend(v.values())
        else:
            stack.extend(vars(v).values())
            yield v


def mutation_sites(tree: Any) -> list[tuple[Any, str, Any]]:
    """Every literal, identifier name and operator in a tree, with a different value for it."""
    sites = []
    for v in tree_objects(tree):
        attrs = vars(v)
        value = attrs.get("value")
        if isinstance(v, zexus_ast.Boolean) and type(value) is bool:
            sites.append((v, "value", not value))
        elif isinstance(v, zexus_ast.IntegerLiteral) and type(value) is int:
            sites.append((v, "value", value + 1))
        elif isinstance(v, zexus_ast.FloatLiteral) and type(value) is float:
            sites.append((v, "value", math.nextafter(value, math.inf)))
        elif isinstance(v, (zexus_ast.StringLiteral, zexus_ast.Identifier)) and type(value) is str:
            sites.append((v, "value", value + "_"))
        if type(attrs.get("operator")) is str:
            op = attrs["operator"]
            sites.append((v, "operator", _OTHER_OPERATOR.get(op, op + "=")))
    return sites


def test_changing_any_literal_name_or_operator_changes_the_key():
    fp = keys.compiler_fingerprint()
    total = {"value": 0, "operator": 0}
    for path, source in programs():
        tree = copy.deepcopy(fresh_parse(source, path))
        original = keys.ast_key(tree, fp)
        sites = mutation_sites(tree)
        stride = max(1, len(sites) // 150)  # every program, ~150 sites at most each
        for obj, attr, new in sites[::stride]:
            old = getattr(obj, attr)
            setattr(obj, attr, new)
            try:
                assert keys.ast_key(tree, fp) != original, (path, type(obj).__name__, attr, old, new)
            finally:
                setattr(obj, attr, old)
            total[attr] += 1
        assert keys.ast_key(tree, fp) == original
    assert total["value"] >= 1000 and total["operator"] >= 200


def test_positions_are_not_keyed():
    fp = keys.compiler_fingerprint()
    for path, source in programs():
        tree = copy.deepcopy(fresh_parse(source, path))
        original = keys.ast_key(tree, fp)
        for moved, v in enumerate(list(tree_objects(tree))):
            if moved % 3 == 0:
                v.__dict__.pop("line", None)
                v.__dict__.pop("column", None)
            else:
                v.line, v.column, v.token_line = moved + 1000, 7, 1
        assert keys.ast_key(tree, fp) == original, path


# --------------------------------------------------------------------------- equal keys => equal output

_WHITESPACE: dict[str, Callable[[str], str]] = {
    "blank lines first": lambda s: "\n\n\n" + s,
    "indented": lambda s: "\n".join("    " + line for line in s.split("\n")),
    "tab indented": lambda s: "\n".join("\t" + line for line in s.split("\n")),
    "trailing spaces": lambda s: "\n".join(line + "  " for line in s.split("\n")),
    "blank line after each": lambda s: "\n".join(line + "\n" for line in s.split("\n")),
    "CRLF": lambda s: s.replace("\n", "\r\n"),
}


def test_equal_keys_give_identical_output_for_moved_code():
    """Whitespace moves every node; the key stays, and so does the compiled output."""
    fp = keys.compiler_fingerprint()
    raw_equal = 0
    for path, source in compilable():
        tree = fresh_parse(source, path)
        bytecode = pipeline.compile_program(tree)
        for name, change in _WHITESPACE.items():
            moved = fresh_parse(change(source), path)
            assert keys.ast_key(moved, fp) == keys.ast_key(tree, fp), (path, name)
            raw_equal += assert_same_output(bytecode, pipeline.compile_program(moved))
    assert raw_equal >= len(compilable()) * len(_WHITESPACE) // 2


def test_equal_keys_give_identical_output_for_reused_blocks():
    """Each program parsed alone, and parsed right after all the others (reusing their blocks)."""
    fp = keys.compiler_fingerprint()
    alone = [fresh_parse(source, path) for path, source in compilable()]
    strategy_context._BLOCK_STATEMENTS_CACHE.clear()
    for path, source in compilable():
        pipeline.parse(source, path)
    after_others = [pipeline.parse(source, path) for path, source in compilable()]
    for (path, _), first, reused in zip(compilable(), alone, after_others):
        assert keys.ast_key(first, fp) == keys.ast_key(reused, fp), path
        assert_same_output(pipeline.compile_program(first), pipeline.compile_program(reused))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    index=st.integers(min_value=0),
    edits=st.lists(
        st.tuples(st.integers(min_value=0), st.sampled_from([" ", "\t", "\n", "  \n", "\r\n"])), min_size=1, max_size=6
    ),
)
def test_equal_keys_give_identical_output_for_random_edits(index, edits):
    """Random whitespace inserted at random line starts: wherever the key stays, the output does."""
    fp = keys.compiler_fingerprint()
    path, source = compilable()[index % len(compilable())]
    lines = source.split("\n")
    for position, text in edits:
        i = position % len(lines)
        lines[i] = text + lines[i]
    edited = "\n".join(lines)
    try:
        tree = fresh_parse(edited, path)
        bytecode = pipeline.compile_program(tree)
    except Exception:
        assume(False)  # the edit broke the program (whitespace inside a string is still an edit)
    original = fresh_parse(source, path)
    if keys.ast_key(tree, fp) == keys.ast_key(original, fp):
        event("equal keys")
        assert_same_output(pipeline.compile_program(original), bytecode)
    else:
        event("different keys")
        assert dump(tree) != dump(original)  # the edit changed more than positions


# --------------------------------------------------------------------------- structure


def test_values_of_different_types_never_collide():
    values = [None, True, False, 1, 0, -1, 1.0, 0.0, -0.0, math.inf, -math.inf, math.nan, "1", "", "True",
              b"1", b"", bytearray(b"1"), [1], (1,), {1}, frozenset({1}), {1: 1}, {"1": 1}, [], (), set(),
              frozenset(), {}, 2**64, -(2**64), 10**5000, Opcode.LOAD_CONST, [None], [[]], [()], ["", ""], [""],
              zexus_ast.IntegerLiteral(1), zexus_ast.FloatLiteral(1.0), zexus_ast.StringLiteral("1"),
              zexus_ast.Identifier("1"), zexus_ast.Boolean(True), node(AstNodeShim, value=1)]
    assert len({key(v) for v in values}) == len(values)


def test_floats_are_keyed_by_their_bits():
    assert key(0.0) != key(-0.0)
    assert key(math.nan) == key(float("nan"))
    other_nan = struct.unpack("<d", struct.pack("<Q", 0x7FF8000000000001))[0]
    assert key(other_nan) != key(math.nan)
    assert key(0.1 + 0.2) != key(0.3)


def test_no_two_structures_write_the_same_text():
    pairs = [
        (["ab"], ["a", "b"]),
        ([["a"], "b"], [["a", "b"]]),
        ([["a"], ["b"]], [["a", "b"], []]),
        ({"a": "b"}, {"b": "a"}),
        ({"a": 1, "b": 2}, {"b": 2, "a": 1}),  # dicts keep their insertion order
        ({"a": 1}, [("a", 1)]),
        ({"a": 1}, ["a", 1]),
        ([1, 2], (1, 2)),
        ([(1, 2)], [[1, 2]]),
        ({1, 2}, frozenset({1, 2})),
        (b"ab", bytearray(b"ab")),
        (zexus_ast.Identifier("x"), zexus_ast.StringLiteral("x")),
        (node(AstNodeShim, a=1, b=2), node(AstNodeShim, a=1, c=2)),
        (node(AstNodeShim, a=[1, 2]), node(AstNodeShim, a=[1], b=2)),
        (node(AstNodeShim, a="b"), node(AstNodeShim, b="a")),
        (zexus_ast.InfixExpression(zexus_ast.Identifier("a"), "+", zexus_ast.Identifier("b")),
         zexus_ast.InfixExpression(zexus_ast.Identifier("b"), "+", zexus_ast.Identifier("a"))),
    ]
    for a, b in pairs:
        assert key(a) != key(b), (a, b)


def test_enums_are_keyed_by_class_and_member():
    class Shadow(enum.IntEnum):
        LOAD_CONST = Opcode.LOAD_CONST.value

    assert key(Opcode.LOAD_CONST) == key(Opcode(Opcode.LOAD_CONST.value))
    distinct = {key(Opcode.LOAD_CONST), key(Opcode.LOAD_NAME), key(Shadow.LOAD_CONST), key(int(Opcode.LOAD_CONST))}
    assert len(distinct) == 4


def test_a_50000_deep_tree_keys_without_recursion_errors():
    depth = 50_000
    nested_list: Any = []
    for _ in range(depth):
        nested_list = [nested_list]
    chain: Any = zexus_ast.IntegerLiteral(1)
    for _ in range(depth):
        chain = zexus_ast.PrefixExpression("-", chain)
    nested_dict: Any = {}
    for _ in range(depth):
        nested_dict = {"k": nested_dict}
    nested_set: Any = frozenset()
    for _ in range(depth):
        nested_set = frozenset({nested_set})
    for deep in (nested_list, chain, nested_dict, nested_set):
        k = key(deep)
        assert k == key(deep) and k != key([deep])
    shallower = zexus_ast.IntegerLiteral(1)
    for _ in range(depth - 1):
        shallower = zexus_ast.PrefixExpression("-", shallower)
    assert key(chain) != key(shallower)


def test_cycles_end_in_keying_error():
    looped_list: list[Any] = [1]
    looped_list.append(looped_list)
    looped_dict: dict[str, Any] = {}
    looped_dict["self"] = looped_dict
    parent = zexus_ast.PrefixExpression("-", None)
    parent.right = zexus_ast.PrefixExpression("!", [parent])  # through an unshared list and node
    member = zexus_ast.Identifier("x")
    member.value = frozenset({member})  # through a set member
    only_through_the_cycle: list[Any] = []
    only_through_the_cycle.append([only_through_the_cycle])
    for looped in (looped_list, looped_dict, parent, member, [1, [2, [looped_list]]], [only_through_the_cycle]):
        started = time.perf_counter()
        with pytest.raises(KeyingError, match="cycle"):
            key(looped)
        assert time.perf_counter() - started < 5


def test_shared_subtrees_key_like_copies():
    """The key reads values: zexus shares reused blocks differently from one parse to the next."""
    leaf = zexus_ast.InfixExpression(zexus_ast.Identifier("a"), "+", zexus_ast.IntegerLiteral(1))
    assert key([leaf, leaf]) == key([leaf, copy.deepcopy(leaf)])
    block = [zexus_ast.ReturnStatement(leaf)]
    assert key({"then": block, "else": block}) == key({"then": block, "else": list(block)})
    assert key([leaf, leaf]) != key([leaf, zexus_ast.Identifier("a")])


def test_pathological_sharing_is_refused_not_walked_forever(monkeypatch):
    diamond: Any = zexus_ast.Identifier("x")
    for _ in range(200):  # 2**200 paths
        diamond = [diamond, diamond]
    monkeypatch.setattr(keys, "MAX_VISITS", 100_000)
    with pytest.raises(KeyingError, match="unfolds"):
        key(diamond)


def test_sets_key_the_same_in_any_insertion_order():
    one, two = set([1, 9, 17]), set([17, 9, 1])  # equal hashes modulo 8: iteration follows insertion
    assert list(one) != list(two) and one == two
    assert key(one) == key(two)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    assert key(set(words)) == key(set(reversed(words))) == key(set(words[::2] + words[1::2])) != key(set(words[1:]))
    assert key(frozenset(words)) == key(frozenset(reversed(words))) != key(set(words))
    nodes = [zexus_ast.Identifier(w) for w in words]
    assert key(set(nodes)) == key(set(reversed(nodes)))
    assert key(set(nodes)) != key(set(nodes[1:] + [zexus_ast.Identifier("other")]))
    nested = {frozenset({1, 9}), frozenset({"a", "b"}), (1, frozenset({2}))}
    assert key(nested) == key(set(reversed(list(nested))))


def test_attribute_order_and_positions_do_not_matter_but_names_do():
    a = node(zexus_ast.Identifier, value="x", type_annotation=None)
    b = node(zexus_ast.Identifier, type_annotation=None, value="x", line=3, column=9)
    c = node(zexus_ast.Identifier, line=1, value="x", type_annotation=None, column=1, token_line=5, token_column=2)
    d = node(zexus_ast.Identifier, value="x", type_annotation=None, line=3)
    assert key(a) == key(b) == key(c) == key(d)
    assert key(node(zexus_ast.BreakStatement)) == key(node(zexus_ast.BreakStatement, line=1, column=2))
    assert key(a) != key(node(zexus_ast.Identifier, value="x", type_annotation=None, is_async=False))
    assert key(a) != key(node(zexus_ast.Identifier, value="x"))


def test_instances_of_one_class_with_other_names_key_apart_in_any_order():
    """Same class, same attribute count, other names: the layout cache must not mix them up."""
    shims = [node(AstNodeShim, name="a", value=1), node(AstNodeShim, name="a", initial_value=1),
             node(AstNodeShim, name="a", line=1), node(AstNodeShim, value=1, name="a")]
    alone = [key(s) for s in shims]
    assert len(set(alone)) == 3 and alone[0] == alone[3]
    for order in (shims, shims[::-1], shims * 3):
        assert key(order) == key([copy.copy(s) for s in order])
    assert [key(s) for s in shims] == alone
    # A name in place of a positional one, right after an instance with the positional one.
    assert key(node(AstNodeShim, name="a", line=1)) == key(node(AstNodeShim, name="a"))
    assert key(node(AstNodeShim, name="a", extra=1)) != key(node(AstNodeShim, name="a"))
    assert key(node(AstNodeShim, line=1, column=2)) == key(node(AstNodeShim))
    assert key(node(AstNodeShim, line=1, extra=2)) != key(node(AstNodeShim))


def test_keys_do_not_depend_on_what_the_walker_has_cached():
    fp = keys.compiler_fingerprint()
    sample = programs()[:: max(1, len(programs()) // 10)]
    warm = [keys.ast_key(fresh_parse(source, path), fp) for path, source in sample]
    saved = (dict(keys._KINDS), dict(keys._BY_CLASS), dict(keys._LAYOUTS))
    try:
        keys._BY_CLASS.clear()
        keys._LAYOUTS.clear()
        for t in [t for t, k in keys._KINDS.items() if k in (keys._K_NODE, keys._K_ENUM, keys._K_BAD)]:
            del keys._KINDS[t]
        cold = [keys.ast_key(fresh_parse(source, path), fp) for path, source in sample]
    finally:
        for cache, content in zip((keys._KINDS, keys._BY_CLASS, keys._LAYOUTS), saved):
            cache.clear()
            cache.update(content)
    assert cold == warm


def test_the_reference_count_shortcut_changes_no_key(monkeypatch):
    fp = keys.compiler_fingerprint()
    if sys.implementation.name == "cpython" and sys.version_info < (3, 14):
        assert keys._UNSHARED_REFCOUNT is not None  # the fast path is on where it can be
    trees = [fresh_parse(source, path) for path, source in programs()]
    fast = [keys.ast_key(t, fp) for t in trees]
    monkeypatch.setattr(keys, "_UNSHARED_REFCOUNT", None)
    assert [keys.ast_key(t, fp) for t in trees] == fast
    looped: list[Any] = [[1]]
    looped[0].append(looped)
    with pytest.raises(KeyingError, match="cycle"):
        key(looped)


def test_values_that_cannot_be_keyed_exactly_raise_keying_error():
    class Text(str):
        pass

    class Count(int):
        pass

    slotted = type("Slotted", (), {"__slots__": ("value",), "__module__": zexus_ast.__name__})()
    slotted.value = 1
    odd_name = node(zexus_ast.Identifier, value="x")
    odd_name.__dict__[1] = "not a str name"
    for bad in (object(), 1j, Text("x"), Count(1), len, KeyingError, slotted, odd_name, [1, object()],
                {"k": {frozenset({object()})}}):
        with pytest.raises(KeyingError):
            key(bad)
    assert issubclass(KeyingError, BcacheError)


def test_fingerprint_is_part_of_the_key():
    tree = zexus_ast.Identifier("x")
    assert keys.ast_key(tree, "a" * 64) != keys.ast_key(tree, "b" * 64)
    assert keys.ast_key(tree, "a" * 64) != keys.source_key("x", "a" * 64)


# --------------------------------------------------------------------------- properties

_names = st.sampled_from(["value", "left", "right", "operator", "elements", "line", "column"])
_hashable_atoms = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-3, max_value=3), st.integers(), st.floats(),
    st.text(max_size=3), st.binary(max_size=2),
)
_atoms = st.one_of(_hashable_atoms, st.just(10**400), st.sampled_from([Opcode.ADD, Opcode.SUB]))


def _nodes(children: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    classes = st.sampled_from([zexus_ast.Identifier, zexus_ast.InfixExpression, zexus_ast.ListLiteral, AstNodeShim])
    return st.builds(lambda cls, attrs: node(cls, **attrs), classes, st.dictionaries(_names, children, max_size=4))


_trees = st.recursive(
    _atoms,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.lists(children, max_size=3).map(tuple),
        st.dictionaries(_hashable_atoms, children, max_size=3),
        st.frozensets(_hashable_atoms, max_size=3),
        st.sets(st.tuples(_hashable_atoms, _hashable_atoms), max_size=3),
        st.builds(lambda x: [x, x], children),  # shared references
        _nodes(children),
    ),
    max_leaves=24,
)


@settings(max_examples=300, deadline=None)
@given(_trees, _trees)
def test_keys_are_equal_exactly_when_trees_are(a, b):
    same = dump(a) == dump(b)
    event(f"equal trees: {same}")
    assert (key(a) == key(b)) == same


@settings(max_examples=200, deadline=None)
@given(_trees)
def test_copies_and_moved_trees_keep_their_key(tree):
    def moved(value: Any) -> Any:
        """A copy with attributes inserted in reverse order and positions changed."""
        t = type(value)
        if t in (list, tuple, set, frozenset):
            return t(moved(x) for x in value)
        if t is dict:
            return {k: moved(x) for k, x in value.items()}
        if is_ast(value):
            attrs = {n: moved(x) for n, x in reversed(vars(value).items()) if n not in keys.POSITION_ATTRS}
            return node(t, **attrs, line=99, column=1)
        return value

    assert key(copy.deepcopy(tree)) == key(tree) == key(moved(tree))


# --------------------------------------------------------------------------- speed


def _best(fn: Callable[[], Any], repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def test_keying_costs_less_than_compiling():
    """A guard against slowdowns (typically ~3x here; see keys.py for why not far more)."""
    fp = keys.compiler_fingerprint()
    with pipeline.quiet():
        from zexus.vm.compiler import compile_ast_to_bytecode
    ratios = []
    for path, source in compilable():
        tree = fresh_parse(source, path)
        compiling = _best(lambda: compile_ast_to_bytecode(tree, optimize=True))
        ratios.append(compiling / _best(lambda: keys.ast_key(tree, fp)))
    assert statistics.median(ratios) >= 1.5, sorted(ratios)
