"""Noise ChaChaPoly transport cipher: pure and native twins, parity and framing."""

from __future__ import annotations

import array
import gc
import os

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import DecryptError, FrameError, SecurityError

KEY = bytes(range(32))
MAXP = 65519  # the largest frame plaintext we accept
SEALP = 65408  # the frame plaintext we seal (fp_aead.h FP_AEAD_SEAL_PLAINTEXT)
ALIGN_MIN = 16384
JOIN_MAX = 16  # a run of short buffers this long joins the long one after it
IMPLS = [_accel.pure] + ([_accel._impl] if _accel.HAVE_NATIVE else [])
HSET = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def noise_nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def sealed_size(n: int) -> int:
    return n + 18 * (-(-n // SEALP))


def test_encrypt_matches_reference(impl):
    c = impl.NoiseCipher(KEY, nonce=5)
    ct = c.encrypt(b"hello")
    assert ct == ChaCha20Poly1305(KEY).encrypt(noise_nonce(5), b"hello", None)
    assert c.nonce == 6
    d = impl.NoiseCipher(KEY, nonce=5)
    assert d.decrypt(ct) == b"hello"
    assert d.nonce == 6


def test_key_and_nonce_validation(impl):
    with pytest.raises(ValueError):
        impl.NoiseCipher(b"short")
    with pytest.raises(ValueError):
        impl.NoiseCipher(KEY, nonce=-1)
    with pytest.raises(ValueError):
        impl.NoiseCipher(KEY, nonce=1 << 64)


@pytest.mark.parametrize("n", [0, 1, 1024, MAXP - 1, MAXP, MAXP + 1, 2 * MAXP + 1, 1 << 20])
def test_seal_open_sizes(impl, n):
    pt = os.urandom(n)
    tx, rx = impl.NoiseCipher(KEY), impl.NoiseCipher(KEY)
    sealed = tx.seal_frames(pt)
    assert memoryview(sealed).readonly  # bytes (pure) or a recycled FrameBlock (native)
    sealed = bytes(sealed)
    assert len(sealed) == sealed_size(n)
    nframes = -(-n // SEALP)
    assert tx.nonce == nframes
    # framing: 2-byte BE length of ciphertext + tag, each frame <= 65535
    pos, k = 0, 0
    while pos < len(sealed):
        flen = int.from_bytes(sealed[pos : pos + 2], "big")
        assert 16 <= flen <= 65535
        ct = sealed[pos + 2 : pos + 2 + flen]
        expect = pt[k * SEALP : (k + 1) * SEALP]
        assert ChaCha20Poly1305(KEY).decrypt(noise_nonce(k), ct, None) == expect
        pos += 2 + flen
        k += 1
    assert k == nframes
    out = rx.open_frames(sealed)
    assert memoryview(out).nbytes == len(pt)
    assert out == pt
    assert rx.nonce == nframes


def test_seal_list_of_buffers(impl):
    parts = [
        b"abc",
        bytearray(b"defg"),
        memoryview(b"hij"),
        array.array("B", b"kl"),
        b"",
        os.urandom(70000),
    ]
    joined = b"".join(bytes(p) for p in parts)
    a = impl.NoiseCipher(KEY).seal_frames(parts)
    c = impl.NoiseCipher(KEY).seal_frames(tuple(parts))
    assert a == c
    assert bytes(impl.NoiseCipher(KEY).open_frames(a)) == joined
    # the short buffers (12 bytes, at most JOIN_MAX) ride in the long one's frames
    assert a == bytes(impl.NoiseCipher(KEY).seal_frames(joined))
    # a longer run is packed into frames of its own, the long buffer alone (segments)
    run = [b"x" * 10, b"y" * 10]
    one = impl.NoiseCipher(KEY)
    assert bytes(impl.NoiseCipher(KEY).seal_frames([*run, parts[-1]])) == (
        bytes(one.seal_frames(b"x" * 10 + b"y" * 10)) + bytes(one.seal_frames(parts[-1])))
    assert impl.NoiseCipher(KEY).seal_frames([]) == b""
    assert impl.NoiseCipher(KEY).seal_frames([b"", b""]) == b""


def test_many_buffers(impl):
    parts = [bytes([i % 256]) * (i % 7) for i in range(200)]
    joined = b"".join(parts)
    assert impl.NoiseCipher(KEY).seal_frames(parts) == impl.NoiseCipher(KEY).seal_frames(joined)


def test_open_streaming_partial_frames(impl):
    pt = os.urandom(3 * MAXP + 77)
    sealed = impl.NoiseCipher(KEY).seal_frames(pt)
    rx = impl.NoiseCipher(KEY)
    out = bytearray()
    i = 0
    sizes = [1, 1, 1, 5, 13, 65536, 2, 1, 70000, 999, 1]
    while i < len(sealed):
        for s in sizes:
            out += rx.open_frames(memoryview(sealed)[i : i + s])
            assert rx.buffered <= 65537
            i += s
            if i >= len(sealed):
                break
    assert out == pt
    assert rx.buffered == 0
    assert rx.open_frames(b"") == bytearray()


def test_open_empty_plaintext_frame(impl):
    # a frame with only a tag carries an empty plaintext
    ct = ChaCha20Poly1305(KEY).encrypt(noise_nonce(0), b"", None)
    rx = impl.NoiseCipher(KEY)
    assert rx.open_frames(b"\x00\x10" + ct) == bytearray()
    assert rx.nonce == 1


def test_tamper_is_decrypt_error_and_dead(impl):
    sealed = bytearray(impl.NoiseCipher(KEY).seal_frames(b"x" * 100))
    sealed[10] ^= 1
    rx = impl.NoiseCipher(KEY)
    with pytest.raises(DecryptError):
        rx.open_frames(sealed)
    with pytest.raises(DecryptError):
        rx.open_frames(b"")
    with pytest.raises(DecryptError):
        rx.decrypt(b"0" * 20)


def test_decrypt_bad_tag(impl):
    rx = impl.NoiseCipher(KEY)
    with pytest.raises(DecryptError):
        rx.decrypt(b"\x00" * 32)
    short = impl.NoiseCipher(KEY)
    with pytest.raises(DecryptError):
        short.decrypt(b"\x00" * 3)


def test_wrong_nonce_fails(impl):
    sealed = impl.NoiseCipher(KEY).seal_frames(b"data")
    with pytest.raises(DecryptError):
        impl.NoiseCipher(KEY, nonce=1).open_frames(sealed)


@pytest.mark.parametrize("flen", [0, 1, 15])
def test_short_frame_is_frame_error(impl, flen):
    rx = impl.NoiseCipher(KEY)
    with pytest.raises(FrameError):
        rx.open_frames(flen.to_bytes(2, "big") + b"\x00" * flen)
    with pytest.raises(FrameError):
        rx.open_frames(b"")


def test_short_frame_split_header(impl):
    rx = impl.NoiseCipher(KEY)
    assert rx.open_frames(b"\x00") == bytearray()
    with pytest.raises(FrameError):
        rx.open_frames(b"\x05")


def test_nonce_exhaustion(impl):
    max_nonce = (1 << 64) - 1
    tx = impl.NoiseCipher(KEY, nonce=max_nonce - 1)
    tx.encrypt(b"last one")
    assert tx.nonce == max_nonce
    with pytest.raises(SecurityError):
        tx.encrypt(b"x")
    with pytest.raises(SecurityError):
        tx.seal_frames(b"x")
    tx2 = impl.NoiseCipher(KEY, nonce=max_nonce - 1)
    with pytest.raises(SecurityError):  # needs two nonces, only one left
        tx2.seal_frames(b"x" * (MAXP + 1))
    assert tx2.nonce == max_nonce - 1
    rx = impl.NoiseCipher(KEY, nonce=max_nonce)
    with pytest.raises(SecurityError):
        rx.open_frames(b"\x00\x10" + b"\x00" * 16)


@pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
@given(
    st.lists(st.binary(max_size=3000), max_size=8),
    st.integers(0, 1 << 40),
    st.lists(st.integers(1, 5000), min_size=1, max_size=6),
)
@HSET
def test_parity_and_cross_decrypt(parts, nonce, cuts):
    pure, native = _accel.pure, _accel._impl
    a = pure.NoiseCipher(KEY, nonce).seal_frames(parts)
    b = native.NoiseCipher(KEY, nonce).seal_frames(parts)
    assert a == b
    joined = b"".join(parts)
    for impl in (pure, native):
        rx = impl.NoiseCipher(KEY, nonce)
        out = bytearray()
        i = 0
        k = 0
        while i < len(a):
            s = cuts[k % len(cuts)]
            out += rx.open_frames(a[i : i + s])
            i += s
            k += 1
        assert out == joined


_EDGES = [0, 1, 12, 16, 17, ALIGN_MIN - 1, ALIGN_MIN, SEALP, 2 * SEALP, 2 * SEALP + 1, 3 * SEALP + 5]


@pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
@given(st.lists(st.sampled_from(_EDGES), max_size=6), st.integers(0, 255))
@HSET
def test_parity_of_segment_layouts_at_the_edges(sizes, fill):
    """The twins cut a write into the same frames around every segmentation edge:
    short runs packed, ALIGN_MIN buffers alone, a header of up to JOIN_MAX bytes
    joined to a long buffer of up to two frames and alone before a longer one."""
    parts = [bytes([(fill + i) % 256]) * n for i, n in enumerate(sizes)]
    a = _accel.pure.NoiseCipher(KEY, 3).seal_frames(parts)
    b = _accel._impl.NoiseCipher(KEY, 3).seal_frames(parts)
    assert a == b
    assert _accel.pure.NoiseCipher(KEY, 3).open_frames(b) == b"".join(parts)


@pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
def test_parity_large_multi_frame():
    pt = os.urandom((1 << 20) + 12345)
    a = _accel.pure.NoiseCipher(KEY, 7).seal_frames([pt[:100], pt[100:]])
    b = _accel._impl.NoiseCipher(KEY, 7).seal_frames([pt[:100], pt[100:]])
    assert a == b
    assert _accel._impl.NoiseCipher(KEY, 7).open_frames(a) == pt
    assert _accel.pure.NoiseCipher(KEY, 7).open_frames(b) == pt


@pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
def test_native_threads_release_gil_and_stay_correct():
    import threading

    from fastp2p.errors import BusyResourceError

    pt = os.urandom(1 << 20)
    expect = _accel._impl.NoiseCipher(KEY).seal_frames(pt)
    results: list[bytes] = []
    errors: list[BaseException] = []

    def seal_own() -> None:
        results.append(_accel._impl.NoiseCipher(KEY).seal_frames(pt))

    threads = [threading.Thread(target=seal_own) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expect] * 4

    shared = _accel._impl.NoiseCipher(KEY)
    done: list[bytes] = []

    def seal_shared() -> None:
        try:
            done.append(shared.seal_frames(pt))
        except BusyResourceError as exc:  # concurrent use is refused, never corrupting
            errors.append(exc)

    threads = [threading.Thread(target=seal_shared) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(done) + len(errors) == 4
    assert shared.nonce == 17 * len(done)
    starts = set()
    for sealed in done:  # each call used its own consecutive block of 17 nonces
        assert len(sealed) == len(expect)
        for k in range(len(done)):
            try:
                assert _accel._impl.NoiseCipher(KEY, nonce=17 * k).open_frames(sealed) == pt
            except DecryptError:
                continue
            starts.add(k)
            break
    assert starts == set(range(len(done)))


def test_close(impl):
    from fastp2p.errors import ClosedResourceError

    with impl.NoiseCipher(KEY) as c:
        c.encrypt(b"x")
    c.close()  # idempotent
    for call in (lambda: c.encrypt(b"x"), lambda: c.seal_frames(b"x"), lambda: c.open_frames(b"")):
        with pytest.raises(ClosedResourceError):
            call()


# -- native output blocks come from the one pool (fastp2p._native.buffer) -----------------

native_only = pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")


def _addr(block) -> int:
    numpy = pytest.importorskip("numpy")

    return int(numpy.frombuffer(block, dtype=numpy.uint8).__array_interface__["data"][0])


@native_only
def test_frame_blocks_come_from_the_default_pool_and_are_recycled():
    pool = _accel.get_default_pool()
    pt = os.urandom(1 << 20)
    c = _accel._impl.NoiseCipher(KEY)
    # Blocks that earlier tests left to the cyclic GC must not be freed mid-test.
    gc.collect()
    before = pool.stats()["in_use"]
    sealed = c.seal_frames([pt])
    assert pool.stats()["in_use"] == before + 1
    addr = _addr(sealed)
    assert addr % 4096 == 0  # pool blocks are page-aligned
    del sealed
    assert pool.stats()["in_use"] == before
    again = c.seal_frames([pt])
    assert _addr(again) == addr  # the same block, already resident
    opened = _accel._impl.NoiseCipher(KEY).open_frames(
        _accel.pure.NoiseCipher(KEY).seal_frames(pt))
    assert opened == pt and pool.stats()["in_use"] == before + 2


@native_only
def test_frame_block_stays_out_of_the_pool_while_a_view_lives():
    pool = _accel.get_default_pool()
    c = _accel._impl.NoiseCipher(KEY)
    gc.collect()
    before = pool.stats()["in_use"]
    sealed = c.seal_frames([b"x" * 100000])
    view = memoryview(sealed)[10:20]
    expect = bytes(view)
    del sealed
    assert pool.stats()["in_use"] == before + 1  # the view keeps the block
    c.seal_frames([b"y" * 100000])  # cannot reuse the viewed block
    assert bytes(view) == expect
    view.release()
    assert pool.stats()["in_use"] == before


@native_only
@pytest.mark.parametrize("size", [1 << 20, 4 << 20])
def test_recycled_blocks_do_not_page_fault_per_batch(size):
    import resource

    pt = os.urandom(size)
    tx = _accel._impl.NoiseCipher(KEY)
    sealed = bytes(_accel.pure.NoiseCipher(KEY).seal_frames(pt))
    for _ in range(3):  # warm the pool's free lists
        tx.seal_frames([pt])
        _accel._impl.NoiseCipher(KEY).open_frames(sealed)
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds = 20
    for _ in range(rounds):
        tx.seal_frames([pt])
        _accel._impl.NoiseCipher(KEY).open_frames(sealed)
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start
    # a fresh block would fault once per 4 KiB page: size // 4096 per batch, twice per round
    assert faults < rounds * (size // 4096) // 10, faults


def test_large_buffers_start_frames_of_their_own(impl):
    """A buffer of ALIGN_MIN bytes or more is sealed as frames of its own (whole
    frames a receiver opens in place), with the run of shorter ones before it when
    that run is at most JOIN_MAX bytes (one muxer header); shorter ones are packed
    together."""
    hdr1, body1, hdr2, body2, tail = b"h" * 12, os.urandom(ALIGN_MIN), b"H" * 12, b"b" * 100, b"t" * 7
    big = os.urandom(SEALP + 5)
    bufs = [hdr1, body1, hdr2, body2, big, tail]
    tx, rx = impl.NoiseCipher(KEY), impl.NoiseCipher(KEY)
    sealed = bytes(tx.seal_frames(bufs))
    frames, pos = [], 0
    while pos < len(sealed):
        flen = int.from_bytes(sealed[pos : pos + 2], "big")
        frames.append(rx.decrypt(sealed[pos + 2 : pos + 2 + flen]))
        pos += 2 + flen
    assert frames == [hdr1 + body1, hdr2 + body2, big[:SEALP], big[SEALP:], tail]
    assert tx.nonce == 5
    assert len(hdr1) <= JOIN_MAX < len(hdr2 + body2)


def test_a_header_before_a_buffer_of_over_two_frames_is_a_frame_of_its_own(impl):
    """... the header joins a long buffer of up to two frames (JOIN_ENTRY_MAX); before
    a longer one it is sealed alone, so every frame of that buffer is payload (a
    receiver opens them as runs on its pool)."""
    hdr, huge = b"h" * 12, os.urandom(2 * SEALP + 1)
    for body, want in ((huge[:-1], [hdr + huge[:SEALP - 12], huge[SEALP - 12:2 * SEALP - 12], huge[2 * SEALP - 12:-1]]),
                       (huge, [hdr, huge[:SEALP], huge[SEALP:2 * SEALP], huge[2 * SEALP:]])):
        tx, rx = impl.NoiseCipher(KEY), impl.NoiseCipher(KEY)
        sealed = bytes(tx.seal_frames([hdr, body]))
        frames, pos = [], 0
        while pos < len(sealed):
            flen = int.from_bytes(sealed[pos : pos + 2], "big")
            frames.append(rx.decrypt(sealed[pos + 2 : pos + 2 + flen]))
            pos += 2 + flen
        assert frames == want and tx.nonce == len(want)


# RFC 5869 test case 3 (SHA-256, empty salt and info): the Noise HKDF is RFC 5869 with
# the chaining key as salt and no info, so out1 || out2 starts with its OKM.
RFC5869_CASE3_OKM = bytes.fromhex(
    "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
)


def test_noise_hkdf2_rfc5869_vector(impl):
    out1, out2 = impl.noise_hkdf2(b"", b"\x0b" * 22)
    assert len(out1) == len(out2) == 32
    assert (out1 + out2)[: len(RFC5869_CASE3_OKM)] == RFC5869_CASE3_OKM


@HSET
@given(ck=st.binary(max_size=150), ikm=st.binary(max_size=300))
def test_noise_hkdf2_native_matches_pure(ck, ikm):
    # keys over the 64-byte HMAC block are hashed first: both twins, any length
    got = _accel._impl.noise_hkdf2(ck, memoryview(ikm))
    assert got == _accel.pure.noise_hkdf2(ck, ikm)


@given(st.binary(min_size=1, max_size=3000), st.integers(1, 3000))
@HSET
def test_complete_pending_gives_the_frame_body(plain, cut):
    """A frame cut in two: ``open_frames`` keeps the head, ``pending_frame_len``
    names its length, and ``complete_pending`` with the rest returns the body
    that ``open_frame`` opens; the same from both twins."""
    for impl in IMPLS:
        wire = bytes(impl.NoiseCipher(KEY).seal_frames([plain]))
        cut = min(cut, len(wire) - 1)
        rx = impl.NoiseCipher(KEY)
        assert rx.open_frames(wire[:cut]) == b"" and rx.buffered == cut
        assert rx.pending_frame_len == (len(wire) - 2 if cut >= 2 else -1)
        need = rx.pending_need(wire[cut:])
        assert need == len(wire) - cut
        if need > 1:
            assert rx.complete_pending(wire[cut : cut + 1]) is None
            body = rx.complete_pending(wire[cut + 1 :])
        else:
            body = rx.complete_pending(wire[cut:])
        assert body == wire[2:] and rx.buffered == 0 and rx.pending_frame_len == -1
        assert rx.open_frame(body) == plain


def test_complete_pending_rejects_a_length_under_the_tag(impl):
    rx = impl.NoiseCipher(KEY)
    rx.open_frames(b"\x00")
    with pytest.raises(FrameError):
        rx.complete_pending(b"\x05")
    with pytest.raises(FrameError):  # the cipher stays dead
        rx.open_frames(b"\x00\x20")
