"""The wheel: migrations ship inside it and a cache opens from a fresh virtual environment."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

CHECK = textwrap.dedent(
    """
    import pathlib, sys, zexus_bcache
    from zexus_bcache import BytecodeCache, store
    site = pathlib.Path(zexus_bcache.__file__).parent
    assert "site-packages" in str(site), site
    assert (site / "migrations" / "versions" / "0001_initial.py").exists()
    assert (site / "py.typed").exists()
    assert not (site.parent / "migrations").exists(), "no top-level 'migrations' package"
    with BytecodeCache(path="fresh.db", strict=True) as cache:
        assert cache.store.revision() == store.head_revision()
        bytecode = cache.compile_source('print(6 * 7);')
    with BytecodeCache(path="fresh.db", strict=True) as cache:
        assert cache.compile_source_report('print(6 * 7);').tier == "store"
    print("ok")
    """
)


def test_wheel_installs_and_opens_a_cache_in_a_fresh_venv(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(ROOT)],
                   check=True, timeout=600, capture_output=True)
    wheel = next(dist.glob("zexus_bcache-*.whl"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    install = subprocess.run([str(python), "-m", "pip", "install", "-q", str(wheel)], capture_output=True, text=True,
                             timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([str(python), "-c", CHECK], cwd=work, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "ok"
    # The console script, from the wheel: every sub-package shipped (the CLI and the store are packages).
    program = work / "six.zx"
    program.write_text("print(6 * 7);\n", encoding="utf-8")
    script = env_dir / "bin" / "zexus-bcache"
    env = {"PATH": str(env_dir / "bin"), "HOME": str(tmp_path), "ZEXUS_BCACHE_SERVER": "0"}
    for _ in range(2):
        ran = subprocess.run([str(script), "run", "--timings", str(program)], cwd=work, capture_output=True,
                             text=True, timeout=300, env=env)
        assert ran.returncode == 0 and ran.stdout.strip().splitlines()[-1] == "42", ran.stderr[-3000:]
    assert "hit (store)" in ran.stderr
    listed = subprocess.run([str(script), "ls", "--json"], cwd=work, capture_output=True, text=True, timeout=300,
                            env=env)
    assert listed.returncode == 0 and '"kind": "source"' in listed.stdout, listed.stderr[-3000:]
