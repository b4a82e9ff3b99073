"""MplexSession: stream keys, event sequences, buffering limit, errors, stress."""

from __future__ import annotations

import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.config import MplexConfig
from fastp2p.errors import (
    ClosedResourceError,
    ConnectionClosedError,
    FrameTooLargeError,
    FrameTypeError,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitExceededError,
    StreamErrorCode,
    StreamResetError,
    VarintError,
)
from fastp2p.proto.mplex.session import MplexSession
from fastp2p.proto.muxer import (
    ConnectionTerminated,
    DataReceived,
    StreamEnded,
    StreamOpened,
    StreamReset,
)
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

from .helpers import (
    assert_events,
    drain,
    echo_stress,
    event_types,
    pair,
    transfer,
    wire_bytes,
)

KIB = 1024
MIB = 1024 * KIB


def frame(mid: int, flag: int, data: bytes = b"") -> bytes:
    return uvarint_encode(mid << 3 | flag) + uvarint_encode(len(data)) + data


def frames(data: bytes) -> list[tuple[int, int, bytes]]:
    """Parse raw mplex bytes into (flag, id, payload) (test oracle)."""
    out = []
    pos = 0
    while pos < len(data):
        r = uvarint_decode(data, pos)
        assert r is not None
        key, pos = r
        r = uvarint_decode(data, pos)
        assert r is not None
        n, pos = r
        out.append((key & 7, key >> 3, data[pos : pos + n]))
        pos += n
    return out


def make_pair(**config: object) -> tuple[MplexSession, MplexSession]:
    return pair(MplexSession, config=MplexConfig(**config))  # type: ignore[arg-type]


def opened_pair(**config: object) -> tuple[MplexSession, MplexSession, int]:
    c, s = make_pair(**config)
    key = c.open_stream()
    transfer(c, s)
    assert_events(s, [StreamOpened])
    return c, s, key


# -- raw bytes and keys -----------------------------------------------------------


def test_raw_bytes() -> None:
    c = MplexSession(is_client=True)
    key = c.open_stream()
    assert key == 1  # id 0, initiated by us
    assert wire_bytes(c) == bytes([0x00, 0x01]) + b"0"  # NewStream, name "0"
    c.send_data(key, b"hi")
    assert wire_bytes(c) == bytes([0x02, 0x02]) + b"hi"  # MessageInitiator
    c.close_stream(key)
    assert wire_bytes(c) == bytes([0x04, 0x00])  # CloseInitiator
    k2 = c.open_stream()
    assert k2 == 3
    assert wire_bytes(c) == bytes([0x08, 0x01]) + b"1"
    c.reset_stream(k2)
    assert wire_bytes(c) == bytes([0x0E, 0x00])  # id 1, ResetInitiator


def test_receiver_side_flags_and_keys() -> None:
    c, s, key = opened_pair()
    assert key == 1
    # the server knows the same stream as key 0 (peer-initiated id 0)
    assert s.is_stream_open(0) and not s.is_stream_open(1)
    s.send_data(0, b"yo")
    s.close_stream(0)
    assert wire_bytes(s) == bytes([0x01, 0x02]) + b"yo" + bytes([0x03, 0x00])
    s2 = MplexSession(is_client=False)
    s2.receive_data(frame(0, 0, b"x"), 0.0)
    drain(s2)
    s2.reset_stream(0)
    assert wire_bytes(s2) == bytes([0x05, 0x00])  # ResetReceiver


def test_same_id_both_directions_are_distinct_streams(impl: object) -> None:
    c, s = pair(MplexSession, kernels=impl)
    kc = c.open_stream()
    ks = s.open_stream()
    assert kc == ks == 1  # both id 0, each initiated locally
    transfer(c, s)
    transfer(s, c)
    assert [e.stream_id for e in drain(s)] == [0]
    assert [e.stream_id for e in drain(c)] == [0]
    c.send_data(kc, b"from client")
    c.send_data(0, b"to server's stream")
    transfer(c, s)
    ev = drain(s)
    assert [(e.stream_id, bytes(e.data)) for e in ev] == [
        (0, b"from client"),
        (1, b"to server's stream"),
    ]


