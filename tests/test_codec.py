"""codec: lossless, type-exact, deterministic, checked and safe."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bytecode_compare import assert_same
from zexus_bcache import codec, integration
from zexus_bcache.codec import Bytecode, CodecError
from zx_programs import all_programs

with integration.quiet():
    from zexus import zexus_ast
    from zexus.vm.bytecode import Opcode


def _compiled_programs() -> list[tuple[str, Bytecode]]:
    out = []
    for path in all_programs():
        try:
            out.append((path.name, integration.compile_source(path.read_text(encoding="utf-8"), str(path))))
        except Exception:
            continue  # programs zexus cannot compile are covered (and counted) by test_fidelity
    return out


COMPILED = _compiled_programs()


def _forge(raw: bytes, version: int = codec.FORMAT_VERSION, flags: int = codec.FLAG_ZLIB) -> bytes:
    """Wrap a body in a header with a valid checksum, as a careful attacker would."""
    body = zlib.compress(raw) if flags & codec.FLAG_ZLIB else raw
    prefix = codec._HEADER.pack(codec.MAGIC, version, flags, len(body), len(raw), b"")[: codec._CHECKED_PREFIX]
    return prefix + codec._checksum(prefix, body) + body


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
    bytecode = integration.compile_source(source)
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


def test_cycles_are_kept() -> None:
    cyclic: list = []
    cyclic.append(cyclic)
    node = zexus_ast.Identifier("self")
    node.parent = {"child": node}
    inner = _bytecode([])
    inner.constants.append({"name": "rec", "bytecode": inner})
    back = codec.decode(codec.encode(_bytecode([cyclic, node, inner]))).constants
    assert back[0][0] is back[0]
    assert back[1].parent["child"] is back[1] and back[1].value == "self"
    assert back[2].constants[0]["bytecode"] is back[2]


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
        (b'["B",[],[["N","os.system",{}]],["d",{}],["L"],["d",{}],{}]', "unknown AST node class"),
        (b'["B",[],[["E","os","system"]],["d",{}],["L"],["d",{}],{}]', "unknown enum"),
        (b'["B",[],[["X",1]],["d",{}],["L"],["d",{}],{}]', "unknown tag"),
        (b'["B",[99999,null],[],["d",{}],["L"],["d",{}],{}]', "unknown opcode"),
        (b'["B",[1],[],["d",{}],["L"],["d",{}],{}]', "malformed Bytecode"),
        (b'{"a":1}', "top level"),
        (b'not json', "invalid body"),
        (b"[" * 100000 + b"]" * 100000, "nesting too deep|top level"),
        (b'["M",["L",1]]', "not a Bytecode"),
        (b'["B",[],[["S",["L"]]],["d",{}],["L"],["d",{}],{}]', "malformed value"),
        (b'["B",[],[["R",0]],["d",{}],["L"],["d",{}],{}]', "dangling reference"),
        (b'["B",[],[["@",0,"L"],["@",0,"L"]],["d",{}],["L"],["d",{}],{}]', "malformed reference"),
        (b'["B",[],[["@",0,"T",1]],["d",{}],["L"],["d",{}],{}]', "cannot be shared"),
    ],
    ids=["ast-class", "enum", "tag", "opcode", "odd-instructions", "object", "json", "deep", "list", "unhashable",
         "dangling", "redefined", "shared-tuple"],
)
def test_forged_bodies_with_valid_checksums_are_refused(raw: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        codec.decode(_forge(raw))


def test_deep_forged_nesting_is_refused_by_depth_limit() -> None:
    deep = '["L",' * (codec.MAX_DEPTH + 10) + "1" + "]" * (codec.MAX_DEPTH + 10)
    raw = f'["B",[],[{deep}],["d",{{}}],["L"],["d",{{}}],{{}}]'.encode()
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


def test_codec_source_uses_no_code_executing_deserializer() -> None:
    source = Path(codec.__file__).read_text(encoding="utf-8")
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
