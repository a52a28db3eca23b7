"""One way to open a configured cache: `zexus-bcache run`, install() and BytecodeCache(persistent=True).

With `.zexus/bcache.toml` naming a path and a limit, all three open that file and store that limit
(before, install() stored 100000 and persistent=True ignored the path).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from zexus_bcache import BytecodeCache, integration
from zexus_bcache.store import Store


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "project"
    (root / ".zexus").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / ".zexus" / "bcache.toml").write_text('path = "configured/cache.db"\nmax_entries = 7\n', encoding="utf-8")
    (root / "app.zx").write_text('print("configured " + 6 * 7)\n', encoding="utf-8")
    for name in [n for n in os.environ if n.startswith("ZEXUS_BCACHE_")]:
        monkeypatch.delenv(name)
    monkeypatch.chdir(root)
    return root


def _stored(project: Path) -> tuple[int, int]:
    db = project / "configured" / "cache.db"
    assert db.exists(), "the configured file was not used"
    assert not (project / ".zexus" / "bcache.db").exists(), "the default location was used instead"
    with Store(db, read_only=True) as store:
        return store.count(), int(store.get_settings()["max_entries"])


def test_persistent_cache_opens_the_configured_file_and_stores_its_limit(project: Path) -> None:
    with BytecodeCache(persistent=True) as cache:
        cache.compile_file(project / "app.zx")
    assert _stored(project) == (1, 7)


def test_install_opens_the_configured_file_and_stores_its_limit(project: Path) -> None:
    cache = integration.install()
    try:
        cache.compile_file(project / "app.zx")
    finally:
        integration.uninstall()
        cache.close()
    assert _stored(project) == (1, 7)


def test_run_opens_the_configured_file_and_stores_its_limit(project: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ZEXUS_BCACHE_")}
    done = subprocess.run(
        [sys.executable, "-m", "zexus_bcache", "run", "--no-server", "app.zx"],
        cwd=project, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0 and "configured 42" in done.stdout, done.stderr
    assert _stored(project) == (1, 7)


def test_explicit_arguments_beat_the_config(project: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "explicit.db"
    with BytecodeCache.from_config(path=elsewhere) as cache:
        assert cache.location == elsewhere
        cache.compile_file(project / "app.zx")
    with Store(elsewhere, read_only=True) as store:
        assert store.count() == 1 and int(store.get_settings()["max_entries"]) == 7
    assert not (project / "configured" / "cache.db").exists()
