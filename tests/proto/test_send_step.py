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

from fastp2p import _accel
from fastp2p.config import MplexConfig, YamuxConfig
from fastp2p.proto.mplex.session import MplexSession
from fastp2p.proto.yamux.session import YamuxSession

from .test_yamux_demux import IMPLS

KEY = bytes(range(32))
MUXERS = ["yamux", "mplex"]


class Transport:
    """What the pump writes to: records each write's bytes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    def write(self, data: Any) -> None:
        self.writes.append(bytes(data))


def _pump(impl: Any) -> Any:
    class Pump(impl.WritePump):  # type: ignore[misc, name-defined]
        pass

    p = Pump()
    p.in_pass = False
    p._closed = False
    p._pend = None
    p._transport = Transport()
    p.marks = []
    p._call_soon = lambda cb, context=None: p.marks.append((cb, context))
    p._end_cb = object()
    p._ctx = object()
    return p


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
        self.cipher = impl.NoiseCipher(KEY, 0, "AESGCM")
        self.ref_cipher = impl.NoiseCipher(KEY, 0, "AESGCM")
        self.pump = _pump(impl)
        self.fell_back: list[tuple[int, bytes]] = []

        def fallback(sid: int, data: Any) -> int:
            self.fell_back.append((sid, bytes(data)))
            return -7

        self.step = self.s.send_step(impl.SendStep, self.cipher, self.pump, fallback)

    def open(self) -> int:
        sid = self.s.open_stream()
        assert self.ref.open_stream() == sid
        self.flush()
        return sid

    def flush(self) -> None:
        """What both sessions queued (SYNs, window updates) leaves the general way."""
        for s, c in ((self.s, self.cipher), (self.ref, self.ref_cipher)):
            out = s.data_to_send()
            if out:
                c.seal_frames(out)

    def send(self, sid: int, data: bytes) -> tuple[int, bytes]:
        """One write through the step, in a fresh loop pass; what it wrote."""
        self.pump.in_pass = False
        before = len(self.pump._transport.writes)
        n = self.step(sid, memoryview(data))
        wrote = b"".join(self.pump._transport.writes[before:])
        return n, wrote

    def reference(self, sid: int, data: bytes) -> tuple[int, bytes]:
        n = self.ref.send_data(sid, memoryview(data))
        out = self.ref.data_to_send()
        return n, bytes(self.ref_cipher.seal_frames(out)) if out else b""


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("impl", IMPLS)
def test_step_writes_what_the_general_path_writes(impl, muxer):
    p = Pair(impl, muxer, frame=4096)
    sid = p.open()
    for size in (1, 64, 4095, 4096, 4097, 3 * 4096 + 5, 16 * 4096):
        data = bytes((size + i) % 251 for i in range(size))
        n, wrote = p.send(sid, data)
        assert (n, wrote) == p.reference(sid, data)
        assert p.pump.in_pass  # the pass is marked ...
        assert p.pump.marks[-1] == (p.pump._end_cb, p.pump._ctx)  # ... and its end scheduled
    assert p.fell_back == []
    assert p.cipher.nonce == p.ref_cipher.nonce
    assert p.s.stats["bytes_out"] == p.ref.stats["bytes_out"]
    assert p.s.stats["frames_out"] == p.ref.stats["frames_out"]
    if muxer == "yamux":
        assert p.s.send_window(sid) == p.ref.send_window(sid)
    assert p.step.wire_out == sum(len(w) for w in p.pump._transport.writes)


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


def _cases(p: Pair, sid: int) -> list[tuple[str, Any]]:
    def in_pass() -> None:
        p.pump.in_pass = True

    def pend() -> None:
        p.pump._pend = [b"queued"]

    def closed() -> None:
        p.pump._closed = True

    def dead() -> None:
        p.step.live = False

    def queued() -> None:
        p.s.open_stream()  # its opening frame waits in data_to_send

    def write_closed() -> None:
        p.s.close_stream(sid)
        p.s.data_to_send()  # (the FIN left: only the stream's state says no)

    return [("in_pass", in_pass), ("pend", pend), ("closed", closed), ("live", dead),
            ("queued", queued), ("write_closed", write_closed)]


@pytest.mark.parametrize("case", ["in_pass", "pend", "closed", "live", "queued", "write_closed",
                                  "unknown", "empty", "too_many_frames"])
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
    else:
        dict(_cases(p, sid))[case]()
    in_pass = p.pump.in_pass
    nonce = p.cipher.nonce
    stats = dict(p.s.stats)
    window = p.s.send_window(sid) if muxer == "yamux" and case not in ("unknown", "write_closed") else None
    n = p.step(sid, memoryview(data))
    assert n == -7
    assert p.fell_back == [(sid, data)]
    assert p.pump._transport.writes == []
    assert p.pump.marks == []
    assert p.pump.in_pass == in_pass
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
    pump = _pump(impl)
    calls: list[int] = []
    step = s.send_step(impl.SendStep, impl.NoiseCipher(KEY, 0, "AESGCM"), pump,
                       lambda i, d: calls.append(i) or 0)
    assert step(sid, memoryview(b"x")) == 0
    assert calls == [sid]
    assert pump._transport.writes == []


@pytest.mark.parametrize("impl", IMPLS)
def test_a_cipher_that_failed_raises_and_sends_nothing(impl):
    p = Pair(impl, "yamux")
    sid = p.open()
    p.cipher.close()
    with pytest.raises(Exception) as info:
        p.step(sid, memoryview(b"abc"))
    assert type(info.value).__name__ == "ClosedResourceError"
    assert p.pump._transport.writes == []
    assert not p.pump.in_pass


@pytest.mark.parametrize("impl", IMPLS)
def test_inbound_mplex_stream_is_addressed_as_the_receiver(impl):
    # a stream the peer opened (even key): our messages carry MESSAGE_RECEIVER
    a = MplexSession(is_client=True, kernels=impl)
    b = MplexSession(is_client=False, kernels=impl)
    b_ref = MplexSession(is_client=False, kernels=impl)
    key = a.open_stream()
    opening = b"".join(bytes(x) for x in a.data_to_send())
    b.receive_data(opening, 0.0)
    b_ref.receive_data(opening, 0.0)
    opened = b.next_event()
    assert opened is not None
    b_ref.next_event()
    peer_key = opened.stream_id
    assert peer_key % 2 == 0
    pump = _pump(impl)
    step = b.send_step(impl.SendStep, impl.NoiseCipher(KEY, 0, "AESGCM"), pump, None)
    assert step(peer_key, memoryview(b"hello")) == 5
    ref_cipher = impl.NoiseCipher(KEY, 0, "AESGCM")
    b_ref.send_data(peer_key, memoryview(b"hello"))
    assert pump._transport.writes == [bytes(ref_cipher.seal_frames(b_ref.data_to_send()))]
    # and the opener reads it on its stream
    plain = impl.NoiseCipher(KEY, 0, "AESGCM").open_frames(pump._transport.writes[0])
    a.receive_data(bytes(plain), 0.0)
    ev = a.next_event()
    assert ev is not None and ev.stream_id == key and bytes(ev.data) == b"hello"


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    muxer=st.sampled_from(MUXERS),
    frame=st.sampled_from([512, 4096, 256 * 1024]),
    ops=st.lists(st.tuples(st.sampled_from(["send", "send", "send", "credit", "in_pass", "open"]),
                           st.integers(0, 2), st.integers(0, 20000)), max_size=30),
)
@pytest.mark.parametrize("impl", IMPLS)
def test_step_and_general_path_agree_on_random_writes(impl, muxer, frame, ops):
    """Random writes, window credit and pass states: the step's wire bytes, taken
    counts and window always equal the general path's (the fallback here is the
    general path, as the connection's is)."""
    p = Pair(impl, muxer, frame)
    wire: list[bytes] = []

    def general(sid: int, data: Any) -> int:
        n = p.s.send_data(sid, data)
        out = p.s.data_to_send()
        if out:
            wire.append(bytes(p.cipher.seal_frames(out)))
        return n

    p.step = p.s.send_step(impl.SendStep, p.cipher, p.pump, general)
    sids = [p.open()]
    ref_wire: list[bytes] = []
    for op, which, size in ops:
        sid = sids[which % len(sids)]
        if op == "open":
            sids.append(p.open())
        elif op == "credit" and muxer == "yamux":
            # the peer returns credit (a window update), to both sessions alike
            from fastp2p.proto.yamux.frame import TYPE_WINDOW_UPDATE, encode_header
            upd = encode_header(TYPE_WINDOW_UPDATE, 0, sid, size)
            p.s.receive_data(upd, 0.0)
            p.ref.receive_data(upd, 0.0)
            p.flush()
        elif op == "in_pass":
            p.pump.in_pass = True
        elif op == "send":
            data = bytes((size * 7 + i) % 253 for i in range(size))
            before = len(p.pump._transport.writes)
            n = p.step(sid, memoryview(data))
            wire.extend(p.pump._transport.writes[before:])
            del p.pump._transport.writes[before:]
            rn, rw = p.reference(sid, data)
            if rw:
                ref_wire.append(rw)
            assert n == rn
            p.pump.in_pass = False
    assert b"".join(wire) == b"".join(ref_wire)
    assert p.cipher.nonce == p.ref_cipher.nonce
    assert p.s.stats["bytes_out"] == p.ref.stats["bytes_out"]
    assert p.s.stats["frames_out"] == p.ref.stats["frames_out"]
    for sid in sids:
        if muxer == "yamux":
            assert p.s.send_window(sid) == p.ref.send_window(sid)
