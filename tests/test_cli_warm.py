"""warm: parallel precompilation through the command line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from cli_helpers import (
    NoneType,
    as_json,
    assert_shape,
    clean_error,
    invoke,
    ok,
    stored_keys,
)
from zx_programs import CORPUS_DIR

pytestmark = pytest.mark.usefixtures("cli_project")


# -- warm --------------------------------------------------------------------------------------------


WARM_SHAPE = {
    "location": str,
    "files": int,
    "compiled": int,
    "cached": int,
    "failed": int,
    "seconds": float,
    "results": list,
}


def test_warm_in_parallel(tmp_path: Path, sources: list[Path]) -> None:
    directory = sources[0].parent
    (directory / "nested").mkdir()
    shutil.copy(CORPUS_DIR / "10_maps_basics.zx", directory / "nested" / "maps.zx")
    (directory / "broken.zx").write_text("action {\n")
    (directory / "unsupported.zx").write_text("let f = 3\nf(1) = 2\n")
    (directory / "notes.txt").write_text("not a program")
    path = tmp_path / "warm.db"

    failing = invoke(path, "warm", "-j", "2", "--json", str(directory))  # files failed: exit 1, as compileall
    assert failing.exit_code == 1 and "2 of 6 files could not be compiled" in failing.stderr
    data = json.loads(failing.stdout)
    assert_shape(data, WARM_SHAPE)
    assert (data["files"], data["compiled"], data["cached"], data["failed"]) == (6, 4, 0, 2)
    for row in data["results"]:
        assert_shape(row, {"path": str, "status": str, "reason": (str, NoneType)})
    reasons = {Path(r["path"]).name: r["reason"] for r in data["results"] if r["status"] == "failed"}
    # The reason is what `zx run` would have said (warm keys entries as run does).
    assert "BraceMismatchError" in reasons["broken.zx"] and "broken.zx:1:7" in reasons["broken.zx"]
    assert "VM fallback" in reasons["unsupported.zx"]
    assert len(stored_keys(path)) == 4 and data["compiled"] == 4

    again = ok(invoke(path, "warm", "-j", "2", "--quiet", "--keep-going", str(directory)))
    assert "4 already cached, 2 failed" in again.stdout and "broken.zx" in again.stdout
    assert "BraceMismatchError" in again.stdout
    clean_error(invoke(path, "warm", "--strict", str(directory)), "2 of 6 files could not be compiled")
    stats = as_json(invoke(path, "stats", "--json"))
    assert stats["store_hits"] >= 4 and stats["puts"] == 4  # the workers' counters were saved


def test_warm_failures_only_and_no_files(tmp_path: Path) -> None:
    (tmp_path / "broken.zx").write_text("action {\n")
    clean_error(invoke(tmp_path / "c.db", "warm", str(tmp_path / "broken.zx")), "1 of 1 file could not be compiled")
    (tmp_path / "empty").mkdir()
    clean_error(invoke(tmp_path / "c.db", "warm", str(tmp_path / "empty")), "no .zx files")


def test_warm_options(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "w.db"
    directory = str(sources[0].parent)
    planned = as_json(invoke(path, "warm", "--dry-run", "--json", directory))
    assert (planned["would compile"] == 3 and planned["dry_run"] and not path.exists()) or len(stored_keys(path)) == 0
    assert "would compile src/" in ok(invoke(path, "warm", "-n", directory)).stdout
    excluded = as_json(invoke(path, "warm", "-x", "ackermann", "-j", "0", "--json", directory))
    assert excluded["files"] == 2 and excluded["compiled"] == 2
    listed = as_json(invoke(path, "warm", "-i", "-", "--json", input=f"{sources[1]}\n\n"))
    assert (listed["files"], listed["compiled"]) == (1, 1)
    forced = as_json(invoke(path, "warm", "-f", "--json", directory))
    assert (forced["compiled"], forced["cached"]) == (3, 0)
    assert "warmed 1 file in" in ok(invoke(path, "warm", str(sources[0]))).stdout
    clean_error(invoke(path, "warm", "-x", "(", directory), "not a regular expression")
    usage = invoke(path, "warm")
    assert usage.exit_code == 1 and "no .zx files" in usage.stderr
