"""A type-exact structural comparison, independent of the codec, for checking round trips."""

from __future__ import annotations

import enum
import struct
from typing import Any


def assert_same(a: Any, b: Any, path: str = "root") -> None:
    """Fail unless ``b`` is an exact copy of ``a``: same types all the way down, floats bit for bit."""
    assert type(a) is type(b), f"{path}: {type(a).__name__} became {type(b).__name__}"
    if isinstance(a, enum.Enum):
        assert a is b, f"{path}: {a!r} became {b!r}"
    elif type(a) is float:
        assert struct.pack(">d", a) == struct.pack(">d", b), f"{path}: {a!r} became {b!r}"
    elif type(a) in (list, tuple):
        assert len(a) == len(b), f"{path}: length {len(a)} became {len(b)}"
        for i, (x, y) in enumerate(zip(a, b)):
            assert_same(x, y, f"{path}[{i}]")
    elif type(a) is dict:
        assert len(a) == len(b), f"{path}: {len(a)} keys became {len(b)}"
        for i, ((ka, va), (kb, vb)) in enumerate(zip(a.items(), b.items())):
            assert_same(ka, kb, f"{path}.key{i}")
            assert_same(va, vb, f"{path}[{ka!r}]")
    elif type(a) in (set, frozenset):
        assert len(a) == len(b), f"{path}: set size changed"
        for x in a:
            matches = [y for y in b if type(y) is type(x) and y == x]
            assert matches, f"{path}: member {x!r} lost"
            assert_same(x, matches[0], f"{path}{{{x!r}}}")
    elif hasattr(a, "__dict__") and not isinstance(a, type):
        assert_same(vars(a), vars(b), f"{path}<{type(a).__name__}>")
    else:
        assert a == b, f"{path}: {a!r} became {b!r}"
