"""YamuxSession: event sequences, flow control, limits, ping/keepalive, GoAway, errors.

No event loop: two sessions are wired by ``transfer``; ``now`` is explicit.
"""

from __future__ import annotations

import random
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.config import YamuxConfig
from fastp2p.errors import (
    ClosedResourceError,
    ConnectionClosedError,
    FlowControlError,
    FrameTypeError,
    FrameVersionError,
    GoAwayCode,
    LocalProtocolError,
    RemoteProtocolError,
    ResourceLimitExceededError,
    StreamResetError,
)
from fastp2p.proto.muxer import (
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    PingAcknowledged,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from fastp2p.proto.yamux.session import YamuxSession

from .helpers import (
    Collector,
    assert_events,
    drain,
    echo_stress,
    event_types,
    exchange,
    pair,
    pump,
    transfer,
    wire_bytes,
)

KIB = 1024
MIB = 1024 * KIB


def hdr(type_: int, flags: int, sid: int, length: int) -> bytes:
    return struct.pack(">BBHII", 0, type_, flags, sid, length)


def frames(data: bytes) -> list[tuple[int, int, int, int, bytes]]:
    """Parse raw yamux bytes (test oracle, independent of the codec under test)."""
    out = []
    pos = 0
    while pos < len(data):
        ver, t, f, sid, ln = struct.unpack_from(">BBHII", data, pos)
        assert ver == 0
        pos += 12
        payload = b""
        if t == 0:
            payload = data[pos : pos + ln]
            pos += ln
        out.append((t, f, sid, ln, payload))
    return out


def make_pair(**config: object) -> tuple[YamuxSession, YamuxSession]:
    cfg = YamuxConfig(**config)  # type: ignore[arg-type]
    return pair(YamuxSession, config=cfg)


def opened_pair(**config: object) -> tuple[YamuxSession, YamuxSession, int]:
    c, s = make_pair(**config)
    sid = c.open_stream()
    exchange(c, s)
    assert_events(s, [StreamOpened])
    drain(c)
    return c, s, sid


# -- raw byte vectors ------------------------------------------------------------


def test_syn_window_update_bytes() -> None:
    c = YamuxSession(is_client=True)
    assert c.open_stream() == 1
    # yamux spec: version 0, type 0x1 window update, flags SYN, stream 1, delta 0
    assert wire_bytes(c) == bytes.fromhex("00 01 0001 00000001 00000000")


def test_syn_carries_window_increase_beyond_256k() -> None:
    c = YamuxSession(is_client=True, config=YamuxConfig(initial_window=1 * MIB))
    c.open_stream()
    assert wire_bytes(c) == hdr(1, 1, 1, 768 * KIB)


def test_server_ids_even_and_ack_bytes() -> None:
    c, s = make_pair()
    sid = s.open_stream()
    assert sid == 2 and s.open_stream() == 4
    transfer(s, c)
    # receiver accepts each with WINDOW_UPDATE|ACK, delta 0
    assert wire_bytes(c) == bytes.fromhex("00 01 0002 00000002 00000000" "00 01 0002 00000004 00000000")


def test_data_frame_bytes() -> None:
    c, s, sid = opened_pair()
    c.send_data(sid, b"hello")
    assert wire_bytes(c) == bytes.fromhex("00 00 0000 00000001 00000005") + b"hello"


def test_ping_bytes_and_echo() -> None:
    c, s = make_pair()
    opaque = c.ping(1.0)
    assert wire_bytes(c) == bytes.fromhex("00 02 0001 00000000") + struct.pack(">I", opaque)
    c.ping(1.0)
    s.receive_data(hdr(2, 1, 0, 0xDEADBEEF), 1.0)
    assert wire_bytes(s) == bytes.fromhex("00 02 0002 00000000 DEADBEEF")
    assert drain(s) == []


def test_fin_and_rst_bytes() -> None:
    c, s, sid = opened_pair()
    c.close_stream(sid)
    assert wire_bytes(c) == hdr(1, 4, sid, 0)
    sid2 = c.open_stream()
    wire_bytes(c)
    c.reset_stream(sid2, 7)
    assert wire_bytes(c) == hdr(1, 8, sid2, 7)


def test_go_away_bytes() -> None:
    c = YamuxSession(is_client=True)
    c.go_away()
    assert wire_bytes(c) == bytes.fromhex("00 03 0000 00000000 00000000")
    c2 = YamuxSession(is_client=True)
    c2.go_away(GoAwayCode.INTERNAL_ERROR)
    assert wire_bytes(c2) == hdr(3, 0, 0, 2)
    assert event_types(drain(c2)) == [ConnectionTerminated]


# -- streams: open / data / FIN / RST ------------------------------------------------


def test_open_send_receive_close_both_ways(impl: object) -> None:
    c, s = pair(YamuxSession, kernels=impl)
    sid = c.open_stream()
    assert c.send_data(sid, b"ping") == 4
    transfer(c, s)
    ev = assert_events(s, [StreamOpened, DataReceived])
    assert ev[0].stream_id == sid and bytes(ev[1].data) == b"ping"
    assert isinstance(ev[1].data, memoryview)
    s.acknowledge_received(sid, 4, 0.0)
    assert s.send_data(sid, b"pong") == 4
    s.close_stream(sid)
    transfer(s, c)
    ev = assert_events(c, [DataReceived, StreamEnded])
    assert bytes(ev[0].data) == b"pong"
    assert c.is_stream_open(sid) and s.is_stream_open(sid)
    c.close_stream(sid)
    assert not c.is_stream_open(sid)  # both directions closed
    transfer(c, s)
    assert_events(s, [StreamEnded])
    assert c.stream_count() == s.stream_count() == 0


def test_syn_with_data_and_fin_in_one_frame() -> None:
    c, s = make_pair()
    s.receive_data(hdr(0, 1 | 4, 1, 3) + b"abc", 0.0)
    ev = assert_events(s, [StreamOpened, DataReceived, StreamEnded])
    assert bytes(ev[1].data) == b"abc"
    assert frames(wire_bytes(s)) == [(1, 2, 1, 0, b"")]  # ACK


def test_syn_data_fin_frame_fed_byte_by_byte(impl: object) -> None:
    s = YamuxSession(is_client=False, kernels=impl)
    raw = hdr(0, 1 | 4, 1, 10) + b"0123456789"
    for i in range(len(raw)):
        s.receive_data(raw[i : i + 1], 0.0)
    ev = drain(s)
    assert event_types(ev) == [StreamOpened] + [DataReceived] * 10 + [StreamEnded]
    assert b"".join(bytes(e.data) for e in ev[1:-1]) == b"0123456789"
    assert frames(wire_bytes(s)) == [(1, 2, 1, 0, b"")]


def test_half_close_semantics() -> None:
    c, s, sid = opened_pair()
    c.close_stream(sid)
    c.close_stream(sid)  # idempotent
    with pytest.raises(ClosedResourceError):
        c.send_data(sid, b"x")
    with pytest.raises(ClosedResourceError):
        c.send_window(sid)
    transfer(c, s)
    assert_events(s, [StreamEnded])
    # the other direction still works
    assert s.send_data(sid, b"late reply") == 10
    transfer(s, c)
    ev = assert_events(c, [DataReceived])
    assert bytes(ev[0].data) == b"late reply"
    # a duplicate FIN from the peer gives no second StreamEnded
    c.receive_data(hdr(1, 4, sid, 0), 0.0)
    s.close_stream(sid)
    transfer(s, c)
    assert_events(c, [StreamEnded])
    assert c.stream_count() == 0


def test_data_after_peer_fin_is_protocol_error() -> None:
    c, s, sid = opened_pair()
    s.receive_data(hdr(1, 4, sid, 0), 0.0)
    assert_events(s, [StreamEnded])
    with pytest.raises(RemoteProtocolError):
        s.receive_data(hdr(0, 0, sid, 1) + b"x", 0.0)
    assert frames(wire_bytes(s))[-1] == (3, 0, 0, 1, b"")


def test_reset_local_and_remote() -> None:
    c, s, sid = opened_pair()
    c.send_data(sid, b"abc")
    c.reset_stream(sid, 3)
    assert not c.is_stream_open(sid)
    with pytest.raises(StreamResetError) as ei:
        c.send_data(sid, b"x")
    assert ei.value.remote is False and ei.value.code == 3
    c.reset_stream(sid)  # no-op
    c.close_stream(sid)  # no-op
    transfer(c, s)
    ev = assert_events(s, [DataReceived, StreamReset])
    assert ev[1].code == 3
    with pytest.raises(StreamResetError) as ei:
        s.send_data(sid, b"x")
    assert ei.value.remote is True
    # late frames for the reset stream are ignored (they cross the RST on the wire)
    c.receive_data(hdr(0, 0, sid, 5) + b"hello" + hdr(1, 0, sid, 100), 0.0)
    assert drain(c) == []
    assert c.stream_count() == s.stream_count() == 0


def test_acknowledge_after_removal_is_ignored() -> None:
    c, s, sid = opened_pair()
    c.send_data(sid, b"abc")
    c.reset_stream(sid)
    transfer(c, s)
    drain(s)
    s.acknowledge_received(sid, 3, 0.0)
    assert wire_bytes(s) == b""


def test_unknown_stream_ids_are_local_errors() -> None:
    c, s = make_pair()
    with pytest.raises(LocalProtocolError):
        c.send_data(99, b"x")
    with pytest.raises(LocalProtocolError):
        c.close_stream(99)
    with pytest.raises(LocalProtocolError):
        c.reset_stream(98)


def test_overacknowledge_is_local_error() -> None:
    c, s, sid = opened_pair()
    c.send_data(sid, b"abc")
    transfer(c, s)
    drain(s)
    with pytest.raises(LocalProtocolError):
        s.acknowledge_received(sid, 4, 0.0)


def test_send_data_is_zero_copy_and_split_by_max_frame_size() -> None:
    c, s, sid = opened_pair(max_frame_size=1000)
    buf = bytearray(b"x" * 2500)
    assert c.send_data(sid, buf) == 2500
    out = c.data_to_send()
    assert len(out) == 6
    payloads = out[1::2]
    assert [len(p) for p in payloads] == [1000, 1000, 500]
    for p in payloads:
        assert isinstance(p, memoryview) and p.obj is buf
    headers = out[0::2]
    assert headers == [hdr(0, 0, sid, 1000), hdr(0, 0, sid, 1000), hdr(0, 0, sid, 500)]


def test_zero_length_send_is_noop() -> None:
    c, s, sid = opened_pair()
    assert c.send_data(sid, b"") == 0
    assert c.data_to_send() == []


def test_data_split_across_receive_calls_is_reassembled_in_order() -> None:
    c, s, sid = opened_pair()
    payload = bytes(range(256)) * 400
    c.send_data(sid, payload)
    c.close_stream(sid)
    rng = random.Random(5)
    transfer(c, s, rng=rng)
    got = bytearray()
    events = drain(s)
    for e in events:
        if isinstance(e, DataReceived):
            got += e.data
    assert got == payload
    assert type(events[-1]) is StreamEnded


# -- flow control ------------------------------------------------------------------


def test_sender_blocks_at_256k_until_receiver_acknowledges() -> None:
    c, s, sid = opened_pair()
    big = bytes(1 * MIB)
    assert c.send_window(sid) == 256 * KIB
    assert c.send_data(sid, big) == 256 * KIB
    assert c.send_window(sid) == 0
    assert c.send_data(sid, big) == 0
    transfer(c, s)
    got = sum(len(e.data) for e in drain(s) if isinstance(e, DataReceived))
    assert got == 256 * KIB
    # nothing consumed yet: no credit goes back
    assert transfer(s, c) == 0
    s.acknowledge_received(sid, 100 * KIB, 0.0)
    assert transfer(s, c) == 0  # below half a window
    s.acknowledge_received(sid, 28 * KIB, 0.0)
    transfer(s, c)
    assert_events(c, [WindowUpdated])
    assert c.send_window(sid) == 128 * KIB


def test_window_auto_tuning_grows_to_max_window() -> None:
    c, s, sid = opened_pair(max_window=2 * MIB)
    now = 0.0
    # measure an RTT of 10 ms from the receiver's side
    s.ping(now)
    transfer(s, c, now)
    transfer(c, s, now + 0.01)
    assert s.rtt == pytest.approx(0.01)
    drain(s)
    cc, cs = Collector(c, now=now), Collector(s, now=now)
    total = 0
    seen_windows = []
    for _ in range(40):
        n = c.send_data(sid, bytes(c.send_window(sid)))
        total += n
        # a fast reader: everything acknowledged within one RTT
        now += 0.001
        cc.now = cs.now = now
        pump(c, s, cc, cs, now)
        seen_windows.append(c.send_window(sid))
    assert max(seen_windows) > 256 * KIB
    assert s._streams[sid].recv.max_window == 2 * MIB  # type: ignore[attr-defined]
    assert len(cs.data[sid]) == total


def test_no_auto_tuning_for_slow_reader() -> None:
    c, s, sid = opened_pair()
    now = 0.0
    s.ping(now)
    transfer(s, c, now)
    transfer(c, s, now + 0.01)
    drain(s)
    for _ in range(10):
        c.send_data(sid, bytes(c.send_window(sid)))
        transfer(c, s, now)
        now += 1.0  # reader takes 100 RTTs per window
        for e in drain(s):
            if isinstance(e, DataReceived):
                s.acknowledge_received(sid, len(e.data), now)
        transfer(s, c, now)
    assert s._streams[sid].recv.max_window == 256 * KIB  # type: ignore[attr-defined]


def test_flow_control_violation_queues_go_away_then_raises() -> None:
    c, s, sid = opened_pair()
    bad = hdr(0, 0, sid, 256 * KIB + 1) + bytes(256 * KIB + 1)
    with pytest.raises(FlowControlError):
        s.receive_data(bad, 0.0)
    out = wire_bytes(s)
    assert out.endswith(hdr(3, 0, 0, GoAwayCode.PROTOCOL_ERROR))
    ev = drain(s)
    assert type(ev[-1]) is ConnectionTerminated
    assert ev[-1].code == 1 and ev[-1].remote is False
    # the session is dead: input ignored, API raises
    s.receive_data(hdr(2, 1, 0, 1), 0.0)
    assert wire_bytes(s) == b""
    with pytest.raises(ConnectionClosedError):
        s.open_stream()
    with pytest.raises(ConnectionClosedError):
        s.send_data(sid, b"x")
    assert s.get_timer() is None
    assert s.stream_count() == 0


def test_flow_control_violation_detected_across_split_frames() -> None:
    c, s, sid = opened_pair()
    s.receive_data(hdr(0, 0, sid, 300 * KIB) + bytes(200 * KIB), 0.0)
    with pytest.raises(FlowControlError):
        s.receive_data(bytes(100 * KIB), 0.0)


def test_peer_grown_window_is_honoured() -> None:
    c, s = make_pair(initial_window=1 * MIB)
    sid = c.open_stream()
    transfer(c, s)
    drain(s)
    transfer(s, c)  # ACK carries +768 KiB
    assert_events(c, [WindowUpdated])
    assert c.send_window(sid) == 1 * MIB
    assert c.send_data(sid, bytes(2 * MIB)) == 1 * MIB
    transfer(c, s)  # within the window announced by the SYN: no error
    assert sum(len(e.data) for e in drain(s) if isinstance(e, DataReceived)) == 1 * MIB
    # ...and the server's own stream window towards the client
    assert s.send_window(sid) == 1 * MIB


def test_window_update_overflow_is_flow_control_error() -> None:
    c, s, sid = opened_pair()
    with pytest.raises(FlowControlError):
        c.receive_data(hdr(1, 0, sid, 0xFFFFFFFF), 0.0)


# -- stream limits and ACK backlog ---------------------------------------------------


def test_inbound_max_streams_rst_not_session_error() -> None:
    c, s = make_pair(max_streams=2)
    c2 = YamuxSession(is_client=True)  # unlimited opener
    ids = [c2.open_stream() for _ in range(3)]
    transfer(c2, s)
    assert event_types(drain(s)) == [StreamOpened, StreamOpened]
    fr = frames(wire_bytes(s))
    assert fr[-1] == (1, 8, ids[2], 0, b"")  # RST
    assert s.stats["streams_rejected"] == 1
    # data already in flight for the refused stream is ignored, not an error
    s.receive_data(hdr(0, 0, ids[2], 3) + b"abc", 0.0)
    assert drain(s) == []
    # a freed slot admits a new stream
    s.reset_stream(ids[0])
    s.receive_data(hdr(1, 1, 7, 0), 0.0)
    assert event_types(drain(s)) == [StreamOpened]


def test_refused_stream_is_reset_at_opener() -> None:
    c = YamuxSession(is_client=True)
    s = YamuxSession(is_client=False, config=YamuxConfig(max_streams=1))
    a = c.open_stream()
    b = c.open_stream()
    transfer(c, s)
    transfer(s, c)
    ev = assert_events(c, [StreamReset])
    assert ev[0].stream_id == b
    with pytest.raises(StreamResetError):
        c.send_data(b, b"x")
    assert c.send_data(a, b"ok") == 2


def test_outbound_max_streams() -> None:
    c = YamuxSession(is_client=True, config=YamuxConfig(max_streams=2))
    c.open_stream()
    b = c.open_stream()
    with pytest.raises(ResourceLimitExceededError):
        c.open_stream()
    c.reset_stream(b)
    c.open_stream()


def test_ack_backlog_defers_syn_until_acked() -> None:
    c, s = make_pair(accept_backlog=4)
    ids = [c.open_stream() for _ in range(10)]
    syns = [f for f in frames(wire_bytes(c)) if f[1] & 1]
    assert [f[2] for f in syns] == ids[:4]
    assert c.send_window(ids[5]) == 0
    assert c.send_data(ids[5], b"queued") == 0
    c.close_stream(ids[9])  # FIN will ride on the deferred SYN
    c.reset_stream(ids[8])  # never announced: nothing sent
    assert wire_bytes(c) == b""
    # peer acknowledges the first four
    for sid in ids[:4]:
        s.receive_data(hdr(1, 1, sid, 0), 0.0)
    drain(s)
    transfer(s, c)
    ev = drain(c)
    assert [e.stream_id for e in ev if isinstance(e, WindowUpdated)] == ids[4:8]
    assert c.send_window(ids[5]) == 256 * KIB
    fr = frames(wire_bytes(c))
    assert [f[2] for f in fr] == ids[4:8]
    transfer(s, c)  # nothing
    for sid in ids[4:8]:
        s.receive_data(hdr(1, 1, sid, 0), 0.0)
    transfer(s, c)
    drain(c)
    assert frames(wire_bytes(c)) == [(1, 1 | 4, ids[9], 0, b"")]


def test_inbound_accept_backlog_counts_undelivered_stream_opened() -> None:
    c, s = make_pair(accept_backlog=3)
    for sid in (1, 3, 5, 7):
        s.receive_data(hdr(1, 1, sid, 0), 0.0)
    fr = frames(wire_bytes(s))
    assert fr[-1] == (1, 8, 7, 0, b"")
    assert len(drain(s)) == 3  # the application accepted them
    s.receive_data(hdr(1, 1, 9, 0), 0.0)
    assert event_types(drain(s)) == [StreamOpened]


def test_syn_burst_in_one_read_is_bounded_by_max_streams_only() -> None:
    s = YamuxSession(is_client=False, config=YamuxConfig(accept_backlog=3, max_streams=8))
    s.receive_data(b"".join(hdr(1, 1, sid, 0) for sid in range(1, 21, 2)), 0.0)
    assert event_types(drain(s)) == [StreamOpened] * 8
    fr = frames(wire_bytes(s))
    assert [f[1] for f in fr] == [2] * 8 + [8] * 2  # 8 ACKs, 2 RSTs


# -- protocol errors -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "exc"),
    [
        (b"\x01" + hdr(0, 0, 1, 0)[1:], FrameVersionError),
        (b"\x00\x07" + hdr(0, 0, 1, 0)[2:], FrameTypeError),
        (hdr(1, 1, 2, 0), RemoteProtocolError),  # SYN with the server's own parity
        (hdr(1, 1, 0, 0), RemoteProtocolError),  # SYN on the session id
        (hdr(0, 0, 41, 1) + b"x", RemoteProtocolError),  # never opened
        (hdr(1, 0, 0, 5), RemoteProtocolError),  # window update on stream 0
    ],
)
def test_malformed_input_raises_typed_error_and_queues_go_away(raw: bytes, exc: type) -> None:
    s = YamuxSession(is_client=False)
    with pytest.raises(exc) as ei:
        s.receive_data(raw, 0.0)
    assert isinstance(ei.value, RemoteProtocolError)
    assert frames(wire_bytes(s))[-1] == (3, 0, 0, 1, b"")
    assert type(drain(s)[-1]) is ConnectionTerminated
    assert s.terminated


