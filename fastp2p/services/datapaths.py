"""Data-path upgrades owned by the Host: which faster path each connection gets.

For every new outbound connection, once identify has told us the peer's
protocols, the Host tries the paths named in ``HostConfig.data_paths`` in
order (``"rdma"``, ``"shm"``; ``"tcp"`` is where every connection starts),
each only when this process can use it and the peer offers its protocol. The
listener side answers with the ``/fastp2p/shm/1.0.0`` and
``/fastp2p/rdma/1.0.0`` handlers. Whatever happens, the connection keeps
working: on refusal or failure it stays on TCP and ``conn.data_path_reason``
(also in ``conn.statistics()``) says why.

Same host: with ``RdmaConfig.same_host == "shm"`` (the default) the dialer's
RDMA HELLO carries its kernel boot id and a listener that can do shared
memory refuses RDMA to a peer on its own host, so the dialer goes on to shm
(one round trip spent). ``same_host="rdma"`` leaves the choice to the order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from fastp2p.errors import AccessDeniedError, P2PError
from fastp2p.logs import conn_extra
from fastp2p.transport import shm

if TYPE_CHECKING:
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream
    from fastp2p.transport.conn import Connection

__all__ = ["DataPaths"]

log = logging.getLogger("fastp2p.datapaths")


def _no_regions(*args: object, **kw: object) -> tuple[object, int]:
    raise AccessDeniedError("this host has no memory regions")


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
        self.rdma_cfg = host.config.rdma
        self.rdma_enabled = "rdma" in host.config.data_paths
        self.rdma_available = (False, "rdma is not in HostConfig.data_paths")
        if self.rdma_enabled:
            from fastp2p import rdma

            self.rdma_available = rdma.available(self.rdma_cfg.device)
            if self.rdma_available[0]:
                from fastp2p.transport import rdma as rdma_path

                host.set_handler(rdma_path.PROTOCOL_ID, self._serve_rdma)
        host.on_connection(self._on_connection)
        host.on_disconnect(lambda conn: self._done.pop(conn, None))

    def _on_connection(self, conn: Connection) -> None:
        if not (self.enabled and self.available[0]) and not self.rdma_available[0]:
            # shm's reason first (the common case: no RDMA here); rdma's when only it was asked
            conn.data_path_reason = self.available[1]
            if self.rdma_enabled and not self.enabled:
                conn.data_path_reason = f"rdma: {self.rdma_available[1]}"
            return
        if not conn.outbound:
            conn.data_path_reason = "the dialer has not asked for a faster path"
            return
        conn.data_path_reason = "upgrade in progress"
        fut = asyncio.get_running_loop().create_future()
        self._done[conn] = fut
        self.host.spawn(self._upgrade(conn, fut))

    async def wait_settled(self, conn: Connection) -> None:
        """Wait until the upgrade attempt on ``conn`` finished (either way)."""
        fut = self._done.get(conn)
        if fut is not None:
            await asyncio.shield(fut)

    async def _upgrade(self, conn: Connection, fut: asyncio.Future[None]) -> None:
        try:
            protos: tuple[str, ...] | None = None
            if self.host.config.enable_identify:
                await self.host.wait_identified(conn)
                protos = tuple(self.host.peerstore.record(conn.remote_peer).protocols or ())
            reasons = []
            for name in self.host.config.data_paths:
                if name == "rdma" and self.rdma_enabled:
                    why = await self._try_rdma(conn, protos)
                elif name == "shm" and self.enabled and self.available[0]:
                    why = await self._try_shm(conn, protos)
                else:
                    continue
                if why is None:
                    conn.data_path_reason = None
                    return
                reasons.append(why)
                if conn.is_closed or conn.data_path != "tcp":
                    break
            conn.data_path_reason = "; ".join(reasons) or "no faster data path configured"
        except (P2PError, OSError, TimeoutError, ValueError) as exc:
            conn.data_path_reason = f"data-path upgrade failed: {exc!r}"
        finally:
            if not fut.done():
                fut.set_result(None)

    async def _try_rdma(self, conn: Connection, protos: tuple[str, ...] | None) -> str | None:
        """One RDMA upgrade attempt: None on success, else why not."""
        from fastp2p.transport import rdma as rdma_path

        if not self.rdma_available[0]:
            return f"rdma: {self.rdma_available[1]}"
        if protos is not None and rdma_path.PROTOCOL_ID not in protos:
            return f"peer does not offer {rdma_path.PROTOCOL_ID}"
        stream = None
        try:
            async with asyncio.timeout(self.rdma_cfg.upgrade_timeout):
                stream = conn.open_stream()
                bid = shm.boot_id() if self.rdma_cfg.same_host == "shm" else b""
                await rdma_path.upgrade_outbound(conn, stream, self.rdma_cfg, bid)
            log.debug("connection to %s upgraded to RDMA", conn.remote_peer, extra=conn_extra(conn))
            return None
        except rdma_path.UpgradeRefused as exc:
            return f"rdma: {exc}"
        except (P2PError, OSError, TimeoutError) as exc:
            log.info("rdma upgrade with %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))
            return f"RDMA upgrade failed: {exc!r}"
        finally:
            if stream is not None:
                with contextlib.suppress(P2PError, OSError):
                    await stream.aclose()

    async def _serve_rdma(self, stream: Stream) -> None:
        from fastp2p.transport import rdma as rdma_path

        conn = stream.conn
        same = shm.boot_id() if (self.enabled and self.available[0]) else None
        # the Host's MemoryManager checks grant tokens of one-sided operations
        memory = getattr(self.host, "memory", None)
        check = memory.check if memory is not None else _no_regions
        try:
            async with asyncio.timeout(self.rdma_cfg.upgrade_timeout + self.rdma_cfg.grant_timeout):
                path = await rdma_path.serve(
                    conn, stream, self.rdma_cfg, self.rdma_available, check, same
                )
                if path is not None:
                    conn.data_path_reason = None
        except rdma_path.UpgradeRefused as exc:
            conn.data_path_reason = f"rdma: {exc}"
        except (P2PError, OSError, TimeoutError) as exc:
            if conn.data_path == "tcp":
                conn.data_path_reason = f"RDMA upgrade failed: {exc!r}"
            log.info("rdma stream from %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))

    async def _try_shm(self, conn: Connection, protos: tuple[str, ...] | None) -> str | None:
        """One shared-memory upgrade attempt: None on success, else why not."""
        stream = None
        try:
            if protos is not None and shm.PROTOCOL_ID not in protos:
                return f"peer does not offer {shm.PROTOCOL_ID}"
            async with asyncio.timeout(self.cfg.upgrade_timeout):
                stream = conn.open_stream()
                await shm.upgrade_outbound(conn, stream, self.cfg)
            log.debug("connection to %s upgraded to shared memory", conn.remote_peer, extra=conn_extra(conn))
            return None
        except shm.UpgradeRefused as exc:
            return str(exc)
        except (P2PError, OSError, TimeoutError) as exc:
            log.info("shm upgrade with %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))
            return f"shared-memory upgrade failed: {exc!r}"
        finally:
            if stream is not None:
                with contextlib.suppress(P2PError, OSError):
                    await stream.aclose()

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
            log.info("shm upgrade from %s failed: %r", conn.remote_peer, exc, extra=conn_extra(conn))
