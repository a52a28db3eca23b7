"""A limit a user sets holds after every put, through the commands people run (issue 15).

With ``max_entries = 4`` in the project's bcache.toml: after ``warm -j 2`` of 100 files, and after
8 ``run``s of other programs, exactly 4 entries remain (before: 4, 17 and 21 after warm, 14 after
the runs, since limits were enforced only every 64 puts per process).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from zexus_bcache.store import Store


def _cli(project: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXUS_BCACHE_")}
    env["ZEXUS_BCACHE_SERVER"] = "0"
    return subprocess.run([sys.executable, "-m", "zexus_bcache", *args], cwd=project, env=env,
                          capture_output=True, text=True, timeout=300)


def test_max_entries_holds_after_warm_and_after_runs(tmp_path: Path) -> None:
    project = tmp_path / "project"
    (project / ".zexus").mkdir(parents=True)
    (project / ".git").mkdir()
    (project / ".zexus" / "bcache.toml").write_text("max_entries = 4\n", encoding="utf-8")
    sources = project / "src"
    sources.mkdir()
    for i in range(100):
        (sources / f"p{i:03d}.zx").write_text(f'let n = {i}\nprint("program " + n)\n', encoding="utf-8")
    db = project / ".zexus" / "bcache.db"

    warmed = _cli(project, "warm", "-j", "2", "--json", "src")
    assert warmed.returncode == 0, warmed.stderr
    with Store(db, read_only=True) as store:
        assert store.count() == 4 and store.get_settings()["max_entries"] == 4
        assert store.counters()["evictions"] == 96

    for i in range(8):
        extra = project / f"run{i}.zx"
        extra.write_text(f'print("run {i}")\n', encoding="utf-8")
        done = _cli(project, "run", extra.name)
        assert done.returncode == 0 and f"run {i}" in done.stdout, done.stderr
        with Store(db, read_only=True) as store:
            assert store.count() == 4, f"after run {i}"
    with Store(db, read_only=True) as store:
        assert store.count() == len(store.keys()) == 4  # the kept count is the real one