def test_reused_stream_id_is_protocol_error() -> None:
    c, s, sid = opened_pair()
    with pytest.raises(RemoteProtocolError):
        s.receive_data(hdr(1, 1, sid, 0), 0.0)
    c2, s2, sid2 = opened_pair()
    s2.reset_stream(sid2)
    with pytest.raises(RemoteProtocolError):
        s2.receive_data(hdr(1, 1, sid2, 0), 0.0)


def test_events_before_the_error_are_kept() -> None:
    s = YamuxSession(is_client=False)
    with pytest.raises(RemoteProtocolError):
        s.receive_data(hdr(1, 1, 1, 0), 0.0)
        s.receive_data(hdr(1, 1, 1, 0), 0.0)
    assert event_types(drain(s)) == [StreamOpened, ConnectionTerminated]


# -- ping and keepalive ------------------------------------------------------------------


def test_ping_rtt() -> None:
    c, s = make_pair()
    assert c.rtt is None
    opaque = c.ping(10.0)
    transfer(c, s, 10.0)
    assert drain(s) == []
    transfer(s, c, 10.25)
    ev = assert_events(c, [PingAcknowledged])
    assert ev[0].opaque == opaque and ev[0].rtt == pytest.approx(0.25)
    assert c.rtt == pytest.approx(0.25)
    # an unsolicited ACK is ignored
    c.receive_data(hdr(2, 2, 0, 12345), 11.0)
    assert drain(c) == []


