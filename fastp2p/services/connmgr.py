"""Connection manager: keep the number of connections between two watermarks.

``host.connection_manager`` is a :class:`ConnectionManager`, configured by
``HostConfig.connection_manager`` (:class:`~fastp2p.config.ConnectionManagerConfig`)::

    cm = host.connection_manager
    cm.protect(peer, "my-app")          # never trimmed while protected
    cm.tag_peer(peer, "useful", 10)     # higher total value: trimmed later
    closed = await cm.trim()            # trim now (it also runs on its own)

Rules (the decision is :class:`TrimPolicy`, a pure function of its inputs):

- Trimming starts when the host has more than ``high_watermark`` connections
  and closes connections until ``low_watermark`` remain (hysteresis: a trim
  that could not reach the low watermark because candidates were still in
  their grace period continues as their grace periods end).
- Never closed: connections to protected peers (``protect``; the DHT's
  ``k`` closest routing-table peers under ``"kad"``, pubsub mesh peers under
  ``"pubsub-mesh"``) and connections younger than ``grace_period``.
- Among the rest the lowest value goes first: the value of a peer is the sum
  of its tag values (go-libp2p's ``TagPeer``); ties: fewer open streams
  first, then the newest connection first.
- Checks run shortly after a connection that takes the host above the high
  watermark (``TRIM_DEBOUNCE``, so a burst costs one pass), when a grace
  period of a pending candidate ends, and every ``trim_interval`` seconds
  once the host first went above the high watermark. A closed connection
  sends GoAway and resets its streams, like ``Connection.aclose``.
- Tags last until ``untag_peer`` or until a trim pass (or a table of tagged
  peers grown to twice the connections) finds the peer with no connection
  (go-libp2p drops a peer's tags on disconnect); protections last until
  ``unprotect``. Tagging a peer before connecting to it works when the
  connection comes before the next trim.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastp2p.metrics import MetricFamily

if TYPE_CHECKING:
    from fastp2p.config import ConnectionManagerConfig
    from fastp2p.peer import PeerID
    from fastp2p.services.kad import Dht
    from fastp2p.services.pubsub import Pubsub
    from fastp2p.transport.conn import Connection

__all__ = [
    "ConnectionManager",
    "TrimPolicy",
    "TrimCandidate",
    "TrimPlan",
    "KAD_TAG",
    "PUBSUB_MESH_TAG",
    "TRIM_DEBOUNCE",
    "dht_closest_peers",
    "pubsub_mesh_peers",
]

log = logging.getLogger("fastp2p.connmgr")

#: protection tag of the DHT's closest routing-table peers
KAD_TAG = "kad"
#: protection tag of gossipsub mesh peers
PUBSUB_MESH_TAG = "pubsub-mesh"
#: seconds between a connection over the high watermark and the trim pass;
#: also the least time between two passes
TRIM_DEBOUNCE = 0.1


# -- the pure policy ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TrimCandidate:
    """What the policy knows of one open connection."""

    conn: Any
    peer: Any
    outbound: bool
    opened_at: float
    streams: int


@dataclass(frozen=True, slots=True)
class TrimPlan:
    """A policy decision: connections to close, in order, and when to look again."""

    close: tuple[TrimCandidate, ...]
    #: total connections when planned
    count: int
    #: why (for the log), empty when nothing is to be done
    reason: str
    #: when a connection now in its grace period becomes a candidate and the
    #: low watermark is not reached yet (same clock as ``now``); None otherwise
    recheck_at: float | None


class TrimPolicy:
    """Decides which connections to close; no I/O, no clock (``now`` is an argument)."""

    __slots__ = ("high", "low", "grace")

    def __init__(self, high: int, low: int, grace: float) -> None:
        if not 0 <= low <= high:
            raise ValueError(f"need 0 <= low watermark <= high watermark, got {low}, {high}")
        self.high = high
        self.low = low
        self.grace = grace

    def plan(
        self,
        conns: Sequence[TrimCandidate],
        *,
        now: float,
        protected: Collection[Any] = (),
        values: Mapping[Any, int] | None = None,
        active: bool = False,
    ) -> TrimPlan:
        """Connections to close so the count falls to the low watermark.

        Args:
            conns: every open connection.
            now: the current time, on the clock of ``opened_at``.
            protected: peers whose connections are never closed.
            values: the value of each peer (sum of its tags; missing means 0).
            active: a trim started earlier has not reached the low watermark
                yet; keep going even if the count is not above the high one.
        """
        n = len(conns)
        if n <= self.low or (n <= self.high and not active):
            return TrimPlan((), n, "", None)
        vals = values or {}
        candidates: list[TrimCandidate] = []
        young_expiry: float | None = None
        for c in conns:
            if c.peer in protected:
                continue
            if now - c.opened_at < self.grace:
                expiry = c.opened_at + self.grace
                young_expiry = expiry if young_expiry is None else min(young_expiry, expiry)
                continue
            candidates.append(c)
        candidates.sort(key=lambda c: (vals.get(c.peer, 0), c.streams, -c.opened_at))
        close = tuple(candidates[: n - self.low])
        left = n - len(close)
        reason = (
            f"{n} connections > high watermark {self.high}" if n > self.high
            else f"{n} connections, still trimming to the low watermark"
        ) + f"; trimming to {self.low}"
        recheck = young_expiry if left > self.low else None
        return TrimPlan(close, n, reason, recheck)


# -- service sources ---------------------------------------------------------------------


def dht_closest_peers(dht: Dht) -> Callable[[], list[PeerID]]:
    """The DHT's ``k`` closest routing-table peers, read when asked."""
    return lambda: dht.routing_table()[: dht.config.k]


