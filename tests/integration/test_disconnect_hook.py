"""``Host.on_disconnect``: services learn of a closed connection from one host
hook, not from a closure each holds on every open connection; identify keeps
nothing per connection once it is done."""

from __future__ import annotations

import asyncio
import logging

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.testing import host_pair

CFG = HostConfig(data_paths=("tcp",))


async def test_every_closed_connection_is_reported_once_after_the_close(
        caplog: pytest.LogCaptureFixture) -> None:
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=CFG) as server:
        seen: list[tuple[object, bool]] = []
        server.on_disconnect(lambda c: 1 / 0)  # a failing callback harms no other one
        server.on_disconnect(lambda c: seen.append((c, c.closed.done())))
        for _ in range(3):
            async with fastp2p.Host(config=CFG) as client:
                await client.connect(f"{server.addrs[0]}/p2p/{server.peer_id}")
                conn = server.connection(client.peer_id)
                assert conn is not None
                await asyncio.sleep(0)
                assert seen == [] or seen[-1][0] is not conn  # not while it is open
            for _ in range(100):
                if seen and seen[-1][0] is conn:
                    break
                await asyncio.sleep(0.01)
            assert seen[-1] == (conn, True)  # after the close: conn.closed is done
        assert len(seen) == 3 and len({id(c) for c, _ in seen}) == 3
    assert "on_disconnect callback failed" in caplog.text
    assert any(r.levelno == logging.ERROR and r.exc_info for r in caplog.records)


async def test_identify_keeps_nothing_per_connection_once_done() -> None:
    async with host_pair(CFG) as (a, b, peer):
        await a.wait_identified(a.connection(peer))
        for _ in range(100):
            if not b._identify._done:  # noqa: SLF001 - the listener's side finishes on its own
                break
            await asyncio.sleep(0.01)
        assert a._identify._done == {} and b._identify._done == {}  # noqa: SLF001
        # no done-callback left on the connection by identify (nor by the data paths)
        assert not a.connection(peer).closed._callbacks  # noqa: SLF001
        await a.wait_identified(a.connection(peer))  # at once, as before


async def test_a_connection_closed_during_identify_is_forgotten() -> None:
    from fastp2p.proto.identify import PROTOCOL_ID

    async def never_answer(stream) -> None:  # type: ignore[no-untyped-def]
        await asyncio.sleep(60)

    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=CFG) as server:
        # a dialer that takes the identify request and never answers: the
        # listener's identify waits until the connection closes
        client = fastp2p.Host(config=HostConfig(data_paths=("tcp",), enable_identify=False))
        async with client:
            client.set_handler(PROTOCOL_ID, never_answer)
            await client.connect(f"{server.addrs[0]}/p2p/{server.peer_id}")
            conn = None
            for _ in range(100):
                conn = server.connection(client.peer_id)
                if conn is not None:
                    break
                await asyncio.sleep(0.01)
            assert conn is not None
            await asyncio.sleep(0.05)
            assert conn in server._identify._done  # noqa: SLF001 - still waiting for an answer
        for _ in range(100):
            if conn not in server._identify._done:  # noqa: SLF001
                break
            await asyncio.sleep(0.01)
        assert conn not in server._identify._done  # noqa: SLF001