def test_initial_rtt_probe_and_keepalive_schedule() -> None:
    c, s = make_pair(keepalive_interval=30.0, ping_timeout=15.0)
    assert c.get_timer() == 0.0  # due at once: RTT probe
    c.handle_timer(100.0)
    assert c.get_timer() == 115.0  # ping timeout is earlier than the keepalive
    c.ping(101.0)  # unrelated; does not change the oldest deadline
    assert c.get_timer() == 115.0
    out = wire_bytes(c)
    assert [f[:3] for f in frames(out)] == [(2, 1, 0), (2, 1, 0)]
    s.receive_data(out, 100.0)
    transfer(s, c, 100.1)
    assert event_types(drain(c)) == [PingAcknowledged, PingAcknowledged]
    assert c.get_timer() == 130.0
    c.handle_timer(130.0)
    out = wire_bytes(c)
    assert [f[:3] for f in frames(out)] == [(2, 1, 0)]
    s.receive_data(out, 130.1)
    exchange(c, s, 130.2)
    drain(c)
    assert c.get_timer() == 160.0


def test_keepalive_timeout_terminates_with_internal_error() -> None:
    c, s = make_pair(keepalive_interval=30.0, ping_timeout=15.0)
    c.handle_timer(0.0)
    wire_bytes(c)  # the peer never answers
    c.handle_timer(14.9)
    assert drain(c) == []
    assert c.get_timer() == 15.0
    c.handle_timer(15.0)
    ev = assert_events(c, [ConnectionTerminated])
    assert ev[0].code == GoAwayCode.INTERNAL_ERROR and ev[0].remote is False
    assert frames(wire_bytes(c)) == [(3, 0, 0, 2, b"")]
    assert c.get_timer() is None
    with pytest.raises(ConnectionClosedError):
        c.ping(16.0)


