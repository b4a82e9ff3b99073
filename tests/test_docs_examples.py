"""The ``>>>`` examples of the documentation pages (docs/*.rst) and of the
modules whose docstrings carry examples run in the regular test suite too
(``ci/docs.sh`` runs them through Sphinx's doctest builder as well)."""

from __future__ import annotations

import asyncio
import doctest
import importlib
import pathlib

import pytest

import fastp2p

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.DONT_ACCEPT_TRUE_FOR_1
PAGES = sorted(p.name for p in DOCS.glob("*.rst")) if DOCS.is_dir() else []


@pytest.mark.parametrize("page", PAGES)
def test_page_examples(page: str) -> None:
    res = doctest.testfile(
        str(DOCS / page), module_relative=False, optionflags=FLAGS, report=True,
        globs={"asyncio": asyncio, "fastp2p": fastp2p},
    )
    assert res.failed == 0, f"{res.failed} example(s) failed in docs/{page}"


@pytest.mark.parametrize("module", ["fastp2p.metrics", "fastp2p.logs", "fastp2p.doctor"])
def test_module_examples(module: str) -> None:
    res = doctest.testmod(importlib.import_module(module), optionflags=FLAGS)
    assert res.attempted > 0 and res.failed == 0
