"""Parallel sealing (issue 12 item 4): frame ranges sealed on pool threads with the GIL
released give the same wire bytes and nonces as one serial seal, and the receiver opens
them. Forced on here (2 cores: it cannot be faster here, only correct)."""

from __future__ import annotations

import os
import threading

import pytest

from fastp2p import _accel
from fastp2p.errors import ClosedResourceError

pytestmark = pytest.mark.skipif(
    _accel.native is None, reason="pure build: the pure NoiseCipher seals serially (parallel_seal is a no-op)")

MAXP = 65519


def _ciphers(kind: str):
    key = os.urandom(32)
    NC = _accel.native.NoiseCipher  # type: ignore[union-attr]
    return NC(key, 5, kind), NC(key, 5, kind), NC(key, 5, kind)


@pytest.mark.parametrize("kind", ["ChaChaPoly", "AESGCM"])
@pytest.mark.parametrize("threads", [1, 3, 8])
def test_parallel_seal_is_byte_identical(kind: str, threads: int) -> None:
    par, ser, rx = _ciphers(kind)
    par.parallel_seal(threads, 0)
    data = os.urandom(9 * MAXP + 1234)
    for size in (2 * MAXP, 2 * MAXP + 1, 5 * MAXP - 7, len(data), 3 * MAXP):
        mv = memoryview(data)[:size]
        # odd iovec boundaries, one empty piece
        bufs = [mv[:100], mv[100:100], mv[100:MAXP + 3], mv[MAXP + 3:]]
        a = par.seal_frames(bufs)
        b = ser.seal_frames(bufs)
        assert bytes(a) == bytes(b) and par.nonce == ser.nonce
        assert bytes(rx.open_frames(a)) == bytes(mv)
    # below the threshold and tiny writes still go the serial way
    par.parallel_seal(threads, 1 << 20)
    assert bytes(par.seal_frames(b"x" * 70000)) == bytes(ser.seal_frames(b"x" * 70000))
    assert bytes(par.seal_frames(b"y")) == bytes(ser.seal_frames(b"y"))


def test_parallel_seal_uses_the_pool_and_releases_it_cleanly() -> None:
    par, ser, rx = _ciphers("AESGCM")
    par.parallel_seal(2, 0)
    data = os.urandom(16 * MAXP)
    assert bytes(par.seal_frames(data)) == bytes(ser.seal_frames(data))
    assert any(t.name.startswith("fastp2p-seal") for t in threading.enumerate())
    par.close()  # frees the clones too; a closed cipher refuses
    with pytest.raises(ClosedResourceError):
        par.seal_frames(data)
    with pytest.raises(ValueError):
        ser.parallel_seal(-1)


def test_config_switch() -> None:
    from fastp2p.config import NoiseConfig

    assert NoiseConfig(parallel_seal=False).seal_threads() == 0
    assert NoiseConfig(parallel_seal=True, parallel_seal_threads=3).seal_threads() == 3
    assert NoiseConfig(parallel_seal=True).seal_threads() >= 1
    cpus = len(os.sched_getaffinity(0))
    assert (NoiseConfig().seal_threads() > 0) == (cpus >= 4)
    with pytest.raises(ValueError):
        NoiseConfig(parallel_seal_threads=-1)


async def test_hosts_with_parallel_seal_forced_on() -> None:
    import asyncio
    import hashlib

    import fastp2p
    from fastp2p.config import HostConfig, NoiseConfig

    cfg = HostConfig(data_paths=("tcp",), noise=NoiseConfig(parallel_seal=True, parallel_seal_threads=2,
                                                            parallel_seal_min=0))
    data = os.urandom(8 << 20)
    got = asyncio.get_running_loop().create_future()

    async def sink(stream) -> None:
        h = hashlib.sha256()
        buf = bytearray(1 << 20)
        while n := await stream.readinto(buf):
            h.update(memoryview(buf)[:n])
        await stream.write(h.digest())
        await stream.aclose()

    async with asyncio.timeout(60), fastp2p.Host(
        fastp2p.Ed25519PrivateKey.generate(), listen=["/ip4/127.0.0.1/tcp/0"], config=cfg
    ) as srv, fastp2p.Host(fastp2p.Ed25519PrivateKey.generate(), config=cfg) as cli:
        srv.set_handler("/t/1", sink)
        peer = await cli.connect(f"{srv.addrs[0]}/p2p/{srv.peer_id}")
        s = await cli.open_stream(peer, "/t/1")
        for off in range(0, len(data), 3 << 20):  # writes of 3 MiB: sealed on the pool
            await s.write(memoryview(data)[off:off + (3 << 20)])
        await s.close_write()
        assert await s.read() == hashlib.sha256(data).digest()
        await s.aclose()
    got.cancel()
