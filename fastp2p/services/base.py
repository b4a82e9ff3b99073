"""The small host interface that services see (never a Host's private members).

``Host`` implements it; a service (identify, ping, data paths, pubsub, ...)
is constructed with the host and may use only these members, so the facade
can change without touching its services.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import asyncio

    from fastp2p._typing import Handler
    from fastp2p.config import HostConfig
    from fastp2p.memory import MemoryManager
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.peer import Ed25519PrivateKey, PeerID
    from fastp2p.peerstore import PeerInfo, Peerstore
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = ["ServiceHost"]


class ServiceHost(Protocol):
    """What a service may use of the Host that owns it."""

    peer_id: PeerID
    identity: Ed25519PrivateKey
    config: HostConfig
    peerstore: Peerstore
    memory: MemoryManager

    @property
    def addrs(self) -> list[Multiaddr]:
        """Listen addresses."""

    @property
    def protocols(self) -> list[str]:
        """Protocols served."""

    @property
    def connections(self) -> list[Connection]:
        """Every open connection."""

    def set_handler(self, protocol: str, handler: Handler, *, match: Callable[[str], bool] | None = None) -> None:
        """Serve ``protocol``."""

    def remove_handler(self, protocol: str) -> None:
        """Stop serving ``protocol``."""

    def on_connection(self, callback: Callable[[Connection], Any]) -> None:
        """Be told of every new connection."""

    def on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        """Be told of every closed connection (a loop iteration after the close)."""

    def connection(self, peer: PeerID) -> Connection | None:
        """An open connection to ``peer``, or None."""

    async def connect(self, addr: str | Multiaddr | PeerInfo) -> PeerID:
        """Connect to a peer (no-op if connected); its authenticated PeerID."""

    async def open_stream(self, peer: PeerID, *protocols: str) -> Stream:
        """Open a negotiated stream."""

    def open_stream_nowait(self, conn: Connection, protocol: str, *,
                           reads_first: bool = False) -> Stream | None:
        """Open a stream on ``conn`` proposing ``protocol`` optimistically (None: await ``open_stream``)."""

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the host cancels and awaits when it closes."""

    async def wait_identified(self, conn: Connection) -> None:
        """Wait until identify on ``conn`` finished (at once if identify is off)."""