def test_no_keepalive_only_rtt_probe() -> None:
    c, s = make_pair(keepalive_interval=None)
    assert c.get_timer() == 0.0
    c.handle_timer(5.0)
    assert len(frames(wire_bytes(c))) == 1
    assert c.get_timer() is None
    c.handle_timer(1000.0)  # never times out without keepalive
    assert drain(c) == [] and not c.terminated


def test_send_data_leaves_the_timer_alone() -> None:
    # Connection.stream_send sends without asking get_timer again: that holds only
    # while send_data never moves the timer, in every timer state.
    c, s = make_pair(keepalive_interval=30.0, ping_timeout=15.0)
    sid = c.open_stream()  # SYN queued; the RTT probe not sent yet
    for now in (0.0, 100.0, 100.2):
        before = c.get_timer()
        assert c.send_data(sid, b"x" * 100) == 100
        assert c.get_timer() == before
        if now == 0.0:
            c.handle_timer(100.0)  # RTT probe out: a ping deadline is pending
        elif now == 100.0:
            exchange(c, s, 100.1)  # answered: only the keepalive is due
            drain(c)
            drain(s)
    in_sid = s.open_stream()  # the other side's stream: our first send carries the ACK
    exchange(s, c, 101.0)
    before = c.get_timer()
    assert c.send_data(in_sid, b"y") == 1
    assert c.get_timer() == before


