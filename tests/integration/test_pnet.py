"""Private networks (pnet): PSK-protected connections between fastp2p hosts.

Real loopback TCP sockets (and the memory transport), real XSalsa20 (native, or
the pure twin under FASTP2P_NO_EXTENSIONS=1). Every test runs under the leak
checks of tests/resource_guard.py (fds, tasks, threads). Interop with js-libp2p's
@libp2p/pnet is in tests/interop/test_pnet_interop.py.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import subprocess
import sys
import time

import pytest

import fastp2p
from fastp2p import _accel
from fastp2p.config import HostConfig
from fastp2p.errors import P2PError, PnetError, PskFormatError
from fastp2p.proto.pnet import encode_psk_file
from fastp2p.services import serve_echo
from fastp2p.services.echo import PROTOCOL_ID as ECHO
from fastp2p.transport.memory import MemoryHub, MemoryTransport
from fastp2p.transport.pnet import PnetConnection

PSK = bytes(range(32))
OTHER = bytes(range(1, 33))
# the pure XSalsa20 runs at about 1 MB/s: keep its payloads small
NBYTES = (1 << 20) if _accel.HAVE_NATIVE else (32 << 10)
TCP_ONLY = ("tcp",)
MUXERS = ["/yamux/1.0.0", "/mplex/6.7.0"]
ROOT = pathlib.Path(__file__).resolve().parents[2]
CLI_ENV = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


async def echo_roundtrip(host: fastp2p.Host, peer: fastp2p.PeerID, nbytes: int = NBYTES) -> None:
    data = os.urandom(nbytes)
    s = await host.open_stream(peer, ECHO)

    async def send() -> None:
        await s.write(data)
        await s.close_write()

    sender = asyncio.create_task(send())
    got = await s.read()
    await sender
    await s.aclose()
    assert got == data


@pytest.mark.parametrize("muxer", MUXERS, ids=["yamux", "mplex"])
async def test_same_psk_connects_and_echoes(muxer: str) -> None:
    cfg = HostConfig(psk=PSK, muxers=(muxer,), data_paths=TCP_ONLY)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b, fastp2p.Host(config=cfg) as a:
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        assert conn is not None and isinstance(conn._raw, PnetConnection)
        await echo_roundtrip(a, peer)
        assert await a.ping(peer) >= 0


async def test_wire_is_xsalsa20_of_multistream() -> None:
    """A hand-written pnet client: nonce, then XSalsa20(psk, nonce) of multistream."""
    cfg = HostConfig(psk=PSK, data_paths=TCP_ONLY)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b:
        host, port = b.addrs[0].tcp_host_port()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            nonce = os.urandom(24)
            send = _accel.XSalsa20(PSK, nonce)
            hello = b"\x13/multistream/1.0.0\n\x07/noise\n"
            writer.write(nonce + bytes(send.apply_copy(hello)))
            got = b""
            async with asyncio.timeout(10):
                while len(got) < 24 + len(hello):
                    chunk = await reader.read(4096)
                    assert chunk, "listener closed"
                    got += chunk
            assert b"multistream" not in got  # nothing in the clear
            plain = bytes(_accel.XSalsa20(PSK, got[:24]).apply_copy(got[24:]))
            assert plain.startswith(hello), plain
        finally:
            writer.close()
            await writer.wait_closed()


@pytest.mark.parametrize(
    "dial_psk,listen_psk",
    [(PSK, OTHER), (PSK, None), (None, PSK)],
    ids=["different-psk", "listener-public", "dialer-public"],
)
async def test_mismatch_fails_fast_without_leaks(dial_psk: bytes | None, listen_psk: bytes | None) -> None:
    listen_cfg = HostConfig(psk=listen_psk, data_paths=TCP_ONLY)
    dial_cfg = HostConfig(psk=dial_psk, data_paths=TCP_ONLY)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=listen_cfg) as b, fastp2p.Host(
        config=dial_cfg
    ) as a:
        t0 = time.monotonic()
        with pytest.raises(P2PError) as info:
            await a.connect(b.full_addrs[0])
        elapsed = time.monotonic() - t0
        assert elapsed < 5.0, f"took {elapsed:.1f} s (must fail fast, not time out)"
        if dial_psk is not None:
            # the pnet side names the cause, typed
            assert isinstance(info.value, PnetError), repr(info.value)
            assert "wrong or missing PSK" in str(info.value)
        assert a.connection(b.peer_id) is None
        for _ in range(200):  # the listener gave up on it too (bounded)
            if not b._pending_inbound:
                break
            await asyncio.sleep(0.01)
        assert not b._pending_inbound and b.connection(a.peer_id) is None
        assert not a.connections and not b.connections


async def test_psk_from_key_file_path_and_bytes(tmp_path) -> None:
    path = tmp_path / "swarm.key"
    path.write_bytes(encode_psk_file(PSK))
    from_path = HostConfig(psk=str(path), data_paths=TCP_ONLY)
    from_bytes = HostConfig(psk=encode_psk_file(PSK, "/base64/"), data_paths=TCP_ONLY)
    assert from_path.psk == from_bytes.psk == PSK
    assert "psk" not in repr(from_path)  # never printed
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=from_path) as b, fastp2p.Host(
        config=from_bytes
    ) as a:
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        await echo_roundtrip(a, peer, 4096)
    path.write_bytes(b"/key/swarm/psk/1.0.0/\n/base16/\nzz\n")
    with pytest.raises(PskFormatError):
        HostConfig(psk=path)


async def test_memory_transport_with_psk() -> None:
    hub = MemoryHub()
    cfg = HostConfig(psk=PSK)
    other = HostConfig(psk=OTHER)
    async with fastp2p.Host(
        listen=["/memory/0"], config=cfg, transports=[MemoryTransport(hub)]
    ) as b, fastp2p.Host(config=cfg, transports=[MemoryTransport(hub)]) as a, fastp2p.Host(
        config=other, transports=[MemoryTransport(hub)]
    ) as c:
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        await echo_roundtrip(a, peer, 64 << 10)
        with pytest.raises(PnetError):
            await c.connect(b.full_addrs[0])


@pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="shared-memory rings need the native build")
async def test_shm_upgrade_still_works_with_psk() -> None:
    """shm is negotiated after Noise (between peers that proved the PSK); it must still happen."""
    cfg = HostConfig(psk=PSK, data_paths=("shm", "tcp"))
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b, fastp2p.Host(config=cfg) as a:
        serve_echo(b)
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        assert conn is not None
        for _ in range(300):
            if conn.data_path == "shm":
                break
            await asyncio.sleep(0.01)
        assert conn.data_path == "shm", conn.data_path_reason
        await echo_roundtrip(a, peer)


async def test_force_pnet_refuses_public_connections(monkeypatch) -> None:
    monkeypatch.setenv("LIBP2P_FORCE_PNET", "1")
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=HostConfig(psk=PSK)) as b, fastp2p.Host(
        config=HostConfig()
    ) as a:
        with pytest.raises(PnetError, match="LIBP2P_FORCE_PNET"):
            await a.connect(b.full_addrs[0])
        # with a PSK the safeguard is satisfied
        async with fastp2p.Host(config=HostConfig(psk=PSK)) as c:
            assert await c.connect(b.full_addrs[0]) == b.peer_id


async def test_raw_socket_garbage_is_dropped() -> None:
    """A non-libp2p client sending random bytes: only that connection goes, fast."""
    cfg = HostConfig(psk=PSK, data_paths=TCP_ONLY)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b:
        host, port = b.addrs[0].tcp_host_port()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            writer.write(os.urandom(4096))
            t0 = time.monotonic()
            async with asyncio.timeout(5):  # the host closes it; read until EOF (or reset)
                with contextlib.suppress(ConnectionResetError):
                    while await reader.read(65536):
                        pass
            assert time.monotonic() - t0 < 5
        finally:
            writer.close()
            with contextlib.suppress(ConnectionResetError):
                await writer.wait_closed()
        assert not b.connections and not b._pending_inbound


# -- the command line ------------------------------------------------------------------


def _cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "fastp2p", *args], capture_output=True, text=True, timeout=timeout, env=CLI_ENV
    )


async def test_cli_psk_listen_ping_and_wrong_key(tmp_path: pathlib.Path) -> None:
    good, bad = tmp_path / "swarm.key", tmp_path / "other.key"
    for f in (good, bad):
        r = await asyncio.to_thread(_cli, "psk", str(f))
        assert r.returncode == 0, r.stderr
        assert oct(f.stat().st_mode & 0o777) == "0o600"
    r = await asyncio.to_thread(_cli, "psk", str(good))  # never overwrites
    assert r.returncode == 1 and "exists" in r.stderr
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastp2p", "listen", "--timeout", "60", "--psk", str(good),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE, env=CLI_ENV,
    )
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(20):
            addr = (await proc.stdout.readline()).decode().strip()
        assert "/p2p/12D3KooW" in addr, addr
        r = await asyncio.to_thread(_cli, "ping", addr, "--count", "2", "--psk", str(good))
        assert r.returncode == 0, r.stderr
        assert len(r.stdout.strip().splitlines()) == 2
        perf_bytes = "1MiB" if _accel.HAVE_NATIVE else "16KiB"
        r = await asyncio.to_thread(
            _cli, "perf", addr, "--upload", perf_bytes, "--download", perf_bytes, "--data-path", "tcp",
            "--psk", str(good),
        )
        assert r.returncode == 0, r.stderr
        for key_args in (["--psk", str(bad)], []):
            t0 = time.monotonic()
            r = await asyncio.to_thread(_cli, "ping", addr, "--count", "1", *key_args)
            assert r.returncode == 1, r.stdout
            assert time.monotonic() - t0 < 20
            if key_args:
                assert "PnetError" in r.stderr and "wrong or missing PSK" in r.stderr, r.stderr
        broken = tmp_path / "broken.key"
        broken.write_text("/key/swarm/psk/1.0.0/\n/base16/\nabc\n")
        r = await asyncio.to_thread(_cli, "ping", addr, "--psk", str(broken))
        assert r.returncode == 1 and "PskFormatError" in r.stderr, r.stderr
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()
    assert proc.returncode == 0
