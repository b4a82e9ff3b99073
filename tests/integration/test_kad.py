"""Kademlia DHT over real hosts (memory transport and TCP loopback)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import replace

import pytest

from fastp2p.config import DhtConfig, HostConfig
from fastp2p.errors import ClosedResourceError, MultiaddrError
from fastp2p.host import Host
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.kad.messages_pb import KadMessage, KadReader, MessageType, frame
from fastp2p.proto.kad.records import RecordValidationError
from fastp2p.services.kad import PeerNotFoundError, ValueNotFoundError
from fastp2p.transport.memory import MemoryHub, MemoryTransport

pytestmark = pytest.mark.asyncio

DHT = DhtConfig(enabled=True, mode="server", rpc_timeout=2.0, query_timeout=10.0)


def config(**dht: object) -> HostConfig:
    return HostConfig(data_paths=("tcp",), dht=replace(DHT, **dht))  # type: ignore[arg-type]


@contextlib.asynccontextmanager
async def network(n: int, **dht: object) -> AsyncIterator[list[Host]]:
    hub = MemoryHub()
    async with contextlib.AsyncExitStack() as stack:
        hosts = [
            await stack.enter_async_context(
                Host(listen=["/memory/0"], config=config(**dht), transports=[MemoryTransport(hub)])
            )
            for _ in range(n)
        ]
        boot = hosts[0].full_addrs[0]
        await asyncio.gather(*(h.dht.bootstrap([boot]) for h in hosts[1:]))
        yield hosts


async def test_find_peer_provide_put_get_over_ten_hosts() -> None:
    async with network(10) as hosts:
        for h in hosts:
            assert len(h.dht.routing_table()) >= 5
        # every host finds every other (without a direct connection first)
        for a in hosts[1:4]:
            for b in hosts:
                if a is b:
                    continue
                info = await a.dht.find_peer(b.peer_id)
                assert info.peer_id == b.peer_id and info.addrs
        key = b"\x12\x20" + bytes(range(32))
        assert await hosts[3].dht.provide(key) > 0
        found = [i async for i in hosts[7].dht.find_providers(key, limit=5)]
        assert [i.peer_id for i in found] == [hosts[3].peer_id]
        assert found[0].addrs
        assert await hosts[2].dht.put_value(b"/fastp2p/greeting", b"hello") > 0
        assert await hosts[9].dht.get_value(b"/fastp2p/greeting") == b"hello"
        # newest wins
        await asyncio.sleep(0.01)
        await hosts[5].dht.put_value(b"/fastp2p/greeting", b"hello again")
        assert await hosts[8].dht.get_value(b"/fastp2p/greeting") == b"hello again"
        with pytest.raises(ValueNotFoundError):
            await hosts[4].dht.get_value(b"/fastp2p/nothing-here")
        with pytest.raises(RecordValidationError):
            await hosts[4].dht.put_value(b"/unknown-ns/x", b"v")
        with pytest.raises(RecordValidationError):
            await hosts[4].dht.put_value(b"/fastp2p/big", b"x" * (DHT.max_value_size + 1))
        with pytest.raises(PeerNotFoundError):
            await hosts[1].dht.find_peer(PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()))
        stats = hosts[0].dht.stats
        assert stats.rpcs_received.get("FIND_NODE", 0) > 0


async def test_connect_by_peer_id_asks_the_dht() -> None:
    async with network(6) as hosts:
        a, b = hosts[4], hosts[5]
        if a.connection(b.peer_id) is not None:
            await a.disconnect(b.peer_id)
        a.peerstore.record(b.peer_id).addrs.clear()
        assert await a.connect(b.peer_id) == b.peer_id
        assert a.connection(b.peer_id) is not None
        # a string peer id works too
        await a.disconnect(b.peer_id)
        assert await a.connect(str(b.peer_id)) == b.peer_id


async def _find_node(asker: Host, server: Host, key: bytes) -> list[bytes]:
    """One FIND_NODE from ``asker`` to ``server`` on the wire: the ids it names."""
    stream = await asker.open_stream(server.peer_id, "/ipfs/kad/1.0.0")
    await stream.write(frame(KadMessage(MessageType.FIND_NODE, key=key)))
    reader = KadReader()
    try:
        for _ in range(100):
            chunk = await stream.read(65536)
            assert chunk, "the server closed the stream without answering"
            got = reader.receive_data(chunk)
            if got:
                return [p.id for p in got[0].closer_peers]
        raise AssertionError("no answer in 100 reads")
    finally:
        await stream.aclose()


async def test_find_node_names_a_known_target_it_is_not_connected_to() -> None:
    """The target leads the answer when it is in the server's table, connected or
    not: js-libp2p's findPeer ends NotFound unless a closerPeers list names it."""
    async with network(4) as hosts:
        server, asker, target = hosts[0], hosts[1], hosts[3]
        assert target.peer_id in server.dht.routing_table()
        await server.disconnect(target.peer_id)
        for _ in range(100):
            if server.connection(target.peer_id) is None:
                break
            await asyncio.sleep(0.01)
        assert server.connection(target.peer_id) is None
        assert target.peer_id in server.dht.routing_table()
        ids = await _find_node(asker, server, target.peer_id.to_bytes())
        assert ids[0] == target.peer_id.to_bytes()
        assert len(ids) == len(set(ids))
        # never the asker itself
        assert asker.peer_id.to_bytes() not in await _find_node(asker, server, asker.peer_id.to_bytes())


