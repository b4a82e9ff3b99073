"""Sphinx configuration of the fastp2p documentation (built by ci/docs.sh)."""

from __future__ import annotations

import doctest
import os
import sys

sys.path.insert(0, os.path.abspath(".."))

from fastp2p._version import __version__  # noqa: E402

project = "fastp2p"
author = "the fastp2p authors"
copyright = "fastp2p authors"
version = release = __version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.viewcode",
]

# Google-style docstrings (DESIGN 5.8): Args/Returns/Raises, plus the
# "Cancellation:" paragraph every coroutine carries.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_ivar = True
napoleon_custom_sections = [("Cancellation", "notes_style"), ("Rules", "notes_style")]

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}
# Compiled modules are documented through their pure twins and .pyi stubs.
autodoc_mock_imports: list[str] = []

exclude_patterns = ["_build"]
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {"description": "libp2p-compatible P2P networking with a C hot path"}

# The doctest builder runs the examples of these pages and of the docstrings
# autodoc pulls in; asyncio examples run with asyncio.run.
doctest_global_setup = """
import asyncio
import fastp2p
"""
doctest_default_flags = (
    doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.DONT_ACCEPT_TRUE_FOR_1
)
