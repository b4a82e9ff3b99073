"""yamux frame header codec and streaming decoder; pure twin of csrc/fp_frame.c.

yamux spec: every frame starts with a 12-byte header
``version:u8 type:u8 flags:u16 stream_id:u32 length:u32`` (big endian).

Rules / theory of operation of :class:`YamuxDecoder`:

- Non-DATA frames (WINDOW_UPDATE, PING, GO_AWAY) have no payload; the header's
  length field is the window delta / opaque ping value / GoAway code. They are
  reported as ``(type, flags, stream_id, length, None)``.
- DATA payloads are never accumulated. Each ``feed`` reports the payload bytes
  it received as ``(TYPE_DATA, flags, stream_id, len(chunk), chunk)`` where
  ``chunk`` is a zero-copy memoryview slice of the buffer passed to *this*
  ``feed`` call. When a payload is split into several records, the first one
  carries ``flags & (SYN|ACK)``, the last one ``flags & (FIN|RST)`` and the ones
  in between 0; a single-record frame carries all flags. A zero-length DATA
  frame yields exactly one record with an empty payload.
- Only an incomplete header (at most 11 bytes) is held between calls, so memory
  is bounded whatever the peer sends.
- A bad version raises FrameVersionError, an unknown type FrameTypeError, as soon
  as the header is seen. The decoder is then dead and every later ``feed``
  raises the same error class.
"""

from __future__ import annotations

import struct
from typing import Any

from fastp2p._typing import ReadableBuffer, byte_view
from fastp2p.errors import FrameError, FrameTypeError, FrameVersionError, P2PError
from fastp2p.proto.noise.cipher import TAG_SIZE as _TAG_SIZE

# Loans of this size or more (bulk reads) size the socket reads to fit them (a
# read that brings more than the loan takes queues the rest: a copy later), and
# stop the reads when less than LOAN_MIN_READ of room is left. Smaller loans
# leave read sizes alone: reads sized to fill them, and a pause after each,
# measured slower than the copies they save (64 KiB messages into 256 KiB loans).
LOAN_LARGE = 512 * 1024
LOAN_MIN_READ = 16 * 1024
# A loan of this size or more that overflowed (its reader is behind the socket)
# stops the reads too: otherwise the reader is served from the queue from then
# on, and nearly every byte is copied (256 KiB messages into 256 KiB loans: 4-10%
# of the bytes in place, 60-90% with the pause). A loan that a read filled to
# its last bytes does not: the next read of the same loop pass is then queued
# and copied (64 KiB messages into 256 KiB loans: 54-93% of the bytes in place),
# but pausing there measured slower (99.7% in place, yet 1 GiB uploads in 64 KiB
# messages ~10% slower in alternating runs; likely because the socket stops
# draining while the reader lends again, so the sender stalls).
LOAN_OVERFLOW_PAUSE = 64 * 1024
# The receive step tells the driver how many of the bytes still due are
# certain to come (``wake_hint``): the rest of the muxer frame in progress (a
# muxer sends a frame whole once its header is out: yamux within the window
# it was given, mplex without flow control) and of the Noise frame buffered (its
# length is out). Over TCP under AES-GCM the driver sets the socket's receive
# low-water mark (SO_RCVLOWAT) to it, so the event loop is not woken for each
# segment of a large frame; on loopback each wake-up of a sleeping reader costs
# the sending core an inter-processor interrupt (1 MiB writes: +15-20% on one
# stream; fastp2p/transport/conn.py says why not under ChaCha20-Poly1305). At
# most WAKE_MAX (measured when a read was 256 KiB; reads are 1 MiB since and
# this was not re-measured), in WAKE_STEP steps (fewer setsockopt calls); under
# WAKE_MIN none (0: wake on any byte).
WAKE_MIN = 32 * 1024
WAKE_MAX = 256 * 1024
WAKE_STEP = 16 * 1024
# A Noise frame of this much plaintext or more that starts with a data frame's
# header (fastp2p's sender puts a header and the start of its payload in one
# frame: csrc/fp_aead.h FP_AEAD_JOIN_MAX) is opened in two parts: the header,
# then the payload straight into the reader's buffer.
SPLIT_MIN = 2048

