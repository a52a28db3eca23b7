"""Driving the command line in tests: invoke it, check exit codes, read JSON, check one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from zexus_bcache.cli import main
from zexus_bcache.store import Store

PROGRAMS = ["01_recursion_factorial.zx", "03_recursion_ackermann.zx", "06_actions_params_returns.zx"]
SNIPPET = "let a = 6 * 7\nprint(a)\n"
NoneType = type(None)

ENTRY_SHAPE = {
    "key": str,
    "kind": str,
    "fingerprint": str,
    "codec_version": int,
    "checksum": str,
    "source_hash": (str, NoneType),
    "mem_size": (int, NoneType),
    "payload_size": int,
    "n_instructions": int,
    "n_constants": int,
    "source_path": (str, NoneType),
    "created_at": float,
    "last_access": float,
    "access_count": int,
    "signature": (str, NoneType),
}


def invoke(db: Path | str | None, *args: str, input: str | None = None) -> Result:
    """Run the command line (with --cache db when given); never let an exception escape silently."""
    argv = (["--cache", str(db)] if db is not None else []) + list(args)
    result = CliRunner().invoke(main, argv, input=input, catch_exceptions=True)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def ok(result: Result) -> Result:
    assert result.exit_code == 0, result.output
    return result


def as_json(result: Result) -> Any:
    return json.loads(ok(result).stdout)


def clean_error(result: Result, *fragments: str) -> str:
    """An error is one line, 'Error: ...', exit code 1, no traceback."""
    assert result.exit_code == 1, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def assert_shape(obj: Any, shape: dict[str, Any]) -> None:
    """The object has exactly these keys, each of these types."""
    assert isinstance(obj, dict) and set(obj) == set(shape), set(obj) ^ set(shape)
    for key, kind in shape.items():
        assert isinstance(obj[key], kind) and not (kind is int and isinstance(obj[key], bool)), (key, obj[key])


def stored_keys(db: Path) -> list[str]:
    with Store(db, read_only=True) as s:
        return s.keys()


def key_of(db: Path, name: str) -> str:
    with Store(db, read_only=True) as s:
        return next(e["key"] for e in s.entries() if e["source_path"] and e["source_path"].endswith(name))
