"""Kademlia routing table: bucket placement, bounds, replacement, closest (property-tested)."""

from __future__ import annotations

import os
import random

from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.proto.kad.routing_table import (
    RoutingTable,
    common_prefix_length,
    kad_key,
    random_key_with_cpl,
    xor_distance,
)

peer_ids = st.binary(min_size=6, max_size=40)


def test_distance_is_a_metric_on_keys() -> None:
    a, b, c = (kad_key(os.urandom(8)) for _ in range(3))
    assert xor_distance(a, a) == 0
    assert xor_distance(a, b) == xor_distance(b, a)
    # XOR satisfies the triangle inequality
    assert xor_distance(a, c) <= xor_distance(a, b) + xor_distance(b, c)
    assert common_prefix_length(a, a) == 256


@settings(max_examples=60, deadline=None)
@given(local=peer_ids, peers=st.lists(peer_ids, max_size=300, unique=True), k=st.integers(1, 20))
def test_buckets_hold_peers_with_their_prefix_length_and_never_exceed_k(
    local: bytes, peers: list[bytes], k: int
) -> None:
    rt = RoutingTable(local, k=k)
    for i, p in enumerate(peers):
        rt.add(p, float(i))
    assert local not in rt
    for index, size in rt.bucket_sizes().items():
        assert size <= k
        for e in rt.bucket(index):
            assert min(common_prefix_length(e.key, rt.local_key), 255) == index
    assert len(rt) == len(rt.peers()) == len(set(rt.peers()))
    # every peer offered is in the table unless its bucket is full
    for p in peers:
        if p != local and p not in rt:
            assert len(rt.bucket(rt.bucket_index(p))) == k


@settings(max_examples=60, deadline=None)
@given(local=peer_ids, peers=st.lists(peer_ids, min_size=1, max_size=120, unique=True),
       target=st.binary(min_size=1, max_size=40), n=st.integers(1, 30))
def test_closest_is_sorted_and_exact(local: bytes, peers: list[bytes], target: bytes, n: int) -> None:
    rt = RoutingTable(local, k=20)
    for p in peers:
        rt.add(p, 0.0)
    tk = kad_key(target)
    got = rt.closest(tk, n)
    expected = sorted(rt.peers(), key=lambda p: xor_distance(kad_key(p), tk))[:n]
    assert got == expected


def test_full_bucket_keeps_old_peers_and_caches_newcomers() -> None:
    rng = random.Random(1)
    local = b"local-peer"
    rt = RoutingTable(local, k=2)
    bucket0 = []
    while len(bucket0) < 4:
        p = rng.randbytes(8)
        if rt.bucket_index(p) == 0:
            bucket0.append(p)
    assert rt.add(bucket0[0], 1.0) and rt.add(bucket0[1], 2.0)
    assert not rt.add(bucket0[2], 3.0)  # full: live peers stay (Kademlia 2.2)
    assert bucket0[2] not in rt
    # a failed entry is replaced by the waiting candidate
    rt.mark_failed(bucket0[0])
    assert bucket0[0] not in rt and bucket0[2] in rt
    # re-adding marks seen (moves to the tail) and clears failures
    rt.add(bucket0[1], 5.0)
    assert rt.bucket(0)[-1].peer == bucket0[1]
    # removal promotes the newest replacement
    assert not rt.add(bucket0[3], 6.0)
    rt.remove(bucket0[1])
    assert bucket0[3] in rt


def test_failed_entry_evicted_when_full() -> None:
    rng = random.Random(2)
    rt = RoutingTable(b"me", k=1)
    b0 = []
    while len(b0) < 2:
        p = rng.randbytes(8)
        if rt.bucket_index(p) == 0:
            b0.append(p)
    rt.add(b0[0], 0.0)
    rt.mark_failed(b0[0])  # no replacement yet: stays, marked failed
    assert b0[0] in rt
    assert rt.add(b0[1], 1.0)
    assert b0[0] not in rt


def test_refresh_keys_land_in_their_bucket() -> None:
    rng = random.Random(3)
    rt = RoutingTable(b"refresh-me", k=20)
    for cpl in (0, 1, 5, 9):
        key = random_key_with_cpl(rt.local_key, cpl, rng)
        assert rt.bucket_index(key) == cpl
    for _ in range(200):
        rt.add(rng.randbytes(10), 0.0)
    due = rt.buckets_to_refresh(100.0, 60.0)
    assert due and due == list(range(len(due)))
    for i in due:
        rt.mark_refreshed(random_key_with_cpl_for(rt, i, rng), 100.0)
    assert rt.buckets_to_refresh(120.0, 60.0) == []


def random_key_with_cpl_for(rt: RoutingTable, cpl: int, rng: random.Random) -> bytes:
    return kad_key(random_key_with_cpl(rt.local_key, cpl, rng))