__all__ = [
    "TYPE_DATA",
    "TYPE_WINDOW_UPDATE",
    "TYPE_PING",
    "TYPE_GO_AWAY",
    "FLAG_SYN",
    "FLAG_ACK",
    "FLAG_FIN",
    "FLAG_RST",
    "HEADER_SIZE",
    "VERSION",
    "YamuxRecord",
    "encode_header",
    "YamuxDecoder",
    "YamuxDemux",
]

TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3

FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8

HEADER_SIZE = 12
VERSION = 0

_HEADER = struct.Struct(">BBHII")
_OPEN_FLAGS = FLAG_SYN | FLAG_ACK
_CLOSE_FLAGS = FLAG_FIN | FLAG_RST

YamuxRecord = tuple[int, int, int, int, "memoryview | None"]


def encode_header(type: int, flags: int, stream_id: int, length: int) -> bytes:
    """Encode a 12-byte yamux header (version 0).

    Raises:
        ValueError: type not in 0..3, flags not in 0..0xFFFF, stream_id or length
            not in 0..2**32-1.
    """
    if not 0 <= type <= TYPE_GO_AWAY:
        raise ValueError(f"yamux type out of range: {type}")
    if not 0 <= flags <= 0xFFFF:
        raise ValueError(f"yamux flags out of range: {flags}")
    if not 0 <= stream_id <= 0xFFFFFFFF:
        raise ValueError(f"yamux stream id out of range: {stream_id}")
    if not 0 <= length <= 0xFFFFFFFF:
        raise ValueError(f"yamux length out of range: {length}")
    return _HEADER.pack(VERSION, type, flags, stream_id, length)


