"""A multi-address dial tries the next address after any failure of one address,
except when the peer there is provably not the one asked for.

Bug (issue 8, section 6): a listener that closed the connection cleanly during the
upgrade raised ``HandshakeError`` ("connection closed during ..."), a
``SecurityError``, and ``Host.connect(PeerInfo)`` stopped instead of trying the next
address. Only ``PeerIDMismatchError`` and ``IdentityProofError`` (a forged handshake
signature) stop a dial now; everything else ends in ``DialError`` with one cause per
address if no address works.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import fastp2p
from fastp2p.errors import (
    BrokenResourceError,
    DialError,
    HandshakeError,
    IdentityProofError,
    NegotiationError,
    PeerIDMismatchError,
)
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID
from fastp2p.peerstore import PeerInfo
from fastp2p.proto.multistream import MultistreamListener

from .hostile import BadSignatureListener

Behaviour = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accept, then a clean FIN before answering anything."""


async def _close_after_multistream(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter
) -> None:
    """Answer multistream /noise correctly, then a clean FIN during the Noise handshake."""
    ms = MultistreamListener(["/noise"])
    while not ms.done:
        data = await reader.read(65536)
        if not data:
            return
        ms.receive_data(data)
        writer.write(ms.data_to_send())
    await writer.drain()


async def _reset_during_noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer multistream, then an RST (SO_LINGER 0) instead of Noise message 2."""
    await _close_after_multistream(reader, writer)
    writer.transport.abort()


async def _garbage_noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Answer multistream, then a Noise message 2 of random bytes (malformed)."""
    await _close_after_multistream(reader, writer)
    writer.write(b"\x00\x60" + bytes(range(96)))
    await writer.drain()
    await reader.read(65536)


async def _not_noise(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """A libp2p-ish listener that only speaks /tls/1.0.0 (multistream says na)."""
    ms = MultistreamListener(["/tls/1.0.0"])
    while True:
        data = await reader.read(65536)
        if not data:
            return
        ms.receive_data(data)
        writer.write(ms.data_to_send())


BEHAVIOURS: dict[str, Behaviour] = {
    "clean-close-at-once": _close_at_once,
    "clean-close-during-noise": _close_after_multistream,
    "reset-during-noise": _reset_during_noise,
    "garbage-noise-message-2": _garbage_noise,
    "no-noise": _not_noise,
}


@contextlib.asynccontextmanager
async def bad_listener(behaviour: Behaviour) -> AsyncIterator[tuple[Multiaddr, list[int]]]:
    """A TCP listener that misbehaves; yields (address, [connections accepted])."""
    accepted = [0]
    tasks: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks[task] = writer
        accepted[0] += 1
        try:
            async with asyncio.timeout(10):
                await behaviour(reader, writer)
        except (OSError, TimeoutError, fastp2p.P2PError):
            pass  # the dialer's lazy Noise message 1 is garbage to a /tls-only listener
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
            tasks.pop(task, None)

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        port = server.sockets[0].getsockname()[1]
        yield Multiaddr(f"/ip4/127.0.0.1/tcp/{port}"), accepted
    finally:
        server.close()
        # Abort the sockets rather than cancel the handlers: Python 3.11's
        # start_server callback logs an error for a cancelled client_connected_cb task.
        for w in list(tasks.values()):
            w.transport.abort()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


def _tcp(addr: Multiaddr) -> Multiaddr:
    host, port = addr.tcp_host_port()
    return Multiaddr(f"/ip4/{host}/tcp/{port}")


@pytest.mark.parametrize("name", list(BEHAVIOURS))
async def test_failed_address_moves_on_to_the_next(name: str) -> None:
    async with (
        bad_listener(BEHAVIOURS[name]) as (bad, accepted),
        fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as server,
        fastp2p.Host() as client,
    ):
        good = _tcp(server.addrs[0])
        peer = await client.connect(PeerInfo(server.peer_id, (bad, good)))
        assert peer == server.peer_id
        assert accepted[0] == 1  # the bad address was tried first
        assert client.connection(server.peer_id) is not None


@pytest.mark.parametrize("name", list(BEHAVIOURS))
async def test_every_address_failing_gives_dial_error_with_each_cause(name: str) -> None:
    async with (
        bad_listener(BEHAVIOURS[name]) as (bad1, acc1),
        bad_listener(BEHAVIOURS[name]) as (bad2, acc2),
        fastp2p.Host() as client,
    ):
        who = PeerID.from_public_key(fastp2p.Ed25519PrivateKey.generate().public_key())
        with pytest.raises(DialError) as ei:
            await client.connect(PeerInfo(who, (bad1, bad2)))
        assert acc1[0] == 1 and acc2[0] == 1
        errors = ei.value.errors
        assert len(errors) == 2, errors
        for e in errors:  # closed/reset (BrokenResourceError, HandshakeError), malformed
            assert isinstance(e, (HandshakeError, NegotiationError, BrokenResourceError)), errors
            assert not isinstance(e, (PeerIDMismatchError, IdentityProofError))
        assert client.connections == []


async def test_peer_id_mismatch_stops_the_dial() -> None:
    async with (
        fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as impostor,
        fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as server,
        fastp2p.Host() as client,
    ):
        inbound: list[object] = []
        server.on_connection(inbound.append)
        with pytest.raises(PeerIDMismatchError):
            await client.connect(
                PeerInfo(server.peer_id, (_tcp(impostor.addrs[0]), _tcp(server.addrs[0])))
            )
        await asyncio.sleep(0.05)
        assert inbound == []  # the second (genuine) address was never tried
        assert client.connection(server.peer_id) is None


async def test_forged_signature_stops_the_dial() -> None:
    async with (
        BadSignatureListener() as forger,
        fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as server,
        fastp2p.Host() as client,
    ):
        inbound: list[object] = []
        server.on_connection(inbound.append)
        forged = Multiaddr(f"/ip4/127.0.0.1/tcp/{forger.port}")
        with pytest.raises(IdentityProofError):
            await client.connect(PeerInfo(server.peer_id, (forged, _tcp(server.addrs[0]))))
        await asyncio.sleep(0.05)
        assert inbound == []
        assert forger.sent_message2 == 1
