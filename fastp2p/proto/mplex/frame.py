"""mplex frame header codec and streaming decoder; pure twin of csrc/fp_frame.c.

libp2p mplex spec: a frame is ``uvarint(stream_id << 3 | flag)``,
``uvarint(length)``, then ``length`` bytes of data.

Rules / theory of operation of :class:`MplexDecoder`:

- Message frames (MESSAGE_RECEIVER, MESSAGE_INITIATOR) stream like yamux DATA:
  each ``feed`` reports the bytes it received as ``(flag, stream_id, chunk)``,
  ``chunk`` a zero-copy memoryview slice of the buffer given to that call. A
  message split across calls yields several records with the same flag and
  stream id; a zero-length message yields one empty record.
- NEW_STREAM (payload = the stream name), CLOSE_* and RESET_* are delivered
  whole: a split payload is buffered internally (bounded by
  ``max_message_size``) and reported as a memoryview of that internal copy.
- Errors (raised immediately, the decoder is dead afterwards and re-raises the
  same class): length > max_message_size -> FrameTooLargeError; flag 7 ->
  FrameTypeError; overlong (>9 bytes) or non-minimal varint -> VarintError.
- An incomplete header (< 18 bytes) is held between calls.

:class:`MplexDemux` is a decoder that delivers Message records of attached
streams itself (the fast path), like ``fastp2p.proto.yamux.frame.YamuxDemux``.
"""

from __future__ import annotations

from fastp2p._typing import ReadableBuffer, byte_view
from fastp2p.errors import (
    FrameError,
    FrameTooLargeError,
    FrameTypeError,
    RemoteProtocolError,
    VarintError,
)
from fastp2p.proto.varint import uvarint_decode, uvarint_encode
from fastp2p.proto.yamux.frame import RouteTable

__all__ = [
    "NEW_STREAM",
    "MESSAGE_RECEIVER",
    "MESSAGE_INITIATOR",
    "CLOSE_RECEIVER",
    "CLOSE_INITIATOR",
    "RESET_RECEIVER",
    "RESET_INITIATOR",
    "MAX_HEADER_SIZE",
    "MAX_STREAM_ID",
    "MplexRecord",
    "mplex_encode_header",
    "MplexDecoder",
    "message_key",
    "MplexDemux",
]

NEW_STREAM = 0
MESSAGE_RECEIVER = 1
MESSAGE_INITIATOR = 2
CLOSE_RECEIVER = 3
CLOSE_INITIATOR = 4
RESET_RECEIVER = 5
RESET_INITIATOR = 6

MAX_HEADER_SIZE = 18  # two 9-byte varints
MAX_STREAM_ID = (1 << 60) - 1

MplexRecord = tuple[int, int, memoryview]


def mplex_encode_header(stream_id: int, flag: int, length: int) -> bytes:
    """Encode ``uvarint(stream_id << 3 | flag) + uvarint(length)``.

    Raises:
        ValueError: stream_id not in 0..2**60-1, flag not in 0..6, length not in 0..2**63-1.
    """
    if not 0 <= stream_id <= MAX_STREAM_ID:
        raise ValueError(f"mplex stream id out of range: {stream_id}")
    if not 0 <= flag <= RESET_INITIATOR:
        raise ValueError(f"mplex flag out of range: {flag}")
    return uvarint_encode(stream_id << 3 | flag) + uvarint_encode(length)


def message_key(flag: int, stream_id: int) -> int:
    """The session's key of the stream a Message frame addresses
    (fastp2p/proto/mplex/session.py): ``id * 2 + 1`` for MESSAGE_RECEIVER (a
    stream we opened), ``id * 2`` for MESSAGE_INITIATOR."""
    return stream_id * 2 + (flag == MESSAGE_RECEIVER)