async def test_provider_limit_and_early_exit() -> None:
    async with network(8) as hosts:
        key = b"\x12\x20" + b"\x07" * 32
        for h in hosts[1:6]:
            await h.dht.provide(key)
        got = [i async for i in hosts[7].dht.find_providers(key, limit=3)]
        assert len(got) == 3
        async for _ in hosts[6].dht.find_providers(key, limit=10):
            break  # leaving early cancels the lookup cleanly


async def test_client_mode_does_not_serve_and_is_not_in_tables() -> None:
    hub = MemoryHub()
    async with contextlib.AsyncExitStack() as stack:
        servers = [
            await stack.enter_async_context(
                Host(listen=["/memory/0"], config=config(), transports=[MemoryTransport(hub)]))
            for _ in range(4)
        ]
        for s in servers[1:]:
            await s.dht.bootstrap([servers[0].full_addrs[0]])
        client = await stack.enter_async_context(
            Host(config=config(mode="client"), transports=[MemoryTransport(hub)]))
        await client.dht.bootstrap([servers[0].full_addrs[0]])
        assert client.dht.mode == "client"
        assert "/ipfs/kad/1.0.0" not in client.protocols
        await asyncio.sleep(0.05)
        for s in servers:
            assert client.peer_id not in s.dht.routing_table()
        # a client can still use the DHT, and be found through the peers it is connected to
        await client.dht.put_value(b"/fastp2p/c", b"from a client")
        assert await servers[2].dht.get_value(b"/fastp2p/c") == b"from a client"


async def test_auto_mode_becomes_server_when_dialled_at_its_listen_address() -> None:
    cfg = config(mode="auto")
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as a, \
            Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as b:
        assert a.dht.mode == "client"
        await b.connect(a.full_addrs[0])
        for _ in range(100):
            if a.dht.mode == "server":
                break
            await asyncio.sleep(0.02)
        assert a.dht.mode == "server"
        assert "/ipfs/kad/1.0.0" in a.protocols


async def test_dht_disabled_by_default() -> None:
    async with Host(config=HostConfig()) as h:
        with pytest.raises(ClosedResourceError):
            _ = h.dht


async def test_bootstrap_list_retries_with_backoff() -> None:
    hub = MemoryHub()
    async with Host(listen=["/memory/0"], config=config(), transports=[MemoryTransport(hub)]) as a:
        addr = str(a.full_addrs[0])
        dead = "/memory/999/p2p/" + str(PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()))
        cfg = replace(config(), bootstrap=(addr, dead))
        async with Host(config=cfg, transports=[MemoryTransport(hub)]) as b:
            boot = b.bootstrapper  # type: ignore[attr-defined]
            boot.initial_backoff = 0.01
            for _ in range(100):
                if boot.connected and len(b.dht.routing_table()) >= 1 and boot.attempts.get(dead, 0) >= 2:
                    break
                await asyncio.sleep(0.02)
            assert boot.connected == [a.peer_id]
            assert a.peer_id in b.dht.routing_table()
            assert boot.attempts[dead] >= 2


async def test_bootstrap_list_refills_an_empty_routing_table() -> None:
    hub = MemoryHub()
    async with Host(listen=["/memory/0"], config=config(), transports=[MemoryTransport(hub)]) as a:
        cfg = replace(config(), bootstrap=(str(a.full_addrs[0]),))
        async with Host(config=cfg, transports=[MemoryTransport(hub)]) as b:
            boot = b.bootstrapper  # type: ignore[attr-defined]
            boot.refill_interval = 0.05
            async with asyncio.timeout(10):
                await boot.done.wait()
            assert b.dht.routing_table() == [a.peer_id]
            # the only peer leaves the table and the connection closes: dialled again
            await b.disconnect(a.peer_id)
            b.dht.table.remove(a.peer_id.to_bytes())
            async with asyncio.timeout(10):
                while not (boot.refills >= 1 and b.dht.routing_table() == [a.peer_id]):
                    await asyncio.sleep(0.02)
            assert b.connection(a.peer_id) is not None
            assert boot.connected == [a.peer_id]


async def test_bootstrap_list_rejects_a_malformed_multiaddr() -> None:
    with pytest.raises(MultiaddrError):
        async with Host(config=replace(config(), bootstrap=("/ip4/not-an-ip/tcp/1",))):
            pass