# -- lifecycle ----------------------------------------------------------------------


def test_open_data_close_both_ways_removes_stream() -> None:
    c, s, key = opened_pair()
    c.send_data(key, b"req")
    c.close_stream(key)
    c.close_stream(key)  # idempotent
    with pytest.raises(ClosedResourceError):
        c.send_data(key, b"x")
    transfer(c, s)
    ev = assert_events(s, [DataReceived, StreamEnded])
    assert bytes(ev[0].data) == b"req"
    s.acknowledge_received(0, 3)
    s.send_data(0, b"resp")
    s.close_stream(0)
    assert s.stream_count() == 0
    transfer(s, c)
    ev = assert_events(c, [DataReceived, StreamEnded])
    assert bytes(ev[0].data) == b"resp"
    assert c.stream_count() == 0


def test_reset_both_ways() -> None:
    c, s, key = opened_pair()
    c.reset_stream(key)
    with pytest.raises(StreamResetError) as ei:
        c.send_data(key, b"x")
    assert ei.value.remote is False
    transfer(c, s)
    assert_events(s, [StreamReset])
    with pytest.raises(StreamResetError) as ei:
        s.send_data(0, b"x")
    assert ei.value.remote is True
    # messages for the reset stream still in flight are ignored
    s.receive_data(frame(0, 2, b"late"), 0.0)
    assert drain(s) == []
    assert c.stream_count() == s.stream_count() == 0


def test_unknown_stream_messages_ignored() -> None:
    s = MplexSession(is_client=False)
    s.receive_data(frame(5, 2, b"x") + frame(5, 4) + frame(5, 6) + frame(9, 1, b"y"), 0.0)
    assert drain(s) == [] and wire_bytes(s) == b""


def test_message_after_peer_close_resets_the_stream() -> None:
    c, s, key = opened_pair()
    s.receive_data(frame(0, 4), 0.0)
    assert_events(s, [StreamEnded])
    s.receive_data(frame(0, 2, b"bad"), 0.0)
    ev = assert_events(s, [StreamReset])
    assert ev[0].code == StreamErrorCode.PROTOCOL
    assert frames(wire_bytes(s)) == [(5, 0, b"")]
    assert not s.terminated


def test_send_splits_into_max_message_size_zero_copy() -> None:
    c, s, key = opened_pair(max_message_size=1000)
    wire_bytes(c)
    buf = bytearray(2500)
    assert c.send_window(key) == 8000
    assert c.send_data(key, buf) == 2500
    out = c.data_to_send()
    payloads = out[1::2]
    assert [len(p) for p in payloads] == [1000, 1000, 500]
    assert all(isinstance(p, memoryview) and p.obj is buf for p in payloads)
    assert c.send_data(key, b"") == 0


def test_large_message_streamed_across_reads() -> None:
    c, s, key = opened_pair()
    payload = bytes(range(256)) * 3000
    c.send_data(key, payload)
    transfer(c, s, rng=random.Random(3))
    got = b"".join(bytes(e.data) for e in drain(s))
    assert got == payload


# -- buffering limit ------------------------------------------------------------------


def test_unread_data_beyond_limit_resets_only_that_stream() -> None:
    c, s = make_pair(max_buffered_per_stream=10 * KIB)
    slow = c.open_stream()
    fast = c.open_stream()
    transfer(c, s)
    drain(s)
    c.send_data(slow, bytes(8 * KIB))
    c.send_data(fast, bytes(8 * KIB))
    transfer(c, s)
    for e in drain(s):
        if e.stream_id == fast - 1:
            s.acknowledge_received(e.stream_id, len(e.data))
    c.send_data(slow, bytes(4 * KIB))
    c.send_data(fast, bytes(4 * KIB))
    transfer(c, s)
    ev = drain(s)
    assert [(type(e), e.stream_id) for e in ev] == [
        (StreamReset, slow - 1),
        (DataReceived, fast - 1),
    ]
    assert ev[0].code == StreamErrorCode.RESOURCE_LIMIT
    assert s.stats["streams_overflowed"] == 1
    transfer(s, c)
    ev = assert_events(c, [StreamReset])
    assert ev[0].stream_id == slow
    assert c.is_stream_open(fast) and not s.terminated


