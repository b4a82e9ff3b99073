"""The demux's native receive step: loans of reader buffers and ``feed_sealed``.

- A loan (``YamuxDemux.lend``) copies a stream's plain DATA straight into the
  reader's buffer, wakes its waiter once per batch, and never reorders bytes:
  once a byte of the stream goes another way (``deliver``, or the session's
  events, which call ``spill``) nothing more lands in the loan.
- ``feed_sealed`` opens Noise frames and demultiplexes them in one call.

Each behaviour runs on the native demux and on its pure twin; a random-traffic
test checks the two agree on every copied byte, delivery and wake-up.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import DecryptError, RemoteProtocolError
from fastp2p.proto.noise.cipher import JOIN_ENTRY_MAX, SEAL_PLAINTEXT
from fastp2p.proto.yamux.session import YamuxSession

from .test_yamux_demux import IMPLS, WINDOW, _yamux_soup, hdr


class Waiter:
    """An asyncio-future stand-in that counts completions."""

    def __init__(self, done: bool = False) -> None:
        self._done = done
        self.sets = 0

    def done(self) -> bool:
        return self._done

    def set_result(self, _value: object) -> None:
        assert not self._done, "set_result on a completed waiter"
        self._done = True
        self.sets += 1


class Loans:
    """A random loan plan applied to a demux (the parity tests): ``step(op, key, n)``
    lends a fresh ``n``-byte buffer, or unlends, spills or completes the waiter
    of the loan ``key`` holds (other ops, or keys without a loan: nothing);
    ``end()`` unlends what is left. What each loan got goes to ``trace``."""

    def __init__(self, demux: object, trace: list[object]) -> None:
        self.d = demux
        self.trace = trace
        self.loans: dict[int, tuple[object, bytearray, Waiter]] = {}

    def step(self, op: str, key: int, n: int) -> None:
        if op == "lend":
            buf = bytearray(n)
            w = Waiter()
            self.loans[key] = (self.d.lend(key, buf, w), buf, w)  # type: ignore[attr-defined]
            self.trace.append(("lent", key, n, self.d.read_hint))  # type: ignore[attr-defined]
        elif op in ("unlend", "spill", "done") and key in self.loans:
            loan, buf, w = self.loans[key]
            if op == "unlend":
                got = loan.unlend()  # type: ignore[attr-defined]
                self.trace.append(("unlend", key, got, bytes(buf[:got]), w.sets))
                del self.loans[key]
            elif op == "spill":
                loan.spill()  # type: ignore[attr-defined]
            elif not w.done():
                w.set_result(None)
                w.sets = 0

    def end(self) -> None:
        for key, (loan, buf, w) in sorted(self.loans.items()):
            got = loan.unlend()  # type: ignore[attr-defined]
            self.trace.append(("end", key, got, bytes(buf[:got]), w.sets))


def data(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return hdr(0, flags, sid, len(payload)) + payload


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_fills_then_spills_in_order_and_wakes_once(impl):
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    buf = bytearray(10)
    w = Waiter()
    loan = d.lend(1, memoryview(buf), w)
    fast, records = d.feed(data(1, b"abcd") + data(1, b"efghijkl") + data(1, b"mn"))
    assert (fast, records) == (3, [])
    # 10 bytes into the loan, the rest of that frame and all after it delivered
    assert bytes(buf) == b"abcdefghij" and got == [b"kl", b"mn"]
    assert w.sets == 1 and d.take(1) == 14
    # the loan is spilled: a later batch copies nothing more even after an unlend-less wait
    d.feed(data(1, b"op"))
    assert got[-1] == b"op" and loan.unlend() == 10


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_keeps_filling_across_batches_until_unlent(impl):
    d = impl.YamuxDemux()
    d.attach(3, lambda p: pytest.fail("nothing should be delivered"), WINDOW)
    buf = bytearray(8)
    w = Waiter()
    loan = d.lend(3, buf, w)
    d.feed(data(3, b"ab"))
    d.feed(data(3, b"cd"))  # the reader has not run yet: same loan, no second wake-up
    assert w.sets == 1 and bytes(buf[:4]) == b"abcd"
    assert loan.unlend() == 4 and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_does_not_take_data_once_the_waiter_completed_elsewhere(impl):
    # the reader was woken another way (EOF, reset, cancel) before any byte landed
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    buf = bytearray(8)
    loan = d.lend(1, buf, Waiter(done=True))
    d.feed(data(1, b"xy"))
    d.feed(data(1, b"z"))
    assert got == [b"xy", b"z"] and buf == bytearray(8) and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_spill_stops_copies(impl):
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    loan = d.lend(1, bytearray(8), Waiter())
    loan.spill()  # e.g. the session delivered a DATA|FIN-less frame past a control frame
    d.feed(data(1, b"ab"))
    assert got == [b"ab"] and loan.unlend() == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_loan_outlives_detach(impl):
    # bytes placed before the stream was detached (its FIN arrived) stay counted
    d = impl.YamuxDemux()
    d.attach(1, lambda p: None, WINDOW)
    buf = bytearray(4)
    loan = d.lend(1, buf, Waiter())
    d.feed(data(1, b"hi"))
    assert d.detach(1) == 2
    d.feed(data(1, b"!!"))  # not attached any more: returned to the session
    assert loan.unlend() == 2 and bytes(buf[:2]) == b"hi"


@pytest.mark.parametrize("impl", IMPLS)
def test_lend_needs_an_attached_stream_and_a_writable_buffer(impl):
    d = impl.YamuxDemux()
    assert d.lend(1, bytearray(4), Waiter()) is None
    d.attach(1, lambda p: None, WINDOW)
    with pytest.raises(BufferError):
        d.lend(1, b"read-only", Waiter())


@pytest.mark.parametrize("impl", IMPLS)
def test_credit_still_bounds_the_loan(impl):
    d = impl.YamuxDemux()
    d.attach(1, lambda p: None, 3)
    buf = bytearray(16)
    loan = d.lend(1, buf, Waiter())
    fast, records = d.feed(data(1, b"abcd"))  # over the credit: the session must see it
    assert fast == 0 and len(records) == 1 and loan.unlend() == 0


def _traffic(ops: list[tuple[int, int]]) -> list[bytes]:
    out = [hdr(1, 1, 1, 0) + hdr(1, 1, 3, 0)]
    n = 0
    for sid_i, size in ops:
        payload = bytes((n + k) & 0xFF for k in range(size))
        n += size
        out.append(data(2 * sid_i + 1, payload))
    return out


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.tuples(st.integers(0, 1), st.integers(0, 300)), max_size=30),
       plan=st.lists(st.tuples(st.sampled_from(["lend", "unlend", "spill", "feed", "done"]),
                               st.integers(0, 1), st.integers(0, 400)), max_size=40))
def test_loan_parity_native_and_pure(impl, ops, plan):
    pieces = _traffic(ops)

    def run(kernels):
        d = kernels.YamuxDemux()
        trace: list[object] = []
        loans = Loans(d, trace)
        for sid in (1, 3):
            d.attach(sid, lambda p, sid=sid: trace.append(("deliver", sid, bytes(p))), WINDOW)
        feed_at = 0
        for op, sid_i, n in plan:
            loans.step(op, 2 * sid_i + 1, n)
            if op == "feed" and feed_at < len(pieces):
                fast, records = d.feed(pieces[feed_at])
                feed_at += 1
                trace.append(("fed", fast, len(records), d.take(1), d.take(3)))
        loans.end()
        return trace, d.bytes_in, d.frames_in

    assert run(impl) == run(_accel.pure)


# -- feed_sealed -----------------------------------------------------------------------

def _ciphers(kernels):
    key = bytes(range(32))
    return kernels.NoiseCipher(key), kernels.NoiseCipher(key)


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_sealed_opens_and_demultiplexes_in_one_call(impl):
    seal, open_ = _ciphers(impl)
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    buf = bytearray(5)
    w = Waiter()
    loan = d.lend(1, buf, w)
    wire = bytes(seal.seal_frames([memoryview(data(1, b"hello world"))]))
    # split mid-frame: the first call opens nothing, the second all of it
    assert d.feed_sealed(open_, wire[:7]) is None
    assert d.feed_sealed(open_, wire[7:]) is None
    assert bytes(buf) == b"hello" and got == [b" world"] and w.sets == 1 and loan.unlend() == 5
    assert d.sealed_bytes_in == d.bytes_in == 12 + 11
    # a control frame goes back to the caller, still in order
    wire = bytes(seal.seal_frames([memoryview(hdr(2, 1, 0, 9) + data(1, b"x"))]))
    assert d.feed_sealed(open_, wire) == [(2, 1, 0, 9, None), (0, 0, 1, 1, d_slice(b"x"))]


def d_slice(b: bytes) -> object:
    """Compares equal to a memoryview payload with bytes ``b``."""

    class _Eq:
        def __eq__(self, other: object) -> bool:
            return bytes(other) == b  # type: ignore[call-overload]

    return _Eq()


@pytest.mark.parametrize("impl", IMPLS)
def test_feed_sealed_rejects_a_forged_frame_and_delivers_nothing(impl):
    seal, open_ = _ciphers(impl)
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    wire = bytearray(seal.seal_frames([memoryview(data(1, b"secret"))]))
    wire[5] ^= 1
    with pytest.raises(DecryptError):
        d.feed_sealed(open_, bytes(wire))
    assert got == [] and d.take(1) == 0


def _events(s: YamuxSession) -> list[tuple[str, int | None, bytes]]:
    """The session's pending events as (name, stream id, data) tuples."""
    out = []
    while (ev := s.next_event()) is not None:
        out.append((type(ev).__name__, getattr(ev, "stream_id", None), bytes(getattr(ev, "data", b""))))
    return out


