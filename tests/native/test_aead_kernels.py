"""fastp2p's own AEAD kernels against OpenSSL: AES-256-GCM on VAES (csrc/fp_gcm.c)
and ChaCha20-Poly1305's short frames (csrc/fp_chacha.c). For each, the `cryptography`
package's AEAD and this build's EVP path give the same bytes for every message and
frame shape (ChaChaPoly: short frames on the kernel, long ones on EVP, in one nonce
sequence), each opens the other's frames, and tampering is refused the same way. A
kernel is only taken where the CPU has its instructions (VAES and VPCLMULQDQ with
AVX-512; AVX2); elsewhere the EVP half of each test still runs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from typing import Any, NamedTuple

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import DecryptError

pytestmark = pytest.mark.skipif(_accel.native is None, reason="pure build: no native AEAD")

if _accel.native is not None:
    from fastp2p._native import aead
HSET = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


class Kernel(NamedTuple):
    cipher: str  # the Noise name
    impl: str  # the kernel's implementation name
    get: str  # aead's getter and setter of the process-wide choice
    set: str
    impls: str  # aead's tuple of names
    env: str  # the environment variable that turns the kernel off (=evp)
    ref: Any  # cryptography's AEAD
    order: str  # the Noise nonce's byte order (spec 12.3, 12.4)
    needs: str


KERNELS = {
    "AESGCM": Kernel("AESGCM", "vaes-avx512", "aesgcm_impl", "set_aesgcm_impl", "AESGCM_IMPLS",
                     "FASTP2P_AESGCM", AESGCM, "big", "AVX-512 F/BW/VL, VAES and VPCLMULQDQ"),
    "ChaChaPoly": Kernel("ChaChaPoly", "short-kernel+openssl-evp", "chacha_impl", "set_chacha_impl",
                         "CHACHA_IMPLS", "FASTP2P_CHACHA", ChaCha20Poly1305, "little", "AVX2"),
}
SHORT_MAX = 448  # csrc/fp_chacha.h FP_CHACHA_SMALL_MAX


def _supported(k: Kernel) -> bool:
    before = getattr(aead, k.get)()
    try:
        getattr(aead, k.set)(k.impl)
    except ValueError:
        return False
    finally:
        getattr(aead, k.set)(before)
    return True


@pytest.fixture(params=[(c, i) for c in KERNELS for i in ("kernel", "openssl-evp")],
                ids=lambda p: f"{p[0]}-{p[1]}")
def make(request: pytest.FixtureRequest):
    """(Kernel, a maker of NoiseCiphers on one implementation); restores the default after."""
    k = KERNELS[request.param[0]]
    name = k.impl if request.param[1] == "kernel" else "openssl-evp"
    before = getattr(aead, k.get)()
    if name == k.impl and not _supported(k):
        pytest.skip(f"this CPU lacks {k.needs}: the kernel is never used here")
    getattr(aead, k.set)(name)

    def new(key: bytes, nonce: int = 0):
        c = aead.NoiseCipher(key, nonce, k.cipher)
        assert c.impl == name
        return c

    yield k, new
    getattr(aead, k.set)(before)


def _iv(k: Kernel, n: int) -> bytes:
    return b"\0" * 4 + n.to_bytes(8, k.order)  # type: ignore[arg-type]


@HSET
@given(data=st.binary(max_size=3000), big=st.integers(0, 70_000), nonce=st.integers(0, 2**64 - 2))
def test_encrypt_matches_cryptography(make: tuple[Kernel, Callable[..., Any]], data: bytes, big: int,
                                      nonce: int) -> None:
    k, new = make
    key = os.urandom(32)
    for msg in (data, data[:SHORT_MAX], os.urandom(big)):
        ct = new(key, nonce).encrypt(msg)
        assert ct == k.ref(key).encrypt(_iv(k, nonce), msg, None)
        assert new(key, nonce).decrypt(ct) == msg


@HSET
@given(sizes=st.lists(st.sampled_from([0, 1, 12, 15, 16, 17, 63, 64, 65, 76, 200, 255, 256, 257, 447, 448,
                                       449, 512, 4095, 4096, 16384, 65407, 65408, 65409, 70_000])
                      | st.integers(0, 200_000), min_size=1, max_size=6))
def test_frames_identical_across_implementations(make: tuple[Kernel, Callable[..., Any]],
                                                 sizes: list[int]) -> None:
    k, new = make
    key = os.urandom(32)
    bufs = [os.urandom(n) for n in sizes]
    mine = bytes(new(key, 3).seal_frames(bufs))
    before = getattr(aead, k.get)()
    getattr(aead, k.set)("openssl-evp")
    try:
        ref = bytes(aead.NoiseCipher(key, 3, k.cipher).seal_frames(bufs))
        evp_rx = aead.NoiseCipher(key, 3, k.cipher)
    finally:
        getattr(aead, k.set)(before)
    assert mine == ref
    plain = b"".join(bufs)
    assert bytes(evp_rx.open_frames(mine)) == plain
    assert bytes(new(key, 3).open_frames(ref)) == plain


def test_every_tampered_byte_is_refused(make: tuple[Kernel, Callable[..., Any]]) -> None:
    _, new = make
    key = os.urandom(32)
    msg = os.urandom(300)  # (ChaChaPoly: a short frame, the kernel's)
    ct = new(key).encrypt(msg)
    for i in range(len(ct)):
        bad = bytearray(ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptError):
            new(key).decrypt(bytes(bad))
    with pytest.raises(DecryptError):
        new(os.urandom(32)).decrypt(ct)  # wrong key
    with pytest.raises(DecryptError):
        new(key, 1).decrypt(ct)  # wrong nonce


@pytest.mark.parametrize("cipher", list(KERNELS))
def test_default_and_environment_switch(cipher: str) -> None:
    k = KERNELS[cipher]
    assert getattr(aead, k.get)() in getattr(aead, k.impls)
    if _supported(k):
        assert getattr(aead, k.get)() == k.impl  # the default where the CPU has it
    code = (f"from fastp2p._native import aead; print(aead.{k.get}(), "
            f"aead.NoiseCipher(bytes(32), 0, {cipher!r}).impl)")
    out = subprocess.run([sys.executable, "-c", code], env={**os.environ, k.env: "evp"},
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["openssl-evp", "openssl-evp"]
    with pytest.raises(ValueError):
        getattr(aead, k.set)("rot13")
    other = next(x for x in KERNELS.values() if x is not k)
    with pytest.raises(ValueError):
        getattr(aead, k.set)(other.impl)  # the other cipher's kernel


def test_seal_speed_measures_this_builds_cipher() -> None:
    """The bench's yardstick for fastp2p's own cipher speed (the ceiling takes the
    faster of it and openssl speed)."""
    for name in KERNELS:
        bps = aead.seal_speed(name, 4096, 0.05)
        assert 1e7 < bps < 1e12
    with pytest.raises(ValueError):
        aead.seal_speed("rot13")
    with pytest.raises(ValueError):
        aead.seal_speed("AESGCM", 70_000)