class YamuxDecoder:
    """Streaming, zero-copy yamux frame decoder (see the module docstring)."""

    __slots__ = ("_hdr", "_remaining", "_flags", "_stream_id", "_first", "_error")

    def __init__(self) -> None:
        self._hdr = bytearray()  # incomplete header, < HEADER_SIZE bytes
        self._remaining = 0  # DATA payload bytes still to come
        self._flags = 0
        self._stream_id = 0
        self._first = True
        self._error: FrameError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held internally (an incomplete header; never payload)."""
        return len(self._hdr)

    def _fail(self, exc: FrameError) -> FrameError:
        self._error = exc
        self._hdr.clear()
        return exc

    def in_payload(self, n: int) -> int | None:
        """The stream id when the next ``n`` input bytes are all payload of the DATA
        frame in progress and :meth:`feed` would return them as one record with
        flags 0 (not a first piece carrying SYN/ACK, not a last one carrying
        FIN/RST); else None. The caller may then place them itself and account
        them with :meth:`take_payload` (csrc/fp_frame.c has the same pair)."""
        rem = self._remaining
        if self._error is not None or self._hdr or n <= 0 or rem < n:
            return None
        flags = self._flags
        f = flags & _OPEN_FLAGS if self._first else 0
        if rem == n:
            f = flags if self._first else f | (flags & _CLOSE_FLAGS)
        return None if f else self._stream_id

    def take_payload(self, n: int) -> None:
        """Account ``n`` payload bytes that :meth:`in_payload` allowed."""
        self._first = False
        self._remaining -= n

    def head(self, buf: ReadableBuffer, more: int) -> tuple[int, int] | None:
        """``(header length, stream id)`` when the decoder is between frames and
        ``buf`` starts with a valid DATA header without flags whose payload covers
        the rest of ``buf`` and ``more`` bytes after it; else None. Changes nothing
        (the caller feeds ``buf`` afterwards). csrc/fp_frame.c has the twin."""
        if self._error is not None or self._hdr or self._remaining or len(buf) < HEADER_SIZE:
            return None
        version, ftype, flags, sid, length = _HEADER.unpack_from(buf, 0)
        if version != VERSION or ftype != TYPE_DATA or flags:
            return None
        if length < len(buf) - HEADER_SIZE + more:
            return None
        return HEADER_SIZE, sid

    def feed(self, data: ReadableBuffer) -> list[YamuxRecord]:
        """Decode everything complete in ``data``; see the module docstring."""
        if self._error is not None:
            raise type(self._error)(f"decoder is dead after: {self._error}")
        mv = byte_view(data)
        n = len(mv)
        pos = 0
        out: list[YamuxRecord] = []
        unpack = _HEADER.unpack_from
        while True:
            rem = self._remaining
            if rem:
                take = n - pos
                if take <= 0:
                    break
                flags = self._flags
                f = flags & _OPEN_FLAGS if self._first else 0
                if take >= rem:
                    take = rem
                    f = flags if self._first else f | (flags & _CLOSE_FLAGS)
                self._first = False
                out.append((TYPE_DATA, f, self._stream_id, take, mv[pos : pos + take]))
                pos += take
                self._remaining = rem - take
                continue
            # need a header
            hdr = self._hdr
            if hdr:
                need = HEADER_SIZE - len(hdr)
                if n - pos < need:
                    hdr += mv[pos:]
                    pos = n
                    break
                hdr += mv[pos : pos + need]
                pos += need
                version, ftype, flags, sid, length = unpack(hdr)
                hdr.clear()
            else:
                if n - pos < HEADER_SIZE:
                    if pos < n:
                        hdr += mv[pos:]
                    break
                version, ftype, flags, sid, length = unpack(mv, pos)
                pos += HEADER_SIZE
            if version != VERSION:
                raise self._fail(FrameVersionError(f"unsupported yamux version {version}"))
            if ftype > TYPE_GO_AWAY:
                raise self._fail(FrameTypeError(f"unknown yamux frame type {ftype}"))
            if ftype != TYPE_DATA:
                out.append((ftype, flags, sid, length, None))
            elif length == 0:
                out.append((TYPE_DATA, flags, sid, 0, mv[pos:pos]))
            else:
                self._remaining = length
                self._flags = flags
                self._stream_id = sid
                self._first = True
        return out


class _Route:
    """One attached stream; also the token :meth:`YamuxDemux.lend` returns."""

    __slots__ = ("deliver", "credit", "delivered", "lent", "lent_got", "spilled", "waiter")

    def __init__(self, deliver: object, credit: int) -> None:
        self.deliver = deliver
        self.credit = credit
        self.delivered = 0
        # A reader's lent buffer: plain DATA payloads are copied straight into
        # it, and its waiter is woken once per batch.
        self.lent: memoryview | None = None
        self.lent_got = 0
        self.spilled = False
        self.waiter: Any = None

    def unlend(self) -> int:
        """End the loan; returns the bytes placed in the lent buffer."""
        got = self.lent_got
        if self.lent is not None:
            self.lent.release()
            self.lent = None
        self.lent_got = 0
        self.waiter = None
        return got

    @property
    def got(self) -> int:
        """Bytes placed in the lent buffer so far."""
        return self.lent_got

    def spill(self) -> None:
        """Data for the stream went elsewhere: copy nothing more into the loan.

        Called when a frame reached the stream another way (the session's
        events) while the buffer is lent, so bytes keep their order.
        """
        self.spilled = True


class SealedStep:
    """:meth:`RouteTable.sealed_step`'s callable."""

    __slots__ = ("_feed", "_cipher", "_on_records", "_on_error", "live")

    def __init__(self, table: RouteTable, cipher: Any, on_records: Any, on_error: Any) -> None:
        self._feed = table.feed_sealed
        self._cipher = cipher
        self._on_records = on_records
        self._on_error = on_error
        #: False: drop what comes (the driver closed)
        self.live = True

    def __call__(self, data: ReadableBuffer) -> None:
        if not self.live:
            return
        try:
            records = self._feed(self._cipher, data)
        except P2PError as exc:
            self._on_error(exc)
            return
        if records is not None:
            self._on_records(records)


