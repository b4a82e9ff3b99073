"""The yamux demux (plain DATA delivered without an event each) against the spec.

Two parities, over random frame sequences split at random points:

- kernel: the native ``YamuxDemux`` (one C pass per batch) and its pure twin
  return the same records, deliver the same bytes and charge the same credit;
- session: a ``YamuxSession`` whose streams are attached (``attach``) delivers,
  per stream, exactly the bytes the spec session (decoder only, every DATA a
  ``DataReceived`` event) emits, with the same other events in the same order,
  the same wire bytes out, and the same typed error (window violations,
  oversized lengths, DATA after FIN, bad headers).
"""

from __future__ import annotations

import struct
import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import FlowControlError, FrameVersionError, RemoteProtocolError
from fastp2p.proto.muxer import ConnectionTerminated, DataReceived
from fastp2p.proto.yamux import frame as pure_frame
from fastp2p.proto.yamux.session import YamuxSession

KIB = 1024
WINDOW = 256 * KIB

IMPLS = [pytest.param(_accel.pure, id="pure")]
if _accel.native is not None:
    IMPLS.append(pytest.param(_accel.native, id="native"))
else:  # pragma: no cover - pure build
    IMPLS.append(pytest.param(None, id="native", marks=pytest.mark.skip(
        reason="pure build (FASTP2P_NO_EXTENSIONS): no native demux to compare")))


def hdr(type_: int, flags: int, sid: int, length: int) -> bytes:
    return struct.pack(">BBHII", 0, type_, flags, sid, length)


# -- random peer traffic --------------------------------------------------------------

# Streams the peer (client, odd ids) opens; ops refer to them by index.
N_STREAMS = 3
_sid = st.integers(0, N_STREAMS - 1).map(lambda i: 2 * i + 1)
_op = st.one_of(
    st.tuples(st.just("data"), _sid, st.sampled_from([0, 0, 0, 2, 4, 8]), st.integers(0, 3000)),
    st.tuples(st.just("big"), _sid, st.just(0), st.integers(WINDOW - 2000, WINDOW + 2000)),
    st.tuples(st.just("huge"), _sid, st.just(0), st.just(0xFFFFFFFF)),
    st.tuples(st.just("wu"), _sid, st.sampled_from([0, 0, 4, 8]), st.integers(0, 5000)),
    st.tuples(st.just("ping"), st.just(0), st.sampled_from([1, 2]), st.integers(0, 99)),
    st.tuples(st.just("goaway"), st.just(0), st.just(0), st.sampled_from([0, 0, 1])),
    st.tuples(st.just("unknown"), st.integers(20, 30), st.just(0), st.integers(1, 10)),
    st.tuples(st.just("badver"), st.just(0), st.just(0), st.just(0)),
    st.tuples(st.just("ack"), _sid, st.just(0), st.integers(0, 2)),
)


def wire(ops: list[tuple[str, int, int, int]]) -> tuple[bytes, list[tuple[int, int]]]:
    """The peer's bytes for ``ops`` and where the application acks (offset, op index)."""
    out = bytearray()
    for sid in range(1, 2 * N_STREAMS, 2):
        out += hdr(1, 1, sid, 0)  # SYN
    acks = []
    fill = 0
    for i, (kind, sid, flags, n) in enumerate(ops):
        if kind == "data":
            out += hdr(0, flags, sid, n) + bytes((fill + k) & 0xFF for k in range(n))
            fill += n
        elif kind == "big":
            out += hdr(0, flags, sid, n) + bytes(n)
        elif kind == "huge":
            out += hdr(0, 0, sid, n) + bytes(WINDOW + 1)  # never completes
        elif kind == "wu":
            out += hdr(1, flags, sid, n)
        elif kind == "ping":
            out += hdr(2, flags, 0, n)
        elif kind == "goaway":
            out += hdr(3, 0, 0, n)
        elif kind == "unknown":
            out += hdr(0, 0, sid, n) + bytes(n)
        elif kind == "badver":
            out += b"\x01" + hdr(0, 0, 1, 0)[1:]
        else:
            acks.append((len(out), i))
    return bytes(out), acks


def cut(data: bytes, points: list[int], acks: list[tuple[int, int]]) -> list[tuple[str, object]]:
    """Feed steps: byte pieces split at ``points`` and at ack offsets, acks in between."""
    offs = sorted({p % (len(data) + 1) for p in points} | {a for a, _ in acks} | {0, len(data)})
    steps: list[tuple[str, object]] = []
    ack_at: dict[int, list[int]] = {}
    for off, i in acks:
        ack_at.setdefault(off, []).append(i)
    for a, b in zip(offs, offs[1:], strict=False):
        for i in ack_at.get(a, []):
            steps.append(("ack", i))
        if b > a:
            steps.append(("feed", data[a:b]))
    for i in ack_at.get(len(data), []):
        steps.append(("ack", i))
    return steps


