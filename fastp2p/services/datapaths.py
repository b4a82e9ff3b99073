"""Data-path upgrades owned by the Host: which faster path each connection gets.

For every new outbound connection, once identify has told us the peer's
protocols, the Host tries the paths named in ``HostConfig.data_paths`` in
order (today ``"shm"``; ``"tcp"`` is where every connection starts). The
listener side answers with the ``/fastp2p/shm/1.0.0`` handler. Whatever
happens, the connection keeps working: on refusal or failure it stays on TCP
and ``conn.data_path_reason`` (also in ``conn.statistics()``) says why.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fastp2p.errors import P2PError
from fastp2p.transport import shm

if TYPE_CHECKING:
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream
    from fastp2p.transport.conn import Connection

__all__ = ["DataPaths"]

log = logging.getLogger("fastp2p.datapaths")


class DataPaths:
    """Upgrades connections to the shared-memory path when both peers can."""

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self.cfg = host.config.shm
        self.enabled = "shm" in host.config.data_paths
        self.available = shm.available() if self.enabled else (False, "shm is not in HostConfig.data_paths")
        self._done: dict[Connection, asyncio.Future[None]] = {}
        if self.enabled and self.available[0]:
            host.set_handler(shm.PROTOCOL_ID, self._serve)
        host.on_connection(self._on_connection)

    def _on_connection(self, conn: Connection) -> None:
        if not (self.enabled and self.available[0]):
            conn.data_path_reason = self.available[1]
            return
        if not conn.outbound:
            conn.data_path_reason = "the dialer has not asked for a faster path"
            return
        conn.data_path_reason = "upgrade in progress"
        fut = asyncio.get_running_loop().create_future()
        self._done[conn] = fut
        conn.closed.add_done_callback(lambda _: self._done.pop(conn, None))
        self.host.spawn(self._upgrade(conn, fut))

    async def wait_settled(self, conn: Connection) -> None:
        """Wait until the upgrade attempt on ``conn`` finished (either way)."""
        fut = self._done.get(conn)
        if fut is not None:
            await asyncio.shield(fut)

    async def _upgrade(self, conn: Connection, fut: asyncio.Future[None]) -> None:
        stream = None
        try:
            if self.host.config.enable_identify:
                await self.host.wait_identified(conn)
                protos = self.host.peerstore.record(conn.remote_peer).protocols
                if shm.PROTOCOL_ID not in (protos or ()):
                    conn.data_path_reason = f"peer does not offer {shm.PROTOCOL_ID}"
                    return
            async with asyncio.timeout(self.cfg.upgrade_timeout):
                stream = conn.open_stream()
                await shm.upgrade_outbound(conn, stream, self.cfg)
            conn.data_path_reason = None
            log.debug("connection to %s upgraded to shared memory", conn.remote_peer)
        except shm.UpgradeRefused as exc:
            conn.data_path_reason = str(exc)
        except (P2PError, OSError, TimeoutError) as exc:
            conn.data_path_reason = f"shared-memory upgrade failed: {exc!r}"
            log.info("shm upgrade with %s failed: %r", conn.remote_peer, exc)
        finally:
            if stream is not None:
                with contextlib.suppress(P2PError, OSError):
                    await stream.aclose()
            if not fut.done():
                fut.set_result(None)

    async def _serve(self, stream: Stream) -> None:
        conn = stream.conn
        try:
            async with asyncio.timeout(self.cfg.upgrade_timeout):
                if await shm.serve_upgrade(conn, stream, self.cfg, self.available) is not None:
                    conn.data_path_reason = None
        except shm.UpgradeRefused as exc:
            conn.data_path_reason = str(exc)
        except (P2PError, OSError, TimeoutError) as exc:
            conn.data_path_reason = f"shared-memory upgrade failed: {exc!r}"
            log.info("shm upgrade from %s failed: %r", conn.remote_peer, exc)
