"""Transport ABCs: small on purpose (go-libp2p core/transport)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Coroutine
from typing import Any

from fastp2p.multiaddr import Multiaddr


class RawConnection(abc.ABC):
    """An unsecured byte pipe produced by a transport (TCP today)."""

    @property
    @abc.abstractmethod
    def write_paused(self) -> bool:
        """True while the write buffer is above its high-water mark."""

    @property
    def pause_state(self) -> Any:
        """An object whose ``write_paused`` is this connection's and stays so for
        its life (a stream's write reads it per message: an attribute there
        costs no call); by default the connection itself."""
        return self

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop reading from the socket (backpressure)."""

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Resume reading from the socket."""

    local_addr: Multiaddr | None
    remote_addr: Multiaddr | None
    outbound: bool

    @abc.abstractmethod
    async def read_some(self) -> bytes:
        """Bytes received so far (waiting for at least one); b"" at EOF."""

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending. The caller hands ``data`` over: it may be
        sent later without a copy, so it must not change afterwards."""

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until the write buffer is below its high-water mark."""

    @abc.abstractmethod
    def start_push(
        self,
        on_data: Callable[[memoryview], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> bytes:
        """Deliver further bytes to ``on_data``; returns what was already buffered."""

    def redirect_push(self, on_data: Callable[[memoryview], None]) -> bool:
        """After ``start_push``: deliver further bytes to ``on_data`` instead.
        False where the transport cannot (the caller then forwards itself)."""
        return False

    def hold_flush(self) -> None:
        """Keep every write from now to the end of this loop pass, then send them
        in one go: a hint at a protocol step's boundary (``TcpConnection``
        coalesces on it; a transport that does not, ignores it)."""
        return  # the default: each write leaves as it comes, nothing to hold

    def hold_past_tasks(self) -> None:
        """``hold_flush``, and if this pass's end is already scheduled, let it wait
        one more turn of the loop: the tasks made since (a new stream's handler)
        take their first step before the pass's bytes leave, and their writes
        leave with them."""
        self.hold_flush()

    def limit_reads(self, n: int) -> None:
        """Read at most ``n`` bytes per read from now on (0: any size): the
        receive step's hint that a large lent buffer is being filled, so that a
        read does not bring more than fits. A transport that reads into buffers
        of its own choosing ignores it."""
        return  # the default: reads are sized by the transport

    def cap_reads(self, n: int) -> None:
        """No read of more than ``n`` bytes, whatever ``limit_reads`` says (0: no
        cap): a muxer without flow control (mplex) pauses reading once a stream
        holds its soft limit of unread bytes, and resets it past twice that, so
        one read must not bring more than the soft limit. Transports that read
        into buffers of their own choosing ignore it."""
        return

    def wake_after(self, n: int) -> None:
        """Wake the reader only once ``n`` bytes can be read (0: any): the receive
        step's count of bytes certain to come (``wake_hint``). Over TCP it is the
        socket's receive low-water mark; other transports ignore it."""
        return

    #: True while a write already left in this loop pass (a transport that has
    #: no passes leaves it False); read on every send, so a plain attribute
    in_pass: bool = False

    def defer_to_pass_end(self, cb: Callable[[], None]) -> bool:
        """If a write already left in this loop pass, call ``cb`` at the pass's
        end, just before the pass's coalesced bytes leave, and return True (one
        callback per pass: another one is refused). False: nothing registered,
        the caller writes now. For senders that batch the small writes of one
        pass (``NoisePath`` seals them in one AEAD call)."""
        return False  # the default: no passes, every write leaves as it comes

    def flush(self) -> None:
        """Send what is queued now, ending a :meth:`hold_flush`: for a message
        the peer must answer before anything else can happen."""
        return  # the default: nothing is ever queued

    @abc.abstractmethod
    def close(self) -> None:
        """Close gracefully (flush, then FIN)."""

    @abc.abstractmethod
    def abort(self) -> None:
        """Close immediately, dropping unsent data."""


class Listener(abc.ABC):
    """A bound listening endpoint."""

    addrs: list[Multiaddr]

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Stop accepting connections."""


class DataPath(abc.ABC):
    """Carries one connection's muxer frames (plaintext yamux/mplex bytes).

    A ``Connection`` sends through exactly one data path at a time and receives
    from exactly one: Noise over the raw TCP connection at first, a shared-memory
    ring or an RDMA queue pair after an in-band upgrade. A path delivers what it
    receives by calling the ``deliver(data, transient)`` callback it was started
    with; ``transient`` means the bytes live in memory the peer will reuse once
    the callback returns (a shared ring), so whoever keeps them must copy.
    """

    #: ``"tcp"``, ``"shm"`` or ``"rdma"``
    name: str = ""
    #: receive windows larger than this only queue bytes in front of the path
    #: (a shared ring's size); None: no such limit
    window_hint: int | None = None

    @abc.abstractmethod
    def send(self, bufs: list[memoryview]) -> int:
        """Hand muxer frames to the path; returns bytes accounted on the wire.

        The buffers may be reused by the caller as soon as this returns.
        """

    @property
    @abc.abstractmethod
    def write_paused(self) -> bool:
        """True while the path holds more unsent bytes than its high-water mark."""

    @property
    def pause_state(self) -> Any:
        """An object whose ``write_paused`` is this path's (see
        ``RawConnection.pause_state``); by default the path itself."""
        return self

    @abc.abstractmethod
    async def drain(self) -> None:
        """Wait until ``write_paused`` is False (raises if the path broke)."""

    def hold(self) -> None:
        """Keep what is sent from now to the end of this loop pass and send it in
        one go: a hint that more frames follow in the same pass (a stream's
        opening frame and its first write; the acknowledgment of a peer's new
        stream and its handler's answer). A path without passes ignores it."""
        return  # the default: each send leaves as it comes

    def hold_past_tasks(self) -> None:
        """``hold``, with the pass's end after the first step of the tasks made
        so far (``RawConnection.hold_past_tasks``)."""
        self.hold()

    @abc.abstractmethod
    def pause_reading(self) -> None:
        """Stop delivering received bytes (backpressure from a slow stream)."""

    @abc.abstractmethod
    def resume_reading(self) -> None:
        """Resume delivering received bytes."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release the path's resources. Idempotent."""


class Transport(abc.ABC):
    """Makes raw connections: dials multiaddrs and listens on them (go-libp2p ``Transport``).

    A Host holds a list of transports; it dials with the first whose
    ``can_dial`` accepts the address and listens with the first whose
    ``can_listen`` does. Security and multiplexing are added above, by the
    upgrader, the same way for every transport.
    """

    @abc.abstractmethod
    def can_dial(self, addr: Multiaddr) -> bool:
        """Whether this transport handles ``addr``."""

    def can_listen(self, addr: Multiaddr) -> bool:
        """Whether this transport can listen on ``addr`` (default: as ``can_dial``)."""
        return self.can_dial(addr)

    @abc.abstractmethod
    async def dial(self, addr: Multiaddr) -> RawConnection:
        """Open a raw connection to ``addr`` (``DialError`` on failure)."""

    @abc.abstractmethod
    async def listen(
        self, addr: Multiaddr, on_connection: Callable[[RawConnection], Coroutine[Any, Any, None]]
    ) -> Listener:
        """Listen on ``addr``; each accepted raw connection goes to ``on_connection``."""
