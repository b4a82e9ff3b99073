"""Peerstore: what we know about other peers (addresses, keys, identify results).

Bounded: a node learns of peers without limit (every inbound connection, every
DHT answer's closer peers, gossipsub peer exchange, mDNS), so the store keeps at
most ``max_peers`` records and evicts the least recently written one beyond
that. Peers the host still needs (connected ones, DHT routing-table members,
configured direct peers) are never evicted: whoever needs them says so with
``Peerstore.keep_while``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import islice

from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID, PublicKey

__all__ = ["PeerInfo", "PeerRecord", "Peerstore"]

# Bound per-peer address lists so an abusive identify cannot grow memory without limit.
MAX_ADDRS_PER_PEER = 64
MAX_PROTOCOLS_PER_PEER = 512
#: records a Host's peerstore keeps (``HostConfig.max_peerstore_peers``)
DEFAULT_MAX_PEERS = 16384
#: the oldest records one eviction looks at: kept peers met there move to the
#: back, so an insert costs O(1) even when the oldest records are all kept
EVICT_SCAN = 64


@dataclass(frozen=True)
class PeerInfo:
    """A peer id with the addresses to reach it (go-libp2p ``peer.AddrInfo``)."""

    peer_id: PeerID
    addrs: tuple[Multiaddr, ...] = ()


@dataclass
class PeerRecord:
    """Everything the peerstore holds for one peer."""

    peer_id: PeerID
    addrs: list[Multiaddr] = field(default_factory=list)
    public_key: PublicKey | None = None
    agent_version: str | None = None
    protocol_version: str | None = None
    protocols: list[str] = field(default_factory=list)
    listen_addrs: list[Multiaddr] = field(default_factory=list)
    observed_addr: Multiaddr | None = None
    identified: bool = False
    #: the peer's latest signed peer record (envelope bytes, verified) and its seq;
    #: relayed as is (gossipsub PX) so others can check it came from the peer
    signed_record: bytes | None = None
    signed_record_seq: int = -1


class Peerstore:
    """In-memory peerstore keyed by PeerID, at most ``max_peers`` records.

    Records are kept in the order they were last written (``record``,
    ``add_addrs``, ``add_public_key``); making a record beyond ``max_peers``
    evicts the oldest one that no ``keep_while`` predicate claims. Kept peers do
    not count against the bound's eviction, so the store may hold more than
    ``max_peers`` records while more peers than that are kept.
    """

    def __init__(self, max_peers: int = DEFAULT_MAX_PEERS) -> None:
        if max_peers < 1:
            raise ValueError(f"Peerstore max_peers must be >= 1, got {max_peers}")
        self._peers: dict[PeerID, PeerRecord] = {}
        self.max_peers = max_peers
        self._keep: list[Callable[[PeerID], bool]] = []
        #: records evicted so far
        self.evicted = 0

    def keep_while(self, predicate: Callable[[PeerID], bool]) -> None:
        """Never evict a peer while ``predicate(peer)`` is true (e.g. it is connected)."""
        self._keep.append(predicate)

    def __contains__(self, peer: object) -> bool:
        return peer in self._peers

    def __len__(self) -> int:
        return len(self._peers)

    def peers(self) -> list[PeerID]:
        """All known peer ids."""
        return list(self._peers)

    def get(self, peer: PeerID) -> PeerRecord | None:
        """The record for ``peer``, or None."""
        return self._peers.get(peer)

    def record(self, peer: PeerID) -> PeerRecord:
        """The record for ``peer``, created if missing; either way now the newest."""
        peers = self._peers
        rec = peers.pop(peer, None)
        if rec is None:
            rec = PeerRecord(peer)
            peers[peer] = rec
            if len(peers) > self.max_peers:
                self._evict(peer)
        else:
            peers[peer] = rec
        return rec

    def _evict(self, newest: PeerID) -> None:
        """Evict the oldest records no predicate keeps, down to ``max_peers``."""
        peers = self._peers
        keep = self._keep
        over = len(peers) - self.max_peers
        for peer in list(islice(peers, EVICT_SCAN)):
            if over <= 0 or peer is newest:
                return
            if any(k(peer) for k in keep):
                peers[peer] = peers.pop(peer)  # kept: to the back, out of the next scan
                continue
            del peers[peer]
            self.evicted += 1
            over -= 1

    def add_addrs(self, peer: PeerID, addrs: list[Multiaddr] | tuple[Multiaddr, ...]) -> None:
        """Remember dialable addresses for ``peer`` (without /p2p)."""
        rec = self.record(peer)
        for a in addrs:
            a = a.without_peer_id()
            if a not in rec.addrs:
                rec.addrs.append(a)
        del rec.addrs[:-MAX_ADDRS_PER_PEER]

    def add_public_key(self, peer: PeerID, key: PublicKey) -> None:
        self.record(peer).public_key = key

    def addrs(self, peer: PeerID) -> list[Multiaddr]:
        rec = self._peers.get(peer)
        return list(rec.addrs) if rec else []
