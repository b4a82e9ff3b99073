"""Bounded record and provider stores of a DHT server.

Rules
-----
- Provider records expire ``provider_expiry`` (48 h) after they were last
  added (libp2p-kad-dht.md "Content provider advertisement and discovery");
  the provider's addresses are served only for ``provider_addr_ttl`` (30 min,
  the routing-table refresh interval the spec suggests), then only its id.
- Value records expire ``record_ttl`` after they were stored (go-libp2p-kad-dht
  ``MaxRecordAge``, 36 h).
- Memory is bounded (an attacker cannot fill it): at most ``max_records``
  records and ``max_records_per_peer`` from one sender; at most
  ``max_provider_keys`` keys, ``max_providers_per_key`` providers each and
  ``max_keys_per_provider`` keys per provider. Over a limit the new entry is
  refused (``False``); refreshing an existing entry always works.

Theory of operation
-------------------
Plain dicts; ``now`` is a parameter; :meth:`gc` drops what expired and is
also applied lazily on reads.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastp2p.proto.kad.messages_pb import KadRecord

__all__ = ["RecordStore", "ProviderStore", "StoredProvider"]

HOUR = 3600.0


@dataclass(slots=True)
class _StoredRecord:
    record: KadRecord
    sender: bytes
    stored_at: float


class RecordStore:
    """Value records by key."""

    def __init__(
        self, *, max_records: int = 10_000, max_records_per_peer: int = 256, record_ttl: float = 36 * HOUR
    ) -> None:
        self.max_records = max_records
        self.max_records_per_peer = max_records_per_peer
        self.record_ttl = record_ttl
        self._records: dict[bytes, _StoredRecord] = {}
        self._per_peer: dict[bytes, int] = {}

    def __len__(self) -> int:
        return len(self._records)

    def put(self, record: KadRecord, sender: bytes, now: float) -> bool:
        """Store (or replace) ``record`` received from ``sender``; False when a limit refuses it."""
        old = self._records.get(record.key)
        if old is None:
            if len(self._records) >= self.max_records:
                self.gc(now)
                if len(self._records) >= self.max_records:
                    return False
            if self._per_peer.get(sender, 0) >= self.max_records_per_peer:
                return False
        else:
            self._release(old.sender)
        self._records[record.key] = _StoredRecord(record, sender, now)
        self._per_peer[sender] = self._per_peer.get(sender, 0) + 1
        return True

    def get(self, key: bytes, now: float) -> KadRecord | None:
        s = self._records.get(key)
        if s is None:
            return None
        if now - s.stored_at >= self.record_ttl:
            self._drop(key)
            return None
        return s.record

    def _release(self, sender: bytes) -> None:
        n = self._per_peer.get(sender, 0) - 1
        if n > 0:
            self._per_peer[sender] = n
        else:
            self._per_peer.pop(sender, None)

    def _drop(self, key: bytes) -> None:
        s = self._records.pop(key)
        self._release(s.sender)

    def gc(self, now: float) -> int:
        """Drop expired records; returns how many."""
        dead = [k for k, s in self._records.items() if now - s.stored_at >= self.record_ttl]
        for k in dead:
            self._drop(k)
        return len(dead)


@dataclass(slots=True)
class StoredProvider:
    peer: bytes
    addrs: list[bytes]
    added_at: float


class ProviderStore:
    """Provider records: key (a multihash) -> providers."""

    def __init__(
        self,
        *,
        max_provider_keys: int = 100_000,
        max_providers_per_key: int = 64,
        max_keys_per_provider: int = 10_000,
        provider_expiry: float = 48 * HOUR,
        provider_addr_ttl: float = 0.5 * HOUR,
    ) -> None:
        self.max_provider_keys = max_provider_keys
        self.max_providers_per_key = max_providers_per_key
        self.max_keys_per_provider = max_keys_per_provider
        self.provider_expiry = provider_expiry
        self.provider_addr_ttl = provider_addr_ttl
        self._by_key: dict[bytes, dict[bytes, StoredProvider]] = {}
        self._per_provider: dict[bytes, int] = {}

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_key.values())

    def keys(self) -> int:
        return len(self._by_key)

    def add(self, key: bytes, provider: bytes, addrs: list[bytes], now: float) -> bool:
        """Record ``provider`` for ``key``; False when a limit refuses it."""
        provs = self._by_key.get(key)
        if provs is not None and provider in provs:
            provs[provider] = StoredProvider(provider, list(addrs), now)
            return True
        if provs is None and len(self._by_key) >= self.max_provider_keys:
            self.gc(now)
            if len(self._by_key) >= self.max_provider_keys:
                return False
        if provs is not None and len(provs) >= self.max_providers_per_key:
            self._expire_key(key, now)
            if len(provs) >= self.max_providers_per_key:
                return False
        if self._per_provider.get(provider, 0) >= self.max_keys_per_provider:
            return False
        self._by_key.setdefault(key, {})[provider] = StoredProvider(provider, list(addrs), now)
        self._per_provider[provider] = self._per_provider.get(provider, 0) + 1
        return True

    def get(self, key: bytes, now: float) -> list[StoredProvider]:
        """Live providers of ``key``, newest first; addresses only while fresh."""
        self._expire_key(key, now)
        provs = self._by_key.get(key, {})
        out = []
        for sp in sorted(provs.values(), key=lambda s: -s.added_at):
            fresh = now - sp.added_at < self.provider_addr_ttl
            out.append(StoredProvider(sp.peer, sp.addrs if fresh else [], sp.added_at))
        return out

    def _expire_key(self, key: bytes, now: float) -> None:
        provs = self._by_key.get(key)
        if not provs:
            return
        for p in [p for p, sp in provs.items() if now - sp.added_at >= self.provider_expiry]:
            del provs[p]
            n = self._per_provider.get(p, 0) - 1
            if n > 0:
                self._per_provider[p] = n
            else:
                self._per_provider.pop(p, None)
        if not provs:
            del self._by_key[key]

    def gc(self, now: float) -> int:
        """Drop expired provider records; returns how many keys remain."""
        for key in list(self._by_key):
            self._expire_key(key, now)
        return len(self._by_key)
