"""The package reads as the data flow: small modules, imports one way, click and rich only at the top.

Every module of zexus_bcache has a layer; a module may import (at any depth, lazily or not, but not
under ``TYPE_CHECKING``) only modules of lower layers, or of its own sub-package without a cycle.
A new module must be given a layer here, which is the point: where it sits is a decision.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "zexus_bcache"
MAX_LINES = 500

# Lowest first: pipeline → keys → codec → front → store → cache → cli (DEVELOPERS.md).
LAYERS: list[tuple[str, ...]] = [
    ("errors", "constants", "log", "render"),
    ("trust", "location"),
    ("config",),
    ("pipeline",),
    ("keys", "patterns"),
    ("codec", "codec_*"),
    ("front",),
    ("store", "store.*", "schema"),
    ("shared", "shared_*"),
    ("cache", "cache.*"),
    ("compat", "maintenance", "integration"),
    ("runner", "runner_*"),
    ("warm",),
    ("serverlink",),
    ("server", "server_*"),
    ("cli", "cli.*"),
    ("client",),
]
EXEMPT = {"__init__", "__main__"}  # the package's lazy attribute access and `python -m` entry
UI_LIBRARIES = ("click", "rich")


def _modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).with_suffix("").parts
        if parts[-1] == "__init__" and len(parts) > 1:
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _layer(module: str) -> int | None:
    for rank, names in enumerate(LAYERS):
        for name in names:
            if name == module or (name.endswith("*") and module.startswith(name[:-1])):
                return rank
    return None


def _imports(path: Path, module: str) -> tuple[set[str], set[str]]:
    """(modules of ours imported, top-level third-party names imported), TYPE_CHECKING blocks excluded."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(n) for child in node.body for n in ast.walk(child))
    package = module.split(".")[:-1] if path.name != "__init__.py" else module.split(".")
    ours: set[str] = set()
    others: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("zexus_bcache."):
                    ours.add(alias.name.removeprefix("zexus_bcache."))
                else:
                    others.add(alias.name.split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                if node.module and node.module.startswith("zexus_bcache"):
                    base = node.module.removeprefix("zexus_bcache").lstrip(".")
                    ours.update(_targets(base, node))
                elif node.module:
                    others.add(node.module.split(".")[0])
                continue
            anchor = package[: len(package) - (node.level - 1)] if node.level > 1 else package
            base = ".".join([*anchor, *(node.module.split(".") if node.module else [])])
            ours.update(_targets(base, node))
    return {m for m in ours if m}, others


def _targets(base: str, node: ast.ImportFrom) -> set[str]:
    """`from base import a, b`: the submodules a, b when they exist, else base itself."""
    modules = _modules()
    out = set()
    for alias in node.names:
        candidate = f"{base}.{alias.name}" if base else alias.name
        out.add(candidate if candidate in modules else base)
    return out


def test_no_module_is_over_the_limit() -> None:
    too_long = {
        name: n for name, path in _modules().items() if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    assert not too_long, f"modules over {MAX_LINES} lines: {too_long}"


def test_every_module_has_a_layer() -> None:
    unplaced = sorted(name for name in _modules() if name not in EXEMPT and _layer(name) is None)
    assert not unplaced, f"give these modules a layer in tests/test_layout.py: {unplaced}"


def test_imports_flow_one_way() -> None:
    modules = _modules()
    wrong = []
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        if name in EXEMPT:
            continue
        ours, _ = _imports(path, name)
        graph[name] = {m for m in ours if m in modules and m not in EXEMPT and m != name}
        for target in graph[name]:
            mine, theirs = _layer(name), _layer(target)
            if mine is None or theirs is None:
                continue
            same_family = name.split(".")[0] == target.split(".")[0] or mine == theirs
            if theirs > mine or (theirs == mine and not same_family):
                wrong.append(f"{name} (layer {mine}) imports {target} (layer {theirs})")
    assert not wrong, "imports against the flow:\n" + "\n".join(sorted(wrong))
    assert not _cycles(graph), f"import cycles: {_cycles(graph)}"


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append([*trail[trail.index(nxt):], nxt] if nxt in trail else [node, nxt])
            elif nxt not in state:
                visit(nxt, [*trail, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])
    return found


@pytest.mark.parametrize("library", UI_LIBRARIES)
def test_click_and_rich_only_in_the_command_line(library: str) -> None:
    users = sorted(
        name
        for name, path in _modules().items()
        if library in _imports(path, name)[1] and not (name == "cli" or name.startswith("cli.") or name == "render")
    )
    assert not users, f"{library} imported outside cli/ and render.py: {users}"


def test_the_layout_checker_sees_a_wrong_import(tmp_path: Path) -> None:
    """The checker itself: a lower layer importing a higher one is caught."""
    probe = tmp_path / "keys.py"
    probe.write_text("from .cache import BytecodeCache\nimport click\n", encoding="utf-8")
    ours, others = _imports(probe, "keys")
    assert "cache" in ours and "click" in others
    layer_keys = _layer("keys")
    layer_cache = _layer("cache")
    assert layer_keys is not None and layer_cache is not None
    assert layer_cache > layer_keys
    assert _cycles({"a": {"b"}, "b": {"a"}})


@pytest.mark.parametrize("tool", ["ruff", "mypy"])
def test_ruff_and_mypy_are_clean_with_the_project_config(tool: str) -> None:
    """`ruff check` (package, tests, bench, migrations) and `mypy` (package) pass with pyproject.toml's config."""
    import subprocess
    import sys

    root = PACKAGE.parent
    command = {
        "ruff": [sys.executable, "-m", "ruff", "check", "zexus_bcache", "tests", "bench", "migrations", "docs"],
        "mypy": [sys.executable, "-m", "mypy"],
    }[tool]
    done = subprocess.run(command, cwd=root, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
