"""libp2p perf (``/perf/1.0.0``) wire format and server-side accounting, sans-IO.

Rules
-----
- perf spec, client: send the number of bytes to download as one big-endian
  uint64 (0 and 2**64-1 are valid), then upload any amount, then close the
  write side, then read the download.
- perf spec, server: read the uint64, drain the upload until EOF, then (never
  concurrently with the drain) send that many bytes and close.
- The bytes themselves are arbitrary but predetermined: zeros here.

Theory of operation
-------------------
:func:`encode_download_size`/:func:`decode_download_size` are the only wire
format. :class:`PerfServerState` counts what a server received: feed every
read to ``receive_data``, call ``receive_eof`` at EOF, then send
``download_size`` bytes (e.g. repeated :data:`FILL` chunks). The I/O lives in
the drivers.
"""

from __future__ import annotations

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import FrameError, LocalProtocolError

__all__ = [
    "PROTOCOL_ID",
    "SIZE_LEN",
    "MAX_SIZE",
    "FILL",
    "encode_download_size",
    "decode_download_size",
    "PerfServerState",
]

PROTOCOL_ID = "/perf/1.0.0"
SIZE_LEN = 8
MAX_SIZE = 2**64 - 1
FILL = bytes(64 * 1024)


def encode_download_size(n: int) -> bytes:
    """The 8-byte big-endian request header.

    Raises:
        LocalProtocolError: ``n`` outside ``0 .. 2**64-1``.
    """
    if not 0 <= n <= MAX_SIZE:
        raise LocalProtocolError(f"perf download size out of range: {n}")
    return n.to_bytes(SIZE_LEN, "big")


def decode_download_size(data: ReadableBuffer) -> int:
    """Parse the 8-byte header.

    Raises:
        FrameError: not exactly 8 bytes (the stream ended early).
    """
    raw = bytes(data)
    if len(raw) != SIZE_LEN:
        raise FrameError(f"perf header must be {SIZE_LEN} bytes, got {len(raw)}")
    return int.from_bytes(raw, "big")


class PerfServerState:
    """Server-side view of one perf stream."""

    def __init__(self) -> None:
        self._header = bytearray()
        self.download_size: int | None = None
        self.uploaded = 0
        self.eof = False

    def receive_data(self, data: ReadableBuffer) -> None:
        """Account for bytes read from the client.

        Raises:
            LocalProtocolError: data after ``receive_eof``.
        """
        if self.eof:
            raise LocalProtocolError("data after EOF")
        mv = memoryview(data).cast("B")
        if self.download_size is None:
            need = SIZE_LEN - len(self._header)
            self._header += mv[:need]
            mv = mv[need:]
            if len(self._header) == SIZE_LEN:
                self.download_size = decode_download_size(self._header)
        self.uploaded += len(mv)

    def receive_eof(self) -> int:
        """The client closed its write side; returns how many bytes to send.

        Raises:
            FrameError: EOF before the 8-byte header was complete.
        """
        self.eof = True
        if self.download_size is None:
            raise FrameError(f"perf stream ended after {len(self._header)} header bytes")
        return self.download_size