def run_session(kernels, steps, ops, attach: bool):
    """Drive one server session; returns (per-stream bytes, other events, wire out, error)."""
    s = YamuxSession(is_client=False, kernels=kernels)
    got: dict[int, bytearray] = {}
    unacked: dict[int, int] = {}
    events = []
    out = bytearray()
    error = None

    def deliver_to(sid):
        def deliver(payload):
            got[sid] += bytes(payload)
            unacked[sid] += len(payload)
        return deliver

    def drain():
        while (ev := s.next_event()) is not None:
            if isinstance(ev, DataReceived):
                got[ev.stream_id] += bytes(ev.data)
                unacked[ev.stream_id] += len(ev.data)
            else:
                events.append(ev)
                if type(ev).__name__ == "StreamOpened":
                    got[ev.stream_id] = bytearray()
                    unacked[ev.stream_id] = 0
                    if attach:
                        # (False once the peer half-closed it or the session ended)
                        s.attach(ev.stream_id, deliver_to(ev.stream_id))

    for kind, arg in steps:
        if error is not None:
            break
        if kind == "feed":
            try:
                s.receive_data(arg, 0.0)
            except RemoteProtocolError as exc:
                error = type(exc)
            drain()
        else:
            _, sid, _, mode = ops[arg]
            n = unacked.get(sid, 0)
            n = (n, n // 2, 1 if n else 0)[mode]
            if n:
                s.acknowledge_received(sid, n, 0.0)
                unacked[sid] -= n
        for b in s.data_to_send():
            out += bytes(b)
    # (the native decoder's error messages are shorter: compare reasons by type only)
    evs = [(e.code, e.remote) if isinstance(e, ConnectionTerminated) else repr(e) for e in events]
    return {k: bytes(v) for k, v in got.items()}, evs, bytes(out), error


SPEC_KERNELS = types.SimpleNamespace(encode_header=pure_frame.encode_header,
                                     YamuxDecoder=pure_frame.YamuxDecoder)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=25), points=st.lists(st.integers(0, 1 << 20), max_size=8))
def test_session_with_demux_matches_spec(impl, ops, points):
    data, acks = wire(ops)
    steps = cut(data, points, acks)
    spec = run_session(SPEC_KERNELS, steps, ops, attach=False)
    fast = run_session(impl, steps, ops, attach=True)
    assert fast == spec


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=25), points=st.lists(st.integers(0, 1 << 20), max_size=8),
       credits=st.lists(st.integers(0, 2 * WINDOW), min_size=N_STREAMS, max_size=N_STREAMS),
       attached=st.lists(st.booleans(), min_size=N_STREAMS, max_size=N_STREAMS))
def test_demux_kernel_parity(impl, ops, points, credits, attached):
    data, acks = wire(ops)
    steps = [a for k, a in cut(data, points, acks) if k == "feed"]

    def run(kernels):
        d = kernels.YamuxDemux()
        got: dict[int, list[bytes]] = {}
        for i in range(N_STREAMS):
            if attached[i]:
                sid = 2 * i + 1
                got[sid] = []
                d.attach(sid, got[sid].append, credits[i])
        trace = []
        for piece in steps:
            try:
                fast, records = d.feed(piece)
            except Exception as exc:  # noqa: BLE001 - compared by type
                trace.append(type(exc))
                continue
            trace.append((fast, [(t, f, s, n, None if p is None else bytes(p))
                                 for t, f, s, n, p in records], d.buffered))
            trace.append([d.take(2 * i + 1) for i in range(N_STREAMS)])
        return trace, {k: [bytes(p) for p in v] for k, v in got.items()}, len(d)

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_fast_path_and_order(impl):
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), 10)
    # plain DATA fits: delivered; the FIN frame and everything after it go back
    data = hdr(0, 0, 1, 4) + b"abcd" + hdr(0, 4, 1, 1) + b"e" + hdr(0, 0, 1, 2) + b"fg"
    fast, records = d.feed(data)
    assert (fast, got, d.take(1), d.take(1)) == (1, [b"abcd"], 4, 0)
    assert [(t, f, s, n, bytes(p)) for t, f, s, n, p in records] == [(0, 4, 1, 1, b"e"), (0, 0, 1, 2, b"fg")]
    # beyond the credit (6 left): returned, not delivered
    fast, records = d.feed(hdr(0, 0, 1, 7) + bytes(7))
    assert fast == 0 and records[0][3] == 7 and got == [b"abcd"]
    # a frame split across feeds is delivered piece by piece
    d.set_credit(1, 100)
    assert d.feed(hdr(0, 0, 1, 6) + b"xyz")[0] == 1
    assert d.feed(b"uvw")[0] == 1
    assert got[-2:] == [b"xyz", b"uvw"] and d.detach(1) == 6 and len(d) == 0
    # detached: everything goes back
    assert d.feed(hdr(0, 0, 1, 1) + b"q")[0] == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_error_delivers_nothing(impl):
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, got.append, WINDOW)
    with pytest.raises(FrameVersionError):
        d.feed(hdr(0, 0, 1, 3) + b"abc" + b"\x01" + hdr(0, 0, 1, 0)[1:])
    assert got == [] and d.take(1) == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_many_records_one_batch(impl):
    # more records than one C batch (256): the table grows, order is kept
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(3, lambda p: got.append(bytes(p)), WINDOW)
    data = b"".join(hdr(0, 0, 3, 1) + bytes([i & 0xFF]) for i in range(1000)) + hdr(2, 1, 0, 7)
    fast, records = d.feed(data)
    assert fast == 1000 and records == [(2, 1, 0, 7, None)]
    assert got == [bytes([i & 0xFF]) for i in range(1000)]


