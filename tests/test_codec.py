"""codec: lossless, type-exact, deterministic, checked and safe."""

from __future__ import annotations

import copy
import inspect
import math
import os
import subprocess
import sys
import tracemalloc
import zlib
from pathlib import Path

import pytest
from bytecode_compare import assert_same
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zx_programs import all_programs

from zexus_bcache import codec, pipeline
from zexus_bcache.cache import core as cache_module
from zexus_bcache.codec import Bytecode, CodecError
from zexus_bcache.front import deep_sizeof

with pipeline.quiet():
    from zexus import zexus_ast
    from zexus.vm.bytecode import Opcode


def _compiled_programs() -> list[tuple[str, Bytecode]]:
    out = []
    for path in all_programs():
        try:
            out.append((path.name, pipeline.compile_source(path.read_text(encoding="utf-8"), str(path))))
        except Exception:
            continue  # programs zexus cannot compile are covered (and counted) by test_fidelity
    return out


COMPILED = _compiled_programs()


def _forge(raw: bytes, version: int = codec.FORMAT_VERSION, flags: int = codec.FLAG_ZLIB) -> bytes:
    """Wrap a body in a header with a valid checksum, as a careful attacker would."""
    body = zlib.compress(raw) if flags & codec.FLAG_ZLIB else raw
    prefix = codec._HEADER.pack(codec.MAGIC, version, flags, len(body), len(raw), b"")[: codec._CHECKED_PREFIX]
    return prefix + codec._checksum(prefix, body) + body


_TAIL = '["d",{}],["L"],["d",{}],{}'  # a Bytecode record's metadata, names, labels and extras


def _body(constants: str, constant_fix: str) -> bytes:
    """A format-3 body of one Bytecode with no instructions and the given constants (JSON text)."""
    return f'["",[],["B",0,[],[],{constants},{constant_fix},{_TAIL}]]'.encode()


def _one(chars: str, operands: str, record: str) -> bytes:
    """A format-3 body: every opcode ("&" is the first Opcode), every operand, and the top Bytecode record."""
    return f'["{chars}",{operands},["B",{record},{_TAIL}]]'.encode()


def _bytecode(constants: list, instructions: list | None = None) -> Bytecode:
    return Bytecode(instructions if instructions is not None else [(Opcode.LOAD_CONST, 0)], constants)


# ----------------------------------------------------------------- real compiler output


def test_real_programs_were_compiled() -> None:
    assert len(COMPILED) >= 30


@pytest.mark.parametrize("name,bytecode", COMPILED, ids=[n for n, _ in COMPILED])
def test_real_program_round_trips_exactly(name: str, bytecode: Bytecode) -> None:
    data = codec.encode(bytecode)
    back = codec.decode(data)
    assert_same(bytecode, back)
    assert codec.encode(back) == data


def test_function_descriptors_keep_nested_bytecode() -> None:
    source = "action add(a, b) { return a + b }\nprint(add(2, 3))\n"
    bytecode = pipeline.compile_source(source)
    nested = [c for c in bytecode.constants if isinstance(c, dict) and isinstance(c.get("bytecode"), Bytecode)]
    assert nested, "the compiler is expected to emit a function descriptor"
    back = codec.decode(codec.encode(bytecode))
    assert_same(bytecode, back)
    assert any(type(c) is dict and type(c.get("bytecode")) is Bytecode for c in back.constants)


def test_every_special_value_survives() -> None:
    ident = zexus_ast.Identifier("x")
    ident.line, ident.column = 3, 7
    infix = zexus_ast.InfixExpression(zexus_ast.IntegerLiteral(1), "+", zexus_ast.StringLiteral("s"))
    inner = _bytecode([1, "two"], [(Opcode.LOAD_CONST, 0), ("CUSTOM_OP", ("a", (1, None))), (Opcode.RETURN, None)])
    inner.metadata["source_file"] = "inner.zx"
    inner.names.append("n")
    inner.labels["L0"] = 2
    inner.extra_attribute = {"kept": True}
    constants = [
        None, True, False, 0, -1, 2**64, -(3**200), 10**5000, 0.0, -0.0, 1.5, math.inf, -math.inf, math.nan,
        "", "ünïcødé \udc80 surrogate", b"\x00\xff", [1, [2]], (1, (2, (3,))), (), {"a": 1}, {1: "int key", (1, 2): "tuple key", None: 0, 1.5: "f"},
        {3, 1, 2}, frozenset({"a", "b"}), set(), Opcode.ADD, ident, infix,
        {"name": "f", "bytecode": inner, "params": ["a"], "is_async": False},
    ]
    bytecode = _bytecode(constants)
    bytecode.metadata["created_by"] = ("tuple", "meta")
    assert_same(bytecode, codec.decode(codec.encode(bytecode)))


