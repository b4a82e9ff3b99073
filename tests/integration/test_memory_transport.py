"""MemoryTransport: /memory/<n> addresses carrying the real Noise + yamux stack."""

from __future__ import annotations

import asyncio

import pytest

from fastp2p.config import HostConfig
from fastp2p.errors import DialError
from fastp2p.host import Host
from fastp2p.multiaddr import Multiaddr
from fastp2p.transport.memory import MemoryConnection, MemoryHub, MemoryTransport

CFG = HostConfig(data_paths=("tcp",))


async def echo(stream) -> None:  # type: ignore[no-untyped-def]
    while data := await stream.read(65536):
        await stream.write(data)
    await stream.close_write()


async def test_hosts_over_memory_transport() -> None:
    hub = MemoryHub()
    async with Host(listen=["/memory/0"], config=CFG, transports=[MemoryTransport(hub)]) as a, Host(
        listen=["/memory/0"], config=CFG, transports=[MemoryTransport(hub, latency=0.001)]
    ) as b:
        assert str(a.addrs[0]).startswith("/memory/")
        a.set_handler("/echo/1.0.0", echo)
        peer = await b.connect(a.full_addrs[0])
        assert peer == a.peer_id
        stream = await b.open_stream(peer, "/echo/1.0.0")
        payload = bytes(range(256)) * 4096  # 1 MiB: exercises flow control
        writer = asyncio.create_task(stream.write(payload))
        got = bytearray()
        while len(got) < len(payload):
            got += await stream.read(65536)
        await writer
        assert bytes(got) == payload
        await stream.close_write()
        assert await stream.read() == b""
        assert await b.ping(peer) >= 0


async def test_separate_hubs_do_not_see_each_other() -> None:
    t1, t2 = MemoryTransport(MemoryHub()), MemoryTransport(MemoryHub())

    async def accept(conn) -> None:  # type: ignore[no-untyped-def]
        conn.close()

    lst = await t1.listen(Multiaddr("/memory/0"), accept)
    with pytest.raises(DialError):
        await t2.dial(lst.addrs[0])
    conn = await t1.dial(lst.addrs[0])
    assert await conn.read_some() == b""  # the listener closed it: EOF
    await lst.aclose()
    with pytest.raises(DialError):
        await t1.dial(lst.addrs[0])
    assert not t1.can_dial(Multiaddr("/ip4/127.0.0.1/tcp/1"))


async def test_abort_and_backpressure() -> None:
    hub = MemoryHub()
    t = MemoryTransport(hub)
    server: list[MemoryConnection] = []

    async def accept(conn) -> None:  # type: ignore[no-untyped-def]
        server.append(conn)

    lst = await t.listen(Multiaddr("/memory/7"), accept)
    with pytest.raises(OSError):
        await t.listen(Multiaddr("/memory/7"), accept)
    client = await t.dial(Multiaddr("/memory/7"))
    await asyncio.sleep(0)
    (srv,) = server
    srv.pause_reading()
    client.write(b"x" * (5 << 20))
    await asyncio.sleep(0.01)
    assert client.write_paused
    drained = asyncio.create_task(client.drain())
    await asyncio.sleep(0.01)
    assert not drained.done()
    received = []
    srv.start_push(lambda v: received.append(len(v)), lambda exc: None)
    srv.resume_reading()
    await asyncio.wait_for(drained, 1)
    assert sum(received) == 5 << 20
    client.abort()
    await asyncio.sleep(0.01)
    assert srv.is_closed and client.is_closed
    await lst.aclose()
