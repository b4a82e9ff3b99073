"""The peerstore's bound: eviction order, kept peers, and a real host's records."""

from __future__ import annotations

import asyncio

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.peerstore import EVICT_SCAN, Peerstore


def _ids(n: int) -> list[PeerID]:
    return [PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()) for _ in range(n)]


def test_evicts_least_recently_written() -> None:
    a, b, c, d = _ids(4)
    ps = Peerstore(max_peers=3)
    for p in (a, b, c):
        ps.add_addrs(p, [Multiaddr("/ip4/10.0.0.1/tcp/1")])
    ps.record(a)  # written again: now the newest
    ps.add_addrs(d, [Multiaddr("/ip4/10.0.0.4/tcp/4")])
    assert b not in ps
    assert set(ps.peers()) == {a, c, d}
    assert len(ps) == 3 and ps.evicted == 1
    # reads do not refresh: c is the oldest now and goes next
    assert ps.get(c) is not None and ps.addrs(c)
    ps.record(b)
    assert c not in ps and ps.evicted == 2


def test_kept_peers_are_never_evicted() -> None:
    ids = _ids(6)
    kept = set(ids[:2])
    ps = Peerstore(max_peers=2)
    ps.keep_while(kept.__contains__)
    for p in ids:
        ps.record(p)
    # the two kept ones stay although they are the oldest; the bound holds the rest
    assert kept <= set(ps.peers())
    assert len(ps) == 3 and ps.evicted == 3
    # once no longer kept, they are evicted by the next inserts
    kept.clear()
    extra = _ids(2)
    for p in extra:
        ps.record(p)
    assert len(ps) == 2 and not set(ids[:2]) & set(ps.peers())


def test_only_kept_peers_grow_past_the_bound() -> None:
    ps = Peerstore(max_peers=1)
    ps.keep_while(lambda p: True)
    ids = _ids(5)
    for p in ids:
        ps.record(p)
    assert len(ps) == 5 and ps.evicted == 0


def test_eviction_work_is_bounded() -> None:
    calls = 0
    kept: set[PeerID] = set()

    def keep(p: PeerID) -> bool:
        nonlocal calls
        calls += 1
        return p in kept

    ids = _ids(3 * EVICT_SCAN)
    ps = Peerstore(max_peers=2 * EVICT_SCAN)
    ps.keep_while(keep)
    for p in ids[: 2 * EVICT_SCAN]:
        ps.record(p)
    kept.update(ids[: 2 * EVICT_SCAN])  # every record is kept now
    calls = 0
    ps.record(ids[2 * EVICT_SCAN])
    assert calls <= EVICT_SCAN and len(ps) == 2 * EVICT_SCAN + 1


def test_bad_bounds() -> None:
    with pytest.raises(ValueError):
        Peerstore(max_peers=0)
    with pytest.raises(ValueError, match="max_peerstore_peers"):
        HostConfig(max_peerstore_peers=0)


async def _echo(stream: fastp2p.Stream) -> None:
    await stream.write(await stream.read())
    await stream.close_write()


async def test_host_keeps_connected_peers_and_bounds_the_rest() -> None:
    """A listener met by more distinct peers than its bound: the connected one keeps
    its record, the others' records are evicted, and the metrics say so."""
    cfg = HostConfig(data_paths=("tcp",), max_peerstore_peers=2)
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as server:
        server.set_handler("/echo/1.0.0", _echo)
        addr = server.full_addrs[0]
        async with fastp2p.Host(config=HostConfig(data_paths=("tcp",))) as stay:
            await stay.connect(addr)
            for _ in range(4):
                async with fastp2p.Host(config=HostConfig(data_paths=("tcp",))) as c:
                    peer = await c.connect(addr)
                    async with await c.open_stream(peer, "/echo/1.0.0") as s:
                        await s.write(b"hi")
                        await s.close_write()
                        assert await s.read() == b"hi"
            for _ in range(100):  # the server sees the closes
                if len(server.connections) == 1:
                    break
                await asyncio.sleep(0.01)
            assert stay.peer_id in server.peerstore
            assert server.peerstore.get(stay.peer_id).identified  # type: ignore[union-attr]
            assert len(server.peerstore) <= 2
            m = server.metrics_registry
            assert m.value("fastp2p_peerstore_peers") == len(server.peerstore)
            assert m.value("fastp2p_peerstore_evicted_total") == server.peerstore.evicted >= 3


async def test_dht_table_and_direct_peers_are_kept() -> None:
    """Routing-table members and gossipsub direct peers keep their addresses however
    many other peers the DHT's answers bring in."""
    from fastp2p.config import DhtConfig, GossipsubConfig

    direct = _ids(1)[0]
    cfg = HostConfig(
        data_paths=("tcp",), max_peerstore_peers=4, dht=DhtConfig(enabled=True),
        pubsub=GossipsubConfig(enabled=True, direct_peers=(f"/ip4/10.9.9.9/tcp/9/p2p/{direct}",)),
    )
    async with fastp2p.Host(config=cfg) as h:
        member = _ids(1)[0]
        h.peerstore.add_addrs(member, [Multiaddr("/ip4/10.1.1.1/tcp/1")])
        assert h.dht.table.add(member.to_bytes(), 0.0)
        for i, p in enumerate(_ids(20)):  # what closer-peer answers would bring
            h.peerstore.add_addrs(p, [Multiaddr(f"/ip4/10.2.2.{i}/tcp/2")])
        assert h.peerstore.addrs(member) == [Multiaddr("/ip4/10.1.1.1/tcp/1")]
        assert h.peerstore.addrs(direct) == [Multiaddr("/ip4/10.9.9.9/tcp/9")]
        assert len(h.peerstore) == 4 and h.peerstore.evicted == 18
