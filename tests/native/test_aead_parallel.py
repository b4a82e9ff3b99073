"""Parallel sealing and opening (issue 12 item 4): frame ranges sealed, and runs of frames
opened, on the C pool's threads with the GIL released give the same wire bytes, plaintext,
nonces and failures as one serial seal or open. Forced on here (on 2 cores it is not what
the default does, but it must be as correct)."""

from __future__ import annotations

import os
import threading

import pytest

from fastp2p import _accel
from fastp2p.errors import ClosedResourceError, DecryptError, FrameError

pytestmark = pytest.mark.skipif(
    _accel.native is None, reason="pure build: the pure NoiseCipher seals serially (parallel_seal is a no-op)")
aead = pytest.importorskip("fastp2p._native.aead", reason="pure build: no native cipher")

MAXP = 65519


def _ciphers(kind: str, key: bytes | None = None):
    key = key or os.urandom(32)
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
    before = threading.active_count()
    assert bytes(par.seal_frames(data)) == bytes(ser.seal_frames(data))
    # C threads, started once per process: no Python thread per write or per cipher
    assert aead.pool_threads() >= 2
    assert threading.active_count() == before
    par.close()  # frees the clones too; a closed cipher refuses
    with pytest.raises(ClosedResourceError):
        par.seal_frames(data)
    with pytest.raises(ValueError):
        ser.parallel_seal(-1)
    with pytest.raises(ValueError):
        ser.parallel_open(-1)


@pytest.mark.parametrize("kind", ["ChaChaPoly", "AESGCM"])
@pytest.mark.parametrize("threads", [1, 3, 8])
def test_parallel_open_matches_a_serial_open(kind: str, threads: int) -> None:
    key = os.urandom(32)
    tx, rs, rp = _ciphers(kind, key)
    rp.parallel_open(threads, 0)
    # frames of every size: full ones, short ones, and a run of small writes
    cuts = [0, 7 * MAXP + 5, 7 * MAXP + 9, *range(7 * MAXP + 1009, 8 * MAXP, 1000), 11 * MAXP + 77]
    data = os.urandom(cuts[-1])
    wire = b"".join(bytes(tx.seal_frames(data[a:b])) for a, b in zip(cuts, cuts[1:], strict=False))
    # reads cut at odd places: a partial frame carried from one read to the next
    for cut in (0, 1, 5 * MAXP + 3, len(wire) - 10):
        a, b = wire[:cut], wire[cut:]
        got_s = bytes(rs.open_frames(a)) + bytes(rs.open_frames(b))
        got_p = bytes(rp.open_frames(a)) + bytes(rp.open_frames(b))
        assert got_s == got_p == data[:len(got_s)]
        assert rs.nonce == rp.nonce and rs.buffered == rp.buffered == 0
        rs, rp = _ciphers(kind, key)[1:]
        rp.parallel_open(threads, 0)


@pytest.mark.parametrize("kind", ["ChaChaPoly", "AESGCM"])
def test_parallel_open_of_a_forged_frame_fails_like_a_serial_open(kind: str) -> None:
    tx, rs, rp = _ciphers(kind)
    rp.parallel_open(3, 0)
    wire = bytearray(bytes(tx.seal_frames(os.urandom(8 * MAXP))))
    wire[5 * (MAXP + 18) + 40] ^= 1  # inside the sixth frame
    for rx in (rs, rp):
        with pytest.raises(DecryptError):
            rx.open_frames(wire)
        with pytest.raises(DecryptError):  # and the cipher stays dead
            rx.open_frames(b"")
    # a length below the tag after whole frames: FrameError, as serial
    tx, rs, rp = _ciphers(kind)
    rp.parallel_open(3, 0)
    wire = bytes(tx.seal_frames(os.urandom(4 * MAXP))) + b"\x00\x05xxxxx"
    for rx in (rs, rp):
        with pytest.raises(FrameError):
            rx.open_frames(wire)


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


def test_the_pool_without_spinning_gives_the_same_bytes() -> None:
    """FASTP2P_PAR_SPIN_US=0 (read once per process): pool threads sleep at once."""
    import subprocess
    import sys

    code = (
        "import os; from fastp2p._native.aead import NoiseCipher as N\n"
        "k = os.urandom(32); d = os.urandom(3 << 20)\n"
        "p, s, r = N(k, 0, 'AESGCM'), N(k, 0, 'AESGCM'), N(k, 0, 'AESGCM')\n"
        "p.parallel_seal(3, 0); r.parallel_open(3, 0)\n"
        "for _ in range(20):\n"
        "    a = bytes(p.seal_frames(d)); assert a == bytes(s.seal_frames(d))\n"
        "    assert bytes(r.open_frames(a)) == d\n"
        "assert p.parallel_bytes and r.parallel_bytes\n"
    )
    env = dict(os.environ, FASTP2P_PAR_SPIN_US="0")
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