def pubsub_mesh_peers(pubsub: Pubsub) -> Callable[[], set[PeerID]]:
    """Our gossipsub mesh peers over all subscribed topics, read when asked."""
    return lambda: {p for t in pubsub.topics for p in pubsub.mesh(t)}


# -- the asyncio driver ------------------------------------------------------------------


class ConnectionManager:
    """Trims a host's connections (see the module docstring); ``host.connection_manager``."""

    def __init__(self, host: Any, config: ConnectionManagerConfig) -> None:
        self.host = host
        self.config = config
        self.policy = TrimPolicy(config.high_watermark, config.low_watermark, config.grace_period)
        self._protected: dict[PeerID, set[str]] = {}
        self._tags: dict[PeerID, dict[str, int]] = {}
        self._protectors: dict[str, Callable[[], Iterable[PeerID]]] = {}
        self._tag_sources: dict[str, tuple[Callable[[], Iterable[PeerID]], int]] = {}
        self._task: asyncio.Task[Any] | None = None
        self._wake: asyncio.Event | None = None
        self._active = False
        self._recheck_at: float | None = None
        self._closed = False
        self._lock: asyncio.Lock | None = None
        #: trim passes run, and connections they closed
        self.trims = 0
        self.trimmed = 0
        if config.enabled:
            host.on_connection(self._on_connection)
        host.metrics_registry.add_collector(self._collect)

    # -- protection and tags -----------------------------------------------------------

    def protect(self, peer: PeerID, tag: str) -> None:
        """Never trim connections to ``peer`` until every tag it is protected by is removed."""
        self._protected.setdefault(peer, set()).add(tag)

    def unprotect(self, peer: PeerID, tag: str) -> bool:
        """Remove one protection tag; True if ``peer`` is still protected (by another tag)."""
        tags = self._protected.get(peer)
        if tags is not None:
            tags.discard(tag)
            if not tags:
                del self._protected[peer]
        return self.is_protected(peer)

    def is_protected(self, peer: PeerID, tag: str | None = None) -> bool:
        """Whether ``peer`` is protected (by ``tag``, or by any tag when None)."""
        if tag is None:
            return peer in self._protected or any(peer in set(fn()) for fn in self._protectors.values())
        if tag in self._protected.get(peer, ()):
            return True
        fn = self._protectors.get(tag)
        return fn is not None and peer in set(fn())

    def tag_peer(self, peer: PeerID, tag: str, value: int) -> None:
        """Set ``peer``'s ``tag`` to ``value``; its value is the sum of its tags."""
        self._tags.setdefault(peer, {})[tag] = int(value)
        if len(self._tags) > 2 * max(64, len(self.host.connections)):
            # Bound the table on hosts that never trim: forget disconnected peers'
            # tags (amortised: the table at least halves each time).
            self._prune_tags(keep=peer)

    def _prune_tags(self, keep: PeerID | None = None) -> None:
        live = {c.remote_peer for c in self.host.connections}
        live.add(keep)
        for peer in [p for p in self._tags if p not in live]:
            del self._tags[peer]

    def untag_peer(self, peer: PeerID, tag: str) -> None:
        """Remove one tag of ``peer``."""
        tags = self._tags.get(peer)
        if tags is not None:
            tags.pop(tag, None)
            if not tags:
                del self._tags[peer]

    def tags(self, peer: PeerID) -> dict[str, int]:
        """``peer``'s tags (the services' included) and their values."""
        out = dict(self._tags.get(peer, {}))
        for tag, (fn, value) in self._tag_sources.items():
            if peer in set(fn()):
                out[tag] = out.get(tag, 0) + value
        return out

    def value(self, peer: PeerID) -> int:
        """The sum of ``peer``'s tag values: lower values are trimmed first."""
        return sum(self.tags(peer).values())

    def add_protector(self, tag: str, peers: Callable[[], Iterable[PeerID]]) -> None:
        """Protect whatever peers ``peers()`` returns at each trim, under ``tag``.

        Services use it (the Host wires the DHT and pubsub), so their sets are
        read when a decision is made instead of mirrored on every change.
        """
        self._protectors[tag] = peers

    def add_tag_source(self, tag: str, peers: Callable[[], Iterable[PeerID]], value: int) -> None:
        """Tag whatever peers ``peers()`` returns at each trim with ``tag`` = ``value``."""
        self._tag_sources[tag] = (peers, int(value))

    # -- trimming ------------------------------------------------------------------------

    async def trim(self) -> int:
        """Trim now (if above the high watermark); the number of connections closed."""
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            return await self._trim_once()

    async def _trim_once(self) -> int:
        if self._closed:
            return 0
        conns = [c for c in self.host.connections if not c.is_closed]
        self._prune_tags()
        protected: set[Any] = set(self._protected)
        for fn in self._protectors.values():
            protected.update(fn())
        values: dict[Any, int] = {p: sum(t.values()) for p, t in self._tags.items()}
        for fn, value in self._tag_sources.values():
            for p in set(fn()):
                values[p] = values.get(p, 0) + value
        by_key = {c.id: c for c in conns}
        cands = [
            TrimCandidate(c.id, c.remote_peer, c.outbound, c.stats.opened_at, len(c.streams)) for c in conns
        ]
        now = time.time()
        plan = self.policy.plan(cands, now=now, protected=protected, values=values, active=self._active)
        self._active = plan.recheck_at is not None
        self._recheck_at = plan.recheck_at
        if not plan.close:
            if plan.reason:
                log.debug("connmgr: %s, but no connection may be closed yet", plan.reason)
            return 0
        self.trims += 1
        log.info("connmgr: %s: closing %d", plan.reason, len(plan.close))
        for cand in plan.close:
            conn = by_key[cand.conn]
            log.info(
                "connmgr: closing %s connection with %s (value %d, %d streams, age %.1f s)",
                "outbound" if cand.outbound else "inbound", cand.peer, values.get(cand.peer, 0),
                cand.streams, now - cand.opened_at, extra=conn.log_extra,
            )
            await conn.aclose()
            self.trimmed += 1
        return len(plan.close)

    def _on_connection(self, conn: Connection) -> None:
        if self._closed or len(self.host.connections) <= self.config.high_watermark:
            return
        if self._task is None:
            self._wake = asyncio.Event()
            self._task = self.host.spawn(self._run())
        assert self._wake is not None
        self._wake.set()

    async def _run(self) -> None:
        assert self._wake is not None
        while not self._closed:
            # Debounce: a burst of new connections costs one pass.
            await asyncio.sleep(TRIM_DEBOUNCE)
            self._wake.clear()
            try:
                await self.trim()
            except Exception:
                log.exception("connmgr: trim failed")
            delay = self.config.trim_interval
            if self._recheck_at is not None:
                delay = min(delay, max(0.0, self._recheck_at - time.time()))
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

    def close(self) -> None:
        """Stop trimming (the host cancels the task when it closes)."""
        self._closed = True

    # -- statistics ------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        """Watermarks, trim passes, connections trimmed, protected and tagged peers."""
        protected = set(self._protected)
        for fn in self._protectors.values():
            protected.update(fn())
        return {
            "enabled": self.config.enabled,
            "high_watermark": self.config.high_watermark,
            "low_watermark": self.config.low_watermark,
            "connections": len(self.host.connections),
            "trims": self.trims,
            "trimmed": self.trimmed,
            "protected_peers": len(protected),
            "tagged_peers": len(self._tags),
        }

    def _collect(self) -> list[MetricFamily]:
        s = self.stats()
        return [
            MetricFamily("fastp2p_connmgr_trims_total", "counter",
                         "Connection manager passes that closed connections.", (), {(): s["trims"]}),
            MetricFamily("fastp2p_connmgr_trimmed_total", "counter",
                         "Connections closed by the connection manager.", (), {(): s["trimmed"]}),
            MetricFamily("fastp2p_connmgr_protected_peers", "gauge",
                         "Peers protected from trimming (any tag).", (), {(): s["protected_peers"]}),
            MetricFamily("fastp2p_connmgr_watermark", "gauge", "Connection manager watermarks.", ("level",),
                         {("high",): s["high_watermark"], ("low",): s["low_watermark"]}),
        ]
