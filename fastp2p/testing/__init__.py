"""Public test kit: connected host pairs for tests of code built on fastp2p."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastp2p.config import HostConfig
from fastp2p.host import Host
from fastp2p.peer import PeerID

__all__ = ["host_pair"]


@contextlib.asynccontextmanager
async def host_pair(
    config: HostConfig | None = None,
    *,
    listen: str = "/ip4/127.0.0.1/tcp/0",
) -> AsyncIterator[tuple[Host, Host, PeerID]]:
    """Two running Hosts, the first connected to the second over TCP loopback.

    Yields ``(dialer, listener, listener_peer_id)``.
    """
    async with Host(listen=[listen], config=config) as b, Host(config=config) as a:
        peer = await a.connect(b.full_addrs[0])
        yield a, b, peer