class MplexDecoder:
    """Streaming, zero-copy mplex frame decoder (see the module docstring)."""

    __slots__ = ("max_message_size", "_hdr", "_remaining", "_flag", "_stream_id", "_acc", "_error")

    def __init__(self, max_message_size: int = 1 << 20) -> None:
        if max_message_size < 0:
            raise ValueError("max_message_size must be >= 0")
        self.max_message_size = max_message_size
        self._hdr = bytearray()  # incomplete header bytes
        self._remaining = 0  # payload bytes still to come for the current frame
        self._flag = 0
        self._stream_id = 0
        self._acc: bytearray | None = None  # control-frame payload being collected
        self._error: RemoteProtocolError | None = None

    @property
    def buffered(self) -> int:
        """Bytes held internally (incomplete header + partial control payload)."""
        return len(self._hdr) + (len(self._acc) if self._acc is not None else 0)

    def _fail(self, exc: RemoteProtocolError) -> RemoteProtocolError:
        self._error = exc
        self._hdr.clear()
        self._acc = None
        return exc

    def _parse_header(self, buf: ReadableBuffer) -> tuple[int, int, int, int] | None:
        """Returns ``(flag, stream_id, length, end)`` or None if incomplete; an
        invalid header kills the decoder."""
        try:
            return self._peek_header(buf)
        except RemoteProtocolError as exc:
            raise self._fail(exc) from None

    def _peek_header(self, buf: ReadableBuffer) -> tuple[int, int, int, int] | None:
        """:meth:`_parse_header` without changing the decoder: the typed error of an
        invalid header is raised, not kept."""
        r1 = uvarint_decode(buf, 0)
        if r1 is None:
            return None
        r2 = uvarint_decode(buf, r1[1])
        if r2 is None:
            return None
        key, length, end = r1[0], r2[0], r2[1]
        flag = key & 7
        sid = key >> 3
        if flag == 7:
            raise FrameTypeError("unknown mplex flag 7")
        if sid > MAX_STREAM_ID:  # pragma: no cover - a 63-bit varint >> 3 always fits
            raise FrameError("mplex stream id exceeds 60 bits")
        if length > self.max_message_size:
            raise FrameTooLargeError(f"mplex frame of {length} bytes exceeds {self.max_message_size}")
        return flag, sid, length, end

    def in_payload(self, n: int) -> tuple[int, int] | None:
        """``(flag, stream_id)`` when the next ``n`` input bytes are all payload of
        the Message frame in progress (no header pending); else None. The caller
        may then place them itself and account them with :meth:`take_payload`
        (csrc/fp_frame.c has the same pair)."""
        if (self._error is not None or self._hdr or n <= 0 or self._remaining < n
                or self._acc is not None
                or self._flag not in (MESSAGE_RECEIVER, MESSAGE_INITIATOR)):
            return None
        return self._flag, self._stream_id

    def take_payload(self, n: int) -> None:
        """Account ``n`` payload bytes that :meth:`in_payload` allowed."""
        self._remaining -= n

    def head(self, buf: ReadableBuffer, more: int) -> tuple[int, int, int] | None:
        """``(header length, flag, stream id)`` when the decoder is between frames
        and ``buf`` starts with a valid Message header (flag 1 or 2) whose payload
        covers the rest of ``buf`` and ``more`` bytes after it; else None. Changes
        nothing (the caller feeds ``buf`` afterwards, which reports any error).
        csrc/fp_frame.c has the twin."""
        if self._error is not None or self._hdr or self._remaining or self._acc is not None:
            return None
        try:
            parsed = self._peek_header(buf)
        except RemoteProtocolError:
            return None
        if parsed is None:
            return None
        flag, sid, length, end = parsed
        if flag not in (MESSAGE_RECEIVER, MESSAGE_INITIATOR) or length < len(buf) - end + more:
            return None
        return end, flag, sid

    def feed(self, data: ReadableBuffer) -> list[MplexRecord]:
        """Decode everything complete in ``data``; see the module docstring."""
        if self._error is not None:
            raise type(self._error)(f"decoder is dead after: {self._error}")
        mv = byte_view(data)
        n = len(mv)
        pos = 0
        out: list[MplexRecord] = []
        while True:
            rem = self._remaining
            if rem:
                take = min(rem, n - pos)
                if take <= 0:
                    break
                if self._acc is None:  # message: stream it
                    out.append((self._flag, self._stream_id, mv[pos : pos + take]))
                else:
                    self._acc += mv[pos : pos + take]
                    if take == rem:
                        out.append((self._flag, self._stream_id, memoryview(bytes(self._acc))))
                        self._acc = None
                pos += take
                self._remaining = rem - take
                continue
            if pos >= n:
                break
            hdr = self._hdr
            if hdr:
                old = len(hdr)
                chunk = mv[pos : pos + (MAX_HEADER_SIZE - old)]
                hdr += chunk
                parsed = self._parse_header(hdr)
                if parsed is None:
                    pos += len(chunk)
                    if len(hdr) >= MAX_HEADER_SIZE:  # pragma: no cover - varint errors fire first
                        raise self._fail(VarintError("mplex header too long"))
                    continue
                flag, sid, length, end = parsed
                pos += end - old
                hdr.clear()
            else:
                parsed = self._parse_header(mv[pos : pos + MAX_HEADER_SIZE])
                if parsed is None:
                    hdr += mv[pos:]
                    pos = n
                    break
                flag, sid, length, end = parsed
                pos += end
            if flag == MESSAGE_RECEIVER or flag == MESSAGE_INITIATOR:
                if length == 0:
                    out.append((flag, sid, mv[pos:pos]))
                    continue
                self._acc = None
            else:
                if n - pos >= length:  # whole control payload present: zero-copy
                    out.append((flag, sid, mv[pos : pos + length]))
                    pos += length
                    continue
                self._acc = bytearray()
            self._flag = flag
            self._stream_id = sid
            self._remaining = length
        return out


