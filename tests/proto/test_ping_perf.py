"""Ping tracker and perf wire format."""

from __future__ import annotations

import pytest

from fastp2p.errors import FrameError, LocalProtocolError, RemoteProtocolError
from fastp2p.proto import perf, ping
from fastp2p.proto.perf import PerfServerState, decode_download_size, encode_download_size
from fastp2p.proto.ping import PING_SIZE, PingTracker, make_payload

P1 = bytes(range(32))
P2 = bytes(range(32, 64))


def test_constants() -> None:
    assert ping.PROTOCOL_ID == "/ipfs/ping/1.0.0" and PING_SIZE == 32
    assert perf.PROTOCOL_ID == "/perf/1.0.0"


def test_make_payload() -> None:
    assert make_payload(P1) == P1
    for bad in (b"", b"x" * 31, b"x" * 33):
        with pytest.raises(LocalProtocolError):
            make_payload(bad)


def test_single_ping_rtt() -> None:
    t = PingTracker()
    assert t.send(P1, now=10.0) == P1
    assert t.data_to_send() == P1 and t.data_to_send() == b""
    assert t.oldest_sent_at() == 10.0
    assert t.receive_data(P1[:5], now=10.1) == []
    assert t.receive_data(P1[5:], now=10.25) == [pytest.approx(0.25)]
    assert t.outstanding == 0 and t.oldest_sent_at() is None


def test_pipelined_pings() -> None:
    t = PingTracker()
    t.send(P1, 1.0)
    t.send(P2, 2.0)
    assert t.receive_data(P1 + P2, 3.0) == [2.0, 1.0]


@pytest.mark.parametrize("split", range(0, 33))
def test_ping_split(split: int) -> None:
    t = PingTracker()
    t.send(P1, 0.0)
    assert t.receive_data(P1[:split], 0.5) == ([0.5] if split == 32 else [])
    assert t.receive_data(P1[split:], 1.0) == ([] if split == 32 else [1.0])


def test_wrong_echo() -> None:
    t = PingTracker()
    t.send(P1, 0.0)
    with pytest.raises(RemoteProtocolError):
        t.receive_data(P2, 1.0)


def test_unsolicited_bytes() -> None:
    t = PingTracker()
    with pytest.raises(RemoteProtocolError):
        t.receive_data(b"x", 0.0)
    t = PingTracker()
    t.send(P1, 0.0)
    with pytest.raises(RemoteProtocolError):
        t.receive_data(P1 + b"y", 0.0)


def test_download_size_codec() -> None:
    assert encode_download_size(0) == b"\x00" * 8
    assert encode_download_size(1) == b"\x00" * 7 + b"\x01"
    assert encode_download_size(2**64 - 1) == b"\xff" * 8
    assert encode_download_size(0x0102030405060708) == bytes(range(1, 9))
    for n in (0, 1, 1 << 32, 2**64 - 1):
        assert decode_download_size(encode_download_size(n)) == n
    for bad in (-1, 2**64):
        with pytest.raises(LocalProtocolError):
            encode_download_size(bad)
    for bad in (b"", b"\x00" * 7, b"\x00" * 9):
        with pytest.raises(FrameError):
            decode_download_size(bad)


@pytest.mark.parametrize("split", [0, 1, 7, 8, 9, 20])
def test_perf_server_state(split: int) -> None:
    stream = encode_download_size(1000) + b"u" * 12
    s = PerfServerState()
    s.receive_data(stream[:split])
    s.receive_data(stream[split:])
    assert s.receive_eof() == 1000
    assert s.uploaded == 12
    with pytest.raises(LocalProtocolError):
        s.receive_data(b"x")


def test_perf_server_early_eof() -> None:
    s = PerfServerState()
    s.receive_data(b"\x00\x01")
    with pytest.raises(FrameError):
        s.receive_eof()
    assert isinstance(FrameError(), RemoteProtocolError)
