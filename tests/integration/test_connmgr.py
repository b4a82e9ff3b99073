"""Connection manager over real hosts on TCP loopback (fastp2p/services/connmgr.py)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import AsyncIterator, Callable

import pytest

from fastp2p.config import ConnectionManagerConfig, DhtConfig, GossipsubConfig, HostConfig
from fastp2p.errors import P2PError
from fastp2p.host import Host
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.services import serve_echo
from fastp2p.services.connmgr import KAD_TAG, PUBSUB_MESH_TAG

pytestmark = [pytest.mark.asyncio, pytest.mark.timeout(60)]

LOOPBACK = "/ip4/127.0.0.1/tcp/0"
FAST_PUBSUB = GossipsubConfig(heartbeat_interval=0.1, heartbeat_initial_delay=0.01)


def config(high: int, low: int, grace: float, **kw: object) -> HostConfig:
    cm = ConnectionManagerConfig(high_watermark=high, low_watermark=low, grace_period=grace, trim_interval=5.0)
    return HostConfig(data_paths=("tcp",), connection_manager=cm, **kw)  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def hosts(n: int, cfg: HostConfig | None = None) -> AsyncIterator[list[Host]]:
    async with contextlib.AsyncExitStack() as stack:
        yield [await stack.enter_async_context(Host(config=cfg or HostConfig(data_paths=("tcp",))))
               for _ in range(n)]


async def wait_until(cond: Callable[[], bool], timeout: float) -> float:
    """Seconds until ``cond()`` held (bounded); fails the test on timeout."""
    t0 = time.monotonic()
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)
    return time.monotonic() - t0


async def test_trims_to_low_watermark_after_grace_keeping_protected_and_valued() -> None:
    grace = 2.0
    async with Host(listen=[LOOPBACK], config=config(20, 10, grace)) as server, hosts(30) as clients:
        serve_echo(server)
        cm = server.connection_manager
        protected = [c.peer_id for c in clients[:3]]
        for p in protected:
            cm.protect(p, "test")
        valued = [c.peer_id for c in clients[3:10]]
        for i, p in enumerate(valued):
            cm.tag_peer(p, "useful", 10 + i)
        # the lower-valued ones (still above 0) must go before the valued ones
        for p in (c.peer_id for c in clients[10:15]):
            cm.tag_peer(p, "meh", 1)
        fds0 = len(os.listdir("/proc/self/fd"))
        t_open = time.monotonic()
        await asyncio.gather(*(c.connect(server.full_addrs[0]) for c in clients))
        # a stream on a connection that will be trimmed
        doomed = await clients[-1].open_stream(server.peer_id, "/echo/1.0.0")
        assert len(server.connections) == 30
        # grace period: nothing closes before it ends
        await asyncio.sleep(max(0.0, grace - 0.4 - (time.monotonic() - t_open)))
        assert len(server.connections) == 30
        took = await wait_until(lambda: len(server.connections) <= 10, 10.0)
        await asyncio.sleep(0.3)  # and no more than that
        survivors = {c.remote_peer for c in server.connections}
        assert survivors == set(protected) | set(valued), f"trimmed after {took:.2f}s"
        st = cm.stats()
        assert st["trimmed"] == 20 and st["trims"] >= 1 and st["protected_peers"] == 3
        assert server.metrics_registry.value("fastp2p_connmgr_trimmed_total") == 20
        # the trimmed side sees its connection closed and its stream fails
        await wait_until(lambda: clients[-1].connection(server.peer_id) is None, 5.0)
        with pytest.raises(P2PError):
            await doomed.write(b"x")
            await doomed.read(1)
        await doomed.aclose()
        # both ends of every trimmed connection released their socket
        await wait_until(lambda: len(os.listdir("/proc/self/fd")) <= fds0 + 2 * 10, 5.0)
        # protection by several tags
        cm.protect(protected[0], "other")
        assert cm.unprotect(protected[0], "test") is True
        assert cm.unprotect(protected[0], "other") is False
        assert cm.is_protected(protected[1]) and not cm.is_protected(protected[0])


async def test_below_high_watermark_nothing_is_trimmed_and_manual_trim() -> None:
    async with Host(listen=[LOOPBACK], config=config(5, 2, 0.0)) as server, hosts(5) as clients:
        await asyncio.gather(*(c.connect(server.full_addrs[0]) for c in clients))
        await asyncio.sleep(0.3)
        assert len(server.connections) == 5  # at the high watermark, not above
        assert await server.connection_manager.trim() == 0
        async with hosts(1) as (extra,):
            await extra.connect(server.full_addrs[0])
            # automatic, shortly after the sixth connection (grace 0)
            await wait_until(lambda: len(server.connections) == 2, 5.0)
        cm = server.connection_manager
        assert cm.stats()["trimmed"] == 4
        # tags: summed per peer; those of peers without a connection do not pile up
        kept = server.connections[0].remote_peer
        cm.tag_peer(kept, "a", 3)
        cm.tag_peer(kept, "b", 4)
        assert cm.value(kept) == 7 and cm.tags(kept) == {"a": 3, "b": 4}
        cm.untag_peer(kept, "a")
        assert cm.tags(kept) == {"b": 4}
        for c in clients:
            cm.tag_peer(c.peer_id, "x", 1)
        gone = [Ed25519PrivateKey.generate() for _ in range(200)]
        for k in gone:
            cm.tag_peer(PeerID.from_public_key(k.public_key()), "x", 1)
        assert cm.stats()["tagged_peers"] <= 2 * 64 + 1
        assert cm.value(kept) == 5  # a connected peer keeps its tags


async def test_disabled_manager_never_trims() -> None:
    cfg = HostConfig(data_paths=("tcp",), connection_manager=ConnectionManagerConfig(
        enabled=False, high_watermark=2, low_watermark=1, grace_period=0.0))
    async with Host(listen=[LOOPBACK], config=cfg) as server, hosts(4) as clients:
        await asyncio.gather(*(c.connect(server.full_addrs[0]) for c in clients))
        await asyncio.sleep(0.4)
        assert len(server.connections) == 4
        # trim() on request still applies the watermarks
        assert await server.connection_manager.trim() == 3


async def test_dht_and_pubsub_mesh_peers_are_protected() -> None:
    topic = "connmgr-test"
    dht = DhtConfig(enabled=True, mode="server", rpc_timeout=2.0, query_timeout=5.0)
    scfg = config(4, 2, 0.5, dht=dht, pubsub=FAST_PUBSUB)
    async with (
        Host(listen=[LOOPBACK], config=scfg) as server,
        hosts(2, HostConfig(data_paths=("tcp",), dht=dht)) as dht_peers,
        hosts(2, HostConfig(data_paths=("tcp",), pubsub=FAST_PUBSUB)) as mesh_peers,
        hosts(4) as plain,
    ):
        cm = server.connection_manager
        await server.pubsub.subscribe(topic)
        for m in mesh_peers:
            await m.pubsub.subscribe(topic)
        # the protected peers first (at the high watermark, no trim yet) ...
        await asyncio.gather(*(h.connect(server.full_addrs[0]) for h in [*dht_peers, *mesh_peers]))
        dht_ids = {h.peer_id for h in dht_peers}
        mesh_ids = {h.peer_id for h in mesh_peers}
        await wait_until(lambda: dht_ids <= set(server.dht.routing_table()), 5.0)
        await wait_until(lambda: mesh_ids <= set(server.pubsub.mesh(topic)), 5.0)
        for p in dht_ids:
            assert cm.is_protected(p) and cm.is_protected(p, KAD_TAG) and not cm.is_protected(p, PUBSUB_MESH_TAG)
        for p in mesh_ids:
            assert cm.is_protected(p, PUBSUB_MESH_TAG)
        await asyncio.sleep(0.6)  # their grace period is over
        # ... then 4 more take the host above it
        await asyncio.gather(*(h.connect(server.full_addrs[0]) for h in plain))
        assert len(server.connections) == 8
        assert not any(cm.is_protected(h.peer_id) for h in plain)
        # after the grace period the 4 plain peers go; the low watermark (2) cannot
        # be reached without closing protected peers, so it is not
        await wait_until(lambda: len(server.connections) == 4, 10.0)
        await asyncio.sleep(0.3)
        assert {c.remote_peer for c in server.connections} == dht_ids | mesh_ids
        assert cm.stats()["protected_peers"] == 4