@pytest.mark.parametrize("impl", IMPLS)
def test_session_window_violation_on_fast_path(impl):
    s = YamuxSession(is_client=False, kernels=impl)
    s.receive_data(hdr(1, 1, 1, 0), 0.0)
    got = []
    assert s.attach(1, got.append)
    s.receive_data(hdr(0, 0, 1, WINDOW) + bytes(WINDOW), 0.0)
    assert sum(map(len, got)) == WINDOW
    with pytest.raises(FlowControlError):
        s.receive_data(hdr(0, 0, 1, 1) + b"x", 0.0)
    assert b"".join(bytes(b) for b in s.data_to_send()).endswith(hdr(3, 0, 0, 1))
    # credit returns through acknowledge_received as before (and the demux learns it)
    s2 = YamuxSession(is_client=False, kernels=impl)
    s2.receive_data(hdr(1, 1, 1, 0), 0.0)
    got2 = []
    s2.attach(1, got2.append)
    s2.data_to_send()
    assert type(s2.next_event()).__name__ == "StreamOpened"
    s2.receive_data(hdr(0, 0, 1, WINDOW) + bytes(WINDOW), 0.0)
    s2.acknowledge_received(1, WINDOW, 0.0)
    assert b"".join(bytes(b) for b in s2.data_to_send()) == hdr(1, 0, 1, WINDOW)
    s2.receive_data(hdr(0, 0, 1, WINDOW) + bytes(WINDOW), 0.0)
    assert s2.next_event() is None and sum(map(len, got2)) == 2 * WINDOW


@st.composite
def _yamux_soup(draw: st.DrawFn) -> bytes:
    """Header-shaped bytes: any version/type/flags, ids near the open ones, lying lengths."""
    out = bytearray(b"".join(hdr(1, 1, sid, 0) for sid in (1, 3)))
    for _ in range(draw(st.integers(0, 40))):
        body = draw(st.binary(max_size=draw(st.sampled_from([0, 16, 2048]))))
        length = draw(st.sampled_from([len(body), len(body), 0, 1, WINDOW + 1, 0xFFFFFFFF]))
        out += struct.pack(">BBHII", draw(st.sampled_from([0, 0, 0, 1])), draw(st.integers(0, 5)),
                           draw(st.sampled_from([0, 0, 1, 2, 4, 8, 15, 0xFFFF])),
                           draw(st.sampled_from([0, 1, 2, 3, 5, 0xFFFFFFFF])), length) + body
    return bytes(out)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.one_of(st.binary(max_size=16 * KIB), _yamux_soup()), step=st.integers(1, 4096))
def test_fuzz_attached_session(impl, data, step):
    # arbitrary input: the session returns or raises a typed protocol error, never more
    # bytes delivered than the windows allowed
    s = YamuxSession(is_client=False, kernels=impl)
    got = [0]

    def deliver(p):
        got[0] += len(p)

    for off in range(0, len(data), step):
        try:
            s.receive_data(data[off:off + step], 0.0)
        except RemoteProtocolError:
            break
        while (ev := s.next_event()) is not None:
            if type(ev).__name__ == "StreamOpened":
                s.attach(ev.stream_id, deliver)
    assert got[0] <= 2 * WINDOW
