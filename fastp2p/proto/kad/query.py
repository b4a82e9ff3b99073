"""Iterative Kademlia lookups as state machines (FIND_NODE, GET_VALUE, GET_PROVIDERS).

Rules
-----
- libp2p-kad-dht.md "Peer routing": the candidate set ``Pn`` is seeded with
  the ``k`` closest peers of the routing table; at most ``alpha`` requests
  are in flight; a response adds its closer peers to ``Pn`` unless already
  queried; an error or a timeout discards the peer.
- The lookup terminates when the ``k`` closest peers seen (failed ones
  excluded) have all answered, or when nothing is left to ask (fewer than
  ``k`` reachable peers).
- A request goes only to a peer inside that window of the ``k`` closest
  non-failed candidates: asking farther peers cannot change the result.
- Disjoint paths (S/Kademlia, Baumgart & Mies 2007, section 4.4):
  :class:`DisjointKadQuery` splits the seeds over ``d`` paths; peers learned
  on a path stay on it, and a peer is queried on one path only, so a path
  captured by adversarial peers cannot poison the others.

Theory of operation
-------------------
The driver asks :meth:`KadQuery.next_requests` whom to send a request to,
sends them, and reports each outcome with :meth:`~KadQuery.on_success` (the
closer peers in the response) or :meth:`~KadQuery.on_failure`. Requests that
outlive ``rpc_timeout`` fail in :meth:`~KadQuery.handle_timer`. The driver
may :meth:`~KadQuery.stop` early (peer found, enough providers, quorum).
``now`` is always a parameter.

Hop counting: a seed is at depth 1 and a peer first learned from a peer at
depth ``d`` is at depth ``d + 1``, so ``depth(p)`` is the number of sequential
round trips that led to asking ``p``.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Iterable
from dataclasses import dataclass, field

from fastp2p.proto.kad.routing_table import kad_key

__all__ = ["PeerState", "KadQuery", "DisjointKadQuery", "QueryStats"]


class PeerState(enum.Enum):
    WAITING = "waiting"
    IN_FLIGHT = "in_flight"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    #: queried on another disjoint path
    SKIPPED = "skipped"


@dataclass(slots=True)
class _Candidate:
    peer: bytes
    distance: int
    depth: int
    state: PeerState = PeerState.WAITING
    sent_at: float = 0.0


@dataclass(slots=True)
class QueryStats:
    """Figures of one lookup."""

    #: requests sent
    requests: int = 0
    succeeded: int = 0
    failed: int = 0
    #: failures that were timeouts
    timeouts: int = 0
    #: largest depth among the result peers (round trips of the lookup)
    hops: int = 0
    peers_seen: int = 0


@dataclass(slots=True)
class _Shared:
    claimed: set[bytes] = field(default_factory=set)


class KadQuery:
    """One iterative lookup towards ``target`` (a raw key: PeerId bytes, record key, multihash).

    Args:
        target: the raw key; distances use ``sha256(target)``.
        seeds: the initial candidates (usually the routing table's ``k`` closest).
        k: result size and termination window.
        alpha: requests in flight at most.
        rpc_timeout: seconds before an unanswered request counts as failed.
        exclude: peers never to ask (ourselves).
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[bytes],
        *,
        k: int = 20,
        alpha: int = 3,
        rpc_timeout: float = 10.0,
        exclude: Iterable[bytes] = (),
        _shared: _Shared | None = None,
    ) -> None:
        if k < 1 or alpha < 1:
            raise ValueError("k and alpha must be >= 1")
        self.target = bytes(target)
        self.target_key = kad_key(self.target)
        self._t = int.from_bytes(self.target_key, "big")
        self.k = k
        self.alpha = alpha
        self.rpc_timeout = rpc_timeout
        self._exclude = {bytes(p) for p in exclude}
        self._peers: dict[bytes, _Candidate] = {}
        # (distance, peer) sorted ascending
        self._order: list[tuple[int, bytes]] = []
        self._in_flight = 0
        self._stopped = False
        self._shared = _shared
        self.stats = QueryStats()
        for p in seeds:
            self._add(bytes(p), 1)

    # -- candidates ---------------------------------------------------------------------

    def _add(self, peer: bytes, depth: int) -> bool:
        if peer in self._exclude:
            return False
        c = self._peers.get(peer)
        if c is not None:
            if depth < c.depth and c.state is PeerState.WAITING:
                c.depth = depth
            return False
        d = int.from_bytes(kad_key(peer), "big") ^ self._t
        self._peers[peer] = _Candidate(peer, d, depth)
        bisect.insort(self._order, (d, peer))
        self.stats.peers_seen += 1
        return True

    def state(self, peer: bytes) -> PeerState | None:
        """The state of ``peer`` in this lookup (None if never seen)."""
        c = self._peers.get(peer)
        return None if c is None else c.state

    def depth(self, peer: bytes) -> int:
        """Round trips that led to ``peer`` (1 for a seed); 0 if never seen."""
        c = self._peers.get(peer)
        return 0 if c is None else c.depth

    @property
    def in_flight(self) -> int:
        return self._in_flight

    # -- driving ------------------------------------------------------------------------

    def _window(self) -> list[_Candidate]:
        """The ``k`` closest candidates that have not failed (nor been skipped)."""
        out = []
        for _, p in self._order:
            c = self._peers[p]
            if c.state in (PeerState.FAILED, PeerState.SKIPPED):
                continue
            out.append(c)
            if len(out) >= self.k:
                break
        return out

    @property
    def finished(self) -> bool:
        """True once stopped, or when the ``k`` closest live candidates all answered."""
        if self._stopped:
            return True
        for c in self._window():
            if c.state is not PeerState.SUCCEEDED:
                return False
        return True

    def stop(self) -> None:
        """End the lookup now (the driver found what it wanted); in-flight answers are ignored."""
        self._stopped = True

    def next_requests(self, now: float) -> list[bytes]:
        """Peers to send a request to now (each marked in flight)."""
        if self._stopped:
            return []
        out: list[bytes] = []
        rescan = True
        while rescan and self._in_flight < self.alpha:
            # a peer skipped (claimed by another disjoint path) shifts the window
            rescan = False
            for c in self._window():
                if self._in_flight >= self.alpha:
                    break
                if c.state is not PeerState.WAITING:
                    continue
                if self._shared is not None:
                    if c.peer in self._shared.claimed:
                        c.state = PeerState.SKIPPED
                        rescan = True
                        continue
                    self._shared.claimed.add(c.peer)
                c.state = PeerState.IN_FLIGHT
                c.sent_at = now
                self._in_flight += 1
                self.stats.requests += 1
                out.append(c.peer)
        return out

    def on_success(self, peer: bytes, closer: Iterable[bytes], now: float) -> list[bytes]:
        """``peer`` answered with ``closer`` peers. Returns the peers new to this lookup."""
        c = self._peers.get(peer)
        if c is None or c.state is not PeerState.IN_FLIGHT:
            return []
        c.state = PeerState.SUCCEEDED
        self._in_flight -= 1
        self.stats.succeeded += 1
        new = []
        if not self._stopped:
            for p in closer:
                p = bytes(p)
                if self._add(p, c.depth + 1):
                    new.append(p)
        return new

    def on_failure(self, peer: bytes, now: float, *, timeout: bool = False) -> None:
        """``peer`` failed (error, reset, undecodable answer or timeout)."""
        c = self._peers.get(peer)
        if c is None or c.state is not PeerState.IN_FLIGHT:
            return
        c.state = PeerState.FAILED
        self._in_flight -= 1
        self.stats.failed += 1
        if timeout:
            self.stats.timeouts += 1

    def get_timer(self) -> float | None:
        """When the oldest in-flight request times out (None when none is in flight)."""
        times = [c.sent_at for c in self._peers.values() if c.state is PeerState.IN_FLIGHT]
        return min(times) + self.rpc_timeout if times else None

    def handle_timer(self, now: float) -> list[bytes]:
        """Fail every request older than ``rpc_timeout``; returns those peers."""
        late = [
            c.peer
            for c in self._peers.values()
            if c.state is PeerState.IN_FLIGHT and now - c.sent_at >= self.rpc_timeout
        ]
        for p in late:
            self.on_failure(p, now, timeout=True)
        return late

    # -- results ------------------------------------------------------------------------

    def closest(self, count: int | None = None) -> list[bytes]:
        """Up to ``count`` (default ``k``) peers that answered, closest first."""
        n = self.k if count is None else count
        out = [p for _, p in self._order if self._peers[p].state is PeerState.SUCCEEDED]
        return out[:n]

    def finish_stats(self) -> QueryStats:
        """The stats with ``hops`` set from the result peers."""
        res = self.closest()
        self.stats.hops = max((self._peers[p].depth for p in res), default=0)
        return self.stats