def test_list_of_bytecode_round_trips() -> None:
    pair = [COMPILED[0][1], COMPILED[1][1]]
    back = codec.decode(codec.encode(pair))
    assert type(back) is list
    assert_same(pair, back)


def test_decoding_makes_new_independent_objects() -> None:
    bytecode = COMPILED[0][1]
    data = codec.encode(bytecode)
    first, second = codec.decode(data), codec.decode(data)
    first.constants.append("mutated")
    first.instructions.clear()
    assert second.constants[-1] != "mutated"
    assert_same(codec.decode(data), second)


# ----------------------------------------------------------------- never lossy


class Foreign:
    pass


class MyInt(int):
    pass


@pytest.mark.parametrize(
    "constant",
    [Foreign(), MyInt(3), 1 + 2j, bytearray(b"x"), print, Path("x"), Opcode],
    ids=["object", "int-subclass", "complex", "bytearray", "function", "path", "class"],
)
def test_values_it_cannot_encode_exactly_are_refused(constant: object) -> None:
    with pytest.raises(CodecError, match="cannot encode"):
        codec.encode(_bytecode([constant]))


def test_shared_references_are_kept() -> None:
    shared = [1, 2]
    node = zexus_ast.IntegerLiteral(5)
    table = {"a": node}
    bytecode = _bytecode([shared, (shared, node), table, {"again": table, "node": node}])
    back = codec.decode(codec.encode(bytecode)).constants
    assert_same(bytecode.constants, back)
    assert back[0] is back[1][0] and back[1][1] is back[2]["a"] is back[3]["node"] and back[3]["again"] is back[2]


def test_cycles_are_refused_at_encode() -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    node = zexus_ast.Identifier("self")
    node.parent = {"child": node}
    inner = _bytecode([])
    inner.constants.append({"name": "rec", "bytecode": inner})
    for value in (cyclic, node):
        with pytest.raises(CodecError, match="cycle"):
            codec.encode(_bytecode([value]))
    with pytest.raises(CodecError, match="cycle"):
        codec.encode(inner)


def test_sharing_that_cannot_be_ordered_or_kept_is_refused() -> None:
    with pytest.raises(CodecError, match="inside a set"):
        codec.encode(_bytecode([{zexus_ast.Identifier("x")}]))
    bytecode = _bytecode([])
    bytecode.constants.append(bytecode.instructions)
    with pytest.raises(CodecError, match="instruction or constant list"):
        codec.encode(bytecode)


def test_contract_programs_with_shared_nodes_round_trip() -> None:
    contracts = [(n, b) for n, b in COMPILED if "contract" in n or n.startswith("45_")]
    assert contracts
    for _, bytecode in contracts:
        assert_same(bytecode, codec.decode(codec.encode(bytecode)))


def test_immutable_repeats_are_fine() -> None:
    t = (1, "a")
    assert_same(_bytecode([t, t]), codec.decode(codec.encode(_bytecode([t, t]))))


def test_too_deep_nesting_is_refused() -> None:
    deep: list = []
    for _ in range(codec.MAX_DEPTH + 5):
        deep = [deep]
    with pytest.raises(CodecError, match="nesting deeper"):
        codec.encode(_bytecode([deep]))


def test_bad_instruction_shape_is_refused() -> None:
    with pytest.raises(CodecError, match="opcode, operand"):
        codec.encode(_bytecode([], [(Opcode.ADD, 1, 2)]))
    with pytest.raises(CodecError, match="expected a zexus Bytecode"):
        codec.encode("not bytecode")


