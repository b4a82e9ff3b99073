"""Kademlia routing table: k-buckets over the SHA-256 XOR keyspace.

Rules
-----
- libp2p-kad-dht.md "Distance": the distance between two keys is
  ``XOR(sha256(key1), sha256(key2))``; a peer's key is the SHA-256 of its
  binary PeerId (the multihash bytes).
- "Kademlia routing table": keep up to ``k`` peers for every common prefix
  length ``L`` in ``[0, 255]`` with the local key. Bucket ``i`` holds peers
  whose key shares exactly ``i`` leading bits with ours.
- A full bucket does not drop a live peer for a new one (Kademlia paper,
  section 2.2: long-lived peers stay); the newcomer waits in the bucket's
  replacement cache (bounded by ``k``) and is promoted when an entry is
  removed. An entry that failed ``max_failures`` times in a row is evicted
  in favour of a newcomer.
- Only peers in server mode are added ("Client and server mode"): the
  driver decides that before calling :meth:`RoutingTable.add`.

Theory of operation
-------------------
A plain list of 257 buckets indexed by common prefix length (256 is only
ourselves and never stored). Each bucket is an insertion-ordered dict from
peer bytes to :class:`Entry`, least recently seen first. ``closest`` scans
every entry (a full table of a 10^4-node network holds a few hundred
entries) and sorts by XOR distance. Time is a parameter (``now``); the table
never reads a clock.

Implementation
--------------
:func:`random_key_with_cpl` finds, by rejection sampling, a PeerId-shaped
key whose SHA-256 shares exactly ``cpl`` bits with ours, for bucket
refreshes; like go-libp2p-kbucket it caps ``cpl`` at 15 (beyond that a
bucket is refreshed through the lookup of our own key).
"""

from __future__ import annotations

import functools
import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "KEY_BITS",
    "Entry",
    "RoutingTable",
    "kad_key",
    "xor_distance",
    "common_prefix_length",
    "random_key_with_cpl",
]

KEY_BITS = 256
MAX_REFRESH_CPL = 15


def kad_key(data: bytes) -> bytes:
    """The keyspace point of ``data`` (a PeerId's bytes, a record key, a multihash)."""
    return hashlib.sha256(data).digest()


def xor_distance(a: bytes, b: bytes) -> int:
    """XOR distance of two 32-byte keyspace points, as an integer."""
    return int.from_bytes(a, "big") ^ int.from_bytes(b, "big")


def common_prefix_length(a: bytes, b: bytes) -> int:
    """Leading bits shared by two 32-byte keys (256 when equal)."""
    d = xor_distance(a, b)
    return KEY_BITS - d.bit_length()


@functools.lru_cache(maxsize=1)
def _prefix_table() -> tuple[bytes, ...]:
    """For every 16-bit prefix, a PeerId-shaped key whose SHA-256 starts with it.

    Built once per process (about 7 x 10^5 hashes, deterministic: keys are
    ``identity-multihash header + counter``); go-libp2p-kbucket ships the
    same kind of table pre-generated.
    """
    table: list[bytes | None] = [None] * 65536
    missing = 65536
    counter = 0
    header = b"\x00\x24\x08\x01\x12\x20" + bytes(24)
    sha = hashlib.sha256
    while missing:
        candidate = header + counter.to_bytes(8, "big")
        counter += 1
        h = sha(candidate).digest()
        i = h[0] << 8 | h[1]
        if table[i] is None:
            table[i] = candidate
            missing -= 1
    return tuple(t for t in table if t is not None)


def random_key_with_cpl(local_key: bytes, cpl: int, rng: random.Random) -> bytes:
    """A PeerId-shaped key whose SHA-256 shares exactly ``cpl`` bits with ``local_key``.

    ``cpl`` is capped at 15: the key comes from a table of 2^16 prefixes.
    """
    cpl = min(cpl, MAX_REFRESH_CPL)
    mine = local_key[0] << 8 | local_key[1]
    keep = (0xFFFF << (16 - cpl)) & 0xFFFF  # the cpl shared bits
    flip = 1 << (15 - cpl)  # the first differing bit
    low = rng.getrandbits(16) & (flip - 1)
    prefix = (mine & keep) | ((mine & flip) ^ flip) | low
    return _prefix_table()[prefix]


@dataclass(slots=True)
class Entry:
    """One routing-table entry."""

    peer: bytes
    key: bytes
    added_at: float
    last_seen: float
    #: failed RPCs in a row (reset by any success)
    failures: int = 0


