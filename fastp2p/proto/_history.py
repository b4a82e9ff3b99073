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

from fastp2p.errors import ClosedResourceError, StreamResetError

__all__ = ["StreamHistory"]


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
