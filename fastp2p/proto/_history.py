"""Bounded memory of ended streams, shared by the yamux and mplex sessions.

Rules
-----
- A stream that ended (both FINs, or a reset either way) is remembered with
  how it ended, so a late frame from the peer is recognised (and ignored, or
  judged) and a late local call gets the right error: StreamResetError for a
  reset stream, ClosedResourceError for a closed one.
- At most ``size`` streams are remembered; the oldest is forgotten first, so
  memory stays bounded however many streams a peer churns through.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from fastp2p.errors import ClosedResourceError, ConnectionClosedError, StreamResetError

__all__ = ["StreamHistory", "StreamTable"]


class StreamHistory:
    """``stream id -> (reset, code, remote)`` for the most recent ended streams."""

    __slots__ = ("_ended", "_size")

    def __init__(self, size: int) -> None:
        self._ended: dict[int, tuple[bool, int, bool]] = {}
        self._size = size

    def __contains__(self, sid: object) -> bool:
        return sid in self._ended

    def __len__(self) -> int:
        return len(self._ended)

    def get(self, sid: int) -> tuple[bool, int, bool] | None:
        """How ``sid`` ended: ``(reset, code, remote)``, or None if not remembered."""
        return self._ended.get(sid)

    def remember(self, sid: int, reset: bool, code: int, remote: bool) -> None:
        """Record that ``sid`` ended; forgets the oldest entry beyond ``size``."""
        ended = self._ended
        ended[sid] = (reset, code, remote)
        if len(ended) > self._size:
            del ended[next(iter(ended))]

    def forget(self, sid: int) -> None:
        """Drop ``sid`` (its id is being reused)."""
        self._ended.pop(sid, None)

    def write_error(self, sid: int) -> StreamResetError | ClosedResourceError | None:
        """The error for writing to ended stream ``sid``, or None if it is not remembered."""
        hist = self._ended.get(sid)
        if hist is None:
            return None
        reset, code, remote = hist
        if reset:
            return StreamResetError(f"stream {sid} was reset", code=code, remote=remote)
        return ClosedResourceError(f"stream {sid} was closed for writing")


class _HalfClosable(Protocol):
    local_closed: bool


S = TypeVar("S", bound=_HalfClosable)


class StreamTable(Generic[S]):
    """The checks every muxer session makes before acting on one of its streams.

    A session subclass owns ``_streams`` (live streams by id), ``_history``
    (a :class:`StreamHistory`), ``_terminated`` (``(code, remote)`` once the
    session ended) and implements ``_check_known`` (whether an id it does not
    remember could ever have been opened, which depends on the muxer's id rules).
    """

    MUXER_NAME = "muxer"
    _streams: dict[int, S]
    _history: StreamHistory
    _terminated: tuple[int, bool] | None

    def _check_known(self, sid: int) -> None:
        raise NotImplementedError

    def stream_count(self) -> int:
        """Number of live streams (not yet closed both ways nor reset)."""
        return len(self._streams)

    def is_stream_open(self, stream_id: int) -> bool:
        """Whether ``stream_id`` is still in the table."""
        return stream_id in self._streams

    @property
    def terminated(self) -> bool:
        """Whether the session is over (protocol error, GoAway with an error, timeout)."""
        return self._terminated is not None

    def _check_open(self) -> None:
        if self._terminated is not None:
            code, remote = self._terminated
            raise ConnectionClosedError(
                f"{self.MUXER_NAME} session terminated", code=code, remote=remote
            )

    def _writable(self, sid: int) -> S:
        """The live stream ``sid`` if we may still write to it; else the right error."""
        if self._terminated is not None:  # (per write: _check_open only when it raises)
            self._check_open()
        stream = self._streams.get(sid)
        if stream is not None:
            if stream.local_closed:
                raise ClosedResourceError(f"stream {sid} was closed for writing")
            return stream
        err = self._history.write_error(sid)
        if err is None:
            self._check_known(sid)
            err = ClosedResourceError(f"stream {sid} is closed")
        raise err