# -- GoAway --------------------------------------------------------------------------------


def test_go_away_received_normal_keeps_existing_streams() -> None:
    c, s, sid = opened_pair()
    s.go_away()
    transfer(s, c)
    ev = assert_events(c, [GoAwayReceived])
    assert ev[0].code == 0
    with pytest.raises(ConnectionClosedError) as ei:
        c.open_stream()
    assert ei.value.remote is True
    assert c.send_data(sid, b"still works") == 11
    transfer(c, s)
    assert event_types(drain(s)) == [DataReceived]
    assert not c.terminated and not s.terminated
    # the side that sent GoAway opens nothing either, and refuses new SYNs
    with pytest.raises(ConnectionClosedError):
        s.open_stream()
    s.receive_data(hdr(1, 1, 3, 0), 0.0)
    assert frames(wire_bytes(s)) == [(1, 8, 3, 0, b"")]
    assert drain(s) == []


def test_go_away_received_with_error_terminates() -> None:
    c, s, sid = opened_pair()
    c.receive_data(hdr(3, 0, 0, 1), 0.0)
    ev = assert_events(c, [GoAwayReceived, ConnectionTerminated])
    assert ev[1].code == 1 and ev[1].remote is True
    with pytest.raises(ConnectionClosedError) as ei:
        c.send_data(sid, b"x")
    assert ei.value.remote is True and ei.value.code == 1
    assert wire_bytes(c) == b""  # no GoAway answered to a GoAway


