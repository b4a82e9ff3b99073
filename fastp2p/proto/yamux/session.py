"""Sans-IO yamux session (``/yamux/1.0.0``): streams, flow control, ping, GoAway.

Rules
-----
Stream ids (yamux spec "StreamID Field"): the client opens odd ids, the server
even ids, 0 is the session. Each stream moves through::

    outbound:  PENDING_SYN --(backlog slot)--> SYN_SENT --(ACK)--> ESTABLISHED
    inbound:   (SYN received) --(ACK sent at once)--> ESTABLISHED

and independently two half-close flags, ``local_closed`` (we sent FIN) and
``remote_closed`` (we received FIN). A stream leaves the table when both flags
are set or on RST (either direction); the reason is kept in a bounded history
so that late frames and calls on dead ids are answered precisely.

=================================  =============================================
Received                           Action
=================================  =============================================
SYN, peer parity, fresh id         StreamOpened; WINDOW_UPDATE|ACK (+window delta)
SYN beyond max_streams/backlog     WINDOW_UPDATE|RST, no event (not a session error)
SYN after our GoAway               WINDOW_UPDATE|RST (go-yamux)
SYN, our parity / id 0 / reused    protocol error
ACK on SYN_SENT                    ESTABLISHED; frees an ACK-backlog slot
DATA within window                 DataReceived (zero-copy chunk of the input)
DATA beyond window                 FlowControlError
DATA after the peer's FIN          protocol error
FIN                                StreamEnded (once)
RST                                StreamReset(code); stream removed
WINDOW_UPDATE delta                send window += delta; WindowUpdated
frame for a stream that existed    ignored (late frames after close/reset race)
frame for a never-opened id        protocol error
PING|SYN                           PING|ACK echoing the opaque value
PING|ACK of ours                   PingAcknowledged(opaque, rtt)
GO_AWAY normal                     GoAwayReceived; no new outbound streams
GO_AWAY error code                 GoAwayReceived + ConnectionTerminated(remote)
=================================  =============================================

Protocol errors (any :class:`~fastp2p.errors.RemoteProtocolError`, including the
decoder's FrameError and FlowControlError) queue ``GO_AWAY(exc.error_code)``,
emit ``ConnectionTerminated(remote=False)`` and are then raised from
``receive_data``: the driver transmits and closes.

Theory of operation
-------------------
The driver feeds bytes to :meth:`YamuxSession.receive_data`, drains
:meth:`~YamuxSession.next_event`, then writes :meth:`~YamuxSession.data_to_send`
(one iovec) and re-arms one timer from :meth:`~YamuxSession.get_timer`.

Flow control is per stream (yamux spec "There is no window size for the
session"). The receive side is :class:`~fastp2p.proto.yamux.window.WindowManager`:
credit returns only through :meth:`~YamuxSession.acknowledge_received`, i.e. as the
application consumes, and the window auto-tunes from the measured ping RTT. The
send side is a plain counter; :meth:`~YamuxSession.send_data` accepts at most
the window and returns how much it took, and a ``WindowUpdated`` event tells a
blocked writer to try again.

ACK backlog (libp2p yamux spec "ACK backlog & backpressure": "SHOULD at most
allow an ACK backlog of 256 streams"): at most ``config.accept_backlog`` of our
streams wait for the peer's ACK. Further ``open_stream`` calls still return an
id at once, but the stream stays PENDING_SYN (send window 0, nothing on the
wire) until a slot frees; then its SYN goes out and ``WindowUpdated`` wakes its
writer. Inbound, a SYN is refused with RST when ``max_streams`` inbound streams
are open, or while ``accept_backlog`` StreamOpened events from *earlier*
``receive_data`` calls are still undelivered (the application is not accepting).
A burst of SYNs within one call is bounded by ``max_streams`` only: peers that
ignore the SHOULD (py-libp2p has no outbound backlog) are not penalised when the
driver drains events after every call, as ``transport.conn`` does.

Keepalive: the first timer is due at once and sends one ping to measure the RTT
(go-yamux ``measureRTT``), which feeds window auto-tuning. With
``keepalive_interval`` set, a ping follows every interval, and a ping left
unanswered for ``ping_timeout`` terminates the session:
``ConnectionTerminated(INTERNAL_ERROR)`` and a GoAway with that code.

Implementation
--------------
Frames are encoded in one place (:meth:`YamuxSession._frame`) through the
injected kernels. Outbound data is a list of buffers: each DATA header is its own
entry, followed by a memoryview slice of the caller's buffer (no copy). The
caller must therefore leave a buffer passed to ``send_data`` untouched until the
``data_to_send()`` list holding it has been written. Likewise ``DataReceived.data``
views the buffer given to ``receive_data``; the driver must not reuse that buffer
while such events are alive.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from types import ModuleType
from typing import Any

from fastp2p._typing import ReadableBuffer
from fastp2p.config import YamuxConfig
from fastp2p.errors import (
    ConnectionClosedError,
    FlowControlError,
    GoAwayCode,
    LocalProtocolError,
    ProtocolError,
    RemoteProtocolError,
    ResourceLimitExceededError,
    StreamErrorCode,
)
from fastp2p.proto._demux import DemuxSession
from fastp2p.proto._history import StreamHistory, StreamTable
from fastp2p.proto.muxer import (
    ConnectionTerminated,
    DataReceived,
    GoAwayReceived,
    MuxerEvent,
    PingAcknowledged,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowUpdated,
)
from fastp2p.proto.yamux.window import MAX_WIRE_WINDOW, SPEC_INITIAL_WINDOW, WindowManager

__all__ = ["PROTOCOL_ID", "YamuxSession"]

PROTOCOL_ID = "/yamux/1.0.0"

# Same values as fastp2p.proto.yamux.frame (the yamux spec's); the kernels only
# provide the codec.
TYPE_DATA = 0
TYPE_WINDOW_UPDATE = 1
TYPE_PING = 2
TYPE_GO_AWAY = 3
FLAG_SYN = 1
FLAG_ACK = 2
FLAG_FIN = 4
FLAG_RST = 8

MAX_STREAM_ID = 0xFFFFFFFF
# How many removed stream ids remember why they were removed.
HISTORY_SIZE = 4096
# Unanswered pings kept for RTT matching; older ones are forgotten.
MAX_OUTSTANDING_PINGS = 64

_PENDING_SYN = 0
_SYN_SENT = 1
_ESTABLISHED = 2

_H_CLOSED = False  # both sides sent FIN
_H_RESET = True  # RST sent or received, or SYN refused


def _default_kernels() -> Any:
    from fastp2p.proto.yamux import frame

    return frame


class _Stream:
    __slots__ = ("stream_id", "outbound", "state", "send_window", "recv", "local_closed",
                 "remote_closed")

    def __init__(self, stream_id: int, outbound: bool, state: int, recv: WindowManager) -> None:
        self.stream_id = stream_id
        self.outbound = outbound
        self.state = state
        self.send_window = SPEC_INITIAL_WINDOW
        self.recv = recv
        self.local_closed = False
        self.remote_closed = False


class YamuxSession(DemuxSession, StreamTable[_Stream]):
    """A yamux session, one per secured connection (see the module docstring).

    Args:
        is_client: True on the dialer side (opens odd stream ids).
        config: limits and windows.
        kernels: frame codec provider with ``encode_header`` and ``YamuxDecoder``
            (``fastp2p._accel`` in the driver); defaults to the pure
            ``fastp2p.proto.yamux.frame``.

    Attributes:
        stats: counters ``bytes_in``/``bytes_out`` (wire bytes: received, and
            queued for sending), ``frames_in``
            (decoded records: a DATA frame split across reads counts once per
            piece), ``frames_out``, ``streams_opened`` (outbound),
            ``streams_accepted`` and ``streams_rejected`` (inbound).
        rtt: the last measured ping round-trip time, or None.
    """

    # Slots: over 30 attributes an instance dict stops sharing its keys and costs
    # ~1.5 KiB per connection (StreamTable has no slots: a dict is still there,
    # empty, for attributes set from outside).
    __slots__ = ('config', '_max_window', '_encode', '_demux', '_decoder', 'is_client',
                 '_local_parity', '_next_id', '_max_peer_id', '_streams', '_history',
                 '_n_inbound', '_n_outbound', '_syn_backlog', '_pending_syn', '_unaccepted',
                 '_backlog_full', '_events', '_out', '_now', '_next_opaque', '_pings',
                 '_rtt_probe_sent', '_next_keepalive', 'rtt', '_local_goaway', '_remote_goaway',
                 '_terminated', '_stats', 'drop_pongs', 'pong_gate', '_tx_step')

    MUXER_NAME = "yamux"

    supports_ping = True

    def __init__(
        self,
        *,
        is_client: bool,
        config: YamuxConfig | None = None,
        kernels: ModuleType | Any | None = None,
    ) -> None:
        self.config = config if config is not None else YamuxConfig()
        if kernels is None:
            kernels = _default_kernels()
        # Ceiling of receive-window auto-tuning (``limit_receive_window`` lowers it).
        self._max_window = self.config.max_window
        self._encode = kernels.encode_header
        # The demux is the decoder plus a table of streams whose plain DATA it
        # delivers itself (``attach``); kernels without one decode only.
        demux = getattr(kernels, "YamuxDemux", None)
        self._demux: Any = demux() if demux is not None else None
        self._decoder: Any = self._demux if demux is not None else kernels.YamuxDecoder()
        self.is_client = is_client
        self._local_parity = 1 if is_client else 0
        self._next_id = 1 if is_client else 2
        self._max_peer_id = 0
        self._streams: dict[int, _Stream] = {}
        self._history = StreamHistory(HISTORY_SIZE)
        self._n_inbound = 0
        self._n_outbound = 0
        self._syn_backlog = 0  # our streams in SYN_SENT
        # Made on first use: an empty deque costs a 64-slot block, and most
        # connections never defer a SYN.
        self._pending_syn: deque[int] | None = None
        self._unaccepted = 0  # StreamOpened events not yet returned by next_event
        self._backlog_full = False  # _unaccepted >= accept_backlog before this receive_data
        self._events: deque[MuxerEvent] = deque()
        self._out: list[ReadableBuffer] = []
        self._now = 0.0
        # ping
        self._next_opaque = 1
        self._pings: dict[int, float] = {}  # opaque -> sent at; insertion = age order
        self._rtt_probe_sent = False
        self._next_keepalive: float | None = None
        self.rtt: float | None = None
        # session state
        self._local_goaway = False
        self._remote_goaway: int | None = None
        self._terminated: tuple[int, bool] | None = None  # (code, remote)
        self._tx_step: Any = None
        self._stats = {
            "bytes_in": 0,
            "bytes_out": 0,
            "frames_in": 0,
            "frames_out": 0,
            "streams_opened": 0,
            "streams_accepted": 0,
            "streams_rejected": 0,
            "pings_dropped": 0,
        }
        #: Set by the driver while its transport takes no more bytes (write buffer over
        #: its high-water mark): a PING|SYN is then not answered (counted in
        #: ``stats["pings_dropped"]``), like go-yamux dropping ping replies beyond its
        #: backlog, so a peer that floods pings and never reads cannot grow our buffers.
        self.drop_pongs = False
        #: Or a callable the session asks, only when a PING|SYN arrives, whether to drop
        #: it (the driver's ``lambda: transport_write_paused``): no per-batch bookkeeping.
        self.pong_gate: Callable[[], bool] | None = None

    # -- driver interface ------------------------------------------------------

    def receive_data(self, data: ReadableBuffer, now: float) -> None:
        """Process bytes from the peer; events become available via :meth:`next_event`.

        Raises:
            RemoteProtocolError: the peer violated the protocol (FrameError,
                FlowControlError, ...). A GoAway with ``exc.error_code`` is already
                queued and the session is terminated.
        """
        self._now = now
        if self._terminated is not None:
            return
        self._backlog_full = self._unaccepted >= self.config.accept_backlog
        try:
            records = self._decode(data)
            self._on_records(records, now)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise

    def take_records(self, records: Any, now: float) -> bool:
        """Take the records a :meth:`sealed_step` handed over (those the demux's
        fast way did not take). Returns True when they reached the session (the
        driver then drains events and sends); False once it is terminated."""
        if self._terminated is not None:
            return False
        try:
            self._now = now
            self._backlog_full = self._unaccepted >= self.config.accept_backlog
            self._on_records(records, now)
        except RemoteProtocolError as exc:
            self._fail(exc)
            raise
        return True

    def _on_records(self, records: Any, now: float) -> None:
        for ftype, flags, sid, length, payload in records:
            if ftype == TYPE_DATA:
                self._on_data(flags, sid, payload)
            elif ftype == TYPE_WINDOW_UPDATE:
                self._on_window_update(flags, sid, length)
            elif ftype == TYPE_PING:
                self._on_ping(flags, length, now)
            else:
                self._on_go_away(length)
            if self._terminated is not None:
                break

    def limit_receive_window(self, n: int) -> None:
        """Stop auto-tuning receive windows above ``n`` bytes (never below the
        spec's 256 KiB); windows already larger stay as they are.

        Used when the data path has a fixed buffer (a shared-memory ring): a
        window larger than the ring only makes the sender queue the excess.
        """
        self._max_window = max(min(self._max_window, n), 256 * 1024)
        for st in self._streams.values():
            st.recv.max_window_limit = max(min(st.recv.max_window_limit, self._max_window), st.recv.max_window)

    def attach(self, stream_id: int, deliver: Any) -> bool:
        """Deliver the stream's plain DATA payloads by calling ``deliver(payload)``.

        From now on a DATA frame without flags for ``stream_id`` that fits its
        receive window is charged to the window and handed to ``deliver`` inside
        :meth:`receive_data` (the kernel's demux walks the batch: in C with the
        native kernels) instead of becoming a ``DataReceived`` event; the
        payload views the input buffer, as ``DataReceived.data`` does. Every
        other frame, and every frame after it in the same batch, takes the
        normal path, so events keep their order. Credit still returns only
        through :meth:`acknowledge_received`. Ends when the stream is removed,
        the peer half-closes it, or :meth:`detach`. Returns False (nothing
        attached) for kernels without a demux or a stream that cannot receive.
        """
        demux = self._demux
        stream = self._streams.get(stream_id)
        if demux is None or stream is None or stream.remote_closed or self._terminated is not None:
            return False
        demux.attach(stream_id, deliver, stream.recv.credit)
        return True

    def detach(self, stream_id: int) -> None:
        """Stop :meth:`attach`'s delivery: ``DataReceived`` events again."""
        stream = self._streams.get(stream_id)
        if stream is not None:
            self._sync(stream)
        if self._demux is not None:
            self._demux.detach(stream_id)

    def _sync(self, stream: _Stream) -> WindowManager:
        """Charge DATA the demux delivered to the stream's window manager."""
        recv = stream.recv
        if self._demux is not None:
            n = self._demux.take(stream.stream_id)
            if n:
                recv.credit -= n
                recv.buffered += n
        return recv

    def next_event(self) -> MuxerEvent | None:
        """Pop the next event, or None when there is none."""
        events = self._events
        if not events:
            return None
        event = events.popleft()
        if type(event) is StreamOpened:
            self._unaccepted -= 1
        return event

    def data_to_send(self) -> list[ReadableBuffer]:
        """Take everything queued for the wire, as one list of buffers (an iovec)."""
        out = self._out
        if out:
            self._out = []
        return out

    def get_timer(self) -> float | None:
        """When :meth:`handle_timer` must next run, or None."""
        if self._terminated is not None:
            return None
        if not self._rtt_probe_sent:
            return self._now
        if self.config.keepalive_interval is None:
            return None
        timer = self._next_keepalive
        if self._pings:
            deadline = next(iter(self._pings.values())) + self.config.ping_timeout
            if timer is None or deadline < timer:
                timer = deadline
        return timer

    def handle_timer(self, now: float) -> None:
        """Send the RTT probe or a keepalive ping; detect keepalive timeouts."""
        self._now = now
        if self._terminated is not None:
            return
        interval = self.config.keepalive_interval
        if interval is not None and self._pings:
            oldest = next(iter(self._pings.values()))
            if now >= oldest + self.config.ping_timeout:
                # go-yamux: keepalive failure closes the session (ErrKeepAliveTimeout).
                self._terminate(
                    GoAwayCode.INTERNAL_ERROR, remote=False, reason="keepalive timeout",
                    send_go_away=True,
                )
                return
        if not self._rtt_probe_sent:
            self._rtt_probe_sent = True
            self._send_ping(now)
            if interval is not None:
                self._next_keepalive = now + interval
        elif interval is not None and self._next_keepalive is not None and (
            now >= self._next_keepalive
        ):
            if not self._pings:
                self._send_ping(now)
            self._next_keepalive = now + interval

    # -- API user --------------------------------------------------------------

    def open_stream(self) -> int:
        """Allocate a stream id and announce it (SYN) to the peer.

        The SYN is a WINDOW_UPDATE carrying our window increase beyond 256 KiB
        (go-yamux). If ``accept_backlog`` of our streams await the peer's ACK the
        SYN is deferred: the id is valid, ``send_window`` is 0 and a
        ``WindowUpdated`` event follows when the SYN is sent.

        Raises:
            ConnectionClosedError: GoAway sent or received, or session terminated.
            ResourceLimitExceededError: ``max_streams`` outbound streams open, or
                the 32-bit id space is exhausted.
        """
        self._check_open()
        if self._remote_goaway is not None:
            raise ConnectionClosedError(
                "peer sent GoAway: no new streams", code=self._remote_goaway, remote=True
            )
        if self._local_goaway:
            raise ConnectionClosedError("GoAway sent: no new streams", remote=False)
        if self._n_outbound >= self.config.max_streams:
            raise ResourceLimitExceededError(
                f"{self._n_outbound} outbound streams open (max_streams)"
            )
        sid = self._next_id
        if sid > MAX_STREAM_ID:
            raise ResourceLimitExceededError("yamux stream ids exhausted")
        self._next_id = sid + 2
        recv = WindowManager(self.config.initial_window, self._max_window, self._now)
        stream = _Stream(sid, True, _PENDING_SYN, recv)
        self._streams[sid] = stream
        self._n_outbound += 1
        self._stats["streams_opened"] += 1
        if self._syn_backlog < self.config.accept_backlog:
            self._send_syn(stream)
        else:
            if self._pending_syn is None:
                self._pending_syn = deque()
            self._pending_syn.append(sid)
        return sid

    def send_data(self, stream_id: int, data: ReadableBuffer) -> int:
        """Queue as much of ``data`` as the send window allows; returns the bytes taken.

        ``data`` is not copied: DATA frames of at most ``config.max_frame_size``
        reference slices of it (see the module docstring for the lifetime rule).
        Returns 0 when the window is 0 (wait for ``WindowUpdated``) or ``data``
        is empty.

        Raises:
            ConnectionClosedError: the session is terminated.
            StreamResetError: the stream was reset (``.remote`` says by whom).
            ClosedResourceError: we already closed the stream for writing.
            LocalProtocolError: ``stream_id`` was never opened.
        """
        # _writable's usual case inlined (one call fewer per write); it raises the rest
        stream = self._streams.get(stream_id) if self._terminated is None else None
        if stream is None or stream.local_closed:
            stream = self._writable(stream_id)
        window = stream.send_window
        if stream.state == _PENDING_SYN or window <= 0:
            return 0
        mv = data if type(data) is memoryview else memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        total = len(mv)
        n = total if total <= window else window
        if n == 0:
            return 0
        out = self._out
        encode = self._encode
        max_frame = self.config.max_frame_size
        stats = self._stats
        if n <= max_frame:
            out.append(encode(TYPE_DATA, 0, stream_id, n))
            out.append(mv if n == total else mv[:n])
            stats["frames_out"] += 1
            stats["bytes_out"] += n + 12
        else:
            off = 0
            frames = 0
            while off < n:
                size = n - off
                if size > max_frame:
                    size = max_frame
                out.append(encode(TYPE_DATA, 0, stream_id, size))
                out.append(mv[off : off + size])
                off += size
                frames += 1
            stats["frames_out"] += frames
            stats["bytes_out"] += n + 12 * frames
        stream.send_window = window - n
        return n

    def _send_plan(self) -> tuple[bool, int]:
        return True, self.config.max_frame_size

    def send_window(self, stream_id: int) -> int:
        """Bytes :meth:`send_data` would accept now (0 for a deferred SYN).

        Raises the same errors as :meth:`send_data`.
        """
        stream = self._writable(stream_id)
        if stream.state == _PENDING_SYN:
            return 0
        return stream.send_window

    def close_stream(self, stream_id: int) -> None:
        """Half-close: send FIN (a WINDOW_UPDATE|FIN, as go-yamux does); idempotent.

        A no-op on a terminated session or a stream already removed.

        Raises:
            LocalProtocolError: ``stream_id`` was never opened.
        """
        if self._terminated is not None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_known(stream_id)
            return
        if stream.local_closed:
            return
        stream.local_closed = True
        if stream.state != _PENDING_SYN:  # else FIN rides on the SYN
            self._frame(TYPE_WINDOW_UPDATE, FLAG_FIN, stream_id, 0)
        if stream.remote_closed:
            self._remove(stream, _H_CLOSED, 0, False)

    def reset_stream(self, stream_id: int, code: int = 0) -> None:
        """Abort both directions: send WINDOW_UPDATE|RST and forget the stream.

        ``code`` travels in the RST frame's length field (go-yamux stream error
        codes; older peers ignore it). A no-op on a terminated session or a
        stream already removed.

        Raises:
            LocalProtocolError: ``stream_id`` was never opened.
        """
        if self._terminated is not None:
            return
        stream = self._streams.get(stream_id)
        if stream is None:
            self._check_known(stream_id)
            return
        if stream.state != _PENDING_SYN:  # a deferred SYN was never seen by the peer
            self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, stream_id, code & MAX_STREAM_ID)
        self._remove(stream, _H_RESET, code, False)

    def acknowledge_received(self, stream_id: int, n: int, now: float = 0.0) -> None:
        """The application consumed ``n`` bytes of ``stream_id``: return credit.

        A WINDOW_UPDATE is queued once half the window is consumed; the window
        doubles (up to ``config.max_window``) when that took less than two RTTs.
        Ignored for streams already removed or after termination.

        Raises:
            LocalProtocolError: ``n`` exceeds the bytes delivered and unacknowledged.
        """
        if now > self._now:
            self._now = now
        stream = self._streams.get(stream_id)
        if stream is None or self._terminated is not None:
            return
        delta = self._sync(stream).data_consumed(n, self._now, self.rtt)
        if delta and self._demux is not None:
            self._demux.set_credit(stream_id, stream.recv.credit)
        if delta and not stream.remote_closed:
            self._frame(TYPE_WINDOW_UPDATE, 0, stream_id, delta)

    def ping(self, now: float) -> int:
        """Send a ping; returns its opaque value (echoed in ``PingAcknowledged``).

        Raises:
            ConnectionClosedError: the session is terminated.
        """
        self._check_open()
        self._now = now
        return self._send_ping(now)

    def go_away(self, code: int = GoAwayCode.NORMAL) -> None:
        """Send GoAway(``code``).

        NORMAL is graceful (go-yamux ``GoAway``): the peer opens no more streams
        (we RST any SYN), we open none either, existing streams continue. Any
        other code terminates the session: ``ConnectionTerminated(code,
        remote=False)``. Repeated calls and calls after termination are no-ops.
        """
        if self._terminated is not None:
            return
        if code != GoAwayCode.NORMAL:
            self._terminate(int(code), remote=False, reason="local GoAway", send_go_away=True)
            return
        if not self._local_goaway:
            self._local_goaway = True
            self._frame(TYPE_GO_AWAY, 0, 0, 0)

    # -- frame handlers ----------------------------------------------------------

    def _on_data(self, flags: int, sid: int, payload: Any) -> None:
        if flags & FLAG_SYN:
            stream = self._on_syn(sid)
            if stream is None:
                return
        else:
            stream = self._streams.get(sid)
            if stream is None:
                self._on_unknown(sid, 0 if payload is None else len(payload))
                return
        if flags & FLAG_ACK:
            self._on_ack(stream)
        if payload is not None and len(payload):
            if stream.remote_closed:
                raise RemoteProtocolError(f"DATA on stream {sid} after the peer's FIN")
            self._sync(stream).data_received(len(payload))
            if self._demux is not None:
                self._demux.set_credit(sid, stream.recv.credit)
            if type(payload) is not memoryview:
                payload = memoryview(payload)
            self._events.append(DataReceived(sid, payload))
        if flags & FLAG_RST:
            self._on_rst(stream, 0)
        elif flags & FLAG_FIN:
            self._on_fin(stream)

    def _on_window_update(self, flags: int, sid: int, delta: int) -> None:
        if flags & FLAG_SYN:
            stream = self._on_syn(sid)
            if stream is None:
                return
        else:
            stream = self._streams.get(sid)
            if stream is None:
                self._on_unknown(sid, 0)
                return
        if flags & FLAG_ACK:
            self._on_ack(stream)
        if flags & FLAG_RST:
            # go-yamux: a WINDOW_UPDATE|RST carries the stream error code in its length.
            self._on_rst(stream, delta)
            return
        if delta:
            window = stream.send_window + delta
            if window > MAX_WIRE_WINDOW:
                raise FlowControlError(f"send window of stream {sid} exceeds 2**32-1")
            stream.send_window = window
            if not stream.local_closed and stream.state != _PENDING_SYN:
                self._events.append(WindowUpdated(sid))
        if flags & FLAG_FIN:
            self._on_fin(stream)

    def _on_syn(self, sid: int) -> _Stream | None:
        # yamux spec: "The client side should use odd ID's, and the server even";
        # "the 0 ID is reserved to represent the session".
        if sid == 0 or sid & 1 == self._local_parity:
            raise RemoteProtocolError(f"SYN with stream id {sid} of the wrong parity")
        if sid in self._streams or sid in self._history:
            raise RemoteProtocolError(f"SYN reuses stream id {sid}")
        if sid > self._max_peer_id:
            self._max_peer_id = sid
        config = self.config
        if self._local_goaway or self._backlog_full or self._n_inbound >= config.max_streams:
            # libp2p yamux spec (ACK backlog): refuse with RST, not a session error;
            # go-yamux does the same for MaxIncomingStreams and a full accept backlog.
            self._frame(TYPE_WINDOW_UPDATE, FLAG_RST, sid, 0)
            self._history.remember(sid, _H_RESET, int(StreamErrorCode.RESOURCE_LIMIT), False)
            self._stats["streams_rejected"] += 1
            return None
        recv = WindowManager(config.initial_window, self._max_window, self._now)
        stream = _Stream(sid, False, _ESTABLISHED, recv)
        self._streams[sid] = stream
        self._n_inbound += 1
        self._unaccepted += 1
        self._stats["streams_accepted"] += 1
        self._events.append(StreamOpened(sid))
        # yamux spec: "The receiver must then reply with either a data or window
        # update frame with the StreamID along with the ACK flag"; a larger window
        # rides on it ("can immediately send a window update as part of the SYN/ACK").
        self._frame(TYPE_WINDOW_UPDATE, FLAG_ACK, sid, recv.initial_delta())
        return stream

    def _on_ack(self, stream: _Stream) -> None:
        if stream.state == _SYN_SENT:
            stream.state = _ESTABLISHED
            self._syn_backlog -= 1
            self._release_pending()

    def _on_fin(self, stream: _Stream) -> None:
        if stream.remote_closed:
            return
        stream.remote_closed = True
        if self._demux is not None:
            # DATA after the peer's FIN is a protocol error: the slow path says so.
            self._sync(stream)
            self._demux.detach(stream.stream_id)
        self._events.append(StreamEnded(stream.stream_id))
        if stream.local_closed:
            self._remove(stream, _H_CLOSED, 0, True)

    def _on_rst(self, stream: _Stream, code: int) -> None:
        self._events.append(StreamReset(stream.stream_id, code))
        self._remove(stream, _H_RESET, code, True)

    def _on_unknown(self, sid: int, nbytes: int) -> None:
        """A non-SYN frame for a stream not in the table."""
        hist = self._history.get(sid)
        if hist is not None:
            if hist[0] == _H_CLOSED and nbytes:
                raise RemoteProtocolError(f"DATA on stream {sid} after the peer's FIN")
            # go-yamux ignores frames for recently closed or reset streams: they
            # cross our RST/FIN on the wire. Payload is dropped uncounted.
            return
        if sid != 0:
            if sid & 1 == self._local_parity:
                if sid < self._next_id:
                    return  # ours, forgotten from the bounded history
            elif sid <= self._max_peer_id:
                return
        raise RemoteProtocolError(f"frame for stream {sid}, which was never opened")

    def _on_ping(self, flags: int, opaque: int, now: float) -> None:
        if flags & FLAG_SYN:
            gate = self.pong_gate
            if self.drop_pongs or (gate is not None and gate()):
                self._stats["pings_dropped"] += 1
                return
            # yamux spec: the length "Contains an opaque value, echoed back".
            self._frame(TYPE_PING, FLAG_ACK, 0, opaque)
        elif flags & FLAG_ACK:
            sent = self._pings.pop(opaque, None)
            if sent is None:
                return  # not ours, or forgotten: ignore
            rtt = now - sent
            if rtt < 0:
                rtt = 0.0
            self.rtt = rtt
            self._events.append(PingAcknowledged(opaque, rtt))

    def _on_go_away(self, code: int) -> None:
        first = self._remote_goaway is None
        self._remote_goaway = code
        if first:
            self._events.append(GoAwayReceived(code))
        if code != GoAwayCode.NORMAL:
            # go-yamux: a protocol/internal error GoAway ends the session.
            self._terminate(code, remote=True, reason="peer sent GoAway with an error code",
                            send_go_away=False)

    # -- helpers -------------------------------------------------------------------

    def _frame(self, ftype: int, flags: int, sid: int, length: int) -> None:
        self._out.append(self._encode(ftype, flags, sid, length))
        stats = self._stats
        stats["frames_out"] += 1
        stats["bytes_out"] += 12

    def _send_syn(self, stream: _Stream) -> None:
        flags = FLAG_SYN | FLAG_FIN if stream.local_closed else FLAG_SYN
        self._frame(TYPE_WINDOW_UPDATE, flags, stream.stream_id, self._sync(stream).initial_delta())
        if self._demux is not None:
            self._demux.set_credit(stream.stream_id, stream.recv.credit)
        stream.state = _SYN_SENT
        self._syn_backlog += 1

    def _release_pending(self) -> None:
        pending = self._pending_syn
        if pending is None:
            return
        limit = self.config.accept_backlog
        while pending and self._syn_backlog < limit:
            stream = self._streams.get(pending.popleft())
            if stream is None or stream.state != _PENDING_SYN:
                continue
            self._send_syn(stream)
            if not stream.local_closed:
                self._events.append(WindowUpdated(stream.stream_id))

    def _send_ping(self, now: float) -> int:
        opaque = self._next_opaque
        self._next_opaque = opaque + 1 if opaque < MAX_STREAM_ID else 1
        pings = self._pings
        if len(pings) >= MAX_OUTSTANDING_PINGS:
            del pings[next(iter(pings))]
        pings[opaque] = now
        self._frame(TYPE_PING, FLAG_SYN, 0, opaque)
        return opaque

    def _remove(self, stream: _Stream, kind: bool, code: int, remote: bool) -> None:
        del self._streams[stream.stream_id]
        if self._demux is not None:
            self._demux.detach(stream.stream_id)
        self._history.remember(stream.stream_id, kind, code, remote)
        if stream.outbound:
            self._n_outbound -= 1
        else:
            self._n_inbound -= 1
        if stream.state == _SYN_SENT:
            self._syn_backlog -= 1
            self._release_pending()

    def _check_known(self, stream_id: int) -> None:
        if stream_id in self._history:
            return
        if stream_id > 0:
            if stream_id & 1 == self._local_parity:
                if stream_id < self._next_id:
                    return
            elif stream_id <= self._max_peer_id:
                return
        raise LocalProtocolError(f"stream {stream_id} was never opened")

    def _terminate(self, code: int, *, remote: bool, reason: str, send_go_away: bool) -> None:
        if self._terminated is not None:
            return
        if send_go_away:
            self._frame(TYPE_GO_AWAY, 0, 0, code)
        self._terminated = (code, remote)
        for sid in list(self._streams):
            self._history.remember(sid, _H_RESET, int(StreamErrorCode.NONE), remote)
        self._streams.clear()
        if self._demux is not None:
            self._demux.clear()
        self._pending_syn = None
        self._n_inbound = self._n_outbound = self._syn_backlog = 0
        self._pings.clear()
        self._events.append(ConnectionTerminated(code, remote, reason))

    def _fail(self, exc: ProtocolError) -> None:
        code = int(getattr(exc, "error_code", GoAwayCode.PROTOCOL_ERROR))
        self._terminate(code, remote=False, reason=str(exc), send_go_away=True)