@pytest.mark.parametrize("impl", IMPLS)
def test_session_feed_sealed_matches_receive_data(impl):
    """Same events and wire bytes out whether the session opens or is handed plaintext."""
    frames = (hdr(1, 1, 1, 0) + data(1, b"abc") + hdr(2, 1, 0, 5) + data(1, b"de", flags=4)
              + hdr(1, 1, 3, 0) + data(3, b"f" * 300))
    outs = []
    for sealed in (False, True):
        seal, open_ = _ciphers(impl)
        s = YamuxSession(is_client=False, kernels=impl)
        wire = bytes(seal.seal_frames([memoryview(frames)]))
        if sealed:
            assert s.feed_sealed(open_, wire, 1.0) is True
        else:
            s.receive_data(open_.open_frames(wire), 1.0)
        events = _events(s)
        outs.append((events, b"".join(bytes(b) for b in s.data_to_send()),
                     s.stats["bytes_in"], s.stats["frames_in"]))
    assert outs[0] == outs[1]
    assert hdr(2, 2, 0, 5) in outs[0][1]  # the PING answer


@pytest.mark.parametrize("impl", IMPLS)
def test_sealed_step_hands_over_only_what_the_fast_way_left(impl):
    """``sealed_step``: ``feed_sealed`` as a callable; None from the feed calls
    nothing, records go to ``on_records``, a forged frame's error to ``on_error``
    (never raised), and a stopped step drops what it is given."""
    seal, open_ = _ciphers(impl)
    d = impl.YamuxDemux()
    got: list[bytes] = []
    d.attach(1, lambda p: got.append(bytes(p)), WINDOW)
    handed: list[object] = []
    errors: list[BaseException] = []
    step = d.sealed_step(open_, handed.append, errors.append)
    step(seal.seal_frames([memoryview(data(1, b"fast"))]))
    assert got == [b"fast"] and handed == [] and errors == []
    step(memoryview(bytes(seal.seal_frames([memoryview(hdr(2, 1, 0, 9))]))))
    assert handed == [[(2, 1, 0, 9, None)]] and errors == []
    forged = bytearray(seal.seal_frames([memoryview(data(1, b"secret"))]))
    forged[5] ^= 1
    step(bytes(forged))
    assert len(errors) == 1 and isinstance(errors[0], DecryptError) and got == [b"fast"]
    step.live = False
    before = (d.bytes_in, list(got), list(handed), list(errors))
    step(seal.seal_frames([memoryview(data(1, b"late"))]))
    assert (d.bytes_in, got, handed, errors) == before