class RouteTable:
    """The stream table of a demultiplexer (:class:`YamuxDemux`, the mplex one):
    per stream its credit, what it was delivered, and a reader's lent buffer;
    the counters (``bytes_in``, ``frames_in``: records, a frame split across
    feeds counting per piece; ``sealed_bytes_in``, ``direct_bytes_in``)."""

    __slots__ = ("_routes", "bytes_in", "frames_in", "sealed_bytes_in", "direct_bytes_in",
                 "_fast", "_woken", "_out", "_slow", "_overflowed", "_last_loan", "_pend_plain",
                 "_pend_need", "read_hint", "on_read_hint", "on_loan_full", "wake_hint",
                 "on_wake_hint")

    def __init__(self) -> None:
        self._routes: dict[int, _Route] = {}
        self.bytes_in = 0
        self.frames_in = 0
        #: of ``bytes_in``, those ``feed_sealed`` opened
        self.sealed_bytes_in = 0
        #: of ``sealed_bytes_in``, frames a loan took whole (the native twin opens
        #: them in place; this one opens, then copies)
        self.direct_bytes_in = 0
        # state of one feed: records handled the fast way, readers to wake at the end
        self._fast = 0
        self._woken: list[_Route] | None = None
        # records for the session (once one had to go there, all after it do)
        self._out: list[Any] = []
        self._slow = False
        # a loan overflowed in this feed; the last loan that took data in it
        self._overflowed = False
        self._last_loan: _Route | None = None
        # the frame buffered after the last feed: its plaintext bytes, wire bytes
        # still due (-1: not known)
        self._pend_plain = 0
        self._pend_need = 0
        #: the most bytes the next socket read should take (0: no limit), so that
        #: what it brings fits the large loan being filled (see ``_size_read``)
        self.read_hint = 0
        #: called with the new ``read_hint`` when it changes (None: nothing is
        #: called): the driver sizes its reads without asking on each one
        self.on_read_hint: Any = None
        #: called once at the end of a feed after which the large loan being
        #: filled can take no more (full, or it overflowed): the driver stops
        #: reading until the reader lends its next buffer (None: nothing is called)
        self.on_loan_full: Any = None
        #: wire bytes still due that are certain to come, when at least WAKE_MIN
        #: (at most WAKE_MAX, a multiple of WAKE_STEP; else 0): the reader's
        #: socket need not wake the loop before that many are in (see WAKE_MIN)
        self.wake_hint = 0
        #: called with the new ``wake_hint`` when it changes (None: nothing is called)
        self.on_wake_hint: Any = None

    def attach(self, stream_id: int, deliver: object, credit: int) -> None:
        """Route plain data of ``stream_id`` to ``deliver`` within ``credit`` bytes."""
        self._routes[stream_id] = _Route(deliver, credit)

    def detach(self, stream_id: int) -> int:
        """Stop routing ``stream_id``; returns the bytes delivered and not yet taken.

        A loan in progress stays valid: its token still counts what it received.
        """
        r = self._routes.pop(stream_id, None)
        return 0 if r is None else r.delivered

    def attached(self, stream_id: int) -> bool:
        return stream_id in self._routes

    def lend(self, stream_id: int, buf: Any, waiter: Any) -> _Route | None:
        """Copy ``stream_id``'s plain data straight into ``buf`` (writable bytes).

        The first payload that lands there completes ``waiter`` (a future:
        anything with ``done()`` and ``set_result()``), once per batch, not
        per frame; later ones of the same batch keep filling it until it is
        full or :meth:`_Route.unlend` ends the loan. Returns the loan's token,
        or None when the stream is not attached (the caller then takes the
        data the usual way).
        """
        r = self._routes.get(stream_id)
        if r is None:
            return None
        view = memoryview(buf)
        if view.readonly:
            view.release()
            raise BufferError("readinto needs a writable buffer")
        if view.format != "B" or view.ndim != 1:
            view = view.cast("B")
        if r.lent is not None:
            r.lent.release()
        r.lent = view
        r.lent_got = 0
        r.spilled = False
        r.waiter = waiter
        if len(view) >= LOAN_LARGE:
            self._set_hint(max(self._size_read(len(view)), 0))
        return r

    def take(self, stream_id: int) -> int:
        """Bytes delivered to ``stream_id`` since the last ``take`` (0 if not attached)."""
        r = self._routes.get(stream_id)
        if r is None:
            return 0
        n = r.delivered
        r.delivered = 0
        return n

    def set_credit(self, stream_id: int, credit: int) -> None:
        r = self._routes.get(stream_id)
        if r is not None:
            r.credit = credit

    def clear(self) -> None:
        """Detach every stream."""
        self._routes.clear()

    def __len__(self) -> int:
        return len(self._routes)

    def _loan_room(self, r: _Route) -> int:
        """Bytes ``r``'s loan may take now: 0 without a loan, after a spill, or when
        its reader was woken another way (EOF, reset, cancel) before a byte landed."""
        lent = r.lent
        if lent is None or r.spilled or (r.lent_got == 0 and r.waiter.done()):
            return 0
        return len(lent) - r.lent_got

    def _into_loan(self, r: _Route, k: int) -> None:
        """``k`` bytes were placed in ``r``'s loan; its reader is woken at the end of the feed."""
        if r.lent_got == 0:
            if self._woken is None:
                self._woken = []
            self._woken.append(r)
        r.lent_got += k
        self._last_loan = r

    def _hand_over(self, r: _Route, payload: memoryview, length: int) -> None:
        """A fast-way payload within ``r``'s credit: into the loan while it has
        room, the rest to ``deliver``."""
        r.credit -= length
        r.delivered += length
        k = 0
        lent = r.lent
        if lent is not None and not r.spilled:
            room = self._loan_room(r)
            if room > 0:
                k = min(room, length)
                got = r.lent_got
                lent[got : got + k] = payload[:k]
                self._into_loan(r, k)
            if k < length:
                # the rest goes the usual way, and so does all after it
                r.spilled = True
                self._overflowed = True
                self._last_loan = r
        if k < length:
            r.deliver(payload[k:] if k else payload)  # type: ignore[operator]

    def _wake(self) -> None:
        """Complete the waiters of the loans that took data in this feed (once each)."""
        woken = self._woken
        self._woken = None
        if woken is not None:
            for r in woken:
                w = r.waiter
                if w is not None and not w.done():
                    w.set_result(None)

    def feed(self, data: ReadableBuffer) -> tuple[int, list[Any]]:
        """Decode ``data``; deliver what can go the fast way; returns ``(fast,
        records)`` (see the muxer's class docstring)."""
        self._begin()
        self._segment(data)
        return self._fast, self._finish()

    # -- feed_sealed: the frame-by-frame walk shared by both muxers ------------------

    def sealed_step(self, cipher: Any, on_records: Any, on_error: Any) -> SealedStep:
        """:meth:`feed_sealed` with ``cipher`` as one callable for a driver that feeds
        per socket read: ``step(data)``. Records the fast way did not take go to
        ``on_records(records)``; a failing frame's error (a ``P2PError``) goes to
        ``on_error(exc)`` instead of raising. ``step.live = False`` makes it drop
        what it is given (the driver closed). (The native twin runs no Python
        when every frame goes the fast way.)"""
        return SealedStep(self, cipher, on_records, on_error)

    def feed_sealed(self, cipher: Any, data: ReadableBuffer) -> list[Any] | None:
        """Open the Noise frames in ``data`` with ``cipher``, then :meth:`feed` the
        plaintext; returns the records the session must see, or None when every
        frame went the fast way.

        Frame by frame: a frame whose plaintext is all payload of one plain data
        frame (yamux DATA without flags, an mplex Message) for an attached stream
        whose lent buffer has room for all of it goes there whole (the native twin opens it in place; counted in
        ``direct_bytes_in``). A failing frame raises after the frames before it
        were delivered.
        """
        mv = byte_view(data)
        self._begin()
        k = cipher.pending_need(mv)
        if k:
            # complete the frame buffered from the last read; opened like the
            # others (straight into a lent buffer when it is all payload)
            body = cipher.complete_pending(mv[:k])
            if body is not None:
                self._open_one(cipher, memoryview(body))
            mv = mv[k:]
        pos = 0
        n = len(mv)
        while n - pos >= 2:
            flen = (mv[pos] << 8) | mv[pos + 1]
            if n - pos - 2 < flen and flen >= _TAG_SIZE:
                break
            self._open_one(cipher, mv[pos + 2 : pos + 2 + flen])  # FrameError if < 16
            pos += 2 + flen
        if pos < n:
            cipher.open_frames(mv[pos:])  # a partial frame: the cipher keeps it
        self._note_pending(cipher)
        out = self._finish()
        return out or None

    def _note_pending(self, cipher: Any) -> None:
        """Remember the buffered partial frame's plaintext size and the wire
        bytes that complete it (-1: not known yet), for :meth:`_size_read`."""
        p = cipher.buffered
        if p == 0:
            self._pend_plain = 0
            self._pend_need = 0
        elif p == 1:
            self._pend_need = -1
        else:
            flen = cipher.pending_frame_len
            self._pend_plain = flen - _TAG_SIZE
            self._pend_need = 2 + flen - p

    def _size_read(self, room: int) -> int:
        """The read hint for a large loan with ``room`` bytes left: the wire bytes
        that complete the frame buffered from the last read, plus the room its
        plaintext leaves (plaintext is never longer than its frames). -1 when
        that room is under LOAN_MIN_READ (reading more now would only queue it);
        0 when the buffered frame's length is not known yet."""
        if self._pend_need < 0:
            return 0
        room -= self._pend_plain
        if room < LOAN_MIN_READ:
            return -1
        return self._pend_need + room

    def _set_hint(self, hint: int) -> None:
        if hint != self.read_hint:
            self.read_hint = hint
            if self.on_read_hint is not None:
                self.on_read_hint(hint)

    def _open_one(self, cipher: Any, body: memoryview) -> None:
        """Open one frame's ``body`` (ciphertext + tag): all payload for a reader
        whose lent buffer takes it whole goes there, anything else through the
        decoder."""
        plen = len(body) - _TAG_SIZE
        r = None
        if plen > 0 and not self._slow:
            key = self._in_payload(plen)
            if key is not None:
                r = self._lent_route(key, plen)
        plain = cipher.open_frame(body)  # raises FrameError for a body under 16 bytes
        if r is not None:
            assert r.lent is not None
            r.lent[r.lent_got : r.lent_got + plen] = plain
            self._take_payload(plen)
            self._placed(r, plen)
            return
        hs = self._head_size
        if plen >= SPLIT_MIN and plen > hs and not self._slow:
            # a data frame's header and the start of its payload: the header
            # through the decoder, the rest into the lent buffer (the native twin
            # opens the frame in these two parts)
            got = self._head(memoryview(plain)[:hs], plen - hs)
            r = self._lent_route(got[1], plen - got[0]) if got is not None else None
            if r is not None:
                assert r.lent is not None
                self.sealed_bytes_in += hs
                self._segment(memoryview(plain)[:hs])
                r.lent[r.lent_got : r.lent_got + plen - hs] = memoryview(plain)[hs:]
                self._take_payload(plen - hs)
                self._placed(r, plen - hs)
                return
        if plen > 0:
            self.sealed_bytes_in += plen
            self._segment(memoryview(plain))

    # -- one feed: walk state shared by its segments (the Noise frames of a read) ----

    def _begin(self) -> None:
        self._fast = 0
        self._out = []
        self._woken = None
        self._slow = False
        self._overflowed = False
        self._last_loan = None

    def _finish(self) -> list[Any]:
        """Wake the readers whose lent buffers took data; the records for the
        session. Sizes the next read for the large loan being filled, or calls
        ``on_loan_full`` when it can take no more."""
        out = self._out
        self._out = []
        r = self._last_loan
        self._last_loan = None
        self._wake()
        full = False
        hint = 0
        if r is not None and r.lent is not None:
            if r.spilled:
                full = self._overflowed and len(r.lent) >= LOAN_OVERFLOW_PAUSE
            elif len(r.lent) >= LOAN_LARGE:
                hint = self._size_read(len(r.lent) - r.lent_got)
                full = hint < 0
        self._overflowed = False
        self._set_hint(max(hint, 0))
        if self.on_wake_hint is not None:
            self._set_wake()
        if full and self.on_loan_full is not None:
            self.on_loan_full()
        return out

    def _set_wake(self) -> None:
        """``wake_hint`` from the muxer frame in progress and the Noise frame buffered."""
        left = self._frame_left()
        need = self._pend_need
        # the buffered frame's plaintext is the next part of the muxer frame (or
        # all of its rest and more); its missing wire bytes are due either way
        due = need + max(0, left - self._pend_plain) if need > 0 else left
        wake = min(due, WAKE_MAX) // WAKE_STEP * WAKE_STEP if due >= WAKE_MIN else 0
        if wake != self.wake_hint:
            self.wake_hint = wake
            self.on_wake_hint(wake)

    def _lent_route(self, key: int, plen: int) -> _Route | None:
        """The route whose lent buffer takes ``plen`` payload bytes whole, or None."""
        r = self._routes.get(key)
        if r is None or plen > r.credit or self._loan_room(r) < plen:
            return None
        return r

    def _placed(self, r: _Route, plen: int) -> None:
        # what _segment's fast way does for a record copied whole into the loan
        self.bytes_in += plen
        self.sealed_bytes_in += plen
        self.direct_bytes_in += plen
        self.frames_in += 1
        self._fast += 1
        r.credit -= plen
        r.delivered += plen
        self._into_loan(r, plen)

    # -- the muxer's part of the walk (YamuxDemux, MplexDemux) ----------------------

    def _in_payload(self, plen: int) -> int | None:
        """The route key when the next ``plen`` bytes are all payload of one plain
        data frame (the decoder's ``in_payload``), else None."""
        raise NotImplementedError

    def _take_payload(self, plen: int) -> None:
        """Account ``plen`` payload bytes placed without the decoder."""
        raise NotImplementedError

    def _frame_left(self) -> int:
        """Payload bytes of the muxer frame in progress not fed yet (0: between frames)."""
        raise NotImplementedError

    #: the bytes of a frame looked at first for a data frame's header (_open_one)
    _head_size = HEADER_SIZE

    def _head(self, buf: memoryview, more: int) -> tuple[int, int] | None:
        """``(header length, route key)`` from the decoder's ``head``, or None."""
        raise NotImplementedError

    def _segment(self, data: ReadableBuffer) -> None:
        """Decode ``data`` (an error delivers nothing of it) and walk its records."""
        raise NotImplementedError


