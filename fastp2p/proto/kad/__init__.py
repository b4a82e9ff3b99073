"""Kademlia DHT (``/ipfs/kad/1.0.0``), sans-IO: routing table, queries, messages, records, stores.

See ``../shared/specs/libp2p-kad-dht.md``; the asyncio driver is
:mod:`fastp2p.services.kad`.
"""

from __future__ import annotations

PROTOCOL_ID = "/ipfs/kad/1.0.0"

__all__ = ["PROTOCOL_ID"]
