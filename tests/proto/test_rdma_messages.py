"""``/fastp2p/rdma/1.0.0`` messages: round trips and malformed input (no device needed)."""

from __future__ import annotations

import pytest

from fastp2p.errors import FrameTooLargeError, RemoteProtocolError
from fastp2p.proto import protobuf
from fastp2p.proto import rdma as m


@pytest.mark.parametrize(
    "msg",
    [
        m.RdmaMessage(m.Kind.HELLO, gid=bytes(range(16)), qpn=0xABCDEF, psn=7, rma_qpn=9, rma_psn=1,
                      mtu=3, credits=16, buf_size=1 << 18, boot_id=b"b" * 36),
        m.RdmaMessage(m.Kind.REFUSE, reason="no device"),
        m.RdmaMessage(m.Kind.SWITCH),
        m.RdmaMessage(m.Kind.RMA_REQUEST, op=int(m.Op.CAS), token=b"t" * 120, offset=8, length=8,
                      compare=(1 << 64) - 1, operand=1 << 63),
        m.RdmaMessage(m.Kind.RMA_GRANT, address=0x7F0000001000, rkey=0xFFFFFFFF, length=64 << 20),
    ],
)
def test_round_trip_byte_by_byte(msg: m.RdmaMessage) -> None:
    wire = m.encode(msg)
    r = m.MessageReader()
    got = []
    for i in range(len(wire)):
        got += r.receive_data(wire[i : i + 1])
    assert got == [msg]


def test_malformed() -> None:
    with pytest.raises(RemoteProtocolError):
        m.MessageReader().receive_data(protobuf.length_prefixed(protobuf.encode([(1, 99)])))
    with pytest.raises(RemoteProtocolError):  # GID of the wrong size
        m.MessageReader().receive_data(protobuf.length_prefixed(protobuf.encode([(1, 1), (2, b"abc")])))
    with pytest.raises(RemoteProtocolError):  # QPN beyond 24 bits
        m.MessageReader().receive_data(protobuf.length_prefixed(protobuf.encode([(1, 1), (4, 1 << 24)])))
    with pytest.raises(RemoteProtocolError):  # a 64-bit operand must be 8 bytes
        m.MessageReader().receive_data(protobuf.length_prefixed(protobuf.encode([(1, 10), (19, b"\1")])))
    with pytest.raises(FrameTooLargeError):
        m.MessageReader().receive_data(b"\xff\xff\x01")
