"""Bootstrap list (``HostConfig.bootstrap``): dial, fill the routing table, retry with backoff.

At start the Host dials every bootstrap multiaddr; a failed dial is retried
after 1, 2, 4, ... seconds (capped at ``MAX_BACKOFF``, with jitter) until it
succeeds or the host closes. Each success adds the peer to the DHT (when one
runs) and bootstraps it (own-id lookup and bucket refresh), so the routing
table fills as soon as one bootstrap peer answers.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastp2p.errors import P2PError

if TYPE_CHECKING:
    from fastp2p.peer import PeerID

__all__ = ["start_bootstrap", "Bootstrapper", "INITIAL_BACKOFF", "MAX_BACKOFF"]

log = logging.getLogger("fastp2p.bootstrap")

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0


class Bootstrapper:
    """Dials the bootstrap peers of one host until each answered once."""

    def __init__(self, host: Any, addrs: Iterable[str], *, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF) -> None:
        self.host = host
        self.addrs = list(addrs)
        self.initial_backoff = initial_backoff
        self.max_backoff = max_backoff
        #: peers connected so far
        self.connected: list[PeerID] = []
        #: set once every address connected at least once
        self.done = asyncio.Event()
        #: dial attempts per address (for tests and logs)
        self.attempts: dict[str, int] = {}

    async def run(self) -> None:
        await asyncio.gather(*(self._one(a) for a in self.addrs))
        self.done.set()

    async def _one(self, addr: str) -> None:
        delay = self.initial_backoff
        while True:
            self.attempts[addr] = self.attempts.get(addr, 0) + 1
            try:
                peer = await self.host.connect(addr)
            except (P2PError, OSError, TimeoutError) as exc:
                log.info("bootstrap %s failed (%s); retrying in %.1f s", addr, exc, delay)
                await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                delay = min(delay * 2, self.max_backoff)
                continue
            self.connected.append(peer)
            dht = getattr(self.host, "_dht", None)
            if dht is not None:
                try:
                    await dht.bootstrap([addr])
                except (P2PError, OSError, TimeoutError) as exc:
                    log.info("dht bootstrap through %s: %s", addr, exc)
            return


def start_bootstrap(host: Any, addrs: Iterable[str]) -> Bootstrapper:
    """Start dialling ``addrs`` in a task the host owns; returns the :class:`Bootstrapper`."""
    b = Bootstrapper(host, addrs)
    host.bootstrapper = b
    host.spawn(b.run())
    return b