# ----------------------------------------------------------------- determinism


def test_same_bytes_whatever_the_hash_seed(tmp_path: Path) -> None:
    script = (
        "import sys\n"
        "from zexus_bcache import codec\n"
        "from zexus.vm.bytecode import Bytecode, Opcode\n"
        "bc = Bytecode([(Opcode.LOAD_CONST, 0)], [{'alpha', 'beta', 'gamma', 'delta'}, frozenset({(1, 'x'), (2, 'y')})])\n"
        "sys.stdout.write(codec.encode(bc).hex())\n"
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
            env=dict(os.environ, PYTHONHASHSEED=seed), check=True,
        ).stdout
        for seed in ("0", "1", "987654")
    }
    assert len(outputs) == 1 and outputs.pop()


def test_real_programs_encode_deterministically() -> None:
    for name, bytecode in COMPILED:
        assert codec.encode(bytecode) == codec.encode(codec.decode(codec.encode(bytecode))), name


# ----------------------------------------------------------------- checked input


GOOD = codec.encode(_bytecode([1, "x", (2, 3)]))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "truncated"),
        (GOOD[:10], "truncated"),
        (GOOD[:-1], "truncated"),
        (GOOD + b"\x00", "oversized"),
        (b"PK\x03\x04" + GOOD[4:], "bad magic"),
        (GOOD[:4] + b"\x00\x63" + GOOD[6:], "unsupported payload format version 99"),
        (GOOD[:-1] + bytes([GOOD[-1] ^ 1]), "checksum mismatch"),
        (b"\xff" * 200, "bad magic"),
    ],
    ids=["empty", "header-cut", "body-cut", "trailing", "magic", "version", "bitflip", "garbage"],
)
def test_bad_input_names_the_problem(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(data)


def test_non_bytes_input_is_refused() -> None:
    with pytest.raises(CodecError, match="expected bytes"):
        codec.decode("text")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "raw,message",
    [
        (_body('[["N","os.system",{}]]', "[0]"), "unknown AST node class"),
        (_body('[["E","os","system"]]', "[0]"), "unknown enum"),
        (_body('[["X",1]]', "[0]"), "unknown tag"),
        (_one("\\uffff", "[null]", "1,[],[],[],[]"), "unknown opcode"),
        (_one("!", "[null]", "1,[],[],[],[]"), "unknown opcode"),
        (_one("&", "[]", "1,[],[],[],[]"), "malformed instructions"),
        (_one("&&", "[1,2]", "1,[],[],[],[]"), "not accounted for"),
        (_one("&", '[["L"]]', "1,[1],[],[],[]"), "bad patch index"),
        (_one("&", "[1]", "1,[0],[],[],[]"), "bad patch index"),
        (_one("&", "[1]", "1,[],[0,1],[],[]"), "malformed Bytecode"),
        (b'{"a":1}', "top level"),
        (b'not json', "invalid body"),
        (b"[" * 100000 + b"]" * 100000, "nesting too deep|top level|expansion limit"),
        (b'["",[],["M",["L",1]]]', "not a Bytecode"),
        (_body('[["S",["L"]]]', "[0]"), "malformed value"),
        (_body('[["R",0]]', "[0]"), "dangling reference"),
        (_body('[["@",0,"L"],["@",0,"L"]]', "[0,1]"), "malformed reference"),
        (_body('[["@",0,"T",1]]', "[0]"), "cannot be shared"),
        (_body('[["L",1]]', "[]"), "not listed"),
        (_body('[["L",1],2]', "[1]"), "bad patch index"),
        (_body('[["@",0,"L",["R",0]]]', "[0]"), "cycle"),
    ],
    ids=["ast-class", "enum", "tag", "opcode", "opcode-below", "odd-instructions", "left-over", "operand-index",
         "operand-not-array", "custom", "object", "json", "deep", "list", "unhashable",
         "dangling", "redefined", "shared-tuple", "unlisted-array", "bad-index", "cyclic-constant"],
)
def test_forged_bodies_with_valid_checksums_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(_forge(raw))


