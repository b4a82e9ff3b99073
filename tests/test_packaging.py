"""Cheap packaging checks: what the sdist and the wheel will carry.

The real build (``python -m build`` + ``auditwheel repair`` + an install with
no compiler) is ``ci/wheel_smoke.sh``; here only the manifests are checked.
"""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys
import tomllib

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def sdist_files(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """The file list setuptools computes for the sdist (egg_info's SOURCES.txt)."""
    if not (ROOT / "setup.py").exists():
        pytest.skip("not a source checkout")
    egg = tmp_path_factory.mktemp("egg")
    # No extensions: the probe compile and cythonize are not needed for the list,
    # which MANIFEST.in makes complete on its own.
    env = dict(os.environ, FASTP2P_NO_EXTENSIONS="1")
    r = subprocess.run(
        [sys.executable, "setup.py", "-q", "egg_info", "--egg-base", str(egg)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    sources = next(egg.glob("*.egg-info")) / "SOURCES.txt"
    return set(sources.read_text().split())


def test_sdist_has_everything_to_build(sdist_files: set[str]) -> None:
    for name in ("setup.py", "pyproject.toml", "README.md", "MANIFEST.in", "fastp2p/py.typed"):
        assert name in sdist_files, name
    csrc = {p.relative_to(ROOT).as_posix() for p in (ROOT / "csrc").glob("*.[ch]")}
    assert csrc and csrc <= sdist_files, csrc - sdist_files
    native = ROOT / "fastp2p" / "_native"
    for pattern in ("*.pyx", "*.pxd", "*.pyi"):
        files = {p.relative_to(ROOT).as_posix() for p in native.glob(pattern)}
        assert files and files <= sdist_files, files - sdist_files


def test_setup_py_sources_exist() -> None:
    text = (ROOT / "setup.py").read_text()
    for m in re.finditer(r'native\("(\w+)"((?:, "[\w.]+")*)', text):
        assert (ROOT / "fastp2p" / "_native" / f"{m.group(1)}.pyx").exists(), m.group(1)
        for c in re.findall(r'"([\w.]+\.c)"', m.group(2)):
            assert (ROOT / "csrc" / c).exists(), c


def test_wheel_carries_stubs_not_sources() -> None:
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text())
    st = cfg["tool"]["setuptools"]
    assert set(st["package-data"]["fastp2p"]) >= {"py.typed", "_native/*.pyi"}
    assert set(st["exclude-package-data"]["*"]) >= {"*.c", "*.h", "*.pyx", "*.pxd"}
    # every compiled module has its stub
    for pyx in (ROOT / "fastp2p" / "_native").glob("*.pyx"):
        assert pyx.with_suffix(".pyi").exists(), pyx.name


def test_extras() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert any(d.startswith("prometheus-client") for d in extras["metrics"])
    assert any(d.startswith("sphinx") for d in extras["docs"])


def test_ci_scripts_present() -> None:
    for name in ("wheel_smoke.sh", "docs.sh"):
        path = ROOT / "ci" / name
        assert path.exists() and os.access(path, os.X_OK), name
    smoke = (ROOT / "ci" / "wheel_smoke.sh").read_text()
    for needle in ("--no-index", "auditwheel repair", "demo --size 16M", "CC=false"):
        assert needle in smoke, needle