# -- leaks and stress ----------------------------------------------------------------------


def test_no_leaks_after_many_open_close_cycles() -> None:
    c, s = make_pair()
    cc, cs = Collector(c), Collector(s)
    for i in range(2000):
        sid = c.open_stream()
        c.send_data(sid, b"req")
        c.close_stream(sid)
        pump(c, s, cc, cs)
        if i % 3 == 0:
            s.reset_stream(sid)
        else:
            s.send_data(sid, b"resp")
            s.close_stream(sid)
        pump(c, s, cc, cs)
    assert c.stream_count() == s.stream_count() == 0
    assert not c._streams and not s._streams  # type: ignore[attr-defined]
    assert c._syn_backlog == 0 and c._n_outbound == 0  # type: ignore[attr-defined]
    assert s._n_inbound == 0 and s._unaccepted == 0  # type: ignore[attr-defined]
    assert len(c._history) <= 4096  # type: ignore[attr-defined]


def test_stress_100_streams_10_msgs_random_splits(impl: object) -> None:
    c, s = pair(YamuxSession, kernels=impl)
    echo_stress(c, s, 100, 10, random.Random(1))


def test_stress_1000_streams_10_msgs(impl: object) -> None:
    c, s = pair(YamuxSession, kernels=impl)
    echo_stress(c, s, 1000, 10, None)


