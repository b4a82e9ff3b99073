"""ChaCha20-Poly1305 on fastp2p's short-frame kernel (csrc/fp_chacha.c) against
OpenSSL: the `cryptography` package's ChaCha20Poly1305 and this build's EVP path
give the same bytes for every message and frame shape (short frames on the kernel,
long ones on EVP, in one connection's nonce sequence), each opens the other's
frames, and tampering is refused the same way. The kernel is only taken where the
CPU has AVX2; elsewhere the EVP half of each test still runs."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import DecryptError

pytestmark = pytest.mark.skipif(_accel.native is None, reason="pure build: no native AEAD")

if _accel.native is not None:
    from fastp2p._native import aead
HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
SHORT = "short-kernel+openssl-evp"
SHORT_MAX = 448  # csrc/fp_chacha.h FP_CHACHA_SMALL_MAX


def _kernel_supported() -> bool:
    before = aead.chacha_impl()
    try:
        aead.set_chacha_impl(SHORT)
    except ValueError:
        return False
    finally:
        aead.set_chacha_impl(before)
    return True


@pytest.fixture(params=[SHORT, "openssl-evp"])
def chacha(request: pytest.FixtureRequest):
    """Makes ChaChaPoly ciphers on one implementation; restores the default after."""
    name = request.param
    before = aead.chacha_impl()
    if name == SHORT and not _kernel_supported():
        pytest.skip("this CPU lacks AVX2: the kernel is never used here")
    aead.set_chacha_impl(name)

    def make(key: bytes, nonce: int = 0):
        c = aead.NoiseCipher(key, nonce, "ChaChaPoly")
        assert c.impl == name
        return c

    yield make
    aead.set_chacha_impl(before)


def _iv(n: int) -> bytes:
    return b"\0" * 4 + n.to_bytes(8, "little")


@HSET
@given(data=st.binary(max_size=SHORT_MAX + 100), big=st.integers(0, 70_000), nonce=st.integers(0, 2**64 - 2))
def test_encrypt_matches_cryptography(chacha, data: bytes, big: int, nonce: int) -> None:
    key = os.urandom(32)
    for msg in (data, os.urandom(big)):
        ct = chacha(key, nonce).encrypt(msg)
        assert ct == ChaCha20Poly1305(key).encrypt(_iv(nonce), msg, None)
        assert chacha(key, nonce).decrypt(ct) == msg


@HSET
@given(sizes=st.lists(st.sampled_from([0, 1, 12, 15, 16, 17, 63, 64, 65, 76, 200, 447, 448, 449, 512,
                                       4096, 16384, 65407, 65408, 65409, 70_000]) | st.integers(0, 200_000),
                      min_size=1, max_size=6))
def test_frames_identical_across_implementations(chacha, sizes: list[int]) -> None:
    key = os.urandom(32)
    bufs = [os.urandom(n) for n in sizes]
    mine = bytes(chacha(key, 3).seal_frames(bufs))
    before = aead.chacha_impl()
    aead.set_chacha_impl("openssl-evp")
    try:
        ref = bytes(aead.NoiseCipher(key, 3, "ChaChaPoly").seal_frames(bufs))
        evp_rx = aead.NoiseCipher(key, 3, "ChaChaPoly")
    finally:
        aead.set_chacha_impl(before)
    assert mine == ref
    plain = b"".join(bufs)
    assert bytes(evp_rx.open_frames(mine)) == plain
    assert bytes(chacha(key, 3).open_frames(ref)) == plain


def test_every_tampered_byte_is_refused(chacha) -> None:
    key = os.urandom(32)
    msg = os.urandom(300)  # a short frame: the kernel's
    ct = chacha(key).encrypt(msg)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            chacha(key).decrypt(bytes(bad))
    with pytest.raises(DecryptError):
        chacha(os.urandom(32)).decrypt(ct)  # wrong key
    with pytest.raises(DecryptError):
        chacha(key, 1).decrypt(ct)  # wrong nonce


def test_default_and_environment_switch() -> None:
    assert aead.chacha_impl() in aead.CHACHA_IMPLS
    if _kernel_supported():
        assert aead.chacha_impl() == SHORT  # the default where the CPU has AVX2
    code = "from fastp2p._native import aead; print(aead.chacha_impl(), aead.NoiseCipher(bytes(32), 0, 'ChaChaPoly').impl)"
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "FASTP2P_CHACHA": "evp"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["openssl-evp", "openssl-evp"]
    with pytest.raises(ValueError):
        aead.set_chacha_impl("vaes-avx512")  # an AES-GCM implementation
