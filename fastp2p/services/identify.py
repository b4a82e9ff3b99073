"""Identify (/ipfs/id/1.0.0) and identify-push (/ipfs/id/push/1.0.0).

On every new connection each side asks the other who it is; answers land in
the host's peerstore. ``push()`` tells connected peers about changes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
from typing import TYPE_CHECKING, Any

from fastp2p.errors import FrameTooLargeError, P2PError
from fastp2p.logs import conn_extra
from fastp2p.multiaddr import Multiaddr
from fastp2p.proto.identify import (
    PROTOCOL_ID,
    PUSH_PROTOCOL_ID,
    IdentifyInfo,
    IdentifyReader,
    encode_identify,
)
from fastp2p.proto.protobuf import length_prefixed

if TYPE_CHECKING:
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream
    from fastp2p.transport.conn import Connection

__all__ = ["Identify", "PROTOCOL_ID", "PUSH_PROTOCOL_ID"]

MAX_IDENTIFY_BYTES = 64 * 1024 + 16

log = logging.getLogger("fastp2p.identify")


#: how many verified signed peer records (envelope bytes) are remembered
RECORD_MEMO_SIZE = 256
# A host signs its record once per address change, so every connection to it
# carries the same envelope: verifying it again is a wasted signature check
# (pure function of the bytes; only successes are kept).
_OPENED: collections.OrderedDict[bytes, Any] = collections.OrderedDict()


def _open_record(envelope: bytes) -> Any:
    """``open_peer_record`` with a bounded memo of envelopes that verified."""
    got = _OPENED.get(envelope)
    if got is not None:
        _OPENED.move_to_end(envelope)
        return got
    from fastp2p.proto.peer_record import open_peer_record

    got = _OPENED[envelope] = open_peer_record(envelope)
    if len(_OPENED) > RECORD_MEMO_SIZE:
        _OPENED.popitem(last=False)
    return got


class Identify:
    """The identify service of one Host (created by the Host itself)."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self._done: dict[Connection, asyncio.Future[None]] = {}
        self._push_pending = False
        self._own_record: tuple[tuple[Multiaddr, ...], bytes] | None = None
        self._own_seq = 0
        #: (what it depends on, encoded fields before / after observedAddr)
        self._answer: tuple[tuple[Any, ...], bytes, bytes] | None = None
        host.set_handler(PROTOCOL_ID, self._handle_request)
        host.set_handler(PUSH_PROTOCOL_ID, self._handle_push)
        host.on_connection(self._on_connection)
        host.on_disconnect(self._forget)

    def local_info(self, conn: Connection | None = None) -> IdentifyInfo:
        """What we tell peers about ourselves."""
        host = self.host
        return IdentifyInfo(
            protocol_version=host.config.protocol_version,
            agent_version=host.config.agent_version,
            public_key=host.identity.public_key().to_protobuf(),
            listen_addrs=[a.to_bytes() for a in host.addrs],
            observed_addr=conn.remote_addr.to_bytes() if conn and conn.remote_addr else None,
            protocols=sorted(host.protocols),
            signed_peer_record=self._signed_record(),
        )

    def _encoded_answer(self, conn: Connection) -> bytes:
        """``local_info(conn)``, length-prefixed as on the wire.

        Only ``observedAddr`` differs between connections, so the fields around
        it are encoded once per change of addresses, protocols or versions
        (the bytes are exactly those of ``encode_identify(local_info(conn))``).
        """
        host = self.host
        addrs = tuple(host.addrs)
        key = (addrs, tuple(host.protocols), host.config.agent_version, host.config.protocol_version)
        got = self._answer
        if got is None or got[0] != key:
            info = self.local_info()
            head = encode_identify(IdentifyInfo(
                protocol_version=info.protocol_version,
                agent_version=info.agent_version,
                public_key=info.public_key,
                listen_addrs=info.listen_addrs,
            ))
            tail = encode_identify(IdentifyInfo(
                protocols=info.protocols, signed_peer_record=info.signed_peer_record
            ))
            got = self._answer = (key, head, tail)
        observed = b""
        if conn.remote_addr:
            observed = encode_identify(IdentifyInfo(observed_addr=conn.remote_addr.to_bytes()))
        return length_prefixed(got[1] + observed + got[2])

    def _signed_record(self) -> bytes | None:
        """Our listen addresses in a signed peer record, re-signed only when they change."""
        addrs = tuple(self.host.addrs)
        if not addrs:
            return None
        if self._own_record is None or self._own_record[0] != addrs:
            import time

            from fastp2p.proto.peer_record import PeerRecord, seal_peer_record

            # seq must grow across restarts too: unix time in ms (RFC 0003 allows it)
            self._own_seq = max(self._own_seq + 1, int(time.time() * 1000))
            rec = PeerRecord(self.host.peer_id, self._own_seq, addrs)
            self._own_record = (addrs, seal_peer_record(self.host.identity, rec))
        return self._own_record[1]

    def _on_connection(self, conn: Connection) -> None:
        fut = asyncio.get_running_loop().create_future()
        self._done[conn] = fut
        # The request leaves in this pass, with the connection's first frames: every
        # libp2p peer serves identify, so it is proposed without waiting for the
        # answer (a peer that refuses fails the first read, as a failed identify).
        # Over mplex too: this side half-closes only after reading the answer to
        # EOF, after the peer's negotiation (reads_first).
        stream = None
        with contextlib.suppress(P2PError):
            stream = self.host.open_stream_nowait(conn, PROTOCOL_ID, reads_first=True)
        self.host.spawn(self._identify(conn, fut, stream))

    async def wait_identified(self, conn: Connection) -> None:
        """Wait until identify with ``conn``'s peer finished (successfully or not)."""
        fut = self._done.get(conn)
        if fut is not None and not fut.done():
            await asyncio.shield(fut)

    async def _identify(self, conn: Connection, fut: asyncio.Future[None], stream: Stream | None) -> None:
        try:
            if stream is None:
                stream = await self.host.open_stream(conn.remote_peer, PROTOCOL_ID)
            async with stream:
                await self._read_info(stream, conn)
                # identified: the waiting connect() goes on now, not after the close
                if not fut.done():
                    fut.set_result(None)
        except (P2PError, OSError, TimeoutError, EOFError) as exc:
            log.debug("identify with %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))
        finally:
            if not fut.done():
                fut.set_result(None)
            # done: wait_identified returns at once without an entry (nothing kept
            # per open connection)
            if self._done.get(conn) is fut:
                del self._done[conn]

    def _forget(self, conn: Connection) -> None:
        self._done.pop(conn, None)

    async def _read_info(self, stream: Stream, conn: Connection) -> None:
        reader = IdentifyReader()
        total = 0
        while chunk := await stream.read(16384):
            total += len(chunk)
            if total > MAX_IDENTIFY_BYTES:
                stream.reset()
                raise FrameTooLargeError("identify message too large")
            reader.receive_data(chunk)
        for info in reader.messages():
            self._apply(conn, info)

    def _apply(self, conn: Connection, info: IdentifyInfo) -> None:
        ps = self.host.peerstore
        rec = ps.record(conn.remote_peer)
        if info.agent_version is not None:
            rec.agent_version = info.agent_version
        if info.protocol_version is not None:
            rec.protocol_version = info.protocol_version
        if info.protocols is not None:
            rec.protocols = list(info.protocols)[:512]
        addrs = []
        for raw in info.listen_addrs or ():
            try:
                addrs.append(raw if isinstance(raw, Multiaddr) else Multiaddr.from_bytes(raw))
            except P2PError:
                continue
        if addrs:
            rec.listen_addrs = addrs[:64]
            ps.add_addrs(conn.remote_peer, addrs)
        if info.observed_addr:
            with contextlib.suppress(P2PError):
                rec.observed_addr = (
                    info.observed_addr
                    if isinstance(info.observed_addr, Multiaddr)
                    else Multiaddr.from_bytes(info.observed_addr)
                )
        if info.signed_peer_record:
            try:
                signed = _open_record(bytes(info.signed_peer_record))
            except P2PError as exc:
                log.debug("bad signed peer record from %s: %s", conn.remote_peer, exc, extra=conn_extra(conn))
            else:
                if signed.peer_id == conn.remote_peer and signed.seq > rec.signed_record_seq:
                    rec.signed_record = info.signed_peer_record
                    rec.signed_record_seq = signed.seq
        rec.identified = True

    async def _handle_request(self, stream: Stream) -> None:
        await stream.write(self._encoded_answer(stream.conn))
        await stream.close_write()

    async def _handle_push(self, stream: Stream) -> None:
        await self._read_info(stream, stream.conn)

    def schedule_push(self) -> None:
        """Push our info to every peer soon; changes made in the same tick coalesce."""
        if self._push_pending:
            return
        self._push_pending = True

        async def later() -> None:
            await asyncio.sleep(0)
            self._push_pending = False
            await self.push()

        self.host.spawn(later())

    async def push(self) -> None:
        """Send our current identify info to every connected peer."""
        data = length_prefixed(encode_identify(self.local_info()))
        for conn in list(self.host.connections):
            try:
                stream = await self.host.open_stream(conn.remote_peer, PUSH_PROTOCOL_ID)
                async with stream:
                    await stream.write(data)
            except (P2PError, OSError) as exc:
                log.debug("identify push to %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))