def test_uncompressed_deep_json_is_refused() -> None:
    with pytest.raises(CodecError, match="nesting too deep|top level"):
        codec.decode(_forge(b"[" * 100000 + b"]" * 100000, flags=0))


def test_deep_forged_nesting_is_refused_by_depth_limit() -> None:
    deep = '["L",' * (codec.MAX_DEPTH + 10) + "1" + "]" * (codec.MAX_DEPTH + 10)
    raw = _body(f"[{deep}]", "[0]")
    with pytest.raises(CodecError, match="nesting"):
        codec.decode(_forge(raw))


def test_decompression_bomb_is_bounded() -> None:
    bomb = zlib.compress(b"[" + b" " * (50 * 1024 * 1024) + b"]")
    prefix = codec._HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.FLAG_ZLIB, len(bomb), 100, b"")[: codec._CHECKED_PREFIX]
    with pytest.raises(CodecError, match="longer than its declared size"):
        codec.decode(prefix + codec._checksum(prefix, bomb) + bomb)
    huge = codec._HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.FLAG_ZLIB, 0, 2**31, b"")[: codec._CHECKED_PREFIX]
    with pytest.raises(CodecError, match="over the"):
        codec.decode(huge + codec._checksum(huge, b""))


def _peak_bytes(fn: object) -> int:
    """Peak memory traced while fn() runs (it must raise CodecError)."""
    tracemalloc.start()
    try:
        with pytest.raises(CodecError) as info:
            fn()  # type: ignore[operator]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        _ = info


def test_hash_flood_is_refused_without_quadratic_work() -> None:
    """40,000 big-int keys that all hash to 0 (issue 16 item 7): refused before the dict is built."""
    mersenne = (1 << 61) - 1
    assert len({hash(k * mersenne) for k in range(1, 1000)}) == 1
    keys = ",".join(f'["i","{k * mersenne:x}"],0' for k in range(1, 40_001))
    data = _forge(_body(f'[["D",{keys}]]', "[0]"))
    assert 100_000 < len(data) < 1_000_000
    peak = _peak_bytes(lambda: codec.decode(data))
    with pytest.raises(CodecError, match="hash flooding"):
        codec.decode(data)
    assert peak < 100 * 2**20
    # The same size with ordinary keys decodes, and a few real collisions (-1 and -2 hash alike) are fine.
    plain = ",".join(f'["i","{k + (1 << 64):x}"],0' for k in range(40_000))
    assert len(codec.decode(_forge(_body(f'[["D",{plain}]]', "[0]"))).constants[0]) == 40_000
    collide = [{-1: "a", -2: "b"}, {-1, -2}]
    assert codec.decode(codec.encode(_bytecode(collide))).constants == collide


def test_repetition_bomb_is_refused_before_inflating() -> None:
    """A ~60 KB body that would inflate to 60 MB of constants is refused from its header."""
    deflate = zlib.compressobj(9)
    head, tail = b'["",[],["B",0,[],[],[', b'0],[],["d",{}],["L"],["d",{}],{}]]'
    parts = [deflate.compress(head)] + [deflate.compress(b"0," * 500_000) for _ in range(60)]
    parts.append(deflate.compress(tail) + deflate.flush())
    body = b"".join(parts)
    raw_len = 60 * 1_000_000 + len(head) + len(tail)
    assert raw_len <= codec.MAX_RAW_BYTES and len(body) < 100_000
    prefix = codec._HEADER.pack(codec.MAGIC, codec.FORMAT_VERSION, codec.FLAG_ZLIB, len(body), raw_len, b"")
    prefix = prefix[: codec._CHECKED_PREFIX]
    data = prefix + codec._checksum(prefix, body) + body
    with pytest.raises(CodecError, match="expansion limit"):
        codec.decode(data)
    assert _peak_bytes(lambda: codec.decode(data)) < 2**20


