"""yamux / mplex codecs and uvarint: pure and native twins, parity and properties."""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import (
    FrameError,
    FrameTooLargeError,
    FrameTypeError,
    FrameVersionError,
    VarintError,
)

SYN, ACK, FIN, RST = 1, 2, 4, 8
IMPLS = [_accel.pure] + ([_accel._impl] if _accel.HAVE_NATIVE else [])
needs_native = pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
HSET = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def feed_split(dec, data: bytes, cuts: list[int], strip: bool = True) -> list[tuple]:
    """Feed ``data`` cut at ``cuts``; payloads copied to bytes (views die with their input).

    With ``strip=False`` the result also holds ``("buffered", n)`` after every feed.
    """
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    out = []
    for a, b in zip(points, points[1:], strict=False):
        for rec in dec.feed(bytearray(data[a:b])):
            out.append(tuple(bytes(x) if isinstance(x, memoryview) else x for x in rec))
        out.append(("buffered", dec.buffered))
    return [r for r in out if r[0] != "buffered"] if strip else out


# ---------------------------------------------------------------- uvarint


@pytest.mark.parametrize(
    "value, encoded",
    [
        (0, b"\x00"),
        (1, b"\x01"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (255, b"\xff\x01"),
        (300, b"\xac\x02"),
        (16384, b"\x80\x80\x01"),
        ((1 << 63) - 1, b"\xff" * 8 + b"\x7f"),
    ],
)
def test_uvarint_vectors(impl, value, encoded):
    assert impl.uvarint_encode(value) == encoded
    assert impl.uvarint_decode(encoded) == (value, len(encoded))
    assert impl.uvarint_decode(b"xx" + encoded + b"yy", 2) == (value, 2 + len(encoded))


@pytest.mark.parametrize("value", [-1, 1 << 63, 1 << 70])
def test_uvarint_encode_range(impl, value):
    with pytest.raises(ValueError):
        impl.uvarint_encode(value)


@pytest.mark.parametrize("data", [b"", b"\x80", b"\xff\xff", b"\xff" * 8])
def test_uvarint_incomplete(impl, data):
    assert impl.uvarint_decode(data) is None


@pytest.mark.parametrize("data", [b"\x80\x00", b"\xff\x00", b"\x80\x80\x00"])
def test_uvarint_non_minimal(impl, data):
    with pytest.raises(VarintError):
        impl.uvarint_decode(data)


def test_uvarint_overlong(impl):
    with pytest.raises(VarintError):
        impl.uvarint_decode(b"\xff" * 9 + b"\x01")
    with pytest.raises(VarintError):
        impl.uvarint_decode(b"\x80" * 9)


@given(st.integers(0, (1 << 63) - 1))
@HSET
def test_uvarint_roundtrip_parity(value):
    encs = {impl.uvarint_encode(value) for impl in IMPLS}
    assert len(encs) == 1
    enc = encs.pop()
    for impl in IMPLS:
        assert impl.uvarint_decode(enc) == (value, len(enc))


@given(st.binary(max_size=12))
@HSET
def test_uvarint_decode_parity_random(data):
    results = []
    for impl in IMPLS:
        try:
            results.append(impl.uvarint_decode(data))
        except VarintError:
            results.append("VarintError")
    assert len(set(map(repr, results))) == 1


# ---------------------------------------------------------------- yamux header


def test_yamux_header_vector(impl):
    # window update, SYN, stream 1, delta 256 KiB
    assert impl.encode_header(1, SYN, 1, 262144).hex() == "000100010000000100040000"
    # data, FIN|ACK, stream 0xdeadbeef, 5 bytes
    assert impl.encode_header(0, FIN | ACK, 0xDEADBEEF, 5) == bytes.fromhex(
        "00000006deadbeef00000005"
    )
    # go away, protocol error
    assert impl.encode_header(3, 0, 0, 1) == bytes.fromhex("000300000000000000000001")


@pytest.mark.parametrize(
    "args",
    [
        (4, 0, 0, 0),
        (-1, 0, 0, 0),
        (0, 1 << 16, 0, 0),
        (0, -1, 0, 0),
        (0, 0, 1 << 32, 0),
        (0, 0, -1, 0),
        (0, 0, 0, 1 << 32),
        (0, 0, 0, -1),
        (0, 0, 0, 1 << 80),
    ],
)
def test_yamux_encode_header_range(impl, args):
    with pytest.raises(ValueError):
        impl.encode_header(*args)


def test_yamux_decode_whole_frames(impl):
    data = (
        impl.encode_header(0, SYN, 1, 5)
        + b"hello"
        + impl.encode_header(1, ACK, 1, 1000)
        + impl.encode_header(2, SYN, 0, 42)
        + impl.encode_header(3, 0, 0, 2)
        + impl.encode_header(0, FIN, 3, 0)
    )
    dec = impl.YamuxDecoder()
    recs = dec.feed(data)
    assert [r[:4] for r in recs] == [
        (0, SYN, 1, 5),
        (1, ACK, 1, 1000),
        (2, SYN, 0, 42),
        (3, 0, 0, 2),
        (0, FIN, 3, 0),
    ]
    assert bytes(recs[0][4]) == b"hello"
    assert [r[4] for r in recs[1:4]] == [None, None, None]
    assert isinstance(recs[4][4], memoryview) and len(recs[4][4]) == 0
    assert dec.buffered == 0


def test_yamux_payload_is_zero_copy(impl):
    data = bytearray(impl.encode_header(0, 0, 7, 4) + b"abcd")
    recs = impl.YamuxDecoder().feed(data)
    view = recs[0][4]
    data[12] = ord("z")  # the view aliases the caller's buffer
    assert bytes(view) == b"zbcd"
    assert view.obj is data or getattr(view.obj, "obj", None) is data or bytes(view.obj) == data


def test_yamux_split_data_flags(impl):
    data = impl.encode_header(0, SYN | FIN, 9, 6) + b"abcdef"
    dec = impl.YamuxDecoder()
    assert dec.feed(data[:5]) == []
    assert dec.buffered == 5
    recs = dec.feed(data[5:14])
    assert dec.buffered == 0
    assert [(r[:4], bytes(r[4])) for r in recs] == [((0, SYN, 9, 2), b"ab")]
    recs = dec.feed(data[14:16])
    assert [(r[:4], bytes(r[4])) for r in recs] == [((0, 0, 9, 2), b"cd")]
    recs = dec.feed(data[16:])
    assert [(r[:4], bytes(r[4])) for r in recs] == [((0, FIN, 9, 2), b"ef")]
    assert dec.feed(b"") == []


def test_yamux_partial_header_bounded(impl):
    dec = impl.YamuxDecoder()
    hdr = impl.encode_header(1, 0, 1, 1)
    for i in range(11):
        assert dec.feed(hdr[i : i + 1]) == []
        assert dec.buffered == i + 1
    assert dec.feed(hdr[11:]) == [(1, 0, 1, 1, None)]


def test_yamux_bounded_memory_huge_data(impl):
    size = 64 << 20
    dec = impl.YamuxDecoder()
    assert dec.feed(impl.encode_header(0, SYN, 1, size)) == []
    chunk = bytes(1 << 20)
    total = 0
    for _ in range(size >> 20):
        recs = dec.feed(chunk)
        assert len(recs) == 1
        total += recs[0][3]
        assert dec.buffered == 0
    assert total == size
    assert dec.feed(impl.encode_header(2, 0, 0, 1)) == [(2, 0, 0, 1, None)]


@pytest.mark.parametrize("version", [1, 0xFF])
def test_yamux_bad_version(impl, version):
    dec = impl.YamuxDecoder()
    good = impl.encode_header(1, 0, 1, 1)
    with pytest.raises(FrameVersionError):
        dec.feed(good + struct.pack(">BBHII", version, 0, 0, 1, 0))
    with pytest.raises(FrameVersionError):  # dead afterwards
        dec.feed(good)


@pytest.mark.parametrize("ftype", [4, 0xFF])
def test_yamux_bad_type(impl, ftype):
    dec = impl.YamuxDecoder()
    bad = struct.pack(">BBHII", 0, ftype, 0, 1, 0)
    assert dec.feed(bad[:6]) == []
    with pytest.raises(FrameTypeError):
        dec.feed(bad[6:])
    with pytest.raises(FrameTypeError):
        dec.feed(b"")
    assert issubclass(FrameTypeError, FrameError)


def test_yamux_accepts_buffer_types(impl):
    import array

    data = impl.encode_header(0, 0, 1, 4) + b"\x01\x02\x03\x04"
    for buf in (
        data,
        bytearray(data),
        memoryview(data),
        array.array("B", data),
        memoryview(bytearray(data)).cast("c"),
    ):
        recs = impl.YamuxDecoder().feed(buf)
        assert bytes(recs[0][4]) == b"\x01\x02\x03\x04"


def test_yamux_many_frames_one_batch(impl):
    # more records than the native batch size (256)
    frames = [impl.encode_header(1, 0, i, i) for i in range(1000)]
    recs = impl.YamuxDecoder().feed(b"".join(frames))
    assert recs == [(1, 0, i, i, None) for i in range(1000)]


yamux_frame = st.one_of(
    st.tuples(
        st.just(0), st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=200)
    ),
    st.tuples(
        st.integers(1, 3),
        st.integers(0, 0xFFFF),
        st.integers(0, 0xFFFFFFFF),
        st.integers(0, 0xFFFFFFFF),
    ),
)


