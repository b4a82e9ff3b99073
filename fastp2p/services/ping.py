"""Ping service (/ipfs/ping/1.0.0): one stream per peer, reused for every ping."""

from __future__ import annotations

import asyncio
import functools
import os
import time
from typing import TYPE_CHECKING

from fastp2p.errors import RemoteProtocolError
from fastp2p.proto.ping import PING_SIZE, PROTOCOL_ID

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream

__all__ = ["Ping", "PROTOCOL_ID"]


class Ping:
    """Measure round trips to peers with the libp2p ping protocol.

    Creating it registers the responder on ``host``; calling it pings::

        rtt = await fastp2p.services.Ping(host)(peer)   # seconds
    """

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self._streams: dict[PeerID, Stream] = {}
        self._locks: dict[PeerID, asyncio.Lock] = {}
        host.set_handler(PROTOCOL_ID, self._handle)

    async def _handle(self, stream: Stream) -> None:
        buf = bytearray(PING_SIZE)
        view = memoryview(buf)
        while True:
            got = 0
            while got < PING_SIZE:
                n = await stream.readinto(view[got:])
                if n == 0:
                    if got:
                        raise RemoteProtocolError("truncated ping payload")
                    await stream.close_write()
                    return
                got += n
            await stream.write(buf)

    async def __call__(self, peer: PeerID) -> float:
        """Send one ping and return the round-trip time in seconds.

        Raises:
            RemoteProtocolError: the echo did not match what we sent.
            NegotiationError: the peer does not serve ping.
            StreamResetError, ConnectionClosedError: the stream or connection died.

        Cancellation: the ping stream is reset and dropped; the next call opens a new one.
        """
        lock = self._locks.setdefault(peer, asyncio.Lock())
        async with lock:
            stream = self._streams.get(peer)
            if stream is None or stream.is_closed:
                stream = await self.host.open_stream(peer, PROTOCOL_ID)
                self._streams[peer] = stream
                # Per-peer state lives only as long as the connection it pings over.
                stream.conn.closed.add_done_callback(functools.partial(self._forget, peer))
            payload = os.urandom(PING_SIZE)
            try:
                t0 = time.perf_counter()
                await stream.write(payload)
                echo = await stream.readexactly(PING_SIZE)
                rtt = time.perf_counter() - t0
            except BaseException:
                self._streams.pop(peer, None)
                stream.reset()
                await stream.aclose()
                raise
            if echo != payload:
                self._streams.pop(peer, None)
                stream.reset()
                raise RemoteProtocolError("ping echo does not match the payload")
            conn = stream.conn
            conn.stats.rtt = rtt
            return rtt

    def _forget(self, peer: PeerID, _closed: object = None) -> None:
        stream = self._streams.get(peer)
        if stream is not None and stream.is_closed:
            del self._streams[peer]
        lock = self._locks.get(peer)
        if lock is not None and not lock.locked() and peer not in self._streams:
            del self._locks[peer]

    async def aclose(self) -> None:
        """Close every ping stream."""
        for s in list(self._streams.values()):
            await s.aclose()
        self._streams.clear()