class YamuxDemux(RouteTable):
    """A :class:`YamuxDecoder` that delivers plain DATA frames itself (the fast path).

    The session attaches a stream with a ``deliver(payload)`` callable and its
    receive credit. ``feed`` decodes the whole input first (a frame error
    delivers nothing, as with ``YamuxDecoder.feed``), then walks the records in
    order: a DATA record with no flags, for an attached stream, whose length
    fits the stream's credit, is charged to that credit and handed over: copied
    into the buffer the stream's reader lent (:meth:`lend`) while it has room,
    else (the rest) to ``deliver``; a zero-length one is dropped. The first
    record that is anything else, and every record after it, is returned to the
    caller, in order, so the session handles it exactly as it would have (a
    control frame can change what the DATA after it means). Returns ``(fast,
    records)``: how many records went the fast way, and the rest in
    ``YamuxDecoder`` format. :meth:`feed_sealed` opens Noise frames first.

    Credit bookkeeping: ``take(sid)`` returns (and zeroes) the bytes delivered
    since the last call; ``set_credit`` replaces the credit after the session
    changed it. Counters: ``bytes_in`` and ``frames_in`` (everything fed; a
    DATA frame counts once per piece), ``sealed_bytes_in`` (what ``feed_sealed``
    opened), ``direct_bytes_in``. The native twin
    (fastp2p/_native/frame.pyx) does the walk in C.
    """

    __slots__ = ("_dec",)

    def __init__(self) -> None:
        super().__init__()
        self._dec = YamuxDecoder()

    @property
    def buffered(self) -> int:
        """Bytes held internally (an incomplete header; never payload)."""
        return self._dec.buffered

    def _in_payload(self, plen: int) -> int | None:
        return self._dec.in_payload(plen)

    def _take_payload(self, plen: int) -> None:
        self._dec.take_payload(plen)

    def _frame_left(self) -> int:
        d = self._dec
        return 0 if d._error is not None or d._hdr else d._remaining

    def _head(self, buf: memoryview, more: int) -> tuple[int, int] | None:
        return self._dec.head(buf, more)

    def _segment(self, data: ReadableBuffer) -> None:
        """Decode ``data`` (an error delivers nothing of it) and walk its records."""
        self.bytes_in += len(data) if type(data) is bytes else memoryview(data).nbytes
        records = self._dec.feed(data)
        self.frames_in += len(records)
        routes = self._routes
        i = 0
        n = len(records)
        while i < n and not self._slow:
            ftype, flags, sid, length, payload = records[i]
            if ftype != TYPE_DATA or flags:
                self._slow = True
                break
            r = routes.get(sid)
            if r is None or length > r.credit:
                self._slow = True
                break
            i += 1
            self._fast += 1
            if length:
                assert payload is not None  # DATA carries one
                self._hand_over(r, payload, length)
        if i < n:
            self._out += records[i:]