def test_overacknowledge_is_local_error() -> None:
    c, s, key = opened_pair()
    c.send_data(key, b"abc")
    transfer(c, s)
    drain(s)
    with pytest.raises(LocalProtocolError):
        s.acknowledge_received(0, 4)
    s.acknowledge_received(0, 3)


# -- limits ---------------------------------------------------------------------------


def test_inbound_stream_limit_resets_not_session_error() -> None:
    c = MplexSession(is_client=True)
    s = MplexSession(is_client=False, config=MplexConfig(max_streams=2))
    keys = [c.open_stream() for _ in range(3)]
    transfer(c, s)
    assert event_types(drain(s)) == [StreamOpened, StreamOpened]
    assert frames(wire_bytes(s)) == [(5, 2, b"")]
    assert s.stats["streams_rejected"] == 1
    s.receive_data(frame(2, 2, b"late"), 0.0)
    assert drain(s) == []
    c.receive_data(frame(2, 5), 0.0)
    ev = assert_events(c, [StreamReset])
    assert ev[0].stream_id == keys[2]


def test_outbound_stream_limit() -> None:
    c = MplexSession(is_client=True, config=MplexConfig(max_streams=1))
    k = c.open_stream()
    with pytest.raises(ResourceLimitExceededError):
        c.open_stream()
    c.reset_stream(k)
    c.open_stream()


def test_unknown_keys_are_local_errors() -> None:
    c = MplexSession(is_client=True)
    with pytest.raises(LocalProtocolError):
        c.send_data(7, b"x")
    with pytest.raises(LocalProtocolError):
        c.close_stream(5)


# -- errors, ping, go_away ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "exc"),
    [
        (uvarint_encode(0 << 3 | 7) + b"\x00", FrameTypeError),
        (uvarint_encode(2) + uvarint_encode(2 * MIB), FrameTooLargeError),
        (b"\x80\x00", VarintError),
        (frame(0, 0, b"a") + frame(0, 0, b"a"), RemoteProtocolError),  # double open
    ],
)
def test_malformed_input_terminates(raw: bytes, exc: type) -> None:
    s = MplexSession(is_client=False)
    with pytest.raises(exc):
        s.receive_data(raw, 0.0)
    ev = drain(s)
    assert type(ev[-1]) is ConnectionTerminated and ev[-1].remote is False
    assert s.terminated
    with pytest.raises(ConnectionClosedError):
        s.open_stream()
    s.receive_data(frame(1, 0), 0.0)  # ignored
    assert drain(s) == []


def test_ping_unsupported_and_no_timers() -> None:
    c = MplexSession(is_client=True)
    assert c.supports_ping is False and c.rtt is None
    with pytest.raises(LocalProtocolError):
        c.ping(0.0)
    assert c.get_timer() is None
    c.handle_timer(1.0)
    assert wire_bytes(c) == b""


def test_go_away_terminates_locally() -> None:
    c, s, key = opened_pair()
    wire_bytes(c)
    c.go_away()
    ev = assert_events(c, [ConnectionTerminated])
    assert ev[0].code == 0 and ev[0].remote is False
    assert wire_bytes(c) == b""
    assert c.stream_count() == 0
    with pytest.raises(ConnectionClosedError):
        c.send_data(key, b"x")
    with pytest.raises(ConnectionClosedError):
        c.open_stream()
    c.close_stream(key)  # no-op
    c.go_away()  # idempotent
    assert drain(c) == []


# -- leaks and stress -------------------------------------------------------------------


def test_no_leaks_after_many_cycles() -> None:
    c, s = make_pair()
    for i in range(2000):
        key = c.open_stream()
        c.send_data(key, b"req")
        c.close_stream(key)
        transfer(c, s)
        for e in drain(s):
            if isinstance(e, DataReceived):
                s.acknowledge_received(e.stream_id, len(e.data))
        if i % 3:
            s.send_data(key - 1, b"resp")
            s.close_stream(key - 1)
        else:
            s.reset_stream(key - 1)
        transfer(s, c)
        drain(c)
    assert c.stream_count() == s.stream_count() == 0
    assert len(c._history) <= 4096  # type: ignore[attr-defined]
    assert c._n_outbound == 0 and s._n_inbound == 0  # type: ignore[attr-defined]


