"""Parallel seal and open end to end (issue 12 item 4), over real TCP + Noise: two hosts
with the C pool forced on (the default turns it on with 4 or more CPUs only) move large
writes both ways through yamux and mplex, with readers that lend buffers (``readinto``)
and readers that take chunks (``read``), several streams at once; every byte arrives
in order on the right stream, and the frames really went through the pool."""

from __future__ import annotations

import asyncio
import hashlib
import os
from typing import Any

import pytest

from fastp2p import _accel
from fastp2p.config import HostConfig, NoiseConfig
from fastp2p.testing import host_pair

pytestmark = pytest.mark.skipif(_accel.native is None,
                                reason="pure build: the pure NoiseCipher seals and opens serially")
aead = pytest.importorskip("fastp2p._native.aead", reason="pure build: no native cipher")

PROTO = "/test/parallel/1.0.0"
MiB = 1 << 20


def _config(muxer: str, cipher: str) -> HostConfig:
    # thresholds low enough that most writes and most reads of this test take the pool
    noise = NoiseConfig(ciphers=(cipher,), parallel_seal=True, parallel_seal_threads=3,
                        parallel_seal_min=256 * 1024, parallel_open_min=64 * 1024)
    return HostConfig(data_paths=("tcp",), muxers=(muxer,), noise=noise)


async def _echo(stream: Any) -> None:
    """Echoes every byte back, reading with ``readinto`` into one buffer it reuses."""
    buf = memoryview(bytearray(3 * MiB))
    while n := await stream.readinto(buf):
        await stream.write(bytes(buf[:n]))
    await stream.close_write()


async def _one_stream(cli: Any, peer: Any, data: bytes, sizes: list[int]) -> None:
    s = await cli.open_stream(peer, PROTO)

    async def writer() -> None:
        off, i = 0, 0
        while off < len(data):
            k = sizes[i % len(sizes)]
            await s.write(memoryview(data)[off:off + k])
            off, i = off + k, i + 1
        await s.close_write()

    async def reader() -> bytes:
        h = hashlib.sha256()
        while chunk := await s.read(1 << 22):
            h.update(chunk)
        return h.digest()

    _, digest = await asyncio.gather(writer(), reader())
    assert digest == hashlib.sha256(data).digest()
    await s.aclose()


@pytest.mark.parametrize("cipher", ["AESGCM", "ChaChaPoly"])
@pytest.mark.parametrize("muxer", ["/yamux/1.0.0", "/mplex/6.7.0"])
async def test_large_writes_both_ways_on_several_streams(muxer: str, cipher: str) -> None:
    cfg = _config(muxer, cipher)
    async with asyncio.timeout(120), host_pair(cfg, handlers={PROTO: _echo}) as (cli, srv, peer):
        data = [os.urandom(12 * MiB + 12345) for _ in range(3)]
        # 4 MiB and 1 MiB writes (the pool), 70 KB and 1 KB ones (serial), mixed
        sizes = [[4 * MiB, 1000, 70_001], [MiB + 17, 300 * 1024], [2 * MiB]]
        await asyncio.gather(*(_one_stream(cli, peer, d, z) for d, z in zip(data, sizes, strict=True)))
        st, srv_st = cli.connections[0].statistics(), srv.connections[0].statistics()
        assert st["cipher"] == cipher
        # most of the 36 MB each way went through the pool, both ways: the echo
        # lends its buffer (runs opened in place, any cipher); the client reads
        # chunks (runs opened into a block, then copied: ChaCha20-Poly1305 only)
        assert st["bytes_sealed_in_parallel"] > 18 * MiB
        assert srv_st["bytes_opened_in_parallel"] > MiB, srv_st
        assert (st["bytes_opened_in_parallel"] > 9 * MiB) == (cipher == "ChaChaPoly"), st
    assert aead.pool_threads() >= 3


async def test_default_thresholds_take_a_muxers_1mib_writes_to_the_pool() -> None:
    """With the default thresholds, a 1 MiB stream write (one seal call of four
    256 KiB yamux frames) and the 256 KiB reads of it go through the pool."""
    cfg = HostConfig(data_paths=("tcp",), noise=NoiseConfig(parallel_seal=True, parallel_seal_threads=2))
    async with asyncio.timeout(60), host_pair(cfg, handlers={PROTO: _echo}) as (cli, srv, peer):
        data = os.urandom(16 * MiB)
        await _one_stream(cli, peer, data, [MiB])
        st = cli.connections[0].statistics()
        assert st["bytes_sealed_in_parallel"] >= 8 * MiB, st
        assert srv.connections[0].statistics()["bytes_opened_in_parallel"] > 0
