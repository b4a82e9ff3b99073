"""A PING|SYN is not answered while the driver says its transport is backed up
(``YamuxSession.drop_pongs``), and is answered again afterwards."""

from __future__ import annotations

import struct

from fastp2p.proto.yamux.session import YamuxSession

from .helpers import wire_bytes


def _ping_syn(opaque: int) -> bytes:
    return struct.pack(">BBHII", 0, 2, 1, 0, opaque)  # version 0, PING, SYN


def test_pings_dropped_while_backed_up_then_answered_again() -> None:
    s = YamuxSession(is_client=False)
    s.drop_pongs = True
    s.receive_data(_ping_syn(1) * 1000, 0.0)
    assert wire_bytes(s) == b""
    assert s.stats["pings_dropped"] == 1000
    s.drop_pongs = False
    s.receive_data(_ping_syn(7), 0.0)
    assert wire_bytes(s) == struct.pack(">BBHII", 0, 2, 2, 0, 7)  # PING|ACK 7
    assert s.stats["pings_dropped"] == 1000
