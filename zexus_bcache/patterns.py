"""Pattern keys: the shape of an AST with its literal values and names masked (zexus 2.0's pattern cache).

Two trees share a pattern key when they differ only in numbers, strings, booleans and in the
values of attributes named ``name``, ``value``, ``literal`` or ``identifier`` (of which only the
type is kept), as zexus 2.0's ``_ast_to_pattern`` defines it. Bytecode found by pattern was
compiled for *another* program: its constants and names belong to that program, which is why
zexus's own compiler does not reuse it. Unlike zexus, the walk has no depth limit (zexus stops at
depth 30, so trees that differ only deeper share a pattern) and it ignores source positions by the
same rule as every other number.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from typing import Any

MASKED_ATTRS = frozenset({"name", "value", "literal", "identifier"})
"""Attributes whose value is reduced to its type name ('none' when falsy), as zexus 2.0 does."""

_VALUE, _TEXT, _LEAVE = range(3)


def _masked(value: Any) -> str:
    try:
        truthy = bool(value)
    except Exception:  # an object whose __bool__ fails is still a value: zexus would have failed, we keep going
        truthy = True
    return "=" + (type(value).__name__ if truthy else "none")


def pattern_key(node: Any) -> str | None:
    """SHA-256 of the tree's pattern, or None when it has no pattern (a cycle, an unhashable dict key)."""
    out: list[str] = []
    on_path: set[int] = set()  # nodes being walked: a node met again below itself is a cycle
    stack: list[tuple[int, Any]] = [(_VALUE, node)]
    dumps = json.dumps
    while stack:
        kind, item = stack.pop()
        if kind == _TEXT:
            out.append(item)
            continue
        if kind == _LEAVE:
            on_path.discard(item[0])
            out.append(item[1])
            continue
        if item is None:
            out.append("null")
        elif isinstance(item, (int, float)):  # bool too, as in zexus
            out.append("#number")
        elif isinstance(item, str):
            out.append("#string")
        elif isinstance(item, (list, tuple, dict)) or hasattr(item, "__dict__"):
            ident = id(item)
            if ident in on_path:
                return None
            on_path.add(ident)
            if isinstance(item, (list, tuple)):
                out.append("[")
                stack.append((_LEAVE, (ident, "]")))
                stack.extend((_VALUE, v) for v in reversed(item))
                continue
            pairs: Iterable[tuple[Any, Any]]
            if isinstance(item, dict):
                opened, pairs = "{", item.items()
            else:
                opened = "(" + dumps(type(item).__name__)
                pairs = ((k, v) for k, v in vars(item).items() if not (isinstance(k, str) and k.startswith("_")))
            try:
                members = sorted(pairs, key=lambda kv: kv[0])  # zexus hashes with sort_keys=True
            except TypeError:
                return None  # keys of mixed types: zexus's json.dumps fails too
            out.append(opened)
            stack.append((_LEAVE, (ident, "}" if opened == "{" else ")")))
            for k, v in reversed(members):
                if opened != "{" and k in MASKED_ATTRS:
                    stack.append((_TEXT, _masked(v)))
                else:
                    stack.append((_VALUE, v))
                stack.append((_TEXT, "k" + dumps(str(k))))
        else:
            out.append("<" + dumps(type(item).__name__))
    return hashlib.sha256("\x1f".join(out).encode("utf-8", "surrogatepass")).hexdigest()
