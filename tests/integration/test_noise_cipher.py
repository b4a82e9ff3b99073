"""The Noise transport cipher between two fastp2p hosts over TCP (issue 12 item 3)."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from fastp2p import Host
from fastp2p.config import HostConfig, NoiseConfig
from fastp2p.proto.noise.cipher import cpu_has_aes
from fastp2p.services import serve_echo

from .test_cli import ENV, _listener

TCP = ("tcp",)


async def _echo_cipher(dialer: HostConfig, listener: HostConfig) -> tuple[str, str]:
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=listener) as b, Host(config=dialer) as a:
        peer = await a.connect(b.full_addrs[0])
        serve_echo(b)
        data = os.urandom(300_000)
        st = await a.open_stream(peer, "/echo/1.0.0")
        await st.write(data)
        await st.close_write()
        got = await st.read()
        await st.aclose()
        assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
        ca, cb = a.connection(peer), b.connection(a.peer_id)
        assert ca is not None and cb is not None
        return ca.statistics()["cipher"], cb.statistics()["cipher"]


@pytest.mark.skipif(not cpu_has_aes(), reason="CPU without AES instructions: AESGCM is not offered")
async def test_fastp2p_peers_use_aesgcm_by_default() -> None:
    cfg = HostConfig(data_paths=TCP)
    assert await _echo_cipher(cfg, cfg) == ("AESGCM", "AESGCM")


@pytest.mark.parametrize("side", ["dialer", "listener"])
async def test_either_side_can_keep_chachapoly(side: str) -> None:
    plain = HostConfig(data_paths=TCP, noise=NoiseConfig(ciphers=("ChaChaPoly",)))
    both = HostConfig(data_paths=TCP, noise=NoiseConfig(ciphers=("AESGCM", "ChaChaPoly")))
    d, lis = (plain, both) if side == "dialer" else (both, plain)
    assert await _echo_cipher(d, lis) == ("ChaChaPoly", "ChaChaPoly")


async def test_no_aes_instructions_means_chachapoly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FASTP2P_NOISE_AES", "0")
    cfg = HostConfig(data_paths=TCP)
    assert await _echo_cipher(cfg, cfg) == ("ChaChaPoly", "ChaChaPoly")


def _vaes() -> bool:
    from fastp2p import _accel

    if not _accel.HAVE_NATIVE:  # the pure build's hosts seal with `cryptography`
        return False
    from fastp2p._native import aead

    return aead.aesgcm_impl() == "vaes-avx512"


async def _echo_with_an_evp_peer(env: dict[str, str], cfg: HostConfig, small: int,
                                 expect: tuple[str, str]) -> None:
    """Echo ``small`` messages of 1-440 bytes, then 3 MiB, through a `fastp2p listen`
    subprocess started with ``env`` (OpenSSL's EVP there); this side's statistics
    name ``expect`` (cipher, implementation)."""
    proc, (addr,) = await _listener(env={**ENV, **env})
    try:
        async with Host(config=cfg) as a:
            peer = await a.connect(addr)
            st = await a.open_stream(peer, "/echo/1.0.0")
            for i in range(small):
                msg = os.urandom(1 + (i * 37) % 440)
                await st.write(msg)
                assert await st.readexactly(len(msg)) == msg
            data = os.urandom(3 << 20)

            async def send() -> None:  # concurrently with the reads: the echo is bounded
                await st.write(data)
                await st.close_write()

            _, got = await asyncio.gather(send(), st.read())
            await st.aclose()
            assert hashlib.sha256(got).digest() == hashlib.sha256(data).digest()
            stats = a.connection(peer).statistics()  # type: ignore[union-attr]
            assert (stats["cipher"], stats["cipher_impl"]) == expect
    finally:
        proc.terminate()
        async with asyncio.timeout(10):
            await proc.wait()


@pytest.mark.skipif(not cpu_has_aes() or not _vaes(),
                    reason="needs the native build, AES instructions and fastp2p's VAES AES-GCM kernel (AVX-512 VAES/VPCLMULQDQ)")
async def test_vaes_kernel_talks_to_openssl_evp_peer() -> None:
    """This process seals and opens AES-GCM on the VAES kernel; a `fastp2p listen`
    subprocess runs OpenSSL's EVP (FASTP2P_AESGCM=evp): 3 MiB echoed both ways."""
    await _echo_with_an_evp_peer({"FASTP2P_AESGCM": "evp"}, HostConfig(data_paths=TCP), 0,
                                 ("AESGCM", "vaes-avx512"))


def _chacha_kernel() -> bool:
    from fastp2p import _accel

    if not _accel.HAVE_NATIVE:
        return False
    from fastp2p._native import aead

    return aead.chacha_impl() == "short-kernel+openssl-evp"


@pytest.mark.skipif(not _chacha_kernel(),
                    reason="needs the native build and fastp2p's short-frame ChaCha20-Poly1305 kernel (AVX2)")
async def test_chacha_short_kernel_talks_to_openssl_evp_peer() -> None:
    """This process seals and opens ChaChaPoly's short frames on fastp2p's kernel; a
    `fastp2p listen` subprocess runs OpenSSL's EVP for every frame
    (FASTP2P_CHACHA=evp): 300 echoes of 1-440 bytes (short frames), then 3 MiB."""
    cfg = HostConfig(data_paths=TCP, noise=NoiseConfig(ciphers=("ChaChaPoly",)))
    await _echo_with_an_evp_peer({"FASTP2P_CHACHA": "evp"}, cfg, 300,
                                 ("ChaChaPoly", "short-kernel+openssl-evp"))
