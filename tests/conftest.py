"""PostgreSQL for the tests of the shared tier: a fresh database per test, or a server of our own.

ZEXUS_BCACHE_TEST_PG_URL names a server and a role allowed CREATEDB (``.ci/run`` starts one with
``.ci/postgres.sh`` and exports it). Without it, the tests that need PostgreSQL skip, saying so.
"""

from __future__ import annotations

import os
import secrets
import shlex
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

# Runs of `zexus-bcache run` in tests are in-process: a per-user warm server left running after the
# suite would outlive it. tests/test_server.py starts its own servers in private runtime directories
# (it removes this variable from the environments it builds) and stops them.
os.environ.setdefault("ZEXUS_BCACHE_SERVER", "0")

PG_URL = os.environ.get("ZEXUS_BCACHE_TEST_PG_URL")
NO_PG = (
    "no PostgreSQL server: set ZEXUS_BCACHE_TEST_PG_URL to a postgresql+psycopg:// URL whose role may"
    " CREATEDB (`eval \"$(.ci/postgres.sh start)\"` starts a throwaway one; .ci/run does)"
)
POSTGRES_SH = Path(__file__).resolve().parent.parent / ".ci" / "postgres.sh"


def fresh_database(admin_url: str) -> tuple[str, str]:
    """Create an empty database on the server of admin_url; return (its URL, its name)."""
    import sqlalchemy as sa

    name = "zexus_t_" + secrets.token_hex(6)
    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            # From template0, which nobody connects to (template1 may be in use: CREATE DATABASE fails then).
            conn.exec_driver_sql(f"CREATE DATABASE {name} TEMPLATE template0")
    finally:
        engine.dispose()
    url = sa.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    return url, name


def drop_database(admin_url: str, name: str) -> None:
    """Drop a test database; a server-side session we may not end (autovacuum, another role's) is
    waited for, and a database left behind on the throwaway server is a warning, not a test error."""
    import time
    import warnings

    import sqlalchemy as sa

    engine = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        for attempt in range(10):
            try:
                with engine.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
                return
            except sa.exc.DBAPIError as exc:
                if attempt == 9:
                    warnings.warn(f"could not drop the test database {name}: {exc.orig}", stacklevel=2)
                    return
                time.sleep(0.5)
    finally:
        engine.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped after the test."""
    if not PG_URL:
        pytest.skip(NO_PG)
    url, name = fresh_database(PG_URL)
    try:
        yield url
    finally:
        drop_database(PG_URL, name)


@dataclass
class OwnServer:
    """A PostgreSQL server this test session started itself (so a test may stop it)."""

    url: str
    directory: str

    def stop(self, mode: str = "immediate") -> None:
        subprocess.run(["bash", str(POSTGRES_SH), "stop", self.directory, mode], timeout=60, check=False)


@pytest.fixture
def own_pg_server() -> Iterator[OwnServer]:
    """A throwaway server started by .ci/postgres.sh (no package install), stopped and deleted after."""
    env = dict(os.environ, ZEXUS_BCACHE_PG_PORT="0")  # any free port
    try:
        done = subprocess.run(
            ["bash", str(POSTGRES_SH), "start", "--no-install"], capture_output=True, text=True, timeout=120, env=env
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        pytest.skip(f"cannot start a PostgreSQL server of the test's own: {exc}")
    if done.returncode != 0:
        pytest.skip("cannot start a PostgreSQL server of the test's own: " + done.stderr.strip().replace("\n", " "))
    exported = dict(
        shlex.split(line.removeprefix("export "))[0].split("=", 1) for line in done.stdout.splitlines() if line.startswith("export ")
    )
    server = OwnServer(exported["ZEXUS_BCACHE_TEST_PG_URL"], exported["ZEXUS_BCACHE_TEST_PG_DIR"])
    try:
        yield server
    finally:
        server.stop("immediate")


# -- the command line's tests (tests/test_cli_*.py) -----------------------------------------------


@pytest.fixture
def cli_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A project directory of its own as the working directory, with no cache settings from the environment."""
    for name in ("PATH", "MAX_ENTRIES", "MAX_BYTES", "POLICY", "MAX_MEMORY_MB", "SHARED_URL", "SHARED_READ_ONLY",
                 "SHARED_KEY", "SHARED_KEY_FILE", "ALLOW_WORLD_WRITABLE"):
        monkeypatch.delenv(f"ZEXUS_BCACHE_{name}", raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".zexus").mkdir()  # the project root marker: config files outside tmp_path are not read
    return tmp_path


@pytest.fixture
def sources(tmp_path: Path) -> list[Path]:
    """A few corpus programs copied into the project."""
    import shutil

    from cli_helpers import PROGRAMS
    from zx_programs import CORPUS_DIR

    directory = tmp_path / "src"
    directory.mkdir()
    return [Path(shutil.copy(CORPUS_DIR / name, directory / name)) for name in PROGRAMS]


@pytest.fixture
def db(tmp_path: Path, sources: list[Path]) -> Path:
    """A cache holding the programs (file entries with their paths) and one snippet (no path)."""
    from cli_helpers import SNIPPET

    from zexus_bcache.cache import BytecodeCache

    path = tmp_path / "cache.db"
    with BytecodeCache(path=path) as cache:
        for source in sources:
            cache.compile_file(source)
        cache.compile_source(SNIPPET)
        cache.compile_file(sources[0])  # a hit
    return path
