"""The mplex demux (Message records delivered without an event each) against the spec.

- kernel parity: the native ``MplexDemux`` (one C pass per batch) and its pure
  twin return the same records, deliver the same bytes, charge the same credit
  and count the same, over random frame sequences split at random points
  (control payloads split across feeds included);
- session parity: an ``MplexSession`` whose streams are attached delivers, per
  stream, exactly the bytes the spec session (decoder only, every Message a
  ``DataReceived`` event) emits, with the same other events in the same order,
  the same wire bytes out, the same stats and the same typed error, including
  the reset of a stream past ``max_buffered_per_stream``;
- loans of reader buffers and ``feed_sealed``, as for yamux (test_yamux_lend.py).

Stream keys (fastp2p/proto/mplex/session.py): ``id*2`` for a stream the peer
opened (it sends MESSAGE_INITIATOR), ``id*2+1`` for ours (MESSAGE_RECEIVER).
"""

from __future__ import annotations

import types

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.config import MplexConfig
from fastp2p.errors import (
    DecryptError,
    FrameTooLargeError,
    FrameTypeError,
    LocalProtocolError,
    RemoteProtocolError,
    StreamErrorCode,
)
from fastp2p.proto.mplex import frame as pure_frame
from fastp2p.proto.mplex.session import MplexSession
from fastp2p.proto.muxer import ConnectionTerminated, DataReceived, StreamOpened, StreamReset
from fastp2p.proto.varint import uvarint_encode

from .test_yamux_lend import Loans, Waiter

KIB = 1024
LIMIT = 8 * KIB  # max_buffered_per_stream of the sessions under test
MAX_MSG = 16 * KIB
CFG = MplexConfig(max_message_size=MAX_MSG, max_buffered_per_stream=LIMIT)

NEW, MSG_R, MSG_I, CLOSE_R, CLOSE_I, RESET_R, RESET_I = range(7)

IMPLS = [pytest.param(_accel.pure, id="pure")]
if _accel.native is not None:
    IMPLS.append(pytest.param(_accel.native, id="native"))
else:  # pragma: no cover - pure build
    IMPLS.append(pytest.param(None, id="native", marks=pytest.mark.skip(
        reason="pure build (FASTP2P_NO_EXTENSIONS): no native demux to compare")))


def fr(mid: int, flag: int, payload: bytes = b"") -> bytes:
    return uvarint_encode(mid << 3 | flag) + uvarint_encode(len(payload)) + payload


def recs(records: list) -> list[tuple[int, int, bytes]]:
    return [(f, i, bytes(p)) for f, i, p in records]


# -- random peer traffic --------------------------------------------------------------

# Four streams of the session under test (a server), by index: 0, 1 the peer
# opened (ids 0, 1: keys 0, 2); 2, 3 we opened (ids 0, 1: keys 1, 3).
N_STREAMS = 4
KEYS = [0, 2, 1, 3]


def _target(t: int) -> tuple[int, bool]:
    """(mplex id, the peer initiated it) of stream index ``t``."""
    return (t, True) if t < 2 else (t - 2, False)


_t = st.integers(0, N_STREAMS - 1)
_op = st.one_of(
    st.tuples(st.just("msg"), _t, st.integers(0, 2500)),
    st.tuples(st.just("msg"), _t, st.integers(0, 2500)),
    st.tuples(st.just("msg"), _t, st.integers(0, 2500)),
    st.tuples(st.just("big"), _t, st.integers(LIMIT - 1500, LIMIT + 1500)),
    st.tuples(st.just("empty"), _t, st.just(0)),
    st.tuples(st.just("huge"), _t, st.just(MAX_MSG + 1)),
    st.tuples(st.just("close"), _t, st.integers(0, 40)),
    st.tuples(st.just("close"), _t, st.just(0)),
    st.tuples(st.just("reset"), _t, st.just(0)),
    st.tuples(st.just("new"), st.integers(0, 3), st.integers(0, 40)),
    st.tuples(st.just("unknown"), st.integers(20, 30), st.integers(1, 10)),
    st.tuples(st.just("flag7"), st.just(0), st.just(0)),
    st.tuples(st.just("ack"), _t, st.integers(0, 2)),
    st.tuples(st.just("lclose"), _t, st.just(0)),
    st.tuples(st.just("lreset"), _t, st.just(0)),
    st.tuples(st.just("split"), st.just(0), st.just(0)),
    st.tuples(st.just("split"), st.just(0), st.just(0)),
)
LOCAL = ("ack", "lclose", "lreset", "split")  # at a feed boundary
PRELUDE = fr(0, NEW, b"0") + fr(1, NEW, b"1")  # the peer opens its two streams