def test_back_reference_bomb_is_refused() -> None:
    """60 lists each holding the previous one twice: 2**60 values for any walker; refused by the value count."""
    chain = ['["@",0,"L",1,1]'] + [f'["@",{i},"L",["R",{i - 1}],["R",{i - 1}]]' for i in range(1, 60)]
    data = _forge(_body(f"[{','.join(chain)}]", str(list(range(60))).replace(" ", "")))
    with pytest.raises(CodecError, match="expand"):
        codec.decode(data)
    assert _peak_bytes(lambda: codec.decode(data)) < 2**20
    ok = ['["@",0,"L",1,1]', '["R",0]', '["R",0]']  # ordinary sharing is kept
    back = codec.decode(_forge(_body(f"[{','.join(ok)}]", "[0,1,2]"))).constants
    assert back[0] is back[1] is back[2] == [1, 1]


def test_self_referencing_entries_and_cyclic_operands_are_refused() -> None:
    nested = f'[["@",0,"B",1,[],[],[["R",0]],[0],{_TAIL}]]'
    self_ref = _forge(f'["&",[0],["B",0,[],[],{nested},[0],{_TAIL}]]'.encode())
    operand = _forge(_one("&", '[["@",0,"L",["R",0]]]', "1,[0],[],[],[]"))
    node = _forge(_body('[["@",0,"N","Identifier",{"value":"x","me":["R",0]}]]', "[0]"))
    for data in (self_ref, operand, node):
        with pytest.raises(CodecError, match="cycle"):
            codec.decode(data)
    assert type(codec.decode(_forge(_body("[]", "[]")))) is Bytecode


def _at_depth(n: int, fn: object) -> object:
    return fn() if n <= 0 else _at_depth(n - 1, fn)  # type: ignore[operator]


def test_decoding_does_not_depend_on_the_callers_stack_depth() -> None:
    """Issue 16 item 10: a valid entry decoded 40 frames below the recursion limit is not reported as corrupt."""
    _, bytecode = max(COMPILED, key=lambda nb: len(codec.encode(nb[1])))
    nested: list = [1]
    for _ in range(codec.MAX_DEPTH - 10):
        nested = [nested]
    deep = _bytecode([nested])
    for value in (bytecode, deep):
        data = codec.encode(value)
        headroom = sys.getrecursionlimit() - len(inspect.stack()) - 40
        assert_same(value, _at_depth(headroom, lambda d=data: codec.decode(d)))
        assert _at_depth(headroom, lambda v=value: codec.encode(v)) == data
    too_deep = '["L",' * (codec.MAX_DEPTH + 10) + "1" + "]" * (codec.MAX_DEPTH + 10)
    headroom = sys.getrecursionlimit() - len(inspect.stack()) - 40
    with pytest.raises(CodecError, match="nesting"):
        _at_depth(headroom, lambda: codec.decode(_forge(_body(f"[{too_deep}]", "[0]"))))


@pytest.mark.parametrize("name,bytecode", COMPILED[::3], ids=[n for n, _ in COMPILED[::3]])
def test_encode_measured_is_encode_deep_sizeof_and_shape_in_one_walk(name: str, bytecode: Bytecode) -> None:
    measured = codec.encode_measured(bytecode)
    assert measured.payload == codec.encode(bytecode)
    assert measured.mem_size == deep_sizeof(bytecode)
    assert (measured.n_instructions, measured.n_constants) == cache_module._shape(bytecode)
    pair = [bytecode, COMPILED[0][1]]
    both = codec.encode_measured(pair)
    assert (both.payload, both.mem_size) == (codec.encode(pair), deep_sizeof(pair))
    assert (both.n_instructions, both.n_constants) == cache_module._shape(pair)


def test_measured_size_with_shared_instruction_tuples_and_custom_opcodes() -> None:
    """The size pass counts instruction pairs apart: a pair met twice, or also as a constant, once."""
    bytecode = copy.deepcopy(max(COMPILED, key=lambda c: len(c[1].instructions))[1])
    first = bytecode.instructions[0]
    bytecode.instructions += [first, ("CUSTOM_OP", 7), first]
    bytecode.constants.append(first)
    measured = codec.encode_measured(bytecode)
    assert measured.mem_size == deep_sizeof(bytecode)
    decoded = codec.decode(measured.payload)
    assert_same(bytecode, decoded)
    assert decoded.instructions[-2] == ("CUSTOM_OP", 7)