class DisjointKadQuery:
    """``d`` lookups over disjoint paths sharing one target (S/Kademlia).

    Same driving interface as :class:`KadQuery`; each path gets ``alpha``
    requests in flight and the seeds are dealt round-robin.
    """

    def __init__(
        self,
        target: bytes,
        seeds: Iterable[bytes],
        *,
        paths: int = 2,
        k: int = 20,
        alpha: int = 3,
        rpc_timeout: float = 10.0,
        exclude: Iterable[bytes] = (),
    ) -> None:
        if paths < 1:
            raise ValueError("paths must be >= 1")
        seeds = [bytes(s) for s in seeds]
        shared = _Shared()
        self.paths = [
            KadQuery(target, seeds[i::paths], k=k, alpha=alpha, rpc_timeout=rpc_timeout,
                     exclude=exclude, _shared=shared)
            for i in range(paths)
        ]
        self.target = bytes(target)
        self.target_key = self.paths[0].target_key
        self.k = k
        self._owner: dict[bytes, KadQuery] = {}
        self._stopped = False

    @property
    def finished(self) -> bool:
        return self._stopped or all(q.finished for q in self.paths)

    @property
    def in_flight(self) -> int:
        return sum(q.in_flight for q in self.paths)

    def stop(self) -> None:
        self._stopped = True
        for q in self.paths:
            q.stop()

    def next_requests(self, now: float) -> list[bytes]:
        out = []
        for q in self.paths:
            for p in q.next_requests(now):
                self._owner[p] = q
                out.append(p)
        return out

    def on_success(self, peer: bytes, closer: Iterable[bytes], now: float) -> list[bytes]:
        q = self._owner.pop(peer, None)
        return [] if q is None else q.on_success(peer, closer, now)

    def on_failure(self, peer: bytes, now: float, *, timeout: bool = False) -> None:
        q = self._owner.pop(peer, None)
        if q is not None:
            q.on_failure(peer, now, timeout=timeout)

    def get_timer(self) -> float | None:
        times = [t for q in self.paths if (t := q.get_timer()) is not None]
        return min(times) if times else None

    def handle_timer(self, now: float) -> list[bytes]:
        late = []
        for q in self.paths:
            for p in q.handle_timer(now):
                self._owner.pop(p, None)
                late.append(p)
        return late

    def depth(self, peer: bytes) -> int:
        return max(q.depth(peer) for q in self.paths)

    def state(self, peer: bytes) -> PeerState | None:
        for q in self.paths:
            s = q.state(peer)
            if s is not None and s is not PeerState.SKIPPED:
                return s
        return None

    def closest(self, count: int | None = None) -> list[bytes]:
        n = self.k if count is None else count
        t = int.from_bytes(self.target_key, "big")
        merged = {p for q in self.paths for p in q.closest()}
        return sorted(merged, key=lambda p: int.from_bytes(kad_key(p), "big") ^ t)[:n]

    @property
    def stats(self) -> QueryStats:
        s = QueryStats()
        for q in self.paths:
            qs = q.finish_stats()
            s.requests += qs.requests
            s.succeeded += qs.succeeded
            s.failed += qs.failed
            s.timeouts += qs.timeouts
            s.peers_seen += qs.peers_seen
            s.hops = max(s.hops, qs.hops)
        return s

    def finish_stats(self) -> QueryStats:
        return self.stats
