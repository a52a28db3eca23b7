"""Where the test programs live: our corpus, and the .zx programs that zexus 2.0 installs."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

CORPUS_DIR = Path(__file__).parent / "corpus"


def corpus_programs() -> list[Path]:
    """Our own deterministic programs under tests/corpus/."""
    return sorted(CORPUS_DIR.glob("*.zx"))


def upstream_programs() -> list[Path]:
    """The .zx programs the zexus wheel puts into site-packages (its top-level ``tests`` package)."""
    files = importlib.metadata.files("zexus") or []
    return sorted(Path(str(f.locate())) for f in files if f.suffix == ".zx" and f.parts[0] == "tests")


def all_programs() -> list[Path]:
    return corpus_programs() + upstream_programs()
