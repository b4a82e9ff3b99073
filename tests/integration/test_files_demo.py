"""Content-addressed file sharing and the ``fastp2p demo`` command."""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

from fastp2p.services.files import (
    FileNotFoundOnPeerError,
    FileShare,
    HashMismatchError,
    hash_file,
)
from fastp2p.testing import host_pair

ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("size", [0, 1, 5 << 20])
async def test_share_and_fetch_verified(tmp_path: pathlib.Path, size: int) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(size))
    async with host_pair() as (a, b, peer):
        digest = FileShare(b).add_file(src)
        assert digest == hashlib.sha256(src.read_bytes()).hexdigest()
        seen: list[int] = []
        res = await FileShare(a).fetch(peer, digest, tmp_path / "dst.bin", progress=lambda g, s: seen.append(g))
        assert res.size == size and (tmp_path / "dst.bin").read_bytes() == src.read_bytes()
        assert seen and seen[-1] == size
        assert hash_file(tmp_path / "dst.bin") == digest


async def test_unknown_hash(tmp_path: pathlib.Path) -> None:
    async with host_pair() as (a, b, peer):
        FileShare(b)
        with pytest.raises(FileNotFoundOnPeerError):
            await FileShare(a).fetch(peer, "00" * 32, tmp_path / "x")
        assert not (tmp_path / "x").exists()


async def test_corrupting_peer_is_detected(tmp_path: pathlib.Path) -> None:
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(100_000))
    async with host_pair() as (a, b, peer):
        share = FileShare(b)
        # Advertise the digest of different content: the fetcher must notice.
        share.add_file(src, digest="11" * 32)
        with pytest.raises(HashMismatchError):
            await FileShare(a).fetch(peer, "11" * 32, tmp_path / "dst.bin")
        assert not (tmp_path / "dst.bin").exists()


@pytest.mark.parametrize("peers,muxer", [(2, "yamux"), (3, "mplex")])
def test_demo_command(peers: int, muxer: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    # Its own process group: whatever happens (a hang, the timeout, a failed assert),
    # the orchestrator and every peer process it started are killed before the test ends.
    proc = subprocess.Popen(
        [sys.executable, "-m", "fastp2p", "demo", "--size", "8MiB", "--peers", str(peers),
         "--muxer", muxer],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=100)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert proc.returncode == 0, out + err
    assert out.count("sha256 verified") == peers - 1
    assert "demo OK" in out


def test_demo_peer_dies_with_a_killed_orchestrator(tmp_path: pathlib.Path) -> None:
    """A demo peer process follows its orchestrator when that is SIGKILLed (no cleanup runs),
    even though its stdin (the usual stop signal) stays open: here the test, not the killed
    orchestrator, holds that pipe."""
    src = tmp_path / "f.bin"
    src.write_bytes(os.urandom(1000))
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "PYTHONUNBUFFERED": "1"}
    peer_cmd = [sys.executable, "-m", "fastp2p.demo", "seed", "--file", str(src), "--muxer", "/yamux/1.0.0"]
    orchestrator = (
        "import subprocess, sys, time\n"
        f"subprocess.Popen({peer_cmd!r})\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", orchestrator], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=env, start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        assert '"event": "ready"' in proc.stdout.readline()  # the peer is up and serving
        children = _children_of(proc.pid)
        assert len(children) == 1
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and _alive(children[0]):
            time.sleep(0.05)
        assert not _alive(children[0]), "the peer process outlived its orchestrator"
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()  # closes the pipes


def _children_of(pid: int) -> list[int]:
    out = []
    for d in pathlib.Path("/proc").iterdir():
        if d.name.isdigit():
            with contextlib.suppress(OSError):
                fields = (d / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[1]) == pid:
                    out.append(int(d.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = pathlib.Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its parent, init, reaps it)


def test_demo_fails_on_missing_file(tmp_path: pathlib.Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run(
        [sys.executable, "-m", "fastp2p", "demo", "--file", str(tmp_path / "missing")],
        capture_output=True, text=True, timeout=60, env=env,
    )
    assert r.returncode != 0 and "no such file" in r.stderr
