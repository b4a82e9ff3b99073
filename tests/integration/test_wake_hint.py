"""The receive step's wake hint over real TCP + Noise: under AES-GCM the driver
sets the socket's SO_RCVLOWAT to the bytes certain to come (the rest of the
muxer frame in progress), back to 1 between frames, and a sender that pauses
between writes is never left waiting; under ChaCha20-Poly1305 it is not used
(measured slower there: fastp2p/transport/conn.py)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import socket
from typing import Any

import pytest

from fastp2p.config import HostConfig, NoiseConfig
from fastp2p.proto.mplex.session import PROTOCOL_ID as MPLEX
from fastp2p.proto.noise.cipher import cpu_has_aes
from fastp2p.proto.yamux.session import PROTOCOL_ID as YAMUX
from fastp2p.testing import host_pair
from fastp2p.transport.tcp import TcpConnection

PROTO = "/test/wake/1.0.0"


@pytest.mark.parametrize("muxer", [YAMUX, MPLEX])
@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
async def test_wake_hint_sets_rcvlowat_and_transfers_with_pauses(
        monkeypatch: pytest.MonkeyPatch, cipher: str, muxer: str) -> None:
    if cipher == "AESGCM" and not cpu_has_aes():
        pytest.skip("CPU without AES instructions: AESGCM is not offered")
    seen: list[tuple[int, int]] = []  # (hint, the socket's SO_RCVLOWAT after it)
    orig = TcpConnection.wake_after

    def spy(self: TcpConnection, n: int) -> None:
        orig(self, n)
        sock = self._transport.get_extra_info("socket")
        seen.append((n, sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)))

    monkeypatch.setattr(TcpConnection, "wake_after", spy)
    cfg = HostConfig(data_paths=("tcp",), muxers=(muxer,), noise=NoiseConfig(ciphers=(cipher,)))
    done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def sink(stream: Any) -> None:
        h = hashlib.sha256()
        buf = memoryview(bytearray(1 << 20))
        while n := await stream.readinto(buf):
            h.update(buf[:n])
        done.set_result(h.hexdigest())

    data = os.urandom(3 << 20)
    async with host_pair(cfg, handlers={PROTO: sink}) as (a, _b, peer):
        s = await a.open_stream(peer, PROTO)
        for i in range(0, len(data), 1 << 20):  # 1 MiB writes, a pause after each
            await s.write(data[i:i + (1 << 20)])
            await asyncio.sleep(0.05)
        await s.write(b"tail")  # a small last frame after a pause: wakes at once
        await s.close_write()
        async with asyncio.timeout(10):
            digest = await done
        await s.aclose()
    assert digest == hashlib.sha256(data + b"tail").hexdigest()
    if cipher == "ChaChaPoly":
        assert seen == []
        return
    hints = [n for n, _ in seen]
    assert max(hints) >= 128 * 1024 and hints[-1] == 0
    assert all(32 * 1024 <= n <= 256 * 1024 and n % (16 * 1024) == 0 for n in hints if n)
    assert all(low == max(n, 1) for n, low in seen)  # what the kernel holds