class RoutingTable:
    """k-buckets around ``local_peer`` (binary PeerId).

    Args:
        local_peer: our PeerId bytes.
        k: bucket size (libp2p: 20).
        max_failures: consecutive failures after which an entry may be replaced.
    """

    def __init__(self, local_peer: bytes, *, k: int = 20, max_failures: int = 1) -> None:
        if k < 1:
            raise ValueError("k must be >= 1")
        self.local_peer = bytes(local_peer)
        self.local_key = kad_key(self.local_peer)
        self.k = k
        self.max_failures = max_failures
        self._buckets: list[dict[bytes, Entry]] = [{} for _ in range(KEY_BITS)]
        self._replacements: list[dict[bytes, float]] = [{} for _ in range(KEY_BITS)]
        self._index: dict[bytes, int] = {}
        #: when each bucket last had a lookup (for refresh); -inf = never
        self._refreshed: list[float] = [float("-inf")] * KEY_BITS

    # -- queries ------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, peer: object) -> bool:
        return peer in self._index

    def bucket_index(self, peer: bytes) -> int:
        """The bucket ``peer`` belongs to (its common prefix length with us)."""
        return min(common_prefix_length(kad_key(peer), self.local_key), KEY_BITS - 1)

    def peers(self) -> list[bytes]:
        """Every peer in the table, by bucket then least recently seen first."""
        return [p for b in self._buckets for p in b]

    def entry(self, peer: bytes) -> Entry | None:
        i = self._index.get(peer)
        return None if i is None else self._buckets[i].get(peer)

    def bucket(self, index: int) -> list[Entry]:
        """The entries of bucket ``index``, least recently seen first."""
        return list(self._buckets[index].values())

    def bucket_sizes(self) -> dict[int, int]:
        """Non-empty buckets and their sizes."""
        return {i: len(b) for i, b in enumerate(self._buckets) if b}

    def closest(self, key: bytes, count: int | None = None, *, exclude: Iterable[bytes] = ()) -> list[bytes]:
        """Up to ``count`` (default ``k``) peers closest to keyspace point ``key``.

        Args:
            key: a keyspace point (``kad_key(...)``), not a raw key.
            exclude: peers to leave out (e.g. the requester).
        """
        n = self.k if count is None else count
        target = int.from_bytes(key, "big")
        skip = set(exclude)
        entries = [
            (int.from_bytes(e.key, "big") ^ target, p)
            for b in self._buckets
            for p, e in b.items()
            if p not in skip
        ]
        entries.sort()
        return [p for _, p in entries[:n]]

    # -- updates ------------------------------------------------------------------------

    def add(self, peer: bytes, now: float) -> bool:
        """Add ``peer`` or mark it seen. Returns True when it is (now) in the table.

        A full bucket evicts an entry that has failed ``max_failures`` times;
        otherwise ``peer`` goes to the bucket's replacement cache and False is
        returned.
        """
        peer = bytes(peer)
        if peer == self.local_peer:
            return False
        i = self._index.get(peer)
        if i is not None:
            e = self._buckets[i].pop(peer)
            e.last_seen = now
            e.failures = 0
            self._buckets[i][peer] = e  # move to the most recently seen end
            return True
        key = kad_key(peer)
        i = min(common_prefix_length(key, self.local_key), KEY_BITS - 1)
        bucket = self._buckets[i]
        if len(bucket) >= self.k:
            stale = next((p for p, e in bucket.items() if e.failures >= self.max_failures), None)
            if stale is None:
                repl = self._replacements[i]
                repl.pop(peer, None)
                repl[peer] = now
                while len(repl) > self.k:
                    del repl[next(iter(repl))]
                return False
            self._remove_from_bucket(i, stale)
        bucket[peer] = Entry(peer, key, now, now)
        self._index[peer] = i
        self._replacements[i].pop(peer, None)
        return True

    def mark_failed(self, peer: bytes) -> None:
        """Count a failed RPC; at ``max_failures`` the entry is replaced if a newcomer waits."""
        e = self.entry(peer)
        if e is None:
            return
        e.failures += 1
        if e.failures >= self.max_failures:
            i = self._index[peer]
            if self._replacements[i]:
                self.remove(peer)

    def remove(self, peer: bytes) -> bool:
        """Remove ``peer``; the newest replacement candidate takes its place."""
        i = self._index.get(peer)
        if i is None:
            self._replacements[self.bucket_index(peer)].pop(peer, None)
            return False
        self._remove_from_bucket(i, peer)
        repl = self._replacements[i]
        if repl:
            cand, seen = repl.popitem()  # most recently seen candidate
            self._buckets[i][cand] = Entry(cand, kad_key(cand), seen, seen)
            self._index[cand] = i
        return True

    def _remove_from_bucket(self, i: int, peer: bytes) -> None:
        del self._buckets[i][peer]
        del self._index[peer]

    # -- refresh ------------------------------------------------------------------------

    def mark_refreshed(self, key: bytes, now: float) -> None:
        """Record a lookup of keyspace point ``key`` (it refreshes its bucket)."""
        i = min(common_prefix_length(key, self.local_key), KEY_BITS - 1)
        self._refreshed[i] = now

    def buckets_to_refresh(self, now: float, interval: float) -> list[int]:
        """Bucket indexes up to the deepest non-empty one, not looked up for ``interval``.

        libp2p-kad-dht.md "Bootstrap process": one random lookup per k-bucket
        (capped at common prefix length 15, as go-libp2p does).
        """
        deepest = max((i for i, b in enumerate(self._buckets) if b), default=-1)
        last = min(deepest, MAX_REFRESH_CPL)
        return [i for i in range(last + 1) if now - self._refreshed[i] >= interval]
