"""Events and the sans-IO interface shared by every stream muxer (yamux, mplex).

Rules
-----
A muxer session is a state machine driven by three sources: the local API user
(``open_stream``, ``send_data``, ``close_stream``, ``reset_stream``, ``ping``,
``go_away``), bytes from the peer (``receive_data``) and timers
(``handle_timer``). It performs no I/O and never reads a clock.

Theory of operation
-------------------
The driver (``fastp2p.transport.conn``) feeds decrypted bytes to
``receive_data``, drains ``next_event()``, and writes ``data_to_send()`` (a list
of buffers, written as one iovec). Stream ids are plain ints; the driver maps
them to ``Stream`` objects. Peer violations raise ``RemoteProtocolError``
subclasses from ``receive_data`` after the session queued its GoAway (or the
muxer's equivalent) so the driver only has to transmit and close.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from fastp2p._typing import ReadableBuffer


@dataclass(frozen=True, slots=True)
class StreamOpened:
    """The peer opened stream ``stream_id``."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class DataReceived:
    """``data`` arrived on ``stream_id``; credit returns via ``acknowledge_received``."""

    stream_id: int
    data: memoryview


@dataclass(frozen=True, slots=True)
class StreamEnded:
    """The peer closed its write side of ``stream_id`` (FIN / CloseInitiator)."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class StreamReset:
    """The peer reset ``stream_id``."""

    stream_id: int
    code: int = 0


@dataclass(frozen=True, slots=True)
class WindowUpdated:
    """The send window of ``stream_id`` grew; blocked writers may continue."""

    stream_id: int


@dataclass(frozen=True, slots=True)
class PingAcknowledged:
    """A ping we sent was answered; ``rtt`` in the same unit as ``now``."""

    opaque: int
    rtt: float


@dataclass(frozen=True, slots=True)
class GoAwayReceived:
    """The peer will accept no new streams."""

    code: int


@dataclass(frozen=True, slots=True)
class ConnectionTerminated:
    """The session is over (GoAway sent or received, or a protocol error)."""

    code: int
    remote: bool
    reason: str = ""


MuxerEvent = (
    StreamOpened
    | DataReceived
    | StreamEnded
    | StreamReset
    | WindowUpdated
    | PingAcknowledged
    | GoAwayReceived
    | ConnectionTerminated
)


class MuxerSession(Protocol):
    """The interface ``transport.conn.Connection`` drives; yamux and mplex implement it."""

    def receive_data(self, data: ReadableBuffer, now: float) -> None: ...
    def next_event(self) -> MuxerEvent | None: ...
    def data_to_send(self) -> list[ReadableBuffer]: ...
    def get_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...

    def open_stream(self) -> int: ...
    def send_data(self, stream_id: int, data: ReadableBuffer) -> int: ...
    def send_window(self, stream_id: int) -> int: ...
    def close_stream(self, stream_id: int) -> None: ...
    def reset_stream(self, stream_id: int, code: int = 0) -> None: ...
    def acknowledge_received(self, stream_id: int, n: int, now: float = 0.0) -> None: ...
    def ping(self, now: float) -> int: ...
    def go_away(self, code: int = 0) -> None: ...
    def stream_count(self) -> int: ...
    def limit_receive_window(self, n: int) -> None: ...