def test_stress_100_streams_10_msgs_random_splits(impl: object) -> None:
    c, s = pair(MplexSession, kernels=impl)
    echo_stress(c, s, 100, 10, random.Random(2), peer_key=lambda k: k - 1)


def test_stress_small_messages() -> None:
    c, s = make_pair(max_message_size=100)
    echo_stress(c, s, 50, 50, random.Random(4), peer_key=lambda k: k - 1)


def test_stress_1000_streams_10_msgs(impl: object) -> None:
    c, s = pair(MplexSession, kernels=impl)
    echo_stress(c, s, 1000, 10, None, peer_key=lambda k: k - 1)


# -- random interleavings ----------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("open"), st.booleans()),
    st.tuples(st.just("send"), st.integers(0, 15), st.booleans(), st.integers(0, 5000)),
    st.tuples(st.just("close"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("reset"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("xfer"), st.booleans(), st.integers(0, 2**31)),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=60))
def test_random_interleavings_deliver_in_order(ops: list[tuple]) -> None:
    cfg = MplexConfig(max_message_size=1000)
    sides = {True: MplexSession(is_client=True, config=cfg),
             False: MplexSession(is_client=False, config=cfg)}
    # a stream is named by (initiator side, mplex id); key on side X = id*2 + (X is initiator)
    streams: list[tuple[bool, int]] = []
    sent: dict[tuple[bool, bool, int], bytearray] = {}  # (sender, initiator, id)
    got: dict[tuple[bool, bool, int], bytearray] = {}
    reset: set[tuple[bool, int]] = set()
    counter = 0

    def key_on(side: bool, init: bool, mid: int) -> int:
        return mid * 2 + (1 if side == init else 0)

    def poll(side: bool) -> None:
        for e in drain(sides[side]):
            init = side if e.stream_id & 1 else not side
            mid = e.stream_id // 2
            if isinstance(e, DataReceived):
                got.setdefault((not side, init, mid), bytearray()).extend(e.data)
                sides[side].acknowledge_received(e.stream_id, len(e.data))
            elif isinstance(e, StreamReset):
                reset.add((init, mid))
            else:
                assert not isinstance(e, ConnectionTerminated)

    for op in ops:
        kind = op[0]
        if kind == "open":
            key = sides[op[1]].open_stream()
            streams.append((op[1], key // 2))
        elif kind in ("send", "close", "reset") and streams:
            init, mid = streams[op[1] % len(streams)]
            side = op[2]
            sess = sides[side]
            key = key_on(side, init, mid)
            if not sess.is_stream_open(key):
                continue
            if kind == "send":
                counter += 1
                data = bytes([counter % 256]) * op[3]
                try:
                    assert sess.send_data(key, data) == len(data)
                except ClosedResourceError:
                    continue
                sent.setdefault((side, init, mid), bytearray()).extend(data)
            elif kind == "close":
                sess.close_stream(key)
            else:
                sess.reset_stream(key)
                reset.add((init, mid))
        elif kind == "xfer":
            transfer(sides[op[1]], sides[not op[1]], 0.0, random.Random(op[2]))
            poll(not op[1])
        for k, data in got.items():
            assert sent.get(k, b"")[: len(data)] == data
    for side in (True, False):
        transfer(sides[side], sides[not side])
        poll(not side)
    for k, data in sent.items():
        if (k[1], k[2]) not in reset:
            assert got.get(k, b"") == data


def test_stats_count_wire_bytes() -> None:
    c, s = make_pair()
    key = c.open_stream()
    c.send_data(key, b"x" * 300)
    c.close_stream(key)
    n = transfer(c, s)
    assert c.stats["bytes_out"] == s.stats["bytes_in"] == n
    assert c.stats["frames_out"] == 3
