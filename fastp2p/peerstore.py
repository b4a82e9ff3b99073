"""Peerstore: what we know about other peers (addresses, keys, identify results)."""

from __future__ import annotations

from dataclasses import dataclass, field

from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID, PublicKey

__all__ = ["PeerInfo", "PeerRecord", "Peerstore"]

# Bound per-peer address lists so an abusive identify cannot grow memory without limit.
MAX_ADDRS_PER_PEER = 64
MAX_PROTOCOLS_PER_PEER = 512


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
    """In-memory peerstore keyed by PeerID."""

    def __init__(self) -> None:
        self._peers: dict[PeerID, PeerRecord] = {}

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
        """The record for ``peer``, created if missing."""
        rec = self._peers.get(peer)
        if rec is None:
            rec = self._peers[peer] = PeerRecord(peer)
        return rec

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
