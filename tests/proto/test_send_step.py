"""The send step: a stream's write framed, sealed and written in one call.

``session.send_step(SendStep, cipher, pump, fallback)`` must put on the wire
exactly the bytes the general path makes (``send_data`` + ``data_to_send`` +
``seal_frames``), take the same window, count the same frames, and leave every
case it does not take to ``fallback`` with nothing changed. Each test runs on
the native step and on its pure twin, for yamux and mplex.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.config import MplexConfig, YamuxConfig
from fastp2p.errors import ClosedResourceError
from fastp2p.proto.mplex.session import MplexSession
from fastp2p.proto.yamux.frame import TYPE_WINDOW_UPDATE, encode_header
from fastp2p.proto.yamux.session import YamuxSession
from fastp2p.transport.conn import NoisePath
from fastp2p.transport.tcp import TcpConnection

from .test_yamux_demux import IMPLS

KEY = bytes(range(32))
MUXERS = ["yamux", "mplex"]


class Transport:
    """What the TCP connection writes to (uvloop's transport): records the bytes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))

    def writelines(self, bufs: list[Any]) -> None:
        self.writes.append(b"".join(bytes(b) for b in bufs))

    def get_extra_info(self, name: str) -> None:
        return None

    def wire(self) -> bytes:
        return b"".join(self.writes)


class Loop:
    """The event loop's ``call_soon``: the pass ends when the test says so."""

    def __init__(self) -> None:
        self.soon: list[Any] = []

    def call_soon(self, cb: Any, *args: Any, context: Any = None) -> None:
        self.soon.append((cb, args))

    def end_pass(self) -> None:
        while self.soon:
            cb, args = self.soon.pop(0)
            cb(*args)


class Proto:
    def __init__(self) -> None:
        self.transport = Transport()
        self._loop = Loop()
        self.lost = False


def _path(impl: Any) -> Any:
    """A real TCP connection (over a recording transport) and its Noise path."""
    proto = Proto()
    raw = TcpConnection(proto, outbound=True)  # type: ignore[arg-type]
    return NoisePath(raw, impl.NoiseCipher(KEY, 0, "AESGCM"), None)


def _session(impl: Any, muxer: str, frame: int | None = None) -> Any:
    if muxer == "yamux":
        cfg = YamuxConfig(max_frame_size=frame) if frame else YamuxConfig()
        return YamuxSession(is_client=True, config=cfg, kernels=impl)
    mcfg = MplexConfig(max_message_size=frame) if frame else MplexConfig()
    return MplexSession(is_client=True, config=mcfg, kernels=impl)


class Pair:
    """A session with a send step and its twin on the general path, kept in step."""

    def __init__(self, impl: Any, muxer: str, frame: int | None = None) -> None:
        self.impl = impl
        self.s = _session(impl, muxer, frame)
        self.ref = _session(impl, muxer, frame)
        self.path = _path(impl)
        self.ref_path = _path(impl)
        self.pump = self.path.raw
        self.tr = self.pump._transport
        self.fell_back: list[tuple[int, bytes]] = []

        def fallback(sid: int, data: Any) -> int:
            self.fell_back.append((sid, bytes(data)))
            return -7

        self.step = self.s.send_step(impl.SendStep, self.path, fallback)

    @property
    def cipher(self) -> Any:
        return self.path._send

    def open(self) -> int:
        sid = self.s.open_stream()
        assert self.ref.open_stream() == sid
        self.flush()
        return sid

    def flush(self) -> None:
        """What both sessions queued (SYNs, window updates) leaves the general way."""
        for s, path in ((self.s, self.path), (self.ref, self.ref_path)):
            out = s.data_to_send()
            if out:
                path.send(out)
        self.end_pass()

    def end_pass(self) -> None:
        self.pump._p._loop.end_pass()
        self.ref_path.raw._p._loop.end_pass()

    def send(self, sid: int, data: bytes) -> tuple[int, bytes]:
        """One write through the step, in a fresh loop pass; what it wrote."""
        self.end_pass()
        before = len(self.tr.writes)
        n = self.step(sid, memoryview(data))
        self.end_pass()
        return n, b"".join(self.tr.writes[before:])

    def reference(self, sid: int, data: bytes) -> tuple[int, bytes]:
        tr = self.ref_path.raw._transport
        before = len(tr.writes)
        n = self.ref.send_data(sid, memoryview(data))
        out = self.ref.data_to_send()
        if out:
            self.ref_path.send(out)
        self.end_pass()
        return n, b"".join(tr.writes[before:])


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_step_writes_what_the_general_path_writes(impl, muxer):
    p = Pair(impl, muxer, frame=4096)
    sid = p.open()
    for size in (1, 64, 4095, 4096, 4097, 3 * 4096 + 5, 16 * 4096):
        data = bytes((size + i) % 251 for i in range(size))
        assert p.send(sid, data) == p.reference(sid, data)
    assert p.fell_back == []
    assert p.cipher.nonce == p.ref_path._send.nonce
    assert p.s.stats["bytes_out"] == p.ref.stats["bytes_out"]
    assert p.s.stats["frames_out"] == p.ref.stats["frames_out"]
    if muxer == "yamux":
        assert p.s.send_window(sid) == p.ref.send_window(sid)


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_a_pass_first_write_leaves_at_once_and_marks_the_pass(impl, muxer):
    p = Pair(impl, muxer)
    sid = p.open()
    before = len(p.tr.writes)
    assert p.step(sid, memoryview(b"ping")) == 4
    assert len(p.tr.writes) == before + 1  # at once, not at the pass's end
    assert p.pump.in_pass
    assert [cb for cb, _ in p.pump._p._loop.soon] == [p.pump._end_cb]
    assert p.step.wire_out == len(p.tr.writes[-1])


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_writes_later_in_the_pass_are_held_and_sealed_together(impl, muxer):
    """Many small writes in one pass: one seal and one write at the pass's end,
    byte for byte what the general path makes."""
    p = Pair(impl, muxer)
    sids = [p.open() for _ in range(3)]
    p.end_pass()
    before = len(p.tr.writes)
    ref_tr = p.ref_path.raw._transport
    ref_before = len(ref_tr.writes)
    for i in range(30):
        sid = sids[i % 3]
        data = bytes([i]) * (100 + i)
        assert p.step(sid, memoryview(data)) == len(data)
        p.ref.send_data(sid, memoryview(data))
        p.ref_path.send(p.ref.data_to_send())
    held = len(p.tr.writes) - before
    assert held == 1  # the first; the rest wait for the pass's end
    p.end_pass()
    assert b"".join(p.tr.writes[before:]) == b"".join(ref_tr.writes[ref_before:])
    assert len(p.tr.writes) - before == len(ref_tr.writes) - ref_before == 2
    assert p.fell_back == []


@pytest.mark.parametrize("impl", IMPLS)
def test_yamux_step_sends_what_the_window_allows(impl):
    p = Pair(impl, "yamux")
    sid = p.open()
    window = p.s.send_window(sid)
    data = bytes(window + 1000)
    n, wrote = p.send(sid, data)
    assert n == window
    assert (n, wrote) == p.reference(sid, data)
    assert p.s.send_window(sid) == 0
    # no window left: the general path answers (0, and the writer waits)
    assert p.send(sid, b"x") == (-7, b"")
    assert p.fell_back == [(sid, b"x")]


@pytest.mark.parametrize("case", ["closed", "live", "queued", "write_closed", "unknown", "empty",
                                  "too_many_frames"])
@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_what_the_step_does_not_take_goes_to_the_fallback_untouched(impl, muxer, case):
    p = Pair(impl, muxer, frame=1024)
    sid = p.open()
    data = b"abc"
    if case == "unknown":
        sid = 1001
    elif case == "empty":
        data = b""
    elif case == "too_many_frames":
        data = bytes(17 * 1024)  # 17 frames of 1 KiB
    elif case == "closed":
        p.pump._closed = True
    elif case == "live":
        p.step.live = False
    elif case == "queued":
        p.s.open_stream()  # its opening frame waits in data_to_send
    elif case == "write_closed":
        p.s.close_stream(sid)
        p.s.data_to_send()  # (the FIN left: only the stream's state says no)
    writes = list(p.tr.writes)
    nonce = p.cipher.nonce
    stats = dict(p.s.stats)
    window = p.s.send_window(sid) if muxer == "yamux" and case not in ("unknown", "write_closed") else None
    assert p.step(sid, memoryview(data)) == -7
    assert p.fell_back == [(sid, data)]
    p.end_pass()
    assert p.tr.writes == writes
    assert p.cipher.nonce == nonce
    assert dict(p.s.stats) == stats
    if window is not None:
        assert p.s.send_window(sid) == window


@pytest.mark.parametrize("impl", IMPLS)
def test_yamux_stream_whose_syn_is_deferred_goes_to_the_fallback(impl):
    s = YamuxSession(is_client=True, config=YamuxConfig(accept_backlog=1), kernels=impl)
    s.open_stream()
    sid = s.open_stream()  # over the SYN backlog: its SYN waits, no window yet
    s.data_to_send()
    path = _path(impl)
    calls: list[int] = []
    step = s.send_step(impl.SendStep, path, lambda i, d: calls.append(i) or 0)
    assert step(sid, memoryview(b"x")) == 0
    assert calls == [sid]
    assert path.raw._transport.writes == []


@pytest.mark.parametrize("impl", IMPLS)
def test_a_cipher_that_failed_raises_and_sends_nothing(impl):
    p = Pair(impl, "yamux")
    sid = p.open()
    writes = list(p.tr.writes)
    p.cipher.close()
    with pytest.raises(ClosedResourceError):
        p.step(sid, memoryview(b"abc"))
    p.end_pass()
    assert p.tr.writes == writes


@pytest.mark.parametrize("impl", IMPLS)
def test_inbound_mplex_stream_is_addressed_as_the_receiver(impl):
    # a stream the peer opened (even key): our messages carry MESSAGE_RECEIVER
    a = MplexSession(is_client=True, kernels=impl)
    b = MplexSession(is_client=False, kernels=impl)
    key = a.open_stream()
    b.receive_data(b"".join(bytes(x) for x in a.data_to_send()), 0.0)
    opened = b.next_event()
    assert opened is not None and opened.stream_id % 2 == 0
    path = _path(impl)
    step = b.send_step(impl.SendStep, path, None)
    assert step(opened.stream_id, memoryview(b"hello")) == 5
    # the opener reads it on its stream
    plain = impl.NoiseCipher(KEY, 0, "AESGCM").open_frames(path.raw._transport.wire())
    a.receive_data(bytes(plain), 0.0)
    ev = a.next_event()
    assert ev is not None and ev.stream_id == key and bytes(ev.data) == b"hello"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    muxer=st.sampled_from(MUXERS),
    frame=st.sampled_from([512, 4096, 256 * 1024]),
    ops=st.lists(st.tuples(st.sampled_from(["send", "send", "send", "credit", "end_pass", "open"]),
                           st.integers(0, 2), st.sampled_from([1, 64, 700, 5000, 17000, 70000])),
                 max_size=40),
)
@pytest.mark.parametrize("impl", IMPLS)
def test_step_and_general_path_agree_on_random_writes(impl, muxer, frame, ops):
    """Random writes, window credit and pass ends: the step's wire bytes, taken
    counts and windows always equal the general path's (the fallback here is
    the general path, as the connection's is)."""
    p = Pair(impl, muxer, frame)

    def general(sid: int, data: Any) -> int:
        n = p.s.send_data(sid, data)
        out = p.s.data_to_send()
        if out:
            p.path.send(out)
        return n

    p.step = p.s.send_step(impl.SendStep, p.path, general)
    sids = [p.open()]
    ref_tr = p.ref_path.raw._transport
    for op, which, size in ops:
        sid = sids[which % len(sids)]
        if op == "open":
            sids.append(p.open())
        elif op == "credit" and muxer == "yamux":
            # the peer returns credit (a window update), to both sessions alike
            upd = encode_header(TYPE_WINDOW_UPDATE, 0, sid, size)
            p.s.receive_data(upd, 0.0)
            p.ref.receive_data(upd, 0.0)
        elif op == "end_pass":
            p.end_pass()
        elif op == "send":
            data = bytes((size * 7 + i) % 253 for i in range(size))
            n = p.step(sid, memoryview(data))
            rn = p.ref.send_data(sid, memoryview(data))
            out = p.ref.data_to_send()
            if out:
                p.ref_path.send(out)
            assert n == rn
    p.end_pass()
    assert p.tr.wire() == ref_tr.wire()
    assert p.cipher.nonce == p.ref_path._send.nonce
    assert p.s.stats["bytes_out"] == p.ref.stats["bytes_out"]
    assert p.s.stats["frames_out"] == p.ref.stats["frames_out"]
    for sid in sids:
        if muxer == "yamux":
            assert p.s.send_window(sid) == p.ref.send_window(sid)
