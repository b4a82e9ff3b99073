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
"""

from __future__ import annotations

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import (
    FrameError,
    FrameTooLargeError,
    FrameTypeError,
    RemoteProtocolError,
    VarintError,
)
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

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


def _as_bytes_view(data: ReadableBuffer) -> memoryview:
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv


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
        """Returns ``(flag, stream_id, length, end)`` or None if incomplete."""
        try:
            r1 = uvarint_decode(buf, 0)
            if r1 is None:
                return None
            r2 = uvarint_decode(buf, r1[1])
        except VarintError as exc:
            raise self._fail(VarintError(str(exc))) from None
        if r2 is None:
            return None
        key, length, end = r1[0], r2[0], r2[1]
        flag = key & 7
        sid = key >> 3
        if flag == 7:
            raise self._fail(FrameTypeError("unknown mplex flag 7"))
        if sid > MAX_STREAM_ID:  # pragma: no cover - a 63-bit varint >> 3 always fits
            raise self._fail(FrameError("mplex stream id exceeds 60 bits"))
        if length > self.max_message_size:
            raise self._fail(
                FrameTooLargeError(f"mplex frame of {length} bytes exceeds {self.max_message_size}")
            )
        return flag, sid, length, end

    def feed(self, data: ReadableBuffer) -> list[MplexRecord]:
        """Decode everything complete in ``data``; see the module docstring."""
        if self._error is not None:
            raise type(self._error)(f"decoder is dead after: {self._error}")
        mv = _as_bytes_view(data)
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
