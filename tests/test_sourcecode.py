"""Source-level rules, as tests: layering of fastp2p.proto, and ruff."""

from __future__ import annotations

import ast
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent
PKG = ROOT / "fastp2p"

# DESIGN 5.1: sans-IO modules never touch I/O, clocks, drivers or the native switch.
FORBIDDEN_IN_PROTO = (
    "asyncio",
    "socket",
    "time",
    "selectors",
    "threading",
    "fastp2p.transport",
    "fastp2p.host",
    "fastp2p._native",
    "fastp2p._accel",
    "fastp2p.services",
)


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


@pytest.mark.parametrize(
    "path", sorted((PKG / "proto").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_proto_imports_no_io(path: pathlib.Path) -> None:
    bad = {
        n
        for n in _imports(path)
        for f in FORBIDDEN_IN_PROTO
        if n == f or n.startswith(f + ".")
    }
    assert not bad, f"{path.relative_to(ROOT)} imports {sorted(bad)} (proto/ must stay sans-IO)"


def test_native_modules_import_nothing_from_drivers() -> None:
    for pyx in (PKG / "_native").glob("*.pyx"):
        text = pyx.read_text()
        for f in ("fastp2p.transport", "fastp2p.host", "asyncio"):
            assert f not in text, f"{pyx.name} must not depend on {f}"


def test_ruff_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        try:
            import ruff as _ruff  # noqa: F401
        except ImportError:
            pytest.skip("ruff not installed (pip install ruff, part of the [test] extra)")
        cmd = [sys.executable, "-m", "ruff"]
    else:
        cmd = [ruff]
    r = subprocess.run([*cmd, "check", "fastp2p", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_mypy_clean() -> None:
    try:
        import mypy  # noqa: F401
    except ImportError:
        pytest.skip("mypy not installed (pip install mypy, part of the [test] extra)")
    r = subprocess.run(
        [sys.executable, "-m", "mypy", "fastp2p"], cwd=ROOT, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stdout + r.stderr