class MplexDemux(RouteTable):
    """An :class:`MplexDecoder` that delivers Message records itself (the fast path).

    Streams are named by the session's stream key (fastp2p/proto/mplex/session.py):
    a record ``(flag, id, payload)`` is for key ``id * 2 + 1`` with
    MESSAGE_RECEIVER, ``id * 2`` with MESSAGE_INITIATOR. The session attaches a
    key with a ``deliver(payload)`` callable and its credit (the bytes it may
    still buffer before it resets the stream). ``feed`` decodes the whole input
    first (a frame error delivers nothing), then walks the records in order: a
    Message record for an attached key whose length fits the credit is charged
    to it and handed over: copied into the buffer the stream's reader lent
    (:meth:`lend`) while it has room, else (the rest) to ``deliver``; an empty
    one is dropped. The first record that is anything else, and every record
    after it, is returned, in order, for the session to handle. Returns
    ``(fast, records)``: how many records went the fast way, and the rest in
    ``MplexDecoder`` format. :meth:`feed_sealed` opens Noise frames first, frame
    by frame, and a Message frame's payload that fills a Noise frame goes into a
    lent buffer whole (the native twin opens it there in place).

    Credit bookkeeping, loans and counters are those of ``YamuxDemux`` (the
    shared :class:`~fastp2p.proto.yamux.frame.RouteTable`). The native twin
    (fastp2p/_native/frame.pyx) does the walk in C.
    """

    __slots__ = ("_dec",)

    def __init__(self, max_message_size: int = 1 << 20) -> None:
        super().__init__()
        self._dec = MplexDecoder(max_message_size)

    @property
    def max_message_size(self) -> int:
        return self._dec.max_message_size

    @property
    def buffered(self) -> int:
        """Bytes held internally (incomplete header + partial control payload)."""
        return self._dec.buffered

    def _in_payload(self, plen: int) -> int | None:
        got = self._dec.in_payload(plen)
        return None if got is None else message_key(*got)

    def _take_payload(self, plen: int) -> None:
        self._dec.take_payload(plen)

    def _frame_left(self) -> int:
        d = self._dec
        return 0 if d._error is not None or d._hdr else d._remaining

    _head_size = MAX_HEADER_SIZE

    def _head(self, buf: memoryview, more: int) -> tuple[int, int] | None:
        got = self._dec.head(buf, more)
        return None if got is None else (got[0], message_key(got[1], got[2]))

    def _segment(self, data: ReadableBuffer) -> None:
        """Decode ``data`` (an error delivers nothing of it) and walk its records."""
        self.bytes_in += len(data) if type(data) is bytes else memoryview(data).nbytes
        records = self._dec.feed(data)
        self.frames_in += len(records)
        routes = self._routes
        i = 0
        n = len(records)
        while i < n and not self._slow:
            flag, sid, payload = records[i]
            if flag != MESSAGE_RECEIVER and flag != MESSAGE_INITIATOR:
                self._slow = True
                break
            r = routes.get(message_key(flag, sid))
            length = len(payload)
            if r is None or length > r.credit:
                self._slow = True
                break
            i += 1
            self._fast += 1
            if length:
                self._hand_over(r, payload, length)
        if i < n:
            self._out += records[i:]
