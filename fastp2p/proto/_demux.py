"""What a sans-IO muxer session with a demultiplexer offers its driver.

Shared by the yamux and mplex sessions: both keep ``self._demux`` (the kernels'
``YamuxDemux``/``MplexDemux``, or None for kernels without one), ``self._decoder``
(the demux, or the plain decoder without one) and ``self._stats``; the demux
counts received bytes and frames itself.
"""

from __future__ import annotations

from typing import Any

from fastp2p.errors import RemoteProtocolError


class DemuxSession:
    """Mixin: loans, the one-call sealed receive's availability and its counters."""

    __slots__ = ()

    _demux: Any
    _decoder: Any
    _stats: dict[str, int]
    _terminated: Any
    _tx_step: Any  # the driver's send step (send_step), or None

    def _decode(self, data: Any) -> Any:
        """The records in ``data``: those the demux's fast way did not take, or all
        of them from the plain decoder (counted here then)."""
        if self._demux is not None:
            return self._demux.feed(data)[1]  # it counts bytes and frames itself
        stats = self._stats
        stats["bytes_in"] += len(data) if type(data) is bytes else memoryview(data).nbytes
        records = self._decoder.feed(data)
        stats["frames_in"] += len(records)
        return records

    @property
    def sealed_bytes_in(self) -> int:
        """Plaintext bytes ``feed_sealed`` has opened."""
        return self._demux.sealed_bytes_in if self._demux is not None else 0

    @property
    def direct_bytes_in(self) -> int:
        """Of :attr:`sealed_bytes_in`, those opened straight into readers' lent buffers."""
        return self._demux.direct_bytes_in if self._demux is not None else 0

    @property
    def can_feed_sealed(self) -> bool:
        """True when ``feed_sealed`` and :meth:`lend` are available (kernels with a demux)."""
        return self._demux is not None

    def feed_sealed(self, cipher: Any, data: Any, now: float) -> bool:
        """Open the Noise frames in ``data`` and take their records, in one call.

        What ``receive_data`` does with ``cipher.open_frames(data)``, but when
        every record goes the demux's fast way (plain data of attached streams,
        copied into lent buffers or delivered) no Python runs beyond this call.
        Returns True when records reached the session (the driver then drains
        events and sends). Only with a demux: see :attr:`can_feed_sealed`.
        """
        if self._terminated is not None:
            return False
        try:
            records = self._demux.feed_sealed(cipher, data)
        except RemoteProtocolError as exc:
            self._fail(exc)  # type: ignore[attr-defined]
            raise
        if records is None:
            return False
        return self.take_records(records, now)  # type: ignore[attr-defined]

    def sealed_step(self, cipher: Any, on_records: Any, on_error: Any) -> Any:
        """``feed_sealed`` as one callable for a driver that feeds per socket read:
        ``step(data)`` opens, demultiplexes and delivers; the records its fast
        way did not take go to ``on_records(records)`` (pass them to
        ``take_records``), a failing frame's ``P2PError`` to ``on_error(exc)``
        (pass it to :meth:`feed_failed`). ``step.live = False`` stops it. With
        the native kernels no Python runs for a read whose frames all go the
        fast way. None without a demux."""
        demux = self._demux
        return demux.sealed_step(cipher, on_records, on_error) if demux is not None else None

    def send_step(self, step_cls: Any, path: Any, fallback: Any) -> Any:
        """A driver's ``stream_send`` as one callable, ``step(stream_id, data)``
        (``step_cls`` is the kernels' ``SendStep``): a write to an open stream
        with send window is framed and handed to ``path`` (the driver's Noise
        path over a TCP ``WritePump``), as :meth:`send_data`,
        :meth:`data_to_send` and the path's ``send`` would do it; every other
        write goes to ``fallback(stream_id, data)``. The step reads and sets
        this session's stream records (``local_closed``; yamux: ``state``,
        ``send_window``) and sends only while nothing is queued in
        ``data_to_send``; its frames count in :attr:`stats`.
        """
        yamux, max_frame = self._send_plan()  # type: ignore[attr-defined]
        step = step_cls(self, self._streams, yamux, max_frame, path, fallback)  # type: ignore[attr-defined]
        self._tx_step = step
        return step

    def feed_failed(self, exc: BaseException) -> None:
        """A :meth:`sealed_step` failed with ``exc``: a peer's protocol violation
        terminates the session (its GoAway queued), as ``feed_sealed`` would."""
        if isinstance(exc, RemoteProtocolError) and self._terminated is None:
            self._fail(exc)  # type: ignore[attr-defined]

    def lend(self, stream_id: int, buf: Any, waiter: Any) -> Any:
        """Lend a reader's buffer to the demux: the stream's plain data is copied
        into it and ``waiter`` completed once per batch. Returns the loan's token
        (``unlend()`` -> bytes placed, ``spill()``, ``got``), or None (not
        attached, or no demux): the data then arrives as before.
        """
        demux = self._demux
        if demux is None:
            return None
        return demux.lend(stream_id, buf, waiter)

    @property
    def lender(self) -> Any:
        """:meth:`lend` as one call (the demux's own method; its result is the
        same), for drivers that lend per read; None without a demux."""
        demux = self._demux
        return demux.lend if demux is not None else None

    def on_loan_full(self, callback: Any) -> None:
        """Call ``callback()`` at the end of a receive step after which a reader's
        lent buffer can take no more (a large one is full, or one of 64 KiB or
        more overflowed into the stream's queue). The driver stops reading until the reader lends its next
        buffer. None: call nothing."""
        if self._demux is not None:
            self._demux.on_loan_full = callback

    def on_read_hint(self, callback: Any) -> None:
        """Call ``callback(n)`` when the most bytes the next socket read should
        take changes (0: any): a large lent buffer is then filled without
        overflowing. None: call nothing."""
        if self._demux is not None:
            self._demux.on_read_hint = callback

    def on_wake_hint(self, callback: Any) -> None:
        """Call ``callback(n)`` when the number of wire bytes still due that are
        certain to come changes (0: under WAKE_MIN): the socket need not wake the
        loop before ``n`` are in (SO_RCVLOWAT). None: call nothing."""
        if self._demux is not None:
            self._demux.on_wake_hint = callback

    @property
    def stats(self) -> dict[str, int]:
        """The session's counters (see the session class), received ones from the demux."""
        demux = self._demux
        stats = self._stats
        if demux is not None:
            stats["bytes_in"] = demux.bytes_in
            stats["frames_in"] = demux.frames_in
        step = self._tx_step
        if step is not None:  # (sent by the driver's send step: counted there)
            stats = dict(stats)
            stats["bytes_out"] += step.bytes_out
            stats["frames_out"] += step.frames_out
        return stats
