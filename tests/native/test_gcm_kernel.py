"""AES-256-GCM on fastp2p's VAES kernel (csrc/fp_gcm.c) against OpenSSL: the
`cryptography` package's AESGCM and this build's EVP path give the same bytes for
every message and frame shape, each opens the other's frames, and tampering is
refused the same way. The kernel is only taken where the CPU has AVX-512 with VAES
and VPCLMULQDQ; elsewhere the EVP half of each test still runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import DecryptError

pytestmark = pytest.mark.skipif(_accel.native is None, reason="pure build: no native AEAD")

if _accel.native is not None:
    from fastp2p._native import aead
HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _vaes_supported() -> bool:
    before = aead.aesgcm_impl()
    try:
        aead.set_aesgcm_impl("vaes-avx512")
    except ValueError:
        return False
    finally:
        aead.set_aesgcm_impl(before)
    return True


@pytest.fixture(params=["vaes-avx512", "openssl-evp"])
def gcm(request: pytest.FixtureRequest):
    """Makes AES-GCM ciphers on one implementation; restores the default after."""
    name = request.param
    before = aead.aesgcm_impl()
    if name == "vaes-avx512" and not _vaes_supported():
        pytest.skip("this CPU lacks AVX-512 F/BW/VL, VAES or VPCLMULQDQ: the kernel is never used here")
    aead.set_aesgcm_impl(name)

    def make(key: bytes, nonce: int = 0):
        c = aead.NoiseCipher(key, nonce, "AESGCM")
        assert c.impl == name
        return c

    yield make
    aead.set_aesgcm_impl(before)


def _iv(n: int) -> bytes:
    return b"\0" * 4 + n.to_bytes(8, "big")


@HSET
@given(data=st.binary(max_size=3000), big=st.integers(0, 70_000), nonce=st.integers(0, 2**64 - 2))
def test_encrypt_matches_cryptography(gcm, data: bytes, big: int, nonce: int) -> None:
    key = os.urandom(32)
    for msg in (data, os.urandom(big)):
        ct = gcm(key, nonce).encrypt(msg)
        assert ct == AESGCM(key).encrypt(_iv(nonce), msg, None)
        assert gcm(key, nonce).decrypt(ct) == msg


@HSET
@given(sizes=st.lists(st.sampled_from([0, 1, 12, 15, 16, 17, 63, 64, 65, 255, 256, 257, 4095, 4096,
                                       16384, 65407, 65408, 65409, 70_000]) | st.integers(0, 200_000),
                      min_size=1, max_size=5))
def test_frames_identical_across_implementations(gcm, sizes: list[int]) -> None:
    key = os.urandom(32)
    bufs = [os.urandom(n) for n in sizes]
    mine = bytes(gcm(key, 3).seal_frames(bufs))
    before = aead.aesgcm_impl()
    aead.set_aesgcm_impl("openssl-evp")
    try:
        ref = bytes(aead.NoiseCipher(key, 3, "AESGCM").seal_frames(bufs))
        evp_rx = aead.NoiseCipher(key, 3, "AESGCM")
    finally:
        aead.set_aesgcm_impl(before)
    assert mine == ref
    plain = b"".join(bufs)
    assert bytes(evp_rx.open_frames(mine)) == plain
    assert bytes(gcm(key, 3).open_frames(ref)) == plain


def test_every_tampered_byte_is_refused(gcm) -> None:
    key = os.urandom(32)
    msg = os.urandom(300)
    ct = gcm(key).encrypt(msg)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            gcm(key).decrypt(bytes(bad))
    with pytest.raises(DecryptError):
        gcm(os.urandom(32)).decrypt(ct)  # wrong key
    with pytest.raises(DecryptError):
        gcm(key, 1).decrypt(ct)  # wrong nonce


def test_default_and_environment_switch() -> None:
    assert aead.aesgcm_impl() in aead.AESGCM_IMPLS
    if _vaes_supported():
        assert aead.aesgcm_impl() == "vaes-avx512"  # the default where the CPU has it
    code = "from fastp2p._native import aead; print(aead.aesgcm_impl(), aead.NoiseCipher(bytes(32), 0, 'AESGCM').impl)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTP2P_AESGCM": "evp"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["openssl-evp", "openssl-evp"]
    assert aead.NoiseCipher(bytes(32), 0, "ChaChaPoly").impl in aead.CHACHA_IMPLS
    with pytest.raises(ValueError):
        aead.set_aesgcm_impl("rot13")


def test_seal_speed_measures_this_builds_cipher() -> None:
    """The bench's yardstick for fastp2p's own cipher speed (the ceiling takes the
    faster of it and openssl speed)."""
    for name in ("AESGCM", "ChaChaPoly"):
        bps = aead.seal_speed(name, 4096, 0.05)
        assert 1e7 < bps < 1e12
    with pytest.raises(ValueError):
        aead.seal_speed("rot13")
    with pytest.raises(ValueError):
        aead.seal_speed("AESGCM", 70_000)
