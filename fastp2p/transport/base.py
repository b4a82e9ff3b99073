"""Transport ABCs: small on purpose (go-libp2p core/transport)."""

from __future__ import annotations

import abc
from collections.abc import Callable

from fastp2p.multiaddr import Multiaddr


class RawConnection(abc.ABC):
    """An unsecured byte pipe produced by a transport (TCP today)."""

    local_addr: Multiaddr | None
    remote_addr: Multiaddr | None
    outbound: bool

    @abc.abstractmethod
    async def read_some(self) -> bytes:
        """Bytes received so far (waiting for at least one); b"" at EOF."""

    @abc.abstractmethod
    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Queue ``data`` for sending."""

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
