"""libp2p ping (``/ipfs/ping/1.0.0``), dialer side, sans-IO.

Rules
-----
- ping spec: the dialer writes 32 random bytes; the listener echoes the same
  32 bytes; RTT is measured from the write to the complete echo. Several
  pings may follow on one stream.
- An echo that differs from what was sent, or bytes arriving while no ping
  is outstanding, raise :class:`~fastp2p.errors.RemoteProtocolError`.
- Time is never read here: ``now`` is passed in by the driver.

Theory of operation
-------------------
``send(payload, now)`` queues the payload (returned for convenience and also
available from :meth:`PingTracker.data_to_send`) and remembers ``now``;
``receive_data`` matches complete 32-byte echoes against the oldest
outstanding pings in order and returns their RTTs. The listener side is a
plain echo loop and needs no state machine.
"""

from __future__ import annotations

from collections import deque

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import LocalProtocolError, RemoteProtocolError

__all__ = ["PROTOCOL_ID", "PING_SIZE", "make_payload", "PingTracker"]

PROTOCOL_ID = "/ipfs/ping/1.0.0"
PING_SIZE = 32


def make_payload(rand: bytes) -> bytes:
    """Validate and return a ping payload built from ``rand`` (e.g. ``os.urandom(32)``).

    Raises:
        LocalProtocolError: ``rand`` is not exactly 32 bytes.
    """
    if len(rand) != PING_SIZE:
        raise LocalProtocolError(f"ping payload must be {PING_SIZE} bytes, got {len(rand)}")
    return bytes(rand)


class PingTracker:
    """Tracks outstanding pings on one stream and computes their RTTs."""

    def __init__(self) -> None:
        self._outstanding: deque[tuple[bytes, float]] = deque()
        self._inbuf = bytearray()
        self._outbuf = bytearray()

    @property
    def outstanding(self) -> int:
        """How many pings await their echo."""
        return len(self._outstanding)

    def oldest_sent_at(self) -> float | None:
        """Send time of the oldest unanswered ping (for the driver's timeout)."""
        return self._outstanding[0][1] if self._outstanding else None

    def send(self, payload: bytes, now: float) -> bytes:
        """Record a ping written at ``now``; returns the bytes to write.

        Raises:
            LocalProtocolError: payload is not 32 bytes.
        """
        payload = make_payload(payload)
        self._outstanding.append((payload, now))
        self._outbuf += payload
        return payload

    def data_to_send(self) -> bytes:
        """Ping payloads not yet taken by the driver (drained)."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def receive_data(self, data: ReadableBuffer, now: float) -> list[float]:
        """Feed echoed bytes; returns the RTT (seconds) of each completed ping.

        Raises:
            RemoteProtocolError: the echo differs, or nothing was outstanding.
        """
        self._inbuf += data
        if len(self._inbuf) > PING_SIZE * len(self._outstanding):
            raise RemoteProtocolError("ping peer sent more bytes than were pinged")
        rtts: list[float] = []
        while len(self._inbuf) >= PING_SIZE:
            echo = bytes(self._inbuf[:PING_SIZE])
            del self._inbuf[:PING_SIZE]
            payload, sent_at = self._outstanding.popleft()
            if echo != payload:
                raise RemoteProtocolError("ping echo does not match the payload sent")
            rtts.append(now - sent_at)
        return rtts
