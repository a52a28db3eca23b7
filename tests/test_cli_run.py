"""run and demo through the command line."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import (
    invoke,
    ok,
)

from zexus_bcache.store import Store

pytestmark = pytest.mark.usefixtures("cli_project")


# -- run and demo (step 3) through the same runner ---------------------------------------------------


def test_run_compiles_then_hits_the_store(tmp_path: Path, sources: list[Path]) -> None:
    path = tmp_path / "run.db"
    first = ok(invoke(path, "run", "--timings", str(sources[0])))
    assert "fact(5) = 120" in first.stdout and "miss (compiled and stored)" in first.stderr
    second = ok(invoke(path, "run", "--timings", str(sources[0])))
    assert second.stdout == first.stdout and "hit (store)" in second.stderr
    broken = tmp_path / "broken.zx"
    broken.write_text("action {\n")
    refused = invoke(path, "run", str(broken))  # as zx refuses it: its error on stdout, FILE:LINE:COL, exit 1
    unwrapped = refused.stdout.replace("\n", "")  # rich wraps a long path at the terminal's width
    assert refused.exit_code == 1 and f"{broken}:1:7" in unwrapped and "BraceMismatchError" in unwrapped


def test_run_uses_the_project_config_file(tmp_path: Path, sources: list[Path]) -> None:
    (tmp_path / ".zexus" / "bcache.toml").write_text('path = "configured.db"\nmax_entries = 5\n')
    ok(invoke(None, "run", str(sources[1])))
    with Store(tmp_path / "configured.db", read_only=True) as s:
        assert s.count() == 1 and s.get_settings()["max_entries"] == 5


def test_demo(sources: list[Path]) -> None:
    result = ok(invoke(None, "demo", str(sources[0])))
    assert "fact(5) = 120" in result.stdout and "encoded to" in result.stderr
