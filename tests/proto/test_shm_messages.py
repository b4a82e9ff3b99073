"""Sans-IO messages of the shared-memory upgrade (fastp2p.proto.shm) and of
put/get (fastp2p.proto.region): round trips, and hostile input up to 8 KiB
that may only ever raise ``RemoteProtocolError`` subclasses."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.errors import FrameTooLargeError, ProtobufError, RemoteProtocolError
from fastp2p.proto import protobuf
from fastp2p.proto import region as rp
from fastp2p.proto import shm as sp
from fastp2p.proto.region import Op, Request, Response, Status
from fastp2p.proto.shm import Kind, MessageReader, ShmMessage
from fastp2p.proto.varint import uvarint_encode

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
U63 = (1 << 63) - 1  # uvarints are unsigned-varint: at most 9 bytes


def _utf8_at_most(n: int) -> st.SearchStrategy[str]:
    return st.text(max_size=n).filter(lambda s: len(s.encode()) <= n)


shm_messages = st.builds(
    ShmMessage,
    kind=st.sampled_from(list(Kind)),
    boot_id=st.binary(max_size=64),
    pid=st.integers(0, 1 << 31),
    uid=st.integers(0, 1 << 32),
    capacity=st.integers(0, sp.MAX_CAPACITY),
    sealed=st.booleans(),
    reason=_utf8_at_most(512),
    socket=st.binary(max_size=107),
    secret=st.binary(max_size=sp.SECRET_SIZE),
)


def _feed_all(data: bytes, rng: random.Random | None = None) -> list[ShmMessage]:
    reader = MessageReader()
    if rng is None:
        return reader.receive_data(data)
    out: list[ShmMessage] = []
    pos = 0
    while pos < len(data):
        step = rng.randint(1, 64)
        out += reader.receive_data(data[pos : pos + step])
        pos += step
    return out


# -- shm upgrade messages: round trips ------------------------------------------------------


def test_hello_round_trip() -> None:
    hello = ShmMessage(
        Kind.HELLO,
        boot_id=b"0123456789abcdef-boot",
        pid=4242,
        uid=1000,
        capacity=4 << 20,
        sealed=True,
        socket=b"\0fastp2p-shm-" + b"ab" * 16,
        secret=bytes(range(32)),
    )
    assert MessageReader().receive_data(sp.encode(hello)) == [hello]


@pytest.mark.parametrize(
    "msg",
    [
        ShmMessage(Kind.REFUSE, reason="peer runs as another user"),
        ShmMessage(Kind.SWITCH),
        ShmMessage(Kind.HELLO),
    ],
)
def test_simple_round_trips(msg: ShmMessage) -> None:
    assert MessageReader().receive_data(sp.encode(msg)) == [msg]


@FUZZ
@given(st.lists(shm_messages, min_size=1, max_size=5), st.randoms(use_true_random=False))
def test_shm_round_trip_any_split(msgs: list[ShmMessage], rng: random.Random) -> None:
    wire = b"".join(sp.encode(m) for m in msgs)
    assert _feed_all(wire) == msgs
    assert _feed_all(wire, rng) == msgs


def test_every_truncation_waits_for_more() -> None:
    msg = ShmMessage(
        Kind.HELLO, boot_id=b"b" * 36, pid=7, uid=0, socket=b"\0fastp2p-shm-x", secret=b"s" * 32
    )
    wire = sp.encode(msg)
    for cut in range(len(wire)):
        reader = MessageReader()
        assert reader.receive_data(wire[:cut]) == []
        assert reader.receive_data(wire[cut:]) == [msg]


def test_reason_is_truncated_to_512_chars_on_encode() -> None:
    [got] = MessageReader().receive_data(sp.encode(ShmMessage(Kind.REFUSE, reason="x" * 2000)))
    assert got.reason == "x" * 512


def test_non_ascii_reason_round_trips() -> None:
    msg = ShmMessage(Kind.REFUSE, reason="é" * 300)
    [got] = MessageReader().receive_data(sp.encode(msg))
    assert got.reason.startswith("é")


# -- shm upgrade messages: malformed input ------------------------------------------------------


def _body(fields: list[tuple[int, int | bytes | str]]) -> bytes:
    return protobuf.length_prefixed(protobuf.encode(fields))


@pytest.mark.parametrize(
    ("wire", "exc"),
    [
        (uvarint_encode(sp.MAX_MESSAGE + 1), FrameTooLargeError),
        (uvarint_encode(1 << 40) + b"x", FrameTooLargeError),
        (b"\xff" * 10, RemoteProtocolError),  # length prefix never ends
        (b"\x80\x00", RemoteProtocolError),  # non-minimal prefix
        (_body([(1, 0)]), RemoteProtocolError),  # kind 0
        (_body([(1, 2)]), RemoteProtocolError),  # kind 2: not a kind any more
        (_body([(1, 99)]), RemoteProtocolError),
        (_body([(1, 256)]), ProtobufError),  # kind out of range
        (_body([(1, b"hello")]), ProtobufError),  # kind with the wrong wire type
        (_body([(1, 1), (3, b"pid")]), ProtobufError),
        (_body([(1, 1), (3, (1 << 31) + 1)]), ProtobufError),  # pid too big
        (_body([(1, 1), (5, sp.MAX_CAPACITY + 1)]), ProtobufError),  # capacity too big
        (_body([(1, 1), (6, 2)]), ProtobufError),  # sealed not a bool
        (_body([(1, 1), (2, b"b" * 65)]), ProtobufError),  # boot id too long
        (_body([(1, 1), (8, b"s" * 108)]), ProtobufError),  # socket name too long
        (_body([(1, 1), (9, b"k" * 33)]), ProtobufError),  # secret too long
        (_body([(1, 1), (7, 5)]), ProtobufError),  # reason with the wrong wire type
        (uvarint_encode(3) + b"\x08\x01\x0a", ProtobufError),  # field cut inside the body
        (uvarint_encode(2) + b"\x0b\x01", ProtobufError),  # wire type 3 (groups)
    ],
)
def test_malformed_shm_messages(wire: bytes, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        MessageReader().receive_data(wire)


def test_oversize_prefix_is_rejected_before_the_body_arrives() -> None:
    reader = MessageReader()
    with pytest.raises(FrameTooLargeError):
        reader.receive_data(uvarint_encode(sp.MAX_MESSAGE + 1)[:2])


def test_max_size_prefix_waits_for_the_body() -> None:
    reader = MessageReader()
    assert reader.receive_data(uvarint_encode(sp.MAX_MESSAGE) + b"\x08") == []


def _only_protocol_errors(fn, *args) -> object:
    try:
        return fn(*args)
    except RemoteProtocolError:
        return None


@FUZZ
@given(st.binary(max_size=8192), st.randoms(use_true_random=False))
def test_shm_reader_garbage_raises_only_protocol_errors(data: bytes, rng: random.Random) -> None:
    _only_protocol_errors(_feed_all, data)
    _only_protocol_errors(_feed_all, data, rng)


@FUZZ
@given(
    st.lists(shm_messages, min_size=1, max_size=3),
    st.lists(st.tuples(st.integers(0, 1 << 16), st.integers(0, 255)), max_size=8),
    st.integers(0, 1 << 16),
    st.binary(max_size=64),
)
def test_shm_reader_mutated_messages_raise_only_protocol_errors(
    msgs: list[ShmMessage], flips: list[tuple[int, int]], cut: int, tail: bytes
) -> None:
    wire = bytearray(b"".join(sp.encode(m) for m in msgs))
    for pos, val in flips:
        wire[pos % len(wire)] = val
    wire = wire[: cut % (len(wire) + 1)] + tail
    _only_protocol_errors(_feed_all, bytes(wire))


@FUZZ
@given(
    st.lists(st.tuples(st.integers(1, 40), st.one_of(st.integers(0, U63), st.binary(max_size=600))))
)
def test_shm_decoder_any_field_set(fields: list[tuple[int, int | bytes]]) -> None:
    """Well-formed protobuf with arbitrary field numbers, types and sizes."""
    body = protobuf.encode(fields)
    if len(body) <= sp.MAX_MESSAGE:
        _only_protocol_errors(_feed_all, protobuf.length_prefixed(body))


# -- region messages ---------------------------------------------------------------------------

requests = st.builds(
    Request,
    op=st.sampled_from(list(Op)),
    token=st.binary(max_size=512),
    offset=st.integers(0, U63),
    length=st.integers(0, U63),
    direct=st.booleans(),
    address=st.integers(0, U63),
)
responses = st.builds(Response, status=st.sampled_from(list(Status)), message=st.text(max_size=512))


def _split(wire: bytes) -> tuple[bytes, bytes]:
    r = rp.read_message(wire)
    assert r is not None
    body, used = r
    return body, wire[used:]


@FUZZ
@given(requests)
def test_request_round_trip(req: Request) -> None:
    body, rest = _split(rp.encode_request(req))
    assert rest == b""
    got = rp.decode_request(body)
    if not req.direct:
        req = Request(req.op, req.token, req.offset, req.length)  # address only travels with direct
    assert got == req


@FUZZ
@given(responses)
def test_response_round_trip(resp: Response) -> None:
    body, rest = _split(rp.encode_response(resp))
    assert rest == b""
    assert rp.decode_response(body) == resp


def test_messages_back_to_back_and_truncated() -> None:
    a = rp.encode_request(Request(Op.PUT, b"t" * 120, 5, 6, direct=True, address=0x7F0000001000))
    b = rp.encode_response(Response(Status.BOUNDS, "range outside the grant"))
    wire = a + b
    for cut in range(len(a)):
        assert rp.read_message(wire[:cut]) is None
    body, rest = _split(wire)
    assert rp.decode_request(body).address == 0x7F0000001000
    body2, rest2 = _split(rest)
    assert rp.decode_response(body2) == Response(Status.BOUNDS, "range outside the grant")
    assert rest2 == b""


@pytest.mark.parametrize(
    ("fn", "body", "exc"),
    [
        (rp.decode_request, protobuf.encode([(1, 0)]), RemoteProtocolError),  # op 0
        (rp.decode_request, protobuf.encode([(1, 3)]), RemoteProtocolError),  # op 3
        (
            rp.decode_request,
            protobuf.encode([(1, 1), (2, b"t" * 513)]),
            ProtobufError,
        ),  # token too long
        (rp.decode_request, protobuf.encode([(1, 1), (2, 5)]), ProtobufError),  # token as varint
        (rp.decode_request, protobuf.encode([(1, 1), (3, b"off")]), ProtobufError),
        (rp.decode_request, protobuf.encode([(1, b"op")]), ProtobufError),
        (rp.decode_request, b"\x08", ProtobufError),  # truncated varint
        (rp.decode_response, protobuf.encode([(1, 6)]), RemoteProtocolError),  # unknown status
        (rp.decode_response, protobuf.encode([(1, 0), (2, 7)]), ProtobufError),  # message as varint
        (rp.decode_response, b"\x12\x05ab", ProtobufError),  # bytes field cut short
    ],
)
def test_malformed_region_messages(fn, body: bytes, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        fn(body)


@pytest.mark.parametrize(
    ("wire", "exc"),
    [
        (uvarint_encode(rp.MAX_MESSAGE + 1), FrameTooLargeError),
        (uvarint_encode(1 << 62), FrameTooLargeError),
        (b"\xff" * 10, RemoteProtocolError),
        (b"\x80\x00", RemoteProtocolError),
    ],
)
def test_malformed_region_length_prefix(wire: bytes, exc: type[Exception]) -> None:
    with pytest.raises(exc):
        rp.read_message(wire)


@FUZZ
@given(st.binary(max_size=8192))
def test_region_garbage_raises_only_protocol_errors(data: bytes) -> None:
    _only_protocol_errors(rp.read_message, data)
    _only_protocol_errors(rp.decode_request, data)
    _only_protocol_errors(rp.decode_response, data)


@FUZZ
@given(
    st.one_of(requests.map(rp.encode_request), responses.map(rp.encode_response)),
    st.lists(st.tuples(st.integers(0, 1 << 12), st.integers(0, 255)), max_size=8),
    st.integers(0, 1 << 12),
)
def test_region_mutated_messages_raise_only_protocol_errors(
    wire: bytes, flips: list[tuple[int, int]], cut: int
) -> None:
    buf = bytearray(wire)
    for pos, val in flips:
        buf[pos % len(buf)] = val
    buf = buf[: cut % (len(buf) + 1)]
    r = _only_protocol_errors(rp.read_message, bytes(buf))
    body = r[0] if isinstance(r, tuple) else bytes(buf)
    _only_protocol_errors(rp.decode_request, body)
    _only_protocol_errors(rp.decode_response, body)


@FUZZ
@given(
    st.lists(st.tuples(st.integers(1, 40), st.one_of(st.integers(0, U63), st.binary(max_size=700))))
)
def test_region_decoders_any_field_set(fields: list[tuple[int, int | bytes]]) -> None:
    body = protobuf.encode(fields)
    _only_protocol_errors(rp.decode_request, body)
    _only_protocol_errors(rp.decode_response, body)