def check_yamux_records(frames, recs):
    it = iter(recs)
    for ftype, flags, sid, x in frames:
        if ftype != 0:
            assert next(it) == (ftype, flags, sid, x, None)
            continue
        first = next(it)
        parts = [first]
        got = first[3]
        while got < len(x):
            parts.append(next(it))
            got += parts[-1][3]
        assert got == len(x)
        assert b"".join(p[4] for p in parts) == x
        assert all(p[0] == 0 and p[2] == sid and p[3] == len(p[4]) for p in parts)
        if len(parts) == 1:
            assert first[1] == flags
        else:
            assert all(p[3] > 0 for p in parts)
            assert parts[0][1] == flags & (SYN | ACK)
            assert parts[-1][1] == flags & (FIN | RST)
            assert all(p[1] == 0 for p in parts[1:-1])
    assert next(it, None) is None


@given(st.lists(yamux_frame, max_size=20), st.lists(st.integers(0, 10_000), max_size=12))
@HSET
def test_yamux_property_split_parity(frames, cuts):
    encs = set()
    for impl in IMPLS:
        encs.add(
            b"".join(
                impl.encode_header(t, f, s, len(x) if t == 0 else x) + (x if t == 0 else b"")
                for t, f, s, x in frames
            )
        )
    assert len(encs) == 1
    data = encs.pop()
    results = [feed_split(impl.YamuxDecoder(), data, cuts, strip=False) for impl in IMPLS]
    assert all(r == results[0] for r in results)
    assert all(r[1] < 12 for r in results[0] if r[0] == "buffered")
    check_yamux_records(frames, [r for r in results[0] if r[0] != "buffered"])


