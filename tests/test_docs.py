"""Docs cannot go stale: every transcript in README.md and docs/CLI_TOUR.md is what the commands print today.

docs/gen_docs.py reruns the commands (real processes, a fresh cache per document) and compares with
times, ages and dates masked; `python docs/gen_docs.py` rewrites the blocks after a change.
"""

from __future__ import annotations

import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _gen_docs() -> ModuleType:
    spec = importlib.util.spec_from_file_location("gen_docs", ROOT / "docs" / "gen_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["gen_docs"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


gen_docs = _gen_docs()


@pytest.mark.parametrize("document", gen_docs.DOCUMENTS)
def test_transcripts_match_what_the_commands_print(document: str) -> None:
    diffs = gen_docs.check((document,))
    assert not diffs, "the docs drifted; run `python docs/gen_docs.py` and review:\n" + "\n".join(diffs)


def test_every_document_has_transcripts() -> None:
    for document in gen_docs.DOCUMENTS:
        steps = gen_docs._steps((ROOT / document).read_text(encoding="utf-8"))
        assert sum(step.shown for step in steps) >= 3, document


def test_the_check_sees_a_changed_output() -> None:
    """The checker itself: a transcript whose output was edited by hand is caught; a time is not."""
    text = "```console\n$ echo 'warmed 3 files in 0.5 s'\nwarmed 3 files in 0.9 s\n```\n"
    assert gen_docs.mask(gen_docs.render(text)) == gen_docs.mask(text)
    edited = text.replace("warmed 3", "warmed 4", 2).replace("$ echo 'warmed 4", "$ echo 'warmed 3")
    assert gen_docs.mask(gen_docs.render(edited)) != gen_docs.mask(edited)
    assert re.search("<time>", gen_docs.mask(text))
