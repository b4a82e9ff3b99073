"""The ``fastp2p`` command line, run as real subprocesses."""

from __future__ import annotations

import asyncio
import os
import pathlib
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastp2p", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=ENV,
    )


def test_id_is_stable_for_a_key_file(tmp_path: pathlib.Path) -> None:
    key = tmp_path / "node.key"
    first = run_cli("id", "--key", str(key))
    assert first.returncode == 0, first.stderr
    assert oct(key.stat().st_mode & 0o777) == "0o600"
    second = run_cli("id", "--key", str(key))
    assert first.stdout == second.stdout
    assert first.stdout.strip().startswith("12D3KooW")


async def _listener(*extra: str, env: dict[str, str] | None = None,
                    ) -> tuple[asyncio.subprocess.Process, list[str]]:
    """A ``fastp2p listen`` subprocess (``env``: its environment, default ENV) and
    the address it printed."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastp2p", "listen", "--timeout", "60", *extra,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=env or ENV,
    )
    assert proc.stdout is not None
    async with asyncio.timeout(20):
        line = (await proc.stdout.readline()).decode().strip()
    assert "/p2p/12D3KooW" in line, line
    return proc, [line]


@pytest.mark.parametrize("muxer", ["yamux", "mplex"])
async def test_listen_ping_perf(muxer: str) -> None:
    proc, addrs = await _listener("--muxer", muxer)
    try:
        r = await asyncio.to_thread(run_cli, "ping", addrs[0], "--count", "3", "--muxer", muxer)
        assert r.returncode == 0, r.stderr
        lines = r.stdout.strip().splitlines()
        assert len(lines) == 3 and all(line.endswith(" ms") for line in lines)
        assert all(float(line.split()[0]) > 0 for line in lines)
        r = await asyncio.to_thread(
            run_cli, "perf", addrs[0], "--upload", "4MiB", "--download", "2MiB", "--muxer", muxer
        )
        assert r.returncode == 0, r.stderr
        assert "upload: 4194304 bytes" in r.stdout and "download: 2097152 bytes" in r.stdout
        assert "Gbit/s" in r.stdout and "latency (1-byte round trip" in r.stdout
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()
    assert proc.returncode == 0


async def test_busy_poll_option() -> None:
    proc, addrs = await _listener("--busy-poll", "200")
    try:
        r = await asyncio.to_thread(run_cli, "ping", addrs[0], "--count", "3", "--busy-poll", "200")
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.strip().splitlines()) == 3
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()
    assert proc.returncode == 0
    r = run_cli("ping", addrs[0], "--busy-poll", "-1")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "busy_poll_us" in lines[0], r.stderr


async def test_listen_serves_echo() -> None:
    import fastp2p

    proc, addrs = await _listener()
    try:
        async with fastp2p.Host() as host:
            peer = await host.connect(addrs[0])
            s = await host.open_stream(peer, "/echo/1.0.0")
            await s.write(b"echo me")
            await s.close_write()
            assert await s.read() == b"echo me"
            await s.aclose()
    finally:
        proc.terminate()
        await proc.wait()


def test_ping_failure_is_one_clear_line() -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    r = run_cli("ping", f"/ip4/127.0.0.1/tcp/{port}", "--count", "1", "--timeout", "5")
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "DialError" in lines[0], r.stderr


def test_bad_multiaddr_is_one_clear_line() -> None:
    r = run_cli("ping", "/ip4/999.1.1.1/tcp/1")
    assert r.returncode == 1
    assert len(r.stderr.strip().splitlines()) == 1 and "MultiaddrError" in r.stderr