@given(st.binary(max_size=64), st.lists(st.integers(0, 100), max_size=4))
@HSET
def test_yamux_random_bytes_parity(data, cuts):
    outs = []
    for impl in IMPLS:
        try:
            outs.append(feed_split(impl.YamuxDecoder(), data, cuts, strip=False))
        except FrameError as exc:
            outs.append(type(exc).__name__)
    assert all(o == outs[0] for o in outs)


# ---------------------------------------------------------------- mplex


def test_mplex_header_vectors(impl):
    assert impl.mplex_encode_header(0, 0, 0) == b"\x00\x00"
    assert impl.mplex_encode_header(1, 2, 5) == b"\x0a\x05"
    assert impl.mplex_encode_header(17, 6, 300) == b"\x8e\x01\xac\x02"
    assert impl.mplex_encode_header((1 << 60) - 1, 6, (1 << 63) - 1) == (
        b"\xfe" + b"\xff" * 7 + b"\x7f" + b"\xff" * 8 + b"\x7f"
    )


@pytest.mark.parametrize(
    "args", [(-1, 0, 0), (1 << 60, 0, 0), (0, 7, 0), (0, -1, 0), (0, 0, -1), (0, 0, 1 << 63)]
)
def test_mplex_encode_range(impl, args):
    with pytest.raises(ValueError):
        impl.mplex_encode_header(*args)


def test_mplex_decode(impl):
    data = (
        impl.mplex_encode_header(3, 0, 4)
        + b"name"
        + impl.mplex_encode_header(3, 2, 3)
        + b"abc"
        + impl.mplex_encode_header(3, 1, 0)
        + impl.mplex_encode_header(3, 4, 0)
        + impl.mplex_encode_header(3, 6, 0)
    )
    recs = impl.MplexDecoder().feed(data)
    assert [(f, s, bytes(p)) for f, s, p in recs] == [
        (0, 3, b"name"),
        (2, 3, b"abc"),
        (1, 3, b""),
        (4, 3, b""),
        (6, 3, b""),
    ]
    assert all(isinstance(p, memoryview) for _, _, p in recs)


def test_mplex_control_frame_buffered_whole(impl):
    data = impl.mplex_encode_header(8, 0, 10) + b"0123456789"
    dec = impl.MplexDecoder()
    assert dec.feed(data[:1]) == []
    assert dec.feed(data[1:5]) == []
    assert dec.buffered == 3
    assert dec.feed(data[5:9]) == []
    recs = dec.feed(data[9:])
    assert [(f, s, bytes(p)) for f, s, p in recs] == [(0, 8, b"0123456789")]
    assert dec.buffered == 0


