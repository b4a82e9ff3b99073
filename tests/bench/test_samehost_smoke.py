"""Smoke test of the same-host suite: ``--quick`` end to end, figures for the
baselines every machine has, missing baselines reported as missing."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytest.importorskip("numpy")
pytest.importorskip("zmq")


def _run(tmp_path: Path, hide: bool) -> tuple[dict, str, float]:
    env = dict(os.environ)
    pp = [str(ROOT)]
    if hide:
        # Shadow iceoryx2 and the libucx wheel so those baselines are missing for real:
        # the import fails / the wheel has no ucx_perftest binary.
        shim = tmp_path / "shim"
        (shim / "iceoryx2").mkdir(parents=True)
        (shim / "iceoryx2" / "__init__.py").write_text("raise ImportError('hidden by the test')\n")
        (shim / "libucx").mkdir()
        (shim / "libucx" / "__init__.py").write_text("")
        pp.insert(0, str(shim))
    if env.get("PYTHONPATH"):
        pp.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(pp)
    # the workers' own temp dir: whatever a backend leaves there (zmq's ipc:// socket
    # files, say) is a leak the test sees
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    env["TMPDIR"] = str(scratch)
    out = tmp_path / "samehost.json"
    t0 = time.monotonic()
    p = subprocess.run([sys.executable, "-m", "fastp2p.benchsuite.samehost", "--quick",
                        "--no-progress", "--json", str(out)],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150)
    dt = time.monotonic() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    left = sorted(x.name for x in scratch.iterdir())
    assert not left, f"the workers left files in their temp dir: {left}"
    return json.loads(out.read_text()), p.stdout, dt


def _rows(doc: dict, backend: str, scenario: str) -> list[dict]:
    return [r for r in doc["rows"] if r["backend"] == backend and r["scenario"] == scenario]


def test_quick_run_reports_figures_and_missing(tmp_path: Path) -> None:
    doc, table, dt = _run(tmp_path, hide=True)
    assert dt < 90, f"--quick took {dt:.0f}s"

    m = doc["machine"]
    for k in ("cpu_model", "cpu_count", "kernel", "python", "versions"):
        assert k in m
    assert "pyzmq" in m["versions"] and "numpy" in m["versions"]

    # figures for the baselines every machine has
    for be, scen, metric in (("memcpy", "bulk", "GB/s"), ("memcpy", "putget", "put GB/s"),
                             ("zmq-ipc", "bulk", "GB/s"), ("zmq-ipc", "rtt", "p50 us"),
                             ("fastp2p-tcp", "bulk", "GB/s"), ("fastp2p-tcp", "rtt", "p50 us"),
                             ("fastp2p-tcp", "streams", "total ms")):
        rows = _rows(doc, be, scen)
        assert rows, (be, scen)
        for r in rows:
            assert r["metrics"].get(metric, {}).get("median", 0) > 0, r
    # ratios against fastp2p tcp exist for zmq
    assert all("x tcp" in r["ratios"] for r in _rows(doc, "zmq-ipc", "bulk"))

    # hidden baselines: a "missing: <how to install>" cell, not a crash
    ice = _rows(doc, "iceoryx2", "bulk")
    assert ice and all(r["cell"].startswith("missing:") and "pip install iceoryx2" in r["cell"]
                       for r in ice)
    assert doc["backends"]["iceoryx2"]["status"].startswith("missing:")
    if shutil.which("ucx_perftest") is None:
        ucx = _rows(doc, "ucx-sm", "bulk")
        assert ucx and all(r["cell"].startswith("missing:") and "libucx-cu12" in r["cell"]
                           for r in ucx)
    assert "missing: pip install iceoryx2" in table

    # the shm backend: figures, or a cell that says why not (never absent)
    shm = _rows(doc, "fastp2p-shm", "bulk")
    assert shm
    for r in shm:
        assert r["metrics"] or r["cell"], r

    # targets are evaluated, never asserted
    assert any(t["target"].startswith("shm 64B RTT") for t in doc["targets"])


def _iox2_segments() -> set[str]:
    shm = Path("/dev/shm")
    if not shm.is_dir():
        return set()
    # (iceoryx2's 16-byte global management file stays by design)
    return {p.name for p in shm.iterdir() if p.name.startswith("iox2_") and "global_mgmt" not in p.name}


def test_iceoryx2_sessions_leave_no_shared_memory(tmp_path: Path) -> None:
    """Its workers leave with os._exit: the coordinator removes their dead nodes'
    segments (~86 MB of /dev/shm a session otherwise)."""
    pytest.importorskip("iceoryx2")
    before = _iox2_segments()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    p = subprocess.run([sys.executable, "-m", "fastp2p.benchsuite.samehost", "--quick", "--no-progress",
                        "--backends", "iceoryx2", "--scenarios", "rtt"],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "busy-poll receive()" in p.stdout  # it ran (a figure, not a missing cell)
    left = _iox2_segments() - before
    assert not left, f"iceoryx2 segments left in /dev/shm: {sorted(left)}"
