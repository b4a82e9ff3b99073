"""Event-loop-free helpers for muxer session tests (aioquic ``transfer``, h11 ``ConnectionPair``)."""

from __future__ import annotations

import random
from collections import defaultdict, deque
from collections.abc import Callable, Iterable
from typing import Any

from fastp2p.proto.muxer import DataReceived, StreamEnded, StreamOpened, StreamReset


def wire_bytes(session: Any) -> bytes:
    """Join ``session.data_to_send()`` into one bytes object (copies; tests only)."""
    return b"".join(bytes(b) for b in session.data_to_send())


def transfer(a: Any, b: Any, now: float = 0.0, rng: random.Random | None = None) -> int:
    """Move everything ``a`` wants to send into ``b.receive_data``; returns the byte count.

    With ``rng`` the bytes are cut at random points and fed in several calls, so
    frame headers and payloads straddle ``receive_data`` calls. Each piece is a
    fresh ``bytes`` object (the session may keep views of it in events).
    """
    data = wire_bytes(a)
    if not data:
        return 0
    if rng is None:
        b.receive_data(data, now)
        return len(data)
    pos = 0
    while pos < len(data):
        step = rng.randint(1, max(1, min(len(data) - pos, rng.choice((1, 7, 13, 100, 4096, 70000)))))
        b.receive_data(bytes(data[pos : pos + step]), now)
        pos += step
    return len(data)


def drain(session: Any) -> list[Any]:
    """All queued events of ``session``."""
    events = []
    while (event := session.next_event()) is not None:
        events.append(event)
    return events


def event_types(events: Iterable[Any]) -> list[type]:
    return [type(e) for e in events]


def assert_events(session: Any, expected: list[type]) -> list[Any]:
    """Drain ``session`` and assert the event types, in order; returns the events."""
    events = drain(session)
    assert event_types(events) == expected, events
    return events


def pair(factory: Callable[..., Any], **kwargs: Any) -> tuple[Any, Any]:
    """A connected (client, server) pair built by ``factory(is_client=..., **kwargs)``."""
    return factory(is_client=True, **kwargs), factory(is_client=False, **kwargs)


def exchange(a: Any, b: Any, now: float = 0.0, rng: random.Random | None = None,
             rounds: int = 100) -> None:
    """Transfer both ways until neither side has anything to send."""
    for _ in range(rounds):
        if not (transfer(a, b, now, rng) + transfer(b, a, now, rng)):
            return
    raise AssertionError("sessions kept talking")


class Collector:
    """Accumulates a session's events per stream, acknowledging data as it arrives.

    ``auto_ack=False`` leaves credit unreturned (a slow reader).
    """

    def __init__(self, session: Any, *, auto_ack: bool = True, now: float = 0.0) -> None:
        self.session = session
        self.auto_ack = auto_ack
        self.now = now
        self.data: dict[int, bytearray] = defaultdict(bytearray)
        self.opened: list[int] = []
        self.ended: set[int] = set()
        self.reset: dict[int, int] = {}
        self.other: list[Any] = []
        self.unacked: dict[int, int] = defaultdict(int)

    def poll(self) -> list[Any]:
        events = drain(self.session)
        for e in events:
            if isinstance(e, DataReceived):
                assert e.stream_id not in self.ended, "data after StreamEnded"
                self.data[e.stream_id] += e.data
                if self.auto_ack:
                    self.session.acknowledge_received(e.stream_id, len(e.data), self.now)
                else:
                    self.unacked[e.stream_id] += len(e.data)
            elif isinstance(e, StreamOpened):
                self.opened.append(e.stream_id)
            elif isinstance(e, StreamEnded):
                assert e.stream_id not in self.ended, "StreamEnded twice"
                self.ended.add(e.stream_id)
            elif isinstance(e, StreamReset):
                self.reset[e.stream_id] = e.code
            else:
                self.other.append(e)
        return events

    def ack_all(self) -> None:
        for sid, n in list(self.unacked.items()):
            if n:
                self.session.acknowledge_received(sid, n, self.now)
        self.unacked.clear()


def pump(a: Any, b: Any, ca: Collector, cb: Collector, now: float = 0.0,
         rng: random.Random | None = None, rounds: int = 10_000) -> None:
    """Exchange bytes and poll both collectors until both sides are quiet."""
    for _ in range(rounds):
        moved = transfer(a, b, now, rng)
        cb.poll()
        moved += transfer(b, a, now, rng)
        ca.poll()
        if not moved:
            return
    raise AssertionError("sessions kept talking")


def echo_stress(c: Any, s: Any, n_streams: int, n_msgs: int,
                rng: random.Random | None,
                peer_key: Callable[[int], int] = lambda sid: sid) -> None:
    """go-libp2p SubtestStress-like: ``c`` opens ``n_streams`` streams, each sends
    ``n_msgs`` messages and closes; ``s`` echoes everything back and closes.

    ``peer_key`` maps a stream id of ``c`` to the id ``s`` uses for it (identity
    for yamux; ``key - 1`` for mplex stream keys). Asserts complete, in-order
    delivery both ways, no resets and empty stream tables.
    """
    cc, cs = Collector(c), Collector(s)
    msgs: dict[int, bytes] = {}
    pending: dict[int, deque[memoryview]] = {}
    sids = []
    for i in range(n_streams):
        sid = c.open_stream()
        sids.append(sid)
        parts = [f"stream {sid} msg {j};".encode() * (1 + (i % 7)) for j in range(n_msgs)]
        msgs[sid] = b"".join(parts)
        pending[sid] = deque(memoryview(p) for p in parts)
    echoed: dict[int, int] = defaultdict(int)
    for _ in range(10_000):
        # one send_data call per message, as separate writes
        for sid, queue in list(pending.items()):
            while queue and c.send_window(sid):
                rest = queue[0]
                n = c.send_data(sid, rest)
                if n == len(rest):
                    queue.popleft()
                else:
                    queue[0] = rest[n:]
            if not queue:
                del pending[sid]
                c.close_stream(sid)
        pump(c, s, cc, cs, rng=rng)
        # the server echoes what it got and closes once the client closed
        for psid in list(cs.data):
            data = cs.data[psid]
            off = echoed[psid]
            if off < len(data) and s.is_stream_open(psid):
                echoed[psid] = off + s.send_data(psid, bytes(data[off:]))
            if psid in cs.ended and echoed[psid] == len(data) and s.is_stream_open(psid):
                s.close_stream(psid)
        pump(c, s, cc, cs, rng=rng)
        if not pending and all(sid in cc.ended for sid in sids):
            break
    for sid in sids:
        assert bytes(cs.data[peer_key(sid)]) == msgs[sid]
        assert bytes(cc.data[sid]) == msgs[sid]
    assert c.stream_count() == s.stream_count() == 0
    assert not cc.reset and not cs.reset