def test_mplex_message_streams(impl):
    data = impl.mplex_encode_header(8, 1, 6) + b"abcdef"
    dec = impl.MplexDecoder()
    assert [(f, s, bytes(p)) for f, s, p in dec.feed(data[:4])] == [(1, 8, b"ab")]
    assert [(f, s, bytes(p)) for f, s, p in dec.feed(data[4:])] == [(1, 8, b"cdef")]


def test_mplex_too_large(impl):
    dec = impl.MplexDecoder(max_message_size=10)
    assert dec.feed(impl.mplex_encode_header(1, 2, 10) + b"x" * 10)
    with pytest.raises(FrameTooLargeError):
        dec.feed(impl.mplex_encode_header(1, 2, 11))
    with pytest.raises(FrameTooLargeError):
        dec.feed(b"")
    with pytest.raises(ValueError):
        impl.MplexDecoder(max_message_size=-1)


def test_mplex_flag7(impl):
    with pytest.raises(FrameTypeError):
        impl.MplexDecoder().feed(b"\x0f\x00")


@pytest.mark.parametrize(
    "data", [b"\x80\x00\x00", b"\x00\x80\x00", b"\xff" * 9 + b"\x01", b"\x08" + b"\xff" * 9]
)
def test_mplex_bad_varint(impl, data):
    dec = impl.MplexDecoder()
    with pytest.raises(VarintError):
        dec.feed(data)
    with pytest.raises(VarintError):
        dec.feed(b"\x08\x00")


def test_mplex_partial_header_bytewise(impl):
    hdr = impl.mplex_encode_header((1 << 60) - 1, 2, 1 << 19)
    assert len(hdr) == 12
    dec = impl.MplexDecoder()
    for i in range(len(hdr) - 1):
        assert dec.feed(hdr[i : i + 1]) == []
        assert dec.buffered == i + 1
    assert dec.feed(hdr[-1:]) == []
    assert dec.buffered == 0
    recs = dec.feed(b"q" * 5)
    assert [(f, s, bytes(p)) for f, s, p in recs] == [(2, (1 << 60) - 1, b"qqqqq")]


def test_mplex_bounded_memory_huge_message(impl):
    dec = impl.MplexDecoder(max_message_size=1 << 30)
    dec.feed(impl.mplex_encode_header(1, 2, 64 << 20))
    chunk = bytes(1 << 20)
    for _ in range(64):
        assert len(dec.feed(chunk)) == 1
        assert dec.buffered == 0


mplex_frame = st.tuples(st.integers(0, (1 << 60) - 1), st.integers(0, 6), st.binary(max_size=150))


@given(st.lists(mplex_frame, max_size=20), st.lists(st.integers(0, 10_000), max_size=12))
@HSET
def test_mplex_property_split_parity(frames, cuts):
    encs = {
        b"".join(impl.mplex_encode_header(s, f, len(x)) + x for s, f, x in frames) for impl in IMPLS
    }
    assert len(encs) == 1
    data = encs.pop()
    results = [feed_split(impl.MplexDecoder(), data, cuts, strip=False) for impl in IMPLS]
    assert all(r == results[0] for r in results)
    it = iter([r for r in results[0] if r[0] != "buffered"])
    for sid, flag, x in frames:
        rec = next(it)
        assert rec[:2] == (flag, sid)
        got = rec[2]
        if flag in (1, 2):
            while len(got) < len(x):
                nxt = next(it)
                assert nxt[:2] == (flag, sid) and nxt[2]
                got += nxt[2]
        assert got == x
    assert next(it, None) is None


@given(st.binary(max_size=48), st.lists(st.integers(0, 100), max_size=4))
@HSET
def test_mplex_random_bytes_parity(data, cuts):
    outs = []
    for impl in IMPLS:
        try:
            outs.append(feed_split(impl.MplexDecoder(max_message_size=64), data, cuts, strip=False))
        except (FrameError, VarintError) as exc:
            outs.append(type(exc).__name__)
    assert all(o == outs[0] for o in outs)


@needs_native
def test_native_module_functions_are_not_bound():
    # _accel stores the native functions as class attributes; they must not bind
    assert _accel._impl.uvarint_encode(5) == b"\x05"
    assert _accel._impl.mplex_encode_header(1, 0, 0) == b"\x08\x00"
