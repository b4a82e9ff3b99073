"""Iterative lookup state machines, driven against a simulated network (no event loop)."""

from __future__ import annotations

import random

import pytest

from fastp2p.proto.kad.query import DisjointKadQuery, KadQuery, PeerState
from fastp2p.proto.kad.routing_table import RoutingTable, kad_key, xor_distance


def network(n: int, seed: int, k: int = 20, fill: int = 60) -> dict[bytes, RoutingTable]:
    rng = random.Random(seed)
    ids = [rng.randbytes(34) for _ in range(n)]
    tables = {}
    for p in ids:
        rt = RoutingTable(p, k=k)
        # prefer near peers (as real tables end up) plus random far ones
        near = sorted(ids, key=lambda q: xor_distance(kad_key(q), rt.local_key))[1 : k + 1]
        for q in near + rng.sample(ids, fill):
            rt.add(q, 0.0)
        tables[p] = rt
    return tables


def run(q: KadQuery | DisjointKadQuery, tables: dict[bytes, RoutingTable], *,
        dead: set[bytes] = frozenset(), liars: set[bytes] = frozenset(),  # type: ignore[assignment]
        k: int = 20) -> int:
    """Drive ``q`` round by round; returns the rounds taken."""
    now = 0.0
    rounds = 0
    while not q.finished:
        batch = q.next_requests(now)
        if not batch:
            if q.in_flight:
                now += 100.0
                q.handle_timer(now)
                continue
            break
        rounds += 1
        for p in batch:
            if p in dead:
                continue  # left in flight: times out
            if p in liars:
                q.on_success(p, sorted(liars)[:k], now)
            else:
                q.on_success(p, tables[p].closest(q.target_key, k), now)
        now += 1.0
        q.handle_timer(now)
    return rounds


@pytest.mark.parametrize("seed", range(5))
def test_lookup_finds_the_true_k_closest(seed: int) -> None:
    tables = network(300, seed)
    rng = random.Random(seed)
    start = rng.choice(list(tables))
    target = rng.randbytes(34)
    q = KadQuery(target, tables[start].closest(kad_key(target)), exclude=[start])
    run(q, tables)
    assert q.finished
    truth = sorted((p for p in tables if p != start), key=lambda p: xor_distance(kad_key(p), kad_key(target)))
    assert q.closest() == truth[:20]
    stats = q.finish_stats()
    assert 1 <= stats.hops <= 8
    assert stats.requests >= 20 and stats.failed == 0


def test_alpha_bounds_requests_in_flight() -> None:
    tables = network(100, 7)
    start = next(iter(tables))
    q = KadQuery(b"t", tables[start].closest(kad_key(b"t")), alpha=3)
    first = q.next_requests(0.0)
    assert len(first) == 3 and q.in_flight == 3
    assert q.next_requests(0.0) == []
    q.on_success(first[0], [], 0.5)
    assert len(q.next_requests(0.5)) == 1


def test_timeouts_fail_requests_and_the_lookup_still_ends() -> None:
    tables = network(200, 11)
    rng = random.Random(11)
    peers = list(tables)
    start = peers[0]
    dead = set(rng.sample(peers[1:], 40))
    target = rng.randbytes(34)
    q = KadQuery(target, tables[start].closest(kad_key(target)), rpc_timeout=10.0, exclude=[start])
    assert q.get_timer() is None
    run(q, tables, dead=dead)
    assert q.finished
    assert not set(q.closest()) & dead
    assert q.stats.timeouts == q.stats.failed > 0
    live = sorted((p for p in peers if p not in dead and p != start),
                  key=lambda p: xor_distance(kad_key(p), kad_key(target)))
    assert q.closest() == live[:20]


def test_stop_ends_at_once_and_ignores_late_answers() -> None:
    q = KadQuery(b"x", [b"a", b"b", b"c", b"d"], alpha=2)
    sent = q.next_requests(0.0)
    q.stop()
    assert q.finished and q.next_requests(1.0) == []
    assert q.on_success(sent[0], [b"zzz"], 1.0) == []
    assert q.state(b"zzz") is None


def test_small_network_terminates_when_everyone_answered() -> None:
    q = KadQuery(b"x", [b"a", b"b"], k=20)
    while not q.finished:
        for p in q.next_requests(0.0):
            q.on_success(p, [b"a", b"b", b"c"], 0.0)
    assert sorted(q.closest()) == [b"a", b"b", b"c"]
    assert q.depth(b"c") == 2


def test_unknown_and_duplicate_outcomes_are_ignored() -> None:
    q = KadQuery(b"x", [b"a"])
    assert q.on_success(b"nobody", [b"b"], 0.0) == []
    q.on_failure(b"a", 0.0)  # not in flight yet
    assert q.state(b"a") is PeerState.WAITING


def test_disjoint_paths_never_share_a_peer_and_survive_a_captured_path() -> None:
    tables = network(300, 5)
    rng = random.Random(5)
    peers = list(tables)
    start = peers[0]
    target = rng.randbytes(34)
    seeds = tables[start].closest(kad_key(target))
    # the seeds of path 0 lie: they only ever return each other
    liars = set(seeds[0::3])
    q = DisjointKadQuery(target, seeds, paths=3, exclude=[start])
    asked: list[bytes] = []
    now = 0.0
    while not q.finished:
        batch = q.next_requests(now)
        if not batch:
            break
        asked += batch
        for p in batch:
            closer = sorted(liars) if p in liars else tables[p].closest(q.target_key, 20)
            q.on_success(p, closer, now)
        now += 1
    assert len(asked) == len(set(asked)), "a peer was queried on two paths"
    honest = sorted((p for p in peers if p != start and p not in liars),
                    key=lambda p: xor_distance(kad_key(p), kad_key(target)))
    assert honest[0] in q.closest()
    assert q.stats.requests == len(asked)
