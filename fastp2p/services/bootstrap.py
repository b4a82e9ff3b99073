"""Bootstrap list (``HostConfig.bootstrap``): dial, fill the routing table, retry with backoff.

At start the Host dials every bootstrap multiaddr; a failed dial is retried
after 1, 2, 4, ... seconds (capped at ``MAX_BACKOFF``, with jitter) until it
succeeds or the host closes. Each success adds the peer to the DHT (when one
runs) and bootstraps it (own-id lookup and bucket refresh), so the routing
table fills as soon as one bootstrap peer answers; a failed DHT bootstrap is
retried like a failed dial. Afterwards, whenever the DHT's routing table is
found empty (checked every ``REFILL_INTERVAL`` seconds: every peer left or
failed), the list is dialled again the same way. A malformed multiaddr fails
``Host.start`` at once instead of being retried forever.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from fastp2p.errors import P2PError
from fastp2p.multiaddr import Multiaddr

if TYPE_CHECKING:
    from fastp2p.peer import PeerID

__all__ = ["start_bootstrap", "Bootstrapper", "INITIAL_BACKOFF", "MAX_BACKOFF", "REFILL_INTERVAL"]

log = logging.getLogger("fastp2p.bootstrap")

INITIAL_BACKOFF = 1.0
MAX_BACKOFF = 60.0
#: seconds between checks for an empty routing table after the first pass
REFILL_INTERVAL = 60.0


class Bootstrapper:
    """Dials the bootstrap peers of one host until each answered once."""

    def __init__(self, host: Any, addrs: Iterable[str], *, initial_backoff: float = INITIAL_BACKOFF,
                 max_backoff: float = MAX_BACKOFF, refill_interval: float = REFILL_INTERVAL) -> None:
        self.host = host
        self.addrs = list(addrs)
        for a in self.addrs:
            Multiaddr(a)  # MultiaddrError now, not a retry loop that can never succeed
        self.refill_interval = refill_interval
        #: passes over the list made because the routing table was empty
        self.refills = 0
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
        if not self.host.config.dht.enabled:
            return
        while True:
            await asyncio.sleep(self.refill_interval)
            if not self.host.dht.routing_table():
                self.refills += 1
                log.info("dht routing table empty; dialling the %d bootstrap peers again", len(self.addrs))
                await asyncio.gather(*(self._one(a) for a in self.addrs))

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
            if peer not in self.connected:
                self.connected.append(peer)
            if self.host.config.dht.enabled:
                try:
                    await self.host.dht.bootstrap([addr])
                except (P2PError, OSError, TimeoutError) as exc:
                    log.info("dht bootstrap through %s failed (%s); retrying in %.1f s", addr, exc, delay)
                    await asyncio.sleep(delay * random.uniform(0.8, 1.2))
                    delay = min(delay * 2, self.max_backoff)
                    continue
            return


def start_bootstrap(host: Any, addrs: Iterable[str]) -> Bootstrapper:
    """Start dialling ``addrs`` in a task the host owns; returns the :class:`Bootstrapper`."""
    b = Bootstrapper(host, addrs)
    host.bootstrapper = b
    host.spawn(b.run())
    return b