@pytest.mark.parametrize("impl", IMPLS)
def test_session_sealed_step_matches_feed_sealed(impl):
    """A driver on ``sealed_step`` + ``take_records`` sees what ``feed_sealed`` gives;
    a frame that breaks the protocol terminates the session through ``feed_failed``."""
    frames = (hdr(1, 1, 1, 0) + data(1, b"abc") + hdr(2, 1, 0, 5) + data(1, b"de", flags=4))
    outs = []
    for stepped in (False, True):
        seal, open_ = _ciphers(impl)
        s = YamuxSession(is_client=False, kernels=impl)
        wire = bytes(seal.seal_frames([memoryview(frames)]))
        if stepped:
            step = s.sealed_step(open_, lambda recs, s=s: s.take_records(recs, 1.0), pytest.fail)
            step(wire)
        else:
            assert s.feed_sealed(open_, wire, 1.0) is True
        events = _events(s)
        outs.append((events, b"".join(bytes(b) for b in s.data_to_send())))
    assert outs[0] == outs[1] and outs[0][0]
    seal, open_ = _ciphers(impl)
    s = YamuxSession(is_client=False, kernels=impl)
    errors: list[BaseException] = []
    step = s.sealed_step(open_, pytest.fail, errors.append)
    step(bytes(seal.seal_frames([memoryview(b"\x07" + bytes(11))])))  # yamux version 7
    assert len(errors) == 1 and isinstance(errors[0], RemoteProtocolError)
    assert not s.terminated
    s.feed_failed(errors[0])
    assert s.terminated and s.take_records([], 1.0) is False


# -- frames opened straight into the lent buffer (native) ------------------------------