def wire(ops: list[tuple[str, int, int]]) -> tuple[bytes, list[tuple[int, int]], list[int]]:
    """The peer's bytes for ``ops``, where local calls happen (offset, op index), where ops start."""
    out = bytearray(PRELUDE)
    local = []
    starts = []
    fill = 0
    for i, (kind, t, n) in enumerate(ops):
        starts.append(len(out))
        if kind in LOCAL:
            local.append((len(out), i))
            continue
        mid, theirs = _target(t) if kind not in ("new", "unknown") else (t, True)
        if kind in ("msg", "big", "empty"):
            out += fr(mid, MSG_I if theirs else MSG_R, bytes((fill + k) & 0xFF for k in range(n)))
            fill += n
        elif kind == "huge":
            out += uvarint_encode(mid << 3 | MSG_I) + uvarint_encode(n) + bytes(64)
        elif kind == "close":
            out += fr(mid, CLOSE_I if theirs else CLOSE_R, bytes(n))  # payloads are ignored
        elif kind == "reset":
            out += fr(mid, RESET_I if theirs else RESET_R)
        elif kind == "new":
            out += fr(mid, NEW, b"n" * n)
        elif kind == "unknown":
            out += fr(mid, MSG_I, bytes(n))
        else:
            out += uvarint_encode(7) + uvarint_encode(0)
    return bytes(out), local, starts


def cut(data: bytes, points: list[int], local: list[tuple[int, int]]) -> list[tuple[str, object]]:
    """Feed steps: byte pieces split at ``points`` and at local-call offsets, calls in between."""
    offs = sorted({p % (len(data) + 1) for p in points} | {a for a, _ in local} | {0, len(data)})
    steps: list[tuple[str, object]] = []
    at: dict[int, list[int]] = {}
    for off, i in local:
        at.setdefault(off, []).append(i)
    for a, b in zip(offs, offs[1:], strict=False):
        steps.extend(("local", i) for i in at.get(a, []))
        if b > a:
            steps.append(("feed", data[a:b]))
    steps.extend(("local", i) for i in at.get(len(data), []))
    return steps


def run_session(kernels, steps, ops, attach: bool):
    """Drive one server session; returns (per-stream bytes, other events, wire out, stats, error)."""
    s = MplexSession(is_client=False, config=CFG, kernels=kernels)
    got: dict[int, bytearray] = {}
    unacked: dict[int, int] = {}
    events: list[object] = []
    out = bytearray()
    error = None

    def deliver_to(key):
        def deliver(payload):
            got[key] += bytes(payload)
            unacked[key] += len(payload)
        return deliver

    def opened(key):
        got.setdefault(key, bytearray())
        unacked[key] = 0
        if attach:
            s.attach(key, deliver_to(key))  # (False once the peer closed it or the session ended)

    def drain():
        while (ev := s.next_event()) is not None:
            if isinstance(ev, DataReceived):
                got[ev.stream_id] += bytes(ev.data)
                unacked[ev.stream_id] += len(ev.data)
            else:
                events.append(ev)
                if isinstance(ev, StreamOpened):
                    opened(ev.stream_id)

    for _ in range(2):
        opened(s.open_stream())
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
            op, t, mode = ops[arg]
            key = KEYS[t]
            try:
                if op == "ack":
                    n = unacked.get(key, 0)
                    n = (n, n // 2, 1 if n else 0)[mode]
                    if n:
                        s.acknowledge_received(key, n, 0.0)
                        unacked[key] -= n
                elif op == "lclose":
                    s.close_stream(key)
                elif op == "lreset":
                    s.reset_stream(key)
            except LocalProtocolError as exc:
                events.append(("local error", type(exc)))
            drain()
        for b in s.data_to_send():
            out += bytes(b)
    # (the native decoder's error messages are shorter: compare reasons by type only)
    evs = [(e.code, e.remote) if isinstance(e, ConnectionTerminated) else repr(e) for e in events]
    return {k: bytes(v) for k, v in got.items()}, evs, bytes(out), dict(s.stats), error


SPEC_KERNELS = types.SimpleNamespace(mplex_encode_header=pure_frame.mplex_encode_header,
                                     MplexDecoder=pure_frame.MplexDecoder)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_op, max_size=30), points=st.lists(st.integers(0, 1 << 20), max_size=8),
       apart=st.sampled_from(["no", "prelude", "each"]))
def test_session_with_demux_matches_spec(impl, ops, points, apart):
    data, local, starts = wire(ops)
    # prelude: the peer's streams are open (and attached) before the rest arrives;
    # each: every frame is a batch of its own
    points = points + {"no": [], "prelude": [len(PRELUDE)], "each": starts}[apart]
    steps = cut(data, points, local)
    spec = run_session(SPEC_KERNELS, steps, ops, attach=False)
    fast = run_session(impl, steps, ops, attach=True)
    assert fast == spec


