"""Kademlia protobuf: round trips, strict bounded decoding, hypothesis fuzz of the decoder."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.errors import FrameTooLargeError, ProtobufError, RemoteProtocolError
from fastp2p.proto import protobuf
from fastp2p.proto.kad.messages_pb import (
    KadLimits,
    KadMessage,
    KadPeer,
    KadReader,
    KadRecord,
    MessageType,
    decode_message,
    encode_message,
    frame,
)

peers = st.builds(
    KadPeer,
    id=st.binary(min_size=1, max_size=40),
    addrs=st.lists(st.binary(min_size=1, max_size=30), max_size=4),
    connection=st.integers(0, 3),
)
records = st.builds(
    KadRecord,
    key=st.binary(max_size=50),
    value=st.binary(max_size=200),
    time_received=st.text(max_size=30).filter(lambda s: len(s.encode()) <= 64),
)
messages = st.builds(
    KadMessage,
    type=st.sampled_from(list(MessageType)),
    key=st.binary(max_size=60),
    record=st.none() | records,
    closer_peers=st.lists(peers, max_size=5),
    provider_peers=st.lists(peers, max_size=5),
    cluster_level=st.integers(0, 2**31 - 1),
)


@settings(max_examples=200, deadline=None)
@given(messages)
def test_round_trip(msg: KadMessage) -> None:
    assert decode_message(encode_message(msg)) == msg


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=8192))
def test_decoder_fuzz_only_raises_remote_protocol_errors(data: bytes) -> None:
    try:
        msg = decode_message(data)
    except RemoteProtocolError:
        return
    assert isinstance(msg.type, MessageType)
    assert len(msg.closer_peers) + len(msg.provider_peers) <= KadLimits().max_peers


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.binary(max_size=64), st.integers(0, 8192))
def test_mutated_valid_messages(msg: KadMessage, junk: bytes, where: int) -> None:
    raw = bytearray(encode_message(msg))
    where = min(where, len(raw))
    raw[where:where] = junk
    try:
        decode_message(bytes(raw))
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.binary(max_size=300), max_size=10), st.integers(1, 50))
def test_reader_fuzz(chunks: list[bytes], split: int) -> None:
    reader = KadReader(KadLimits(max_message_size=4096))
    data = b"".join(chunks)
    try:
        for i in range(0, len(data), split):
            reader.receive_data(data[i : i + split])
    except RemoteProtocolError:
        pass


def test_proto3_zero_type_is_put_value_and_unknown_fields_are_skipped() -> None:
    raw = protobuf.encode([(2, b"/fastp2p/k"), (99, b"future"), (7, 3)])
    msg = decode_message(raw)
    assert msg.type is MessageType.PUT_VALUE and msg.key == b"/fastp2p/k"
    # Record fields 3/4 (removed author/signature) are ignored
    rec = protobuf.encode([(1, b"k"), (3, b"author"), (4, b"sig"), (2, b"v")])
    msg = decode_message(protobuf.encode([(1, 1), (3, rec)]))
    assert msg.record == KadRecord(b"k", b"v", "")


@pytest.mark.parametrize(
    "raw",
    [
        protobuf.encode([(1, 9)]),  # unknown message type
        protobuf.encode([(1, b"x")]),  # wrong wire type
        protobuf.encode([(2, 5)]),
        protobuf.encode([(3, protobuf.encode([(5, b"\xff\xfe")]))]),  # bad UTF-8 time
        protobuf.encode([(8, protobuf.encode([(2, b"a")] * 65))]),  # too many addrs
        protobuf.encode([(8, b"")] * 257),  # too many peers
        protobuf.encode([(2, b"k" * 2049)]),  # key too long
    ],
)
def test_strict_rejections(raw: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode_message(raw)


def test_size_limits_and_reader_framing() -> None:
    with pytest.raises(FrameTooLargeError):
        decode_message(b"\x00" * 100, KadLimits(max_message_size=50))
    msgs = [KadMessage(MessageType.FIND_NODE, key=b"a" * i) for i in range(1, 6)]
    stream = b"".join(frame(m) for m in msgs)
    reader = KadReader()
    out = []
    for i in range(len(stream)):
        out += reader.receive_data(stream[i : i + 1])
    assert out == msgs and reader.buffered == 0
    with pytest.raises(FrameTooLargeError):
        KadReader(KadLimits(max_message_size=10)).receive_data(b"\x20" + b"x" * 32)