def test_format_1_payloads_are_refused_cleanly() -> None:
    with pytest.raises(CodecError, match="unsupported payload format version 1"):
        codec.decode(_forge(b'["B",[1,0],[1],["d",{}],["L"],["d",{}],{}]', version=1))


def test_codec_source_uses_no_code_executing_deserializer() -> None:
    source = Path(codec.__file__).read_text(encoding="utf-8")
    source += Path(codec.codec_tree.__file__).read_text(encoding="utf-8")
    for word in ("import pickle", "import marshal", "eval(", "exec(", "__import__", "importlib", "getattr("):
        assert word not in source


# ----------------------------------------------------------------- properties

_hashable = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8) | st.binary(max_size=8),
    lambda inner: st.tuples(inner, inner) | st.frozensets(inner, max_size=3),
    max_leaves=6,
)
_scalar = (
    st.none() | st.booleans() | st.integers() | st.integers(min_value=2**63, max_value=2**400) | st.floats()
    | st.text() | st.binary(max_size=16) | st.sampled_from(list(Opcode))
    | st.builds(zexus_ast.Identifier, st.text(max_size=8)) | st.builds(zexus_ast.IntegerLiteral, st.integers())
)
_value = st.recursive(
    _scalar,
    lambda inner: st.lists(inner, max_size=4)
    | st.lists(inner, max_size=4).map(tuple)
    | st.dictionaries(_hashable, inner, max_size=4)
    | st.dictionaries(st.text(max_size=5), inner, max_size=4)
    | st.sets(_hashable, max_size=4)
    | st.frozensets(_hashable, max_size=4),
    max_leaves=20,
)
_operand = st.recursive(st.none() | st.integers() | st.text(max_size=6), lambda i: st.tuples(i, i), max_leaves=4)


@st.composite
def bytecodes(draw, depth: int = 2) -> Bytecode:
    ops = st.sampled_from(list(Opcode)) | st.text(min_size=1, max_size=6)
    instructions = draw(st.lists(st.tuples(ops, _operand), max_size=12))
    constants = draw(st.lists(_value, max_size=6))
    if depth:
        constants += draw(st.lists(bytecodes(depth - 1).map(lambda b: {"name": "f", "bytecode": b}), max_size=2))
    bc = Bytecode(instructions, constants)
    bc.names = draw(st.lists(st.text(max_size=5), max_size=3))
    bc.labels = draw(st.dictionaries(st.text(max_size=4), st.integers(0, 100), max_size=3))
    bc.metadata.update(draw(st.dictionaries(st.text(max_size=5), _value, max_size=2)))
    return bc


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bytecodes())
def test_generated_bytecode_round_trips_exactly(bytecode: Bytecode) -> None:
    data = codec.encode(bytecode)
    back = codec.decode(data)
    assert_same(bytecode, back)
    assert codec.encode(back) == data


def _fuzz_decode(blob: bytes) -> None:
    try:
        codec.decode(blob)
    except CodecError:
        pass


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_mutated_and_truncated_encodings_only_raise_codec_error(data: st.DataObject) -> None:
    _, base = data.draw(st.sampled_from(COMPILED))
    blob = bytearray(codec.encode(base))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(blob) - 1))
        blob[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(blob)))
    _fuzz_decode(bytes(blob[:cut]) if data.draw(st.booleans()) else bytes(blob))


@settings(max_examples=1500, deadline=None)
@given(st.data())
def test_mutated_bodies_behind_valid_checksums_only_raise_codec_error(data: st.DataObject) -> None:
    _, base = data.draw(st.sampled_from(COMPILED[:8]))
    raw = bytearray(codec.check(codec.encode(base)))
    for _ in range(data.draw(st.integers(1, 6))):
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.sampled_from(b'[]{}",:0123456789-.eE tfnLTBdDNESFibo' + bytes([0, 255])))
    _fuzz_decode(_forge(bytes(raw)))


@given(st.binary(max_size=300))
def test_random_bytes_only_raise_codec_error(blob: bytes) -> None:
    with pytest.raises(CodecError):
        codec.decode(blob)