def test_spec_kernels_have_no_demux():
    s = MplexSession(is_client=False, kernels=SPEC_KERNELS)
    key = s.open_stream()
    assert not s.can_feed_sealed and not s.attach(key, print) and s.lend(key, bytearray(1), None) is None
    assert s.sealed_bytes_in == 0
    s.detach(key)  # a no-op


# -- kernel parity ----------------------------------------------------------------------

@st.composite
def _mplex_soup(draw: st.DrawFn) -> bytes:
    """Frames of any flag on a few ids, some with lying lengths or bad varints."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.sampled_from(["ok"] * 12 + ["huge", "flag7", "overlong", "nonminimal"]))
        mid = draw(st.integers(0, 3))
        flag = draw(st.integers(0, 6))
        if kind == "ok":
            body = draw(st.binary(max_size=draw(st.sampled_from([0, 8, 300, 3000]))))
            out += fr(mid, flag, body)
        elif kind == "huge":
            out += uvarint_encode(mid << 3 | flag) + uvarint_encode(MAX_MSG + 1) + bytes(10)
        elif kind == "flag7":
            out += uvarint_encode(mid << 3 | 7) + b"\x00"
        elif kind == "overlong":
            out += b"\xff" * 10
        else:
            out += b"\x81\x00\x00"
    return bytes(out)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=_mplex_soup(), points=st.lists(st.integers(0, 1 << 20), max_size=10),
       credits=st.lists(st.integers(0, 4000), min_size=8, max_size=8),
       attached=st.lists(st.booleans(), min_size=8, max_size=8),
       ops=st.lists(st.tuples(st.sampled_from(["take", "credit", "detach"]), st.integers(0, 7),
                              st.integers(0, 4000)), max_size=10))
def test_demux_kernel_parity(impl, data, points, credits, attached, ops):
    offs = sorted({p % (len(data) + 1) for p in points} | {0, len(data)})
    pieces = [data[a:b] for a, b in zip(offs, offs[1:], strict=False)]

    def run(kernels):
        d = kernels.MplexDemux(MAX_MSG)
        got: dict[int, list[bytes]] = {}
        for key in range(8):  # keys of ids 0..3, both sides
            if attached[key]:
                got[key] = []
                d.attach(key, lambda p, key=key: got[key].append(bytes(p)), credits[key])
        trace: list[object] = []
        for j, piece in enumerate(pieces):
            try:
                fast, records = d.feed(piece)
            except Exception as exc:  # noqa: BLE001 - compared by type
                trace.append(type(exc))
                continue
            trace.append((fast, recs(records), d.buffered))
            if j < len(ops):
                op, key, n = ops[j]
                if op == "take":
                    trace.append(d.take(key))
                elif op == "credit":
                    d.set_credit(key, n)
                else:
                    trace.append(d.detach(key))
        trace.append([d.take(k) for k in range(8)])
        return trace, got, len(d), d.bytes_in, d.frames_in, [d.attached(k) for k in range(8)]

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_keys_fast_path_and_order(impl):
    d = impl.MplexDemux()
    got: list[tuple[int, bytes]] = []
    d.attach(0, lambda p: got.append((0, bytes(p))), 10)  # id 0, the peer opened it
    d.attach(1, lambda p: got.append((1, bytes(p))), 10)  # id 0, we opened it
    data = (fr(0, MSG_I, b"ab") + fr(0, MSG_R, b"cd") + fr(0, MSG_I) + fr(0, CLOSE_I)
            + fr(0, MSG_R, b"e"))
    fast, records = d.feed(data)
    # the empty message goes the fast way too (dropped); the Close and all after it go back
    assert (fast, got) == (3, [(0, b"ab"), (1, b"cd")])
    assert recs(records) == [(CLOSE_I, 0, b""), (MSG_R, 0, b"e")]
    assert (d.take(0), d.take(1), d.take(0), d.frames_in) == (2, 2, 0, 5)
    # beyond the credit (8 left): returned, not delivered
    fast, records = d.feed(fr(0, MSG_I, bytes(9)))
    assert fast == 0 and len(records[0][2]) == 9 and len(got) == 2
    # a message split across feeds is delivered piece by piece, each within the credit
    d.set_credit(0, 6)
    assert d.feed(fr(0, MSG_I, b"xyz123")[:-3])[0] == 1
    assert d.feed(b"123")[0] == 1
    assert got[-2:] == [(0, b"xyz"), (0, b"123")] and d.detach(0) == 6 and len(d) == 1
    # detached or never attached: everything goes back
    assert d.feed(fr(0, MSG_I, b"q") + fr(5, MSG_R, b"q"))[0] == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_control_payload_split_across_feeds(impl):
    data = fr(0, MSG_R, b"hi") + fr(3, NEW, b"a-long-stream-name") + fr(0, MSG_R, b"!")
    for cut_at in range(1, len(data)):
        d = impl.MplexDemux()
        got: list[bytes] = []
        d.attach(1, lambda p, got=got: got.append(bytes(p)), 100)
        a = d.feed(data[:cut_at])
        b = d.feed(data[cut_at:])
        assert a[0] + b[0] + len(a[1]) + len(b[1]) == d.frames_in
        returned = recs(a[1] + b[1])
        assert returned[0] == (NEW, 3, b"a-long-stream-name") and d.buffered == 0
        # "!" goes back when it follows the NewStream in the same feed, else the fast way
        end = len(data) - len(fr(0, MSG_R, b"!"))
        assert returned[1:] == ([(MSG_R, 0, b"!")] if cut_at < end else [])
        assert b"".join(got) == (b"hi" if cut_at < end else b"hi!")


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_error_delivers_nothing(impl):
    for bad, err in ((uvarint_encode(7) + b"\x00", FrameTypeError),
                     (uvarint_encode(MSG_I) + uvarint_encode((1 << 20) + 1), FrameTooLargeError)):
        d = impl.MplexDemux()
        got: list[bytes] = []
        d.attach(0, got.append, 1000)
        with pytest.raises(err):
            d.feed(fr(0, MSG_I, b"abc") + bad)
        assert got == [] and d.take(0) == 0
        with pytest.raises(err):  # the decoder is dead
            d.feed(fr(0, MSG_I, b"abc"))


@pytest.mark.parametrize("impl", IMPLS)
def test_demux_many_records_one_batch(impl):
    # more records than one C batch (256): the table grows, order is kept
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(2, lambda p: got.append(bytes(p)), 1 << 20)
    data = b"".join(fr(1, MSG_I, bytes([i & 0xFF])) for i in range(1000)) + fr(1, CLOSE_I, b"x" * 5)
    fast, records = d.feed(data)
    assert fast == 1000 and recs(records) == [(CLOSE_I, 1, b"xxxxx")]
    assert got == [bytes([i & 0xFF]) for i in range(1000)] and d.frames_in == 1001


@pytest.mark.parametrize("impl", IMPLS)
def test_session_buffer_limit_on_the_fast_path(impl):
    s = MplexSession(is_client=False, config=CFG, kernels=impl)
    s.receive_data(fr(0, NEW, b"0"), 0.0)
    assert type(s.next_event()) is StreamOpened
    got: list[bytes] = []
    assert s.attach(0, lambda p: got.append(bytes(p)))
    soft = s.recv_soft_limit
    assert soft == LIMIT // 2
    # the fast way runs up to the soft limit ...
    s.receive_data(fr(0, MSG_I, bytes(soft)), 0.0)
    assert s.next_event() is None and sum(map(len, got)) == soft
    # ... past it every message goes through the driver, which pauses the socket
    s.receive_data(fr(0, MSG_I, bytes(100)), 0.0)
    ev = s.next_event()
    assert isinstance(ev, DataReceived) and len(ev.data) == 100
    # credit returns through acknowledge_received (and the demux learns it)
    s.acknowledge_received(0, soft, 0.0)
    s.receive_data(fr(0, MSG_I, bytes(100)), 0.0)
    assert s.next_event() is None and sum(map(len, got)) == soft + 100
    with pytest.raises(LocalProtocolError):
        s.acknowledge_received(0, LIMIT + 1, 0.0)
    # up to the hard limit the session still takes it (200 unread so far): the
    # fast way while under the soft limit, then as events
    fast0 = sum(map(len, got))
    for _ in range((LIMIT - 200) // 1000):
        s.receive_data(fr(0, MSG_I, bytes(1000)), 0.0)
    s.receive_data(fr(0, MSG_I, bytes((LIMIT - 200) % 1000)), 0.0)
    evented = 0
    while (ev := s.next_event()) is not None:
        assert isinstance(ev, DataReceived)
        evented += len(ev.data)
    fast = sum(map(len, got)) - fast0
    assert fast + evented == LIMIT - 200 and 0 < fast <= soft - 100 and evented > 0
    # one byte over: the session resets the stream, as without the demux
    assert s.data_to_send() == []
    s.receive_data(fr(0, MSG_I, b"x"), 0.0)
    ev = s.next_event()
    assert isinstance(ev, StreamReset) and ev.code == StreamErrorCode.RESOURCE_LIMIT
    assert b"".join(bytes(b) for b in s.data_to_send()) == fr(0, RESET_R)
    assert s.stats["streams_overflowed"] == 1 and not s._demux.attached(0)


@pytest.mark.parametrize("impl", IMPLS)
def test_session_message_after_close_resets(impl):
    s = MplexSession(is_client=True, config=CFG, kernels=impl)
    key = s.open_stream()
    got: list[bytes] = []
    assert s.attach(key, lambda p: got.append(bytes(p)))
    s.data_to_send()
    s.receive_data(fr(0, MSG_R, b"ab") + fr(0, CLOSE_R), 0.0)
    s.receive_data(fr(0, MSG_R, b"c"), 0.0)  # a batch of its own: the demux must not take it
    names = [type(e).__name__ for e in iter(s.next_event, None)]
    assert got == [b"ab"] and names == ["StreamEnded", "StreamReset"]
    assert not s.attach(key, print)
    assert b"".join(bytes(b) for b in s.data_to_send()) == fr(0, RESET_I)


# -- loans --------------------------------------------------------------------------

@pytest.mark.parametrize("impl", IMPLS)
def test_loan_fills_then_spills_in_order_and_wakes_once(impl):
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), LIMIT)
    buf = bytearray(10)
    w = Waiter()
    loan = d.lend(1, memoryview(buf), w)
    fast, records = d.feed(fr(0, MSG_R, b"abcd") + fr(0, MSG_R, b"efghijkl") + fr(0, MSG_R, b"mn"))
    assert (fast, records) == (3, [])
    # 10 bytes into the loan, the rest of that message and all after it delivered
    assert bytes(buf) == b"abcdefghij" and got == [b"kl", b"mn"]
    assert w.sets == 1 and d.take(1) == 14
    d.feed(fr(0, MSG_R, b"op"))  # spilled: nothing more is copied
    assert got[-1] == b"op" and loan.unlend() == 10


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_keeps_filling_across_batches_until_unlent(impl):
    d = impl.MplexDemux()
    d.attach(2, lambda p: pytest.fail("nothing should be delivered"), LIMIT)
    buf = bytearray(8)
    w = Waiter()
    loan = d.lend(2, buf, w)
    d.feed(fr(1, MSG_I, b"ab"))
    d.feed(fr(1, MSG_I, b"cd"))  # the reader has not run yet: same loan, no second wake-up
    assert w.sets == 1 and bytes(buf[:4]) == b"abcd"
    assert loan.unlend() == 4 and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_does_not_take_data_once_the_waiter_completed_elsewhere(impl):
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(0, lambda p: got.append(bytes(p)), LIMIT)
    buf = bytearray(8)
    loan = d.lend(0, buf, Waiter(done=True))
    d.feed(fr(0, MSG_I, b"xy"))
    d.feed(fr(0, MSG_I, b"z"))
    assert got == [b"xy", b"z"] and buf == bytearray(8) and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_spill_stops_copies(impl):
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(0, lambda p: got.append(bytes(p)), LIMIT)
    loan = d.lend(0, bytearray(8), Waiter())
    loan.spill()
    d.feed(fr(0, MSG_I, b"ab"))
    assert got == [b"ab"] and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_outlives_detach(impl):
    d = impl.MplexDemux()
    d.attach(0, lambda p: None, LIMIT)
    buf = bytearray(4)
    loan = d.lend(0, buf, Waiter())
    d.feed(fr(0, MSG_I, b"hi"))
    assert d.detach(0) == 2
    assert d.feed(fr(0, MSG_I, b"!!"))[0] == 0  # not attached any more: returned
    assert loan.unlend() == 2 and bytes(buf[:2]) == b"hi"


@pytest.mark.parametrize("impl", IMPLS)
def test_lend_needs_an_attached_stream_and_a_writable_buffer(impl):
    d = impl.MplexDemux()
    assert d.lend(0, bytearray(4), Waiter()) is None
    d.attach(0, lambda p: None, LIMIT)
    with pytest.raises(BufferError):
        d.lend(0, b"read-only", Waiter())


@pytest.mark.parametrize("impl", IMPLS)
def test_credit_still_bounds_the_loan(impl):
    d = impl.MplexDemux()
    d.attach(0, lambda p: None, 3)
    loan = d.lend(0, bytearray(16), Waiter())
    fast, records = d.feed(fr(0, MSG_I, b"abcd"))  # over the credit: the session must see it
    assert fast == 0 and len(records) == 1 and loan.unlend() == 0


def _traffic(ops: list[tuple[int, int]]) -> list[bytes]:
    out = []
    n = 0
    for t, size in ops:
        payload = bytes((n + k) & 0xFF for k in range(size))
        n += size
        out.append(fr(0, (MSG_I, MSG_R)[t], payload))
    return out


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 300)), max_size=30),
       plan=st.lists(st.tuples(st.sampled_from(["lend", "unlend", "spill", "feed", "done"]),
                               st.integers(0, 1), st.integers(0, 400)), max_size=40))
def test_loan_parity_native_and_pure(impl, ops, plan):
    pieces = _traffic(ops)

    def run(kernels):
        d = kernels.MplexDemux()
        trace: list[object] = []
        loans = Loans(d, trace)
        for key in (0, 1):
            d.attach(key, lambda p, key=key: trace.append(("deliver", key, bytes(p))), LIMIT)
        feed_at = 0
        for op, key, n in plan:
            loans.step(op, key, n)
            if op == "feed" and feed_at < len(pieces):
                fast, records = d.feed(pieces[feed_at])
                feed_at += 1
                trace.append(("fed", fast, len(records), d.take(0), d.take(1)))
        loans.end()
        return trace, d.bytes_in, d.frames_in

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
def test_session_lend_copies_into_the_readers_buffer(impl):
    s = MplexSession(is_client=False, config=CFG, kernels=impl)
    s.receive_data(fr(0, NEW, b"0"), 0.0)
    s.next_event()
    assert s.lend(0, bytearray(4), Waiter()) is None  # not attached
    s.attach(0, lambda p: pytest.fail("all of it fits the loan"))
    buf = bytearray(4)
    w = Waiter()
    loan = s.lend(0, buf, w)
    s.receive_data(fr(0, MSG_I, b"wxyz"), 0.0)
    assert w.sets == 1 and loan.unlend() == 4 and buf == b"wxyz"
    s.acknowledge_received(0, 4, 0.0)  # the session counted them as buffered
    with pytest.raises(LocalProtocolError):
        s.acknowledge_received(0, 1, 0.0)


# -- feed_sealed -----------------------------------------------------------------------

def _ciphers(kernels):
    key = bytes(range(32))
    return kernels.NoiseCipher(key), kernels.NoiseCipher(key)


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_sealed_opens_and_demultiplexes_in_one_call(impl):
    seal, open_ = _ciphers(impl)
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), LIMIT)
    buf = bytearray(5)
    w = Waiter()
    loan = d.lend(1, buf, w)
    plain = fr(0, MSG_R, b"hello world")
    wire_ = bytes(seal.seal_frames([memoryview(plain)]))
    # split mid-frame: the first call opens nothing, the second all of it
    assert d.feed_sealed(open_, wire_[:7]) is None
    assert d.feed_sealed(open_, wire_[7:]) is None
    assert bytes(buf) == b"hello" and got == [b" world"] and w.sets == 1 and loan.unlend() == 5
    assert d.sealed_bytes_in == d.bytes_in == len(plain)
    # a control frame goes back to the caller, still in order
    wire_ = bytes(seal.seal_frames([memoryview(fr(0, CLOSE_R) + fr(0, MSG_R, b"x"))]))
    assert recs(d.feed_sealed(open_, wire_)) == [(CLOSE_R, 0, b""), (MSG_R, 0, b"x")]


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_sealed_rejects_a_forged_frame_and_delivers_nothing(impl):
    seal, open_ = _ciphers(impl)
    d = impl.MplexDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), LIMIT)
    wire_ = bytearray(seal.seal_frames([memoryview(fr(0, MSG_R, b"secret"))]))
    wire_[5] ^= 1
    with pytest.raises(DecryptError):
        d.feed_sealed(open_, bytes(wire_))
    assert got == [] and d.take(1) == 0 and d.bytes_in == d.sealed_bytes_in == 0
    # the session does the same: the error propagates, nothing is delivered
    seal, open_ = _ciphers(impl)
    s = MplexSession(is_client=True, config=CFG, kernels=impl)
    key = s.open_stream()
    s.attach(key, lambda p: got.append(bytes(p)))
    wire_ = bytearray(seal.seal_frames([memoryview(fr(0, MSG_R, b"secret"))]))
    wire_[-1] ^= 1
    with pytest.raises(DecryptError):
        s.feed_sealed(open_, bytes(wire_), 0.0)
    assert got == [] and s.next_event() is None


@pytest.mark.parametrize("impl", IMPLS)
def test_session_feed_sealed_matches_receive_data(impl):
    """Same events, wire bytes out and stats whether the session opens or is handed plaintext."""
    frames = (fr(0, MSG_R, b"ours") + fr(0, NEW, b"0") + fr(0, MSG_I, b"abc") + fr(0, MSG_R, b"!")
              + fr(0, CLOSE_I) + fr(1, NEW, b"1") + fr(1, MSG_I, b"f" * 300) + fr(0, MSG_I, b"late"))
    outs = []
    for sealed in (False, True):
        seal, open_ = _ciphers(impl)
        s = MplexSession(is_client=False, config=CFG, kernels=impl)
        ours = s.open_stream()
        got: list[bytes] = []
        s.attach(ours, lambda p, got=got: got.append(bytes(p)))
        wire_ = bytes(seal.seal_frames([memoryview(frames)]))
        if sealed:
            assert s.feed_sealed(open_, wire_, 1.0) is True
            assert s.sealed_bytes_in == len(frames)
        else:
            s.receive_data(open_.open_frames(wire_), 1.0)
            assert s.sealed_bytes_in == 0
        events = []
        while (ev := s.next_event()) is not None:
            events.append((type(ev).__name__, getattr(ev, "stream_id", None),
                           bytes(getattr(ev, "data", b""))))
        outs.append((events, got, b"".join(bytes(b) for b in s.data_to_send()),
                     s.stats["bytes_in"], s.stats["frames_in"]))
    assert outs[0] == outs[1]
    assert outs[0][1] == [b"ours"] and fr(0, RESET_R) in outs[0][2]  # "late": after Close
    # every record the fast way: nothing for the session to do
    seal, open_ = _ciphers(impl)
    s = MplexSession(is_client=True, config=CFG, kernels=impl)
    key = s.open_stream()
    s.attach(key, lambda p: None)
    assert s.feed_sealed(open_, bytes(seal.seal_frames([memoryview(fr(0, MSG_R, b"z"))])), 0.0) is False
    assert s.stats["frames_in"] == 1


# -- Noise frames opened straight into the lent buffer (as for yamux) ---------------------

def _mplex_ciphers(kernels):
    key = bytes(range(32))
    return kernels.NoiseCipher(key), kernels.NoiseCipher(key)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("joined", [True, False])
@pytest.mark.parametrize("cut", [0, 3, 65_000, 65_537, 200_000])
def test_message_bulk_is_opened_in_place(impl, cut, joined):
    payload = bytes(range(251)) * 1300  # 326 KB in one Message frame
    seal, open_ = _mplex_ciphers(impl)
    frame = fr(1, MSG_I, payload)
    hlen = len(frame) - len(payload)
    if joined:  # a sender that puts the header in the payload's first Noise frame
        wire = bytes(seal.seal_frames([memoryview(frame)]))
        assert seal.nonce == -(-len(frame) // 65_408)
    else:  # the header and the payload as a session queues them: fastp2p's sealing
        # gives the header a frame of its own before a payload this long
        wire = bytes(seal.seal_frames([memoryview(frame[:hlen]), memoryview(payload)]))
        assert seal.nonce == 1 + -(-len(payload) // 65_408)
    d = impl.MplexDemux(1 << 20)
    d.attach(2, lambda p: pytest.fail("a loan with room takes everything"), 1 << 30)
    buf = bytearray(len(payload))
    w = Waiter()
    loan = d.lend(2, buf, w)
    assert d.feed_sealed(open_, wire[:cut]) is None
    assert d.feed_sealed(open_, wire[cut:]) is None
    assert loan.unlend() == len(payload) and bytes(buf) == payload and w.sets == 1
    assert d.take(2) == len(payload)
    # joined: the first frame is opened in two parts: its first MAX_HEADER_SIZE
    # bytes (the header and a few payload bytes, copied) through the decoder, the
    # rest in place like every later frame (the pure twin copies, counted alike);
    # else every payload byte is in a frame of its own and lands in place
    assert d.direct_bytes_in == len(payload) - (pure_frame.MAX_HEADER_SIZE - hlen if joined else 0)
    assert d.sealed_bytes_in == d.bytes_in == len(frame)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["control", "short-length", "no-loan", "forged"])
def test_message_header_frames_that_cannot_go_in_place(impl, case):
    """A frame starting with anything but a Message header whose payload covers
    it, or with no loan to take it: opened whole and decoded as before; a forged
    one places and delivers nothing."""
    seal, open_ = _mplex_ciphers(impl)
    payload = bytes(range(256)) * 100
    if case == "control":  # a 1-byte Close, then the Message: the frame starts with a control
        bufs = [fr(1, 4 if MSG_I == 2 else 3), fr(1, MSG_I, payload)[:-len(payload)], payload]
    elif case == "short-length":  # two Messages in one frame: the first covers only part of it
        bufs = [fr(1, MSG_I, payload[:3000])[:-3000], payload[:3000] + fr(1, MSG_I, payload[3000:])]
    else:
        bufs = [fr(1, MSG_I, payload)[:-len(payload)], payload]
    wire = bytearray(seal.seal_frames([memoryview(b) for b in bufs]))
    if case == "forged":
        wire[2 + 4_000] ^= 1
    d = impl.MplexDemux(1 << 20)
    got: list[bytes] = []
    d.attach(2, (lambda p: pytest.fail("forged")) if case == "forged" else
             (lambda p: got.append(bytes(p))), 1 << 30)
    buf = bytearray(len(payload))
    loan = d.lend(2, buf, Waiter()) if case != "no-loan" else None
    if case == "forged":
        with pytest.raises(DecryptError):
            d.feed_sealed(open_, bytes(wire))
        assert loan.unlend() == 0 and d.take(2) == 0
        return
    out = d.feed_sealed(open_, bytes(wire)) or []
    n = loan.unlend() if loan is not None else 0
    back = b"".join(bytes(p) for f, _i, p in out if f == MSG_I)
    assert bytes(buf[:n]) + b"".join(got) + back == payload
    assert d.direct_bytes_in == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_forged_message_frame_counts_nothing(impl):
    seal, open_ = _mplex_ciphers(impl)
    payload = bytes(200_000)
    frame = fr(1, MSG_I, payload)
    hlen = len(frame) - len(payload)
    wire = bytearray(seal.seal_frames([memoryview(frame)]))
    # the first Noise frame holds the header and the start of the payload (one buffer)
    second = 2 + 65_408 + 16
    wire[second + 2 + 100] ^= 1  # inside the second frame
    d = impl.MplexDemux(1 << 20)
    d.attach(2, lambda p: None, 1 << 30)
    buf = bytearray(len(payload))
    loan = d.lend(2, buf, Waiter())
    with pytest.raises(DecryptError):
        d.feed_sealed(open_, bytes(wire))
    # the first frame's payload; the forged one not counted
    assert loan.unlend() == 65_408 - hlen
    assert bytes(buf[: 65_408 - hlen]) == payload[: 65_408 - hlen]


_mplex_op = st.one_of(
    st.tuples(st.just("msg"), st.sampled_from([0, 1]), st.integers(0, 200_000)),
    st.tuples(st.just("msg"), st.sampled_from([0, 1]), st.integers(0, 300)),
    st.tuples(st.just("close"), st.sampled_from([0, 1]), st.just(0)),
    st.tuples(st.just("new"), st.just(2), st.integers(0, 20)),
)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_mplex_op, max_size=8),
       split_header=st.booleans(),
       seal_cuts=st.lists(st.integers(0, 1 << 20), max_size=4),
       feed_cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
       plan=st.lists(st.tuples(st.sampled_from(["lend", "lend", "lend", "unlend", "spill", "done",
                                                "none"]),
                               st.sampled_from([0, 1]),
                               st.one_of(st.sampled_from([400_000, 70_000, 600_000]),
                                         st.integers(0, 700_000))),
                     min_size=8, max_size=8))
def test_feed_sealed_parity_native_and_pure(impl, ops, split_header, seal_cuts, feed_cuts, plan):
    """Frame by frame, opened in place or not: both twins place, deliver, return
    and count exactly the same (random traffic, seal and read boundaries)."""
    bufs: list[bytes] = []  # what the sender hands the sealer, header and payload apart
    fill = 0
    for kind, key, n in ops:
        mid, flag = (1, MSG_I) if key == 0 else (2, MSG_R)  # keys 2 (=1*2) and 5 (=2*2+1)
        if kind == "msg":
            payload = bytes((fill + k) & 0xFF for k in range(n))
            fill += n
            f = fr(mid, flag, payload)
            if split_header:
                bufs += [f[: len(f) - n], payload]
            else:
                bufs.append(f)
        elif kind == "close":
            bufs.append(fr(mid, (CLOSE_I, CLOSE_R)[key]))
        else:
            bufs.append(fr(3, NEW, b"n" * n))
    plain = b"".join(bufs)
    cuts = sorted({c % (len(bufs) + 1) for c in seal_cuts} | {0, len(bufs)})
    keys = (2, 5)

    def run(kernels):
        seal, open_ = _mplex_ciphers(kernels)
        wire = b"".join(bytes(seal.seal_frames([memoryview(x) for x in bufs[a:b]]))
                        for a, b in zip(cuts, cuts[1:], strict=False) if b > a)
        fcuts = sorted({c % (len(wire) + 1) for c in feed_cuts} | {0, len(wire)})
        d = kernels.MplexDemux(1 << 20)
        trace: list[object] = []
        for k in keys:
            d.attach(k, lambda p, k=k: trace.append(("deliver", k, bytes(p))), 1 << 30)
        loans = Loans(d, trace)
        d.on_loan_full = lambda: trace.append("loan full")
        d.on_read_hint = lambda n: trace.append(("read hint", n))
        d.on_wake_hint = lambda n: trace.append(("wake hint", n))
        for step, (a, b) in enumerate(zip(fcuts, fcuts[1:], strict=False)):
            op, ki, n = plan[step % len(plan)]
            loans.step(op, keys[ki], n)
            out = d.feed_sealed(open_, wire[a:b])
            trace.append(("fed", recs(out or []), d.take(2), d.take(5), d.buffered, d.read_hint,
                          d.wake_hint))
            # only bytes certain to come (see the yamux twin of this test)
            assert d.wake_hint <= len(wire) - b and (b < len(wire) or d.wake_hint == 0)
        loans.end()
        return trace, d.bytes_in, d.frames_in, d.sealed_bytes_in, d.direct_bytes_in

    got = run(impl)
    assert got == run(_accel.pure)
    assert got[3] == len(plain)  # every plaintext byte opened once, in place or not
