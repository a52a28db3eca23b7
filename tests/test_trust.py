"""Another user's cache must never run (docs/TRUST.md): planted caches, config files and links.

Each scenario first proves that the planted cache really would run the attacker's program (with the
explicit opt-in ``ZEXUS_BCACHE_ALLOW_WORLD_WRITABLE=1``), then gives it to another real user
('nobody') and checks that the victim's ``zexus-bcache run`` refuses it, warns once and still runs
its own program, uncached. Giving files to another user needs root: the tests skip otherwise.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from zexus_bcache import BytecodeCache, keys, pipeline, trust
from zexus_bcache.errors import StoreError

VICTIM = 'print("victim says hello")\n'
EVIL = 'print("PWNED")\n'
ALLOW = trust.ALLOW_ENV


def _nobody() -> Any:
    import pwd

    if os.geteuid() != 0:
        pytest.skip("giving files to another user needs root")
    try:
        return pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("no 'nobody' user on this machine")


def _give(path: Path, user: Any) -> None:
    """Give path and everything under it to user, as if they had created it."""
    for item in (path, *path.rglob("*")) if path.is_dir() else (path,):
        os.lchown(item, user.pw_uid, user.pw_gid)


def _plant(db: Path, victim: Path) -> None:
    """A cache at db whose entry for victim's run is the bytecode of another program.

    The victim is run once through a cache at db (so the entry has the run's own key), then the
    bytecode under that key is swapped for the other program's.
    """
    done = _run(victim, victim.parent, ZEXUS_BCACHE_PATH=str(db), **{ALLOW: "1"})
    assert done.returncode == 0 and "victim says hello" in done.stdout, done.stderr
    with BytecodeCache(path=db, strict=True) as cache:
        (key,) = cache.get_all_keys()
        evil = pipeline.compile_source(EVIL, "evil.zx")
        fingerprint = keys.compiler_fingerprint(optimize=True, compiler="vm")
        cache.store_value(key, evil, kind="source", fingerprint=fingerprint)


def _run(file: Path, cwd: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ZEXUS_BCACHE_")}
    environ.update(ZEXUS_BCACHE_SERVER="0", **env)  # in-process: no warm server outlives the test
    return subprocess.run(
        [sys.executable, "-m", "zexus_bcache", "run", str(file)],
        cwd=cwd, env=environ, capture_output=True, text=True, timeout=120,
    )


def _refused_and_ran(done: subprocess.CompletedProcess[str], planted: Path) -> None:
    assert done.returncode == 0, done.stderr
    assert "victim says hello" in done.stdout and "PWNED" not in done.stdout
    warnings = [line for line in done.stderr.splitlines() if "refusing to use this" in line]
    assert len(warnings) == 1, done.stderr
    assert str(planted) in warnings[0] and ALLOW in warnings[0]


@pytest.fixture
def sticky(tmp_path: Path) -> Path:
    """A /tmp of our own: world-writable with the sticky bit, owned by root."""
    shared = tmp_path / "tmp"
    shared.mkdir()
    shared.chmod(0o1777)
    return shared


def test_a_cache_planted_above_the_program_is_refused(sticky: Path, tmp_path: Path) -> None:
    """Another user's /tmp/.zexus/bcache.db, found by the project-root search, never runs."""
    nobody = _nobody()
    job = sticky / "job"
    job.mkdir()
    app = job / "app.zx"
    app.write_text(VICTIM, encoding="utf-8")
    db = sticky / ".zexus" / "bcache.db"
    _plant(db, app)
    db.parent.chmod(0o755)
    db.chmod(0o644)
    proof = _run(app, tmp_path, **{ALLOW: "1"})
    assert "PWNED" in proof.stdout, "the planted entry is what a trusting cache would run"
    _give(db.parent, nobody)
    before = {p.name: p.read_bytes() for p in db.parent.iterdir()}
    _refused_and_ran(_run(app, tmp_path), db)
    assert {p.name: p.read_bytes() for p in db.parent.iterdir()} == before, "the refused cache is not touched"


def test_a_planted_config_file_is_ignored(tmp_path: Path) -> None:
    """A bcache.toml another user wrote (pointing at their cache) is ignored with one warning."""
    nobody = _nobody()
    project = tmp_path / "project"
    (project / ".zexus").mkdir(parents=True)
    (project / ".git").mkdir()
    app = project / "app.zx"
    app.write_text(VICTIM, encoding="utf-8")
    theirs = tmp_path / "home-of-nobody" / "evil.db"
    _plant(theirs, app)
    toml = project / ".zexus" / "bcache.toml"
    toml.write_text(f'path = "{theirs}"\n', encoding="utf-8")
    _give(toml, nobody)
    done = _run(app, project)
    assert done.returncode == 0, done.stderr
    assert "victim says hello" in done.stdout and "PWNED" not in done.stdout
    assert done.stderr.count("refusing to use this config file") == 1, done.stderr
    assert (project / ".zexus" / "bcache.db").exists(), "the default cache is used instead"


def test_a_config_path_into_another_users_directory_is_refused(tmp_path: Path) -> None:
    """Our own bcache.toml may name a cache, but one in another user's directory is refused."""
    nobody = _nobody()
    project = tmp_path / "project"
    (project / ".zexus").mkdir(parents=True)
    (project / ".git").mkdir()
    app = project / "app.zx"
    app.write_text(VICTIM, encoding="utf-8")
    home = tmp_path / "home-of-nobody"
    _plant(home / "evil.db", app)
    (project / ".zexus" / "bcache.toml").write_text(f'path = "{home / "evil.db"}"\n', encoding="utf-8")
    assert "PWNED" in _run(app, project, **{ALLOW: "1"}).stdout
    _give(home, nobody)
    _refused_and_ran(_run(app, project), home / "evil.db")


def test_a_dangling_link_where_the_cache_will_be_created_is_refused(sticky: Path, tmp_path: Path) -> None:
    """A link another user planted is never followed: nothing is created at its target."""
    nobody = _nobody()
    app = tmp_path / "app.zx"
    app.write_text(VICTIM, encoding="utf-8")
    victims_dir = tmp_path / "victims-files"
    victims_dir.mkdir()
    target = victims_dir / "created-by-the-victim"
    cache_dir = sticky / "cache"
    cache_dir.mkdir(mode=0o755)
    link = cache_dir / "bcache.db"
    link.symlink_to(target)
    _give(cache_dir, nobody)
    _refused_and_ran(_run(app, tmp_path, ZEXUS_BCACHE_PATH=str(link)), link)
    assert not os.path.lexists(target), "no file of the other user's choosing is created"


def test_a_directory_writable_by_others_on_the_path_is_refused(tmp_path: Path) -> None:
    """A world-writable directory without the sticky bit anywhere above the cache: anyone can swap it."""
    open_dir = tmp_path / "open"
    (open_dir / "project" / ".zexus").mkdir(parents=True)
    open_dir.chmod(0o777)
    db = open_dir / "project" / ".zexus" / "bcache.db"
    with pytest.raises(StoreError, match=f"the directory {open_dir} on its path is writable by other users"):
        BytecodeCache(path=db, strict=True)
    assert not db.exists()


def test_a_group_writable_directory_of_another_group_is_refused(tmp_path: Path) -> None:
    nobody = _nobody()
    group_dir = tmp_path / "team"
    group_dir.mkdir()
    os.chown(group_dir, 0, nobody.pw_gid)
    group_dir.chmod(0o770)
    with pytest.raises(StoreError, match="its directory .* is writable by other users"):
        BytecodeCache(path=group_dir / "bcache.db", strict=True)


def test_the_directories_we_create_are_private_whatever_the_umask(tmp_path: Path) -> None:
    """Under umask 000 the cache's parent directories are 0700 and the file 0600."""
    app = tmp_path / "app.zx"
    app.write_text(VICTIM, encoding="utf-8")
    db = tmp_path / "a" / "b" / "c" / "bcache.db"
    old = os.umask(0)
    try:
        with BytecodeCache(path=db, strict=True) as cache:
            cache.compile_file_report(app)
    finally:
        os.umask(old)
    modes = [stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "a", tmp_path / "a" / "b", db.parent, db)]
    assert modes == [0o700, 0o700, 0o700, 0o600]


def test_root_owned_and_sticky_ancestors_are_trusted(sticky: Path) -> None:
    """/tmp/me/.zexus (ours, private) is fine: the sticky /tmp above it cannot swap what is ours."""
    mine = sticky / "me" / ".zexus" / "bcache.db"
    assert trust.problem(mine) is None
    trust.create_private(mine)
    assert trust.problem(mine) is None
    assert trust.problem("/usr/lib") is None, "root's files are trusted"


def test_the_opt_in_trusts_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    open_dir = tmp_path / "open"
    open_dir.mkdir()
    open_dir.chmod(0o777)
    assert trust.refusal(open_dir / "x.db", "cache") is not None
    monkeypatch.setenv(ALLOW, "1")
    assert trust.refusal(open_dir / "x.db", "cache") is None