def _sealed(kernels, frames: bytes) -> tuple[object, object, bytes]:
    seal, open_ = _ciphers(kernels)
    return seal, open_, bytes(seal.seal_frames([memoryview(frames)]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cuts", [(), (5,), (1, 70_000), (65_537, 65_538, 131_075)])
def test_big_data_frame_lands_in_the_loan_whole(impl, cuts):
    payload = bytes(range(256)) * 1200  # 300 KiB: five Noise frames, the header in the first
    _seal, open_, wire = _sealed(impl, hdr(1, 1, 1, 0) + data(1, payload))
    d = impl.YamuxDemux()
    d.attach(1, lambda p: pytest.fail("a loan with room takes everything"), WINDOW + len(payload))
    buf = bytearray(len(payload) + 10)
    w = Waiter()
    # the SYN is a control frame: the session sees it first, then attaches
    pieces = [wire[a:b] for a, b in zip((0, *cuts), (*cuts, len(wire)), strict=True)]
    loan = None
    out: list[object] = []
    for piece in pieces:
        if loan is None:
            loan = d.lend(1, buf, w)
        recs = d.feed_sealed(open_, piece)
        out += recs or []
    assert [r[:3] for r in out][:1] == [(1, 1, 1)]
    got = loan.unlend()
    # what followed the SYN in the same read went the session's way too (order);
    # later reads go to the loan
    data_back = b"".join(bytes(r[4]) for r in out if r[0] == 0)
    assert data_back + bytes(buf[:got]) == payload
    assert d.sealed_bytes_in == d.bytes_in == 12 * 2 + len(payload)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cut", [0, 3, 65_000, 65_537, 200_000])
@pytest.mark.parametrize("parallel", [False, True], ids=["serial", "pool"])
def test_attached_stream_bulk_is_opened_in_place(impl, cut, parallel):
    if parallel and impl is not _accel.native:
        pytest.skip("the pure cipher opens serially (parallel_open is a no-op)")
    payload = bytes(range(251)) * 1300  # 326 KB in one DATA frame: 5 Noise frames + a tail
    _seal, open_, wire = _sealed(impl, data(3, payload))
    if parallel:
        open_.parallel_open(3, 0)
    d = impl.YamuxDemux()
    d.attach(3, lambda p: pytest.fail("a loan with room takes everything"), 1 << 30)
    buf = bytearray(len(payload))
    w = Waiter()
    loan = d.lend(3, buf, w)
    assert d.feed_sealed(open_, wire[:cut]) is None
    assert d.feed_sealed(open_, wire[cut:]) is None
    assert loan.unlend() == len(payload) and bytes(buf) == payload and w.sets == 1
    assert d.take(3) == len(payload)
    # the frame carrying the header is opened in two parts (the header, then its
    # payload in place), every later one is all payload: all of it lands in place
    # (the native twin opens it there; the pure one copies, counted alike)
    assert d.direct_bytes_in == len(payload)
    if parallel:  # runs of those frames went through the pool, straight into the loan
        assert open_.parallel_bytes >= 2 * SEAL_PLAINTEXT


@pytest.mark.parametrize("impl", IMPLS)
def test_forged_frame_opened_in_place_counts_nothing(impl):
    payload = bytes(200_000)
    _seal, open_, wire = _sealed(impl, data(1, payload))
    wire = bytearray(wire)
    wire[65_537 + 100] ^= 1  # inside the second Noise frame, all payload
    d = impl.YamuxDemux()
    d.attach(1, lambda p: None, 1 << 30)
    buf = bytearray(len(payload))
    w = Waiter()
    loan = d.lend(1, buf, w)
    with pytest.raises(DecryptError):
        d.feed_sealed(open_, bytes(wire))
    # the first frame's bytes were placed; the forged one's are not counted
    assert loan.unlend() == SEAL_PLAINTEXT - 12
    with pytest.raises(DecryptError):  # the cipher stays dead
        d.feed_sealed(open_, bytes(wire[:10]))


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("size", [2_048 - 12, 2_048, 16_384, 65_396, 65_536, 2 * SEAL_PLAINTEXT,
                                  2 * SEAL_PLAINTEXT + 1, 200_000])
def test_a_header_sealed_with_its_payload_is_opened_in_two_parts(impl, size):
    """The sender's framing (the header and the start of the payload in one Noise
    frame, up to JOIN_ENTRY_MAX bytes of payload; the header alone before more):
    the header goes through the decoder, the payload straight into the lent
    buffer, frame by frame; one AEAD operation per frame."""
    seal, open_ = _ciphers(impl)
    payload = bytes(range(253)) * (size // 253) + bytes(size % 253)
    wire = bytes(seal.seal_frames([memoryview(hdr(0, 0, 1, size)), memoryview(payload)]))
    if size <= JOIN_ENTRY_MAX:
        assert seal.nonce == -(-(12 + size) // SEAL_PLAINTEXT)  # no frame for the header alone
    else:
        assert seal.nonce == 1 + -(-size // SEAL_PLAINTEXT)  # the header's own, then all payload
        assert wire[:2] == (12 + 16).to_bytes(2, "big")
    d = impl.YamuxDemux()
    d.attach(1, lambda p: pytest.fail("the loan has room for everything"), 1 << 30)
    buf = bytearray(size)
    w = Waiter()
    loan = d.lend(1, buf, w)
    assert d.feed_sealed(open_, wire) is None
    assert loan.unlend() == size and bytes(buf) == payload and w.sets == 1
    assert d.take(1) == size
    # under SPLIT_MIN bytes the frame is opened whole and its payload copied
    assert d.direct_bytes_in == (size if 12 + size >= 2_048 else 0)
    assert d.sealed_bytes_in == d.bytes_in == 12 + size


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("case", ["syn", "fin-in-frame", "window-update", "no-loan", "small-loan",
                                  "no-credit", "unattached"])
def test_a_header_and_payload_frame_that_cannot_go_in_place_goes_the_usual_way(impl, case):
    """Anything but a plain DATA header for a lent buffer with room and credit
    for the frame's payload: the frame is opened whole and decoded as before."""
    seal, open_ = _ciphers(impl)
    payload = bytes(range(256)) * 100
    head = {"syn": hdr(0, 1, 1, len(payload)),
            "fin-in-frame": hdr(0, 4, 1, len(payload)),
            "window-update": hdr(1, 0, 1, 5) + hdr(0, 0, 1, len(payload)),
            }.get(case, hdr(0, 0, 1, len(payload)))
    wire = bytes(seal.seal_frames([memoryview(head), memoryview(payload)]))
    d = impl.YamuxDemux()
    got: list[bytes] = []
    if case != "unattached":
        d.attach(1, lambda p: got.append(bytes(p)), 0 if case == "no-credit" else 1 << 30)
    buf = bytearray(100 if case == "small-loan" else len(payload))
    loan = d.lend(1, buf, Waiter()) if case != "no-loan" else None
    recs = d.feed_sealed(open_, wire) or []
    n = loan.unlend() if loan is not None else 0
    back = b"".join(bytes(r[4]) for r in recs if r[0] == 0 and r[4] is not None)
    assert bytes(buf[:n]) + b"".join(got) + back == payload
    assert d.direct_bytes_in == 0


@pytest.mark.parametrize("impl", IMPLS)
def test_a_forged_header_and_payload_frame_places_and_delivers_nothing(impl):
    seal, open_ = _ciphers(impl)
    payload = bytes(100_000)
    wire = bytearray(seal.seal_frames([memoryview(hdr(0, 0, 1, len(payload))), memoryview(payload)]))
    wire[2 + 5_000] ^= 1  # in the first frame's payload part
    d = impl.YamuxDemux()
    d.attach(1, lambda p: pytest.fail("nothing of a forged frame is delivered"), 1 << 30)
    loan = d.lend(1, bytearray(len(payload)), Waiter())
    with pytest.raises(DecryptError):
        d.feed_sealed(open_, bytes(wire))
    assert loan.unlend() == 0 and d.take(1) == 0 and d.direct_bytes_in == 0


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(version=st.sampled_from([0, 0, 1]), ftype=st.sampled_from([0, 0, 1, 2, 4]),
       flags=st.sampled_from([0, 0, 1, 4, 8, 0xFFFF]), sid=st.sampled_from([1, 3, 5]),
       lie=st.sampled_from([0, 0, -1, 1, -5000, 1 << 20]), size=st.integers(2_000, 70_000),
       lend=st.integers(0, 80_000))
def test_fuzz_header_and_payload_frames(impl, version, ftype, flags, sid, lie, size, lend):
    """Header-shaped bytes (any version, type, flags, a lying length) sealed with a
    payload in one frame: both twins agree, and nothing lands past the loan."""
    head = struct.pack(">BBHII", version, ftype, flags, sid, max(size + lie, 0))

    def run(kernels):
        seal, open_ = _ciphers(kernels)
        wire = bytes(seal.seal_frames([memoryview(head), memoryview(bytes(range(256)) * (size // 256))]))
        d = kernels.YamuxDemux()
        got: list[bytes] = []
        for s_ in (1, 3):
            d.attach(s_, lambda p: got.append(bytes(p)), 1 << 30)
        buf = bytearray(lend)
        loan = d.lend(1, buf, Waiter())
        try:
            recs = d.feed_sealed(open_, wire)
            out: object = [(t, f, s_, n, None if p is None else bytes(p)) for t, f, s_, n, p in recs or []]
        except RemoteProtocolError as exc:
            out = type(exc)
        n = loan.unlend()
        assert n <= lend
        return out, got, bytes(buf[:n]), d.direct_bytes_in, d.bytes_in

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ftype=st.sampled_from([0, 0, 0, 1, 2]), flags=st.sampled_from([0, 0, 0, 1, 4, 8]),
       sid=st.sampled_from([1, 1, 3, 5]), lie=st.sampled_from([0, 0, 0, -1, 1, 3000]),
       size=st.integers(0, 2_100), lend=st.sampled_from([0, 1, 63, 64, 2_100]),
       waiter_done=st.booleans(), then=st.integers(0, 300))
def test_small_header_and_payload_frames(impl, ftype, flags, sid, lie, size, lend, waiter_done,
                                         then):
    """A round trip's message (a header and its payload in one Noise frame of under
    2 KiB, which the native step opens into a scratch area and copies from, taking
    no pooled block when it goes to a lent buffer): both twins place, deliver,
    return and count the same, for any header, loan and waiter state, and a
    following frame (the rest of a lying length, or the next message) too."""
    head = struct.pack(">BBHII", 0, ftype, flags, sid, max(size + lie, 0))
    payload = bytes((7 * k) & 0xFF for k in range(size))

    def run(kernels):
        seal, open_ = _ciphers(kernels)
        wire = bytes(seal.seal_frames([memoryview(head), memoryview(payload)]))
        more = bytes(seal.seal_frames([memoryview(bytes(then))])) if then else b""
        d = kernels.YamuxDemux()
        got: list[bytes] = []
        for s_ in (1, 3):
            d.attach(s_, lambda p, s_=s_: got.append((s_, bytes(p))), 1 << 30)
        buf = bytearray(lend)
        w = Waiter(waiter_done)
        loan = d.lend(1, buf, w)
        out: list[object] = []
        for piece in (wire, more):
            try:
                recs = d.feed_sealed(open_, piece) if piece else None
                out.append([(t, f, s_, n, None if p is None else bytes(p)) for t, f, s_, n, p in recs or []])
            except RemoteProtocolError as exc:
                out.append(type(exc))
                break
        n = loan.unlend()
        assert n <= lend
        return (out, got, bytes(buf[:n]), w.sets, d.take(1), d.take(3), d.bytes_in, d.frames_in,
                d.sealed_bytes_in, d.direct_bytes_in)

    native = run(impl)
    assert native == run(_accel.pure)
    if ftype == 0 and flags == 0 and sid == 1 and lie >= 0 and 0 < size <= lend and not waiter_done:
        # the message itself landed in the loan, woke its reader once, and was
        # copied there, not opened there
        assert native[2][:size] == payload and native[3] == 1
        if 12 + size < 2_048 and (lie == 0 or then == 0):
            # (from 2 KiB the frame is opened in two parts, and the rest of a lying
            # length is all payload: both in place)
            assert native[9] == 0


def _payload_frames(impl, sid: int, payload: bytes) -> tuple[object, bytes, int]:
    """(receive cipher, wire, wire bytes of the header's frame) for one DATA frame
    whose payload (16 KiB or more) the sender seals in frames of its own."""
    seal, open_ = _ciphers(impl)
    head = bytes(seal.seal_frames([memoryview(hdr(0, 0, sid, len(payload)))]))
    body = bytes(seal.seal_frames([memoryview(payload)]))
    return open_, head + body, len(head)


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("cut", [1, 2, 100, 65_425])
def test_a_frame_split_across_reads_is_opened_into_the_loan(impl, cut):
    """The frame a read cut in two is completed by the next read and opened
    straight into the lent buffer like the others (not into a block, then copied)."""
    payload = bytes(range(256)) * 600  # 153.6 KB: frames of 65408, 65408, 22784
    open_, wire, head = _payload_frames(impl, 1, payload)
    d = impl.YamuxDemux()
    d.attach(1, lambda p: pytest.fail("the loan has room for everything"), 1 << 30)
    buf = bytearray(len(payload))
    loan = d.lend(1, buf, Waiter())
    split = head + 65_426 + cut  # inside the second payload frame
    assert d.feed_sealed(open_, wire[:split]) is None
    assert d.feed_sealed(open_, wire[split:]) is None
    assert loan.unlend() == len(payload) and bytes(buf) == payload
    assert d.direct_bytes_in == len(payload)


@pytest.mark.parametrize("impl", IMPLS)
def test_a_large_loan_sizes_the_reads_and_says_when_it_is_full(impl):
    """A loan of 512 KiB or more sets ``read_hint``: the wire bytes that complete the
    buffered frame plus the room its plaintext leaves (a read that size cannot
    bring more than the loan takes). With under 16 KiB of room left, or after an
    overflow, ``on_loan_full`` is called once at the end of the feed."""
    payload = bytes(range(256)) * 4000  # 1 024 000 bytes: 15 frames of 65408 + 42880
    open_, wire, head = _payload_frames(impl, 1, payload)
    d = impl.YamuxDemux()
    queued: list[bytes] = []
    d.attach(1, lambda p: queued.append(bytes(p)), 1 << 30)
    full: list[int] = []
    d.on_loan_full = lambda: full.append(len(full))
    hints: list[int] = []
    d.on_read_hint = hints.append  # called on each change, never per read
    size = 700_000
    buf = bytearray(size)
    loan = d.lend(1, buf, Waiter())
    assert d.read_hint == size  # nothing buffered: the whole loan
    cut = head + 65_426 + 1000  # one payload frame, and 1000 bytes of the next
    assert d.feed_sealed(open_, wire[:cut]) is None
    room = size - 65_408
    need = 65_426 - 1000
    assert d.read_hint == need + room - 65_408 and not full
    # a read of read_hint bytes fits whole, and leaves under 16 KiB of room: full
    end = cut + d.read_hint
    assert d.feed_sealed(open_, wire[cut:end]) is None
    assert not queued and full == [0] and d.read_hint == 0
    assert hints == [size, need + room - 65_408, 0]
    got = loan.unlend()
    assert got > size - 16 * 1024 - 65_408 and bytes(buf[:got]) == payload[:got]
    # a new loan: sized again from the frame still buffered
    loan = d.lend(1, bytearray(size), Waiter())
    assert d.read_hint > 0
    loan.unlend()

    # an overflow (a read larger than the hint) also ends in on_loan_full, once
    d2 = impl.YamuxDemux()
    d2.attach(1, lambda p: queued.append(bytes(p)), 1 << 30)
    calls: list[int] = []
    d2.on_loan_full = lambda: calls.append(1)
    open2, wire2, _ = _payload_frames(impl, 1, payload)
    d2.lend(1, bytearray(600_000), Waiter())
    assert d2.feed_sealed(open2, wire2) is None
    assert calls == [1] and sum(map(len, queued)) == len(payload) - 600_000


@pytest.mark.parametrize("impl", IMPLS)
def test_small_loans_leave_read_sizes_alone(impl):
    """Under 512 KiB a loan does not size reads, and is reported full only when it
    overflowed (64 KiB or more; smaller loans are message-sized reads, left as
    they were)."""
    payload = bytes(range(256)) * 2000
    for size, pauses in ((256 * 1024, [1]), (60_000, [])):
        open_, wire, _ = _payload_frames(impl, 1, payload)
        d = impl.YamuxDemux()
        d.attach(1, lambda p: None, 1 << 30)
        calls: list[int] = []
        d.on_loan_full = lambda calls=calls: calls.append(1)
        d.lend(1, bytearray(size), Waiter())
        assert d.read_hint == 0
        assert d.feed_sealed(open_, wire[:50_000]) is None
        assert d.read_hint == 0 and not calls
        d.feed_sealed(open_, wire[50_000:])  # overflows the loan: the rest is queued
        assert d.read_hint == 0 and calls == pauses


_frame_op = st.one_of(
    st.tuples(st.just("data"), st.sampled_from([1, 3]), st.integers(0, 200_000)),
    st.tuples(st.just("data"), st.sampled_from([1, 3]), st.integers(130_000, 200_000)),
    st.tuples(st.just("data"), st.sampled_from([1, 3]), st.integers(0, 300)),
    st.tuples(st.just("fin"), st.sampled_from([1, 3]), st.integers(0, 70_000)),
    st.tuples(st.just("ping"), st.just(0), st.integers(0, 9)),
    st.tuples(st.just("wu"), st.sampled_from([1, 3]), st.integers(0, 9)),
)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(_frame_op, max_size=8),
       seal_cuts=st.lists(st.integers(0, 1 << 20), max_size=4),
       feed_cuts=st.lists(st.integers(0, 1 << 20), max_size=6),
       plan=st.lists(st.tuples(st.sampled_from(["lend", "lend", "lend", "unlend", "spill", "done",
                                                "none"]),
                               st.sampled_from([1, 3]),
                               st.one_of(st.sampled_from([400_000, 70_000, 600_000]),
                                         st.integers(0, 700_000))),
                     min_size=8, max_size=8))
@pytest.mark.parametrize("sealing", ["cuts", "sender"])
def test_feed_sealed_parity_native_and_pure(impl, sealing, ops, seal_cuts, feed_cuts, plan):
    """Frame by frame, opened in place or not: both twins place, deliver, return
    and count exactly the same (over random traffic, seal and read boundaries).
    ``cuts`` seals runs of the plaintext cut anywhere; ``sender`` seals each
    run of whole frames as a muxer's send list (headers and payloads apart)."""
    plain = bytearray()  # (the streams are attached: the demux needs no SYN)
    parts: list[list[bytes]] = []  # each frame's buffers, as a session queues them
    fill = 0
    for kind, sid, n in ops:
        if kind in ("data", "fin"):
            body = bytes((fill + k) & 0xFF for k in range(n))
            parts.append([hdr(0, 4 if kind == "fin" else 0, sid, n), body])
            fill += n
        elif kind == "ping":
            parts.append([hdr(2, 1, 0, n)])
        else:
            parts.append([hdr(1, 0, sid, n)])
        plain += b"".join(parts[-1])
    cuts = sorted({c % (len(plain) + 1) for c in seal_cuts} | {0, len(plain)})
    groups = sorted({c % (len(parts) + 1) for c in seal_cuts} | {0, len(parts)})

    def run(kernels):
        seal, open_ = _ciphers(kernels)
        if sealing == "cuts":
            wire = b"".join(bytes(seal.seal_frames([memoryview(bytes(plain[a:b]))]))
                            for a, b in zip(cuts, cuts[1:], strict=False) if b > a)
        else:
            wire = b"".join(bytes(seal.seal_frames([memoryview(x) for p in parts[a:b] for x in p]))
                            for a, b in zip(groups, groups[1:], strict=False) if b > a)
        fcuts = sorted({c % (len(wire) + 1) for c in feed_cuts} | {0, len(wire)})
        d = kernels.YamuxDemux()
        trace: list[object] = []
        for sid in (1, 3):
            d.attach(sid, lambda p, sid=sid: trace.append(("deliver", sid, bytes(p))), 1 << 30)
        loans = Loans(d, trace)
        d.on_loan_full = lambda: trace.append("loan full")
        d.on_read_hint = lambda n: trace.append(("read hint", n))
        d.on_wake_hint = lambda n: trace.append(("wake hint", n))
        for step, (a, b) in enumerate(zip(fcuts, fcuts[1:], strict=False)):
            loans.step(*plan[step % len(plan)])
            recs = d.feed_sealed(open_, wire[a:b])
            trace.append(("fed", [(t, f, s, n, None if p is None else bytes(p))
                                  for t, f, s, n, p in recs or []], d.take(1), d.take(3),
                          d.read_hint, d.wake_hint))
            # the wake hint counts only bytes certain to come: never more than the
            # rest of this wire (a sender that stops after it never leaves a reader
            # waiting for bytes that will not come), none once it is all fed
            assert d.wake_hint <= len(wire) - b and (b < len(wire) or d.wake_hint == 0)
        loans.end()
        return trace, d.bytes_in, d.frames_in, d.sealed_bytes_in, d.direct_bytes_in

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plain=st.one_of(st.binary(max_size=4096), _yamux_soup()), cut=st.integers(0, 1 << 16),
       lend=st.integers(0, 5000))
def test_fuzz_feed_sealed(impl, plain, cut, lend):
    """Garbage plaintext behind valid Noise frames: a typed error or records, the
    same from both twins, and never a byte past the loan."""

    def run(kernels):
        seal, open_ = _ciphers(kernels)
        wire = bytes(seal.seal_frames([memoryview(plain)])) if plain else b""
        d = kernels.YamuxDemux()
        got: list[bytes] = []
        for sid in (1, 3):
            d.attach(sid, lambda p: got.append(bytes(p)), WINDOW)
        buf = bytearray(lend)
        loan = d.lend(1, buf, Waiter())
        trace: list[object] = []
        for piece in (wire[: cut % (len(wire) + 1)], wire[cut % (len(wire) + 1):]):
            try:
                recs = d.feed_sealed(open_, piece)
            except RemoteProtocolError as exc:
                trace.append(type(exc))
                break
            trace.append([(t, f, s, n, None if p is None else bytes(p)) for t, f, s, n, p in recs or []])
        n = loan.unlend()
        assert n <= lend
        return trace, got, bytes(buf[:n])

    assert run(impl) == run(_accel.pure)


@pytest.mark.parametrize("impl", IMPLS)
def test_wake_hint_counts_the_bytes_certain_to_come(impl):
    """``wake_hint``: the wire bytes still due of the Noise frame buffered plus the
    muxer frame's payload after it (both are sent whole once their length is out),
    rounded down to 16 KiB, at most 256 KiB, 0 under 32 KiB; ``on_wake_hint`` is
    called on each change only (the driver's SO_RCVLOWAT)."""
    payload = bytes(range(256)) * 800  # 204 800 bytes: Noise frames of 65408, 65408, 65408, 8576
    open_, wire, head = _payload_frames(impl, 1, payload)
    d = impl.YamuxDemux()
    d.attach(1, lambda p: None, 1 << 30)
    hints: list[int] = []
    d.on_wake_hint = hints.append
    d.lend(1, bytearray(1 << 20), Waiter())
    assert d.feed_sealed(open_, wire[:head]) is None  # the header: all the payload is due
    assert d.wake_hint == 192 * 1024  # 204 800 rounded down to 16 KiB
    cut = head + 65_426 + 1000  # one payload frame, and 1000 bytes of the next
    assert d.feed_sealed(open_, wire[head:cut]) is None
    # the buffered frame's 64 426 missing bytes, and the 73 984 of payload after it
    assert d.wake_hint == (64_426 + 204_800 - 2 * 65_408) // 16_384 * 16_384
    end = len(wire) - 20_000  # into the last Noise frame (8576 of plaintext)
    assert d.feed_sealed(open_, wire[cut:end]) is None
    assert d.wake_hint == 0  # under 32 KiB due
    assert d.feed_sealed(open_, wire[end:]) is None
    assert d.wake_hint == 0
    assert hints == [192 * 1024, 131_072, 0]
    # mplex: the same rule over its messages
    m = impl.MplexDemux(1 << 20)
    m.on_wake_hint = hints.append
    seal, mopen = _ciphers(impl)
    msg = bytes(300_000)
    # one buffer: the header shares the first frame (as a sender that joins them)
    mwire = bytes(seal.seal_frames([memoryview(b"\x0a\xe0\xa7\x12" + msg)]))
    m.feed_sealed(mopen, mwire[:1000])  # the header is in the frame not opened yet
    assert m.wake_hint == 64_426 // 16_384 * 16_384  # only that frame's bytes are known due
    m.feed_sealed(mopen, mwire[1000:67_000])
    # the second frame's missing bytes, and the message's payload after it
    assert m.wake_hint == (65_428 - 1_572 + 300_000 - 65_404 - 65_408) // 16_384 * 16_384
    m2 = impl.MplexDemux(1 << 20)
    m2.on_wake_hint = hints.append
    seal, mopen = _ciphers(impl)
    msg = bytes(400_000)  # header: stream 1, MessageInitiator, uvarint 400 000
    mwire = bytes(seal.seal_frames([memoryview(b"\x0a\x80\xb5\x18" + msg)]))
    m2.feed_sealed(mopen, mwire[:65_428])
    assert m2.wake_hint == 256 * 1024  # at most WAKE_MAX


# -- large reads opened on the C pool (NoiseCipher.parallel_open) ----------------------

def _parallel_trace(impl, parallel: bool, pieces: list[bytes]) -> tuple[dict, list, object]:
    """Per stream, every byte delivered (fast way or as a record), the control
    records in order, and the error the feed raised (or None)."""
    key = bytes(range(32))
    open_ = impl.NoiseCipher(key)
    if parallel:
        open_.parallel_open(3, 0)
    d = impl.YamuxDemux()
    got: dict[int, bytearray] = {1: bytearray(), 3: bytearray()}
    for sid, acc in got.items():
        d.attach(sid, acc.extend, 1 << 30)
    control: list[tuple[int, ...]] = []
    err = None
    try:
        for piece in pieces:
            for r in d.feed_sealed(open_, piece) or []:
                if r[0] == 0 and r[4] is not None:
                    got[r[2]] += bytes(r[4])
                else:
                    control.append(tuple(r[:4]))
    except DecryptError as e:
        err = type(e)
    if parallel:  # the runs of frames did go to the pool
        assert open_.parallel_bytes > 0
    return {k: bytes(v) for k, v in got.items()}, control, err


@pytest.mark.skipif(_accel.native is None, reason="pure build: no native parallel open")
@pytest.mark.parametrize("cut", [0, 7, 100_003, 300_000])
@pytest.mark.parametrize("forge", [None, 3])
def test_parallel_open_demultiplexes_like_a_serial_open(cut, forge):
    impl = _accel.native
    seal = impl.NoiseCipher(bytes(range(32)))
    writes = [data(1, bytes(range(256)) * 600), data(3, b"z" * 1000), data(1, b"y" * 70_000),
              hdr(2, 1, 0, 9), data(3, bytes(200_000)), data(1, b"tail")]
    wire = bytearray(b"".join(bytes(seal.seal_frames([memoryview(w)])) for w in writes))
    if forge is not None:  # a byte inside the fourth Noise frame
        wire[forge * (SEAL_PLAINTEXT + 18) + 50] ^= 1
    pieces = [bytes(wire[:cut]), bytes(wire[cut:])]
    serial = _parallel_trace(impl, False, pieces)
    assert _parallel_trace(impl, True, pieces) == serial
    assert (serial[2] is DecryptError) == (forge is not None)
    if forge is None:
        assert serial[0][3] == b"z" * 1000 + bytes(200_000) and serial[1] == [(2, 1, 0, 9)]


@pytest.mark.parametrize("impl", IMPLS)
@pytest.mark.parametrize("via", ["deliver", "wake"])
@pytest.mark.parametrize("inner_lent", [True, False])
def test_small_frames_of_connections_fed_inside_another_feed_stay_apart(impl, via, inner_lent):
    """The native step opens small frames into one scratch area per process: a feed
    of another connection that starts inside a feed (from a stream's deliver
    callback, which runs while the outer frame is being handled, or from the
    reader's wake-up at the feed's end) gets scratch of its own, and every byte
    lands where it belongs; the outer feed's next frame, opened after, is right too."""
    seal_a, open_a = _ciphers(impl)
    key_b = bytes(range(1, 33))
    seal_b, open_b = impl.NoiseCipher(key_b), impl.NoiseCipher(key_b)
    pa1, pa2, pb = bytes([0xA1]) * 100, bytes([0xA2]) * 300, bytes([0xB0]) * 200
    wire_a = bytes(seal_a.seal_frames([memoryview(hdr(0, 0, 1, len(pa1))), memoryview(pa1)]))
    wire_a += bytes(seal_a.seal_frames([memoryview(hdr(0, 0, 3, len(pa2))), memoryview(pa2)]))
    wire_b = bytes(seal_b.seal_frames([memoryview(hdr(0, 0, 1, len(pb))), memoryview(pb)]))
    da, db = impl.YamuxDemux(), impl.YamuxDemux()
    got_a: list[tuple[int, bytes]] = []
    got_b: list[bytes] = []
    inner: list[object] = []

    def feed_b() -> None:
        inner.append(db.feed_sealed(open_b, wire_b))

    def deliver_a(sid: int, p: memoryview) -> None:
        got_a.append((sid, bytes(p)))
        if via == "deliver" and sid == 1:
            feed_b()

    for sid in (1, 3):
        da.attach(sid, lambda p, sid=sid: deliver_a(sid, p), WINDOW)
    db.attach(1, lambda p: got_b.append(bytes(p)), WINDOW)
    buf_b = bytearray(len(pb))
    loan_b = db.lend(1, buf_b, Waiter()) if inner_lent else None

    class FeedsB(Waiter):
        def set_result(self, value: object) -> None:
            super().set_result(value)
            feed_b()

    buf_a = bytearray(len(pa1))
    loan_a = da.lend(1, buf_a, FeedsB()) if via == "wake" else None
    assert da.feed_sealed(open_a, wire_a) is None
    assert inner == [None]
    if via == "wake":
        assert loan_a.unlend() == len(pa1) and bytes(buf_a) == pa1
        assert got_a == [(3, pa2)]
    else:
        assert got_a == [(1, pa1), (3, pa2)]
    if inner_lent:
        assert loan_b.unlend() == len(pb) and bytes(buf_b) == pb and got_b == []
    else:
        assert got_b == [pb]


@pytest.mark.parametrize("impl", IMPLS)
def test_a_loan_in_collected_garbage_gives_the_buffer_back(impl):
    """A reader's lent buffer held by garbage the cycle collector frees (a
    connection dropped while its reader waited: loan, waiter and task refer to
    each other): the export is released, so the buffer can be resized (a
    bytearray) or closed (an mmap) afterwards, and nothing is reported.
    Clearing only the loan's reference to the buffer would leave it exported for
    good, and free a bytearray that still counts an export."""
    import gc
    import sys

    d = impl.YamuxDemux()
    d.attach(1, lambda p: None, WINDOW)
    buf = bytearray(64)
    w = Waiter()
    # loan -> waiter -> loan; the loan (made by attach) is older than the waiter, so
    # the collector clears it first: its clear alone must not touch the buffer
    w.token = d.lend(1, buf, w)  # type: ignore[attr-defined]
    with pytest.raises(BufferError):
        buf.extend(b"x")  # (lent: exported)
    reported: list[object] = []
    hook, sys.unraisablehook = sys.unraisablehook, reported.append
    try:
        del d, w  # the demux goes now; the loan and its waiter only by the collector
        gc.collect()
    finally:
        sys.unraisablehook = hook
    assert reported == []
    buf.extend(b"x")  # given back: resizable again
    assert len(buf) == 65