def test_stress_small_windows_and_frames() -> None:
    """Many window updates and deferred SYNs: frames of 1 KiB, ACK backlog of 8."""
    c, s = make_pair(max_frame_size=1024, accept_backlog=8)
    echo_stress(c, s, 50, 200, random.Random(9))


# -- random interleavings -------------------------------------------------------------------

_op = st.one_of(
    st.tuples(st.just("open"), st.booleans()),
    st.tuples(st.just("send"), st.integers(0, 15), st.booleans(), st.integers(0, 300_000)),
    st.tuples(st.just("close"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("reset"), st.integers(0, 15), st.booleans()),
    st.tuples(st.just("read"), st.integers(0, 15), st.booleans(), st.integers(0, 300_000)),
    st.tuples(st.just("xfer"), st.booleans(), st.integers(0, 2**31)),
    st.tuples(st.just("ping"), st.booleans()),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_op, max_size=60))
def test_random_interleavings_keep_invariants(ops: list[tuple]) -> None:
    """Windows never negative; what arrives is a prefix of what was sent, in order;
    after quiescing, unreset streams deliver everything."""
    cfg = YamuxConfig(accept_backlog=3, max_frame_size=64 * KIB)
    sides = {True: YamuxSession(is_client=True, config=cfg),
             False: YamuxSession(is_client=False, config=cfg)}
    sent: dict[tuple[bool, int], bytearray] = {}
    got: dict[tuple[bool, int], bytearray] = {}
    unread: dict[tuple[bool, int], int] = {}
    streams: list[int] = []
    ended: set[tuple[bool, int]] = set()
    reset: set[int] = set()
    counter = 0

    def poll(side: bool) -> None:
        for e in drain(sides[side]):
            if isinstance(e, StreamOpened):
                streams.append(e.stream_id)
            elif isinstance(e, DataReceived):
                key = (not side, e.stream_id)  # data sent by the other side
                assert key not in ended
                got.setdefault(key, bytearray()).extend(e.data)
                unread[(side, e.stream_id)] = unread.get((side, e.stream_id), 0) + len(e.data)
            elif isinstance(e, StreamEnded):
                ended.add((not side, e.stream_id))
            elif isinstance(e, StreamReset):
                reset.add(e.stream_id)
            else:
                assert not isinstance(e, ConnectionTerminated), e

    for op in ops:
        kind = op[0]
        if kind == "open":
            try:
                streams.append(sides[op[1]].open_stream())
            except ConnectionClosedError:
                pass
        elif kind in ("send", "close", "reset", "read") and streams:
            sid = streams[op[1] % len(streams)]
            side = op[2]
            sess = sides[side]
            if not sess.is_stream_open(sid):
                continue
            try:
                if kind == "send":
                    counter += 1
                    data = bytes([counter % 256]) * op[3]
                    window = sess.send_window(sid)
                    n = sess.send_data(sid, data)
                    assert n == min(window, len(data)) and window >= 0
                    assert sess.send_window(sid) == window - n >= 0
                    sent.setdefault((side, sid), bytearray()).extend(data[:n])
                elif kind == "close":
                    sess.close_stream(sid)
                elif kind == "reset":
                    sess.reset_stream(sid)
                    reset.add(sid)
                else:
                    k = min(op[3], unread.get((side, sid), 0))
                    sess.acknowledge_received(sid, k, 0.0)
                    unread[(side, sid)] = unread.get((side, sid), 0) - k
            except (ClosedResourceError, StreamResetError):
                pass
        elif kind == "xfer":
            side = op[1]
            transfer(sides[side], sides[not side], 0.0, random.Random(op[2]))
            poll(not side)
        elif kind == "ping":
            sides[op[1]].ping(0.0)
        for key, data in got.items():
            assert sent.get(key, b"")[: len(data)] == data
    # quiesce: read everything, let all window updates flow
    for _ in range(1000):
        moved = 0
        for side in (True, False):
            poll(side)
            for (sd, sid), k in list(unread.items()):
                if sd == side and k:
                    sides[side].acknowledge_received(sid, k, 0.0)
                    unread[(sd, sid)] = 0
            moved += transfer(sides[side], sides[not side])
        if not moved:
            break
    for side in (True, False):
        poll(side)
        assert not sides[side].terminated
    for key, data in sent.items():
        if key[1] not in reset:
            assert got.get(key, b"") == data


def test_stats_count_wire_bytes_and_frames() -> None:
    c, s = make_pair()
    sid = c.open_stream()
    c.send_data(sid, b"x" * 100)
    c.close_stream(sid)
    n = transfer(c, s)
    assert c.stats["bytes_out"] == s.stats["bytes_in"] == n == 3 * 12 + 100
    assert c.stats["frames_out"] == 3 and c.stats["streams_opened"] == 1
    assert s.stats["streams_accepted"] == 1
