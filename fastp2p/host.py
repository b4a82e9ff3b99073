"""Host: a libp2p node — identity, listeners, connections, protocol handlers.

A Host is an async context manager; everything it starts (listeners,
connections, handler tasks) is stopped and released when the block exits.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fastp2p import _accel
from fastp2p._typing import Handler
from fastp2p.config import AGENT_PREFIX, HostConfig
from fastp2p.errors import (
    ClosedResourceError,
    DialError,
    IdentityProofError,
    NegotiationError,
    P2PError,
    PeerIDMismatchError,
    PnetError,
    RemoteProtocolError,
    ResourceLimitExceededError,
    StreamErrorCode,
)
from fastp2p.logs import conn_extra
from fastp2p.memory import MemoryManager
from fastp2p.metrics import HostMetrics, MetricsRegistry, busy_poll_collector, pubsub_collector
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.peerstore import PeerInfo, Peerstore
from fastp2p.stream import Stream
from fastp2p.transport.base import Listener, RawConnection, Transport
from fastp2p.transport.busypoll import BusyPoller
from fastp2p.transport.conn import Connection
from fastp2p.transport.stream_transport import StreamTransport
from fastp2p.transport.tcp import TcpTransport
from fastp2p.transport.upgrader import (
    MPLEX_PROTOCOL_ID,
    SecuredChannel,
    make_session,
    negotiate_inbound,
    negotiate_lazy,
    negotiate_outbound,
    prepare_identity,
    propose_now,
    secure_inbound,
    secure_outbound,
)

if TYPE_CHECKING:
    from fastp2p._native.buffer import MemoryRegion
    from fastp2p.services.datapaths import DataPaths
    from fastp2p.services.files import Files
    from fastp2p.services.identify import Identify
    from fastp2p.services.kad import Dht
    from fastp2p.services.mdns import Mdns
    from fastp2p.services.ping import Ping
    from fastp2p.services.pubsub import Pubsub

__all__ = ["Host"]

log = logging.getLogger("fastp2p.host")


class Host:
    """A libp2p host.

    Args:
        identity: the host's private key; a fresh Ed25519 key when None.
        listen: multiaddrs to listen on (``/ip4/127.0.0.1/tcp/0`` picks a port).
        config: a ``HostConfig``; defaults are libp2p's.
        transports: the ``Transport`` objects that dial and listen, first match
            wins (``[TcpTransport()]`` when None).

    Example::

        async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as host:
            host.set_handler("/echo/1.0.0", echo)
            peer = await host.connect(addr)
            stream = await host.open_stream(peer, "/echo/1.0.0")
    """

    def __init__(
        self,
        identity: Ed25519PrivateKey | None = None,
        *,
        listen: Iterable[str | Multiaddr] = (),
        config: HostConfig | None = None,
        transports: Sequence[Transport] | None = None,
    ) -> None:
        self.identity = identity or Ed25519PrivateKey.generate()
        self.config = config or HostConfig()
        self.peer_id: PeerID = PeerID.from_public_key(self.identity.public_key())
        self.peerstore = Peerstore(self.config.max_peerstore_peers)
        self._buffers: Any = None  # a BufferPool, made on first use (``buffers``)
        self.memory = MemoryManager()
        self._listen = [Multiaddr(a) if not isinstance(a, Multiaddr) else a for a in listen]
        self._listeners: list[Listener] = []
        self.transports: list[Transport] = list(transports) if transports else [TcpTransport()]
        self._handlers: dict[str, Handler] = {}
        self._matchers: list[tuple[Callable[[str], bool], str]] = []
        self._conns: dict[PeerID, list[Connection]] = {}
        self.peerstore.keep_while(self._conns.__contains__)  # connected peers stay
        self._dialing: dict[PeerID, asyncio.Task[Connection]] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        # Every spawned task's done-callback, bound once and run in one empty
        # context: add_done_callback would copy the caller's context per task
        # (two objects per inbound stream for the garbage collector to walk).
        self._untrack = self._tasks.discard
        self._untrack_ctx = contextvars.Context()
        #: inbound connections in the upgrade, oldest first (dict as an ordered set)
        self._pending_inbound: dict[RawConnection, None] = {}
        self._running = False
        self._closing = False
        self._identify: Identify | None = None
        self._ping: Ping | None = None
        self._datapaths: DataPaths | None = None
        self._pubsub: Pubsub | None = None
        self._files: Files | None = None
        self._dht: Dht | None = None
        self._on_connect: list[Callable[[Connection], Any]] = []
        self._on_disconnect: list[Callable[[Connection], Any]] = []
        self._mdns: Mdns | None = None
        #: HostConfig.busy_poll_us: made at start, on the host's loop
        self._busy_poll: BusyPoller | None = None
        self._on_discovered: list[Callable[[PeerID, list[Multiaddr]], Any]] = []
        #: This host's metrics; services register their own figures here.
        self.metrics_registry = MetricsRegistry()
        self._metrics = HostMetrics(self.metrics_registry, lambda: self.connections, self.peerstore)
        from fastp2p.services.connmgr import ConnectionManager

        #: Trims connections between watermarks; ``protect``/``tag_peer`` steer it.
        self.connection_manager = ConnectionManager(self, self.config.connection_manager)

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Start listening and the built-in services (identify, ping)."""
        if self._running:
            return
        self._running = True
        prepare_identity(self.identity)  # Noise static key + signature, once per host
        if self.config.busy_poll_us:
            self._busy_poll = BusyPoller(asyncio.get_running_loop(), self.config.busy_poll_us)
            self.metrics_registry.add_collector(busy_poll_collector(self._busy_poll))
        from fastp2p.services.identify import Identify
        from fastp2p.services.ping import Ping

        if self.config.enable_identify:
            self._identify = Identify(self)
        if self.config.enable_ping:
            self._ping = Ping(self)
        from fastp2p.services import connmgr
        from fastp2p.services.datapaths import DataPaths
        from fastp2p.transport import regions

        self._datapaths = DataPaths(self)
        self.set_handler(regions.PROTOCOL_ID, self._serve_region)
        if self.config.pubsub.enabled:
            from fastp2p.services.pubsub import Pubsub

            self._pubsub = Pubsub(self, self.config.pubsub)
            self.metrics_registry.add_collector(pubsub_collector(self._pubsub))
            self.connection_manager.add_protector(connmgr.PUBSUB_MESH_TAG, connmgr.pubsub_mesh_peers(self._pubsub))
        if self.config.dht.enabled:
            from fastp2p.services.kad import Dht

            self._dht = Dht(self, self.config.dht)
            self.connection_manager.add_protector(connmgr.KAD_TAG, connmgr.dht_closest_peers(self._dht))
        try:
            for addr in self._listen:
                await self._start_listener(addr)
            if self.config.bootstrap:
                from fastp2p.services.bootstrap import start_bootstrap

                start_bootstrap(self, self.config.bootstrap)
            mdns = self.config.mdns
            if mdns is True or (mdns and mdns.enabled):
                from fastp2p.config import MdnsConfig
                from fastp2p.services.mdns import Mdns

                self._mdns = Mdns(self, mdns if isinstance(mdns, MdnsConfig) else MdnsConfig(),
                                  self._peer_discovered)
                await self._mdns.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close every listener, connection and handler task. Idempotent."""
        if self._closing:
            return
        self._closing = True
        if self._busy_poll is not None:
            self._busy_poll.close()
        self.connection_manager.close()
        if self._mdns is not None:
            self._mdns.close()
        if self._files is not None:
            self._files.close()
        if self._pubsub is not None:
            self._pubsub.close()
        if self._dht is not None:
            self._dht.close()
        for lst in self._listeners:
            await lst.aclose()
        self._listeners.clear()
        for t in list(self._dialing.values()):
            t.cancel()
        for conns in list(self._conns.values()):
            for c in list(conns):
                await c.aclose()
        self._conns.clear()
        for t in list(self._tasks):
            t.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks.clear()
        if self._buffers is not None:
            self._buffers.close()
        self.memory.close()
        # Let transports run their connection_lost callbacks so sockets are freed.
        await asyncio.sleep(0)

    @property
    def buffers(self) -> Any:
        """This host's ``BufferPool``, created on first use (a pool reserves native
        memory; most hosts never lease from their own)."""
        if self._buffers is None:
            self._buffers = _accel.BufferPool()
        return self._buffers

    @property
    def pubsub(self) -> Pubsub:
        """The pubsub service (gossipsub; ``HostConfig.pubsub``).

        Raises:
            ClosedResourceError: pubsub is disabled or the host is not started.
        """
        if self._pubsub is None:
            raise ClosedResourceError("pubsub is disabled or the host is not started")
        return self._pubsub

    @property
    def dht(self) -> Dht:
        """The Kademlia DHT (``HostConfig.dht.enabled``; see :mod:`fastp2p.services.kad`).

        Raises:
            ClosedResourceError: the DHT is disabled or the host is not started.
        """
        if self._dht is None:
            raise ClosedResourceError("the DHT is disabled (HostConfig.dht.enabled) or the host is not started")
        return self._dht

    @property
    def files(self) -> Files:
        """Content-addressed file sharing (``HostConfig.files``): share, announce, fetch.

        Created on first use (hosts that never share or fetch load none of it).

        Raises:
            ClosedResourceError: the host is not started or is closing.
        """
        if self._files is None:
            self._check_running()
            from fastp2p.services.files import Files

            self._files = Files(self, self.config.files)
        return self._files

    def metrics(self) -> dict[str, dict[str, Any]]:
        """Counters, gauges and histograms of this host, as plain data.

        Connections by direction and data path, streams by protocol, wire bytes
        and muxer frames, handshake and dial latency, errors by type, and every
        figure a service registered on :attr:`metrics_registry`. The shape is
        ``{name: {"type", "help", "samples": [{"labels": {...}, "value": ...}]}}``
        (see :meth:`fastp2p.metrics.MetricsRegistry.snapshot`); the same figures
        in Prometheus text format: :func:`fastp2p.metrics.prometheus_text`.
        """
        return self.metrics_registry.snapshot()

    # -- memory regions -------------------------------------------------------------

    def alloc(self, nbytes: int, *, hugepages: bool = False) -> MemoryRegion:
        """A ``MemoryRegion`` of ``nbytes`` from fastp2p's page-aligned pool.

        ``hugepages=True`` asks for 2 MiB pages and falls back to normal pages
        (with a logged reason) when none are reserved. Grant peers access with
        ``region.grant(peer, ...)``; close it (or use ``with``) when done.
        """
        return self.memory.alloc(nbytes, hugepages=hugepages)

    def register(self, obj: Any) -> MemoryRegion:
        """Pin a writable C-contiguous buffer (bytearray, numpy array, mmap) as a region.

        The object's memory is shared, not copied, and stays pinned until the
        region is closed and no operation still uses it.
        """
        return self.memory.register(obj)

    async def _serve_region(self, stream: Stream) -> None:
        from fastp2p.transport import regions

        await regions.serve(stream, self.memory.check)

    async def ping(self, peer: PeerID) -> float:
        """Round-trip time to ``peer`` in seconds (libp2p ping protocol).

        Raises:
            ClosedResourceError: the ping service is disabled or the host closed.
            DialError, ConnectionClosedError, RemoteProtocolError: as the ping fails.

        Cancellation: the ping stream stays open for the next call.
        """
        self._check_running()
        if self._ping is None:
            raise ClosedResourceError("ping is disabled (HostConfig.enable_ping)")
        rtt: float = await self._ping(peer)
        return rtt

    # -- addresses -------------------------------------------------------------------

    async def listen(self, addr: str | Multiaddr) -> Listener:
        """Listen on one more address of a running host.

        Connections accepted there are the host's like any other (same handlers,
        limits and services); :attr:`addrs` includes the new ones. Returns the
        listener, whose ``addrs`` say where it is bound (a ``/tcp/0`` port filled in).

        Raises:
            ClosedResourceError: the host is not running.
            DialError: no transport can listen on ``addr``.
            OSError: the address cannot be bound.
        """
        if not self._running or self._closing:
            raise ClosedResourceError("listen() needs a running host (start it first)")
        return await self._start_listener(Multiaddr(addr) if isinstance(addr, str) else addr)

    async def stop_listening(self, listener: Listener) -> None:
        """Stop accepting on ``listener`` (from :meth:`listen`); its connections stay open."""
        if listener in self._listeners:
            self._listeners.remove(listener)
        await listener.aclose()

    async def _start_listener(self, addr: Multiaddr) -> Listener:
        lst = await self._transport_for(addr, listen=True).listen(addr, self._on_raw_inbound)
        self._listeners.append(lst)
        return lst

    @property
    def addrs(self) -> list[Multiaddr]:
        """Listen addresses (without ``/p2p``)."""
        return [a for lst in self._listeners for a in lst.addrs]

    @property
    def full_addrs(self) -> list[Multiaddr]:
        """Listen addresses with ``/p2p/<our id>`` appended (what a peer dials)."""
        return [a.with_peer_id(self.peer_id) for a in self.addrs]

    # -- handlers --------------------------------------------------------------------

    def set_handler(
        self, protocol: str, handler: Handler, *, match: Callable[[str], bool] | None = None
    ) -> None:
        """Serve ``protocol`` with ``async handler(stream)``.

        ``match`` optionally accepts other protocol ids (e.g. other versions) for
        the same handler. A handler's exception is logged and its stream reset
        with ``StreamErrorCode.INTERNAL``; the host keeps running.
        """
        new = protocol not in self._handlers
        self._handlers[protocol] = handler
        if match is not None:
            self._matchers.append((match, protocol))
        if new:
            self._protocols_changed()

    def set_protocol_handler(
        self, protocol: str, protocol_factory: Callable[[], asyncio.BaseProtocol], *,
        match: Callable[[str], bool] | None = None,
    ) -> None:
        """Serve ``protocol`` with asyncio protocols, as ``loop.create_server`` does
        TCP: each inbound stream gets ``protocol_factory()`` on a
        :class:`StreamTransport` (no task per stream).

        ``match`` as for :meth:`set_handler`. A protocol callback's exception is
        logged and its stream reset with ``StreamErrorCode.INTERNAL``.
        """
        self.set_handler(protocol, _ProtocolHandler(protocol_factory), match=match)

    def remove_handler(self, protocol: str) -> None:
        """Stop serving ``protocol``."""
        if self._handlers.pop(protocol, None) is not None:
            self._protocols_changed()
        self._matchers = [(m, p) for m, p in self._matchers if p != protocol]

    def _protocols_changed(self) -> None:
        # identify-push: tell connected peers, once per burst of changes.
        if self._identify is not None and self._conns and not self._closing:
            self._identify.schedule_push()

    @property
    def protocols(self) -> list[str]:
        """Protocols served by this host."""
        return list(self._handlers)

    def _supports(self, proto: str) -> bool:
        return proto in self._handlers or any(m(proto) for m, _ in self._matchers)

    def _handler_for(self, proto: str) -> Handler | None:
        h = self._handlers.get(proto)
        if h is None:
            for m, p in self._matchers:
                if m(proto):
                    return self._handlers.get(p)
        return h

    def on_connection(self, callback: Callable[[Connection], Any]) -> None:
        """Call ``callback(conn)`` for every new connection (after the upgrade)."""
        self._on_connect.append(callback)

    def on_disconnect(self, callback: Callable[[Connection], Any]) -> None:
        """Call ``callback(conn)`` for every connection that closed, in a loop
        iteration after the close (``conn.closed`` is done by then)."""
        self._on_disconnect.append(callback)

    # -- connections -----------------------------------------------------------------

    def on_peer_discovered(self, callback: Callable[[PeerID, list[Multiaddr]], Any]) -> None:
        """Call ``callback(peer_id, addrs)`` for each peer discovery finds (mDNS, ``HostConfig.mdns``).

        Called again when a peer's addresses change or it reappears after its
        record expired. The addresses are already in the peerstore. An async
        callback runs as a task the host owns; exceptions are logged.
        """
        self._on_discovered.append(callback)

    def _peer_discovered(self, peer: PeerID, addrs: list[Multiaddr]) -> None:
        self.peerstore.add_addrs(peer, addrs)
        for cb in list(self._on_discovered):
            try:
                res = cb(peer, list(addrs))
            except Exception:
                log.exception("on_peer_discovered callback failed")
                continue
            if inspect.isawaitable(res):
                self.spawn(self._await_callback(res))

    @staticmethod
    async def _await_callback(aw: Awaitable[Any]) -> None:
        try:
            await aw
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("on_peer_discovered callback failed")

    def connection(self, peer: PeerID) -> Connection | None:
        """An open connection to ``peer``, or None."""
        for c in self._conns.get(peer, ()):
            if not c.is_closed and not c.goaway_received:
                return c
        return None

    @property
    def connections(self) -> list[Connection]:
        """Every open connection."""
        return [c for cs in self._conns.values() for c in cs]

    def _count(self, outbound: bool) -> int:
        return sum(1 for c in self.connections if c.outbound == outbound)

    async def connect(self, addr: str | Multiaddr | PeerInfo | PeerID) -> PeerID:
        """Connect to a peer (no-op if already connected) and wait for identify.

        Args:
            addr: a multiaddr ending in ``/p2p/<id>`` (the id is then verified),
                a plain multiaddr (any peer accepted), a ``PeerInfo``, or a
                ``PeerID`` (string or object): with no address known, the DHT
                (when enabled) is asked for one (``host.dht.find_peer``).

        Returns:
            The authenticated remote ``PeerID``.

        Raises:
            DialError: every address failed; ``.errors`` has one exception each
                (refused, reset or closed during the upgrade, timed out, malformed
                handshake, no common protocol: the next address is tried).
            PeerIDMismatchError: the peer is not the one named by ``/p2p/``
                (no further address is tried).
            IdentityProofError: the peer's handshake signature is forged (no
                further address is tried).
            ResourceLimitExceededError: ``max_outbound_connections`` reached.

        Cancellation: a half-open connection is aborted.
        """
        self._check_running()
        if isinstance(addr, PeerID):
            addr = PeerInfo(addr)
        elif isinstance(addr, str) and not addr.startswith("/"):
            addr = PeerInfo(PeerID.from_string(addr))
        if isinstance(addr, PeerInfo):
            expected: PeerID | None = addr.peer_id
            addrs = list(addr.addrs) or self.peerstore.addrs(addr.peer_id)
            if not addrs and self._dht is not None and self.connection(addr.peer_id) is None:
                addrs = list((await self._dht.find_peer(addr.peer_id)).addrs)
        else:
            ma = Multiaddr(addr) if not isinstance(addr, Multiaddr) else addr
            expected = ma.peer_id()
            addrs = [ma]
        if expected is not None:
            existing = self.connection(expected)
            if existing is not None:
                return expected
            pending = self._dialing.get(expected)
            if pending is not None:
                return (await asyncio.shield(pending)).remote_peer
        if not addrs:
            raise DialError(f"no addresses known for {expected}")
        task = asyncio.get_running_loop().create_task(self._dial_addrs(addrs, expected))
        if expected is not None:
            self._dialing[expected] = task
        try:
            conn = await task
        finally:
            if expected is not None and self._dialing.get(expected) is task:
                del self._dialing[expected]
        with contextlib.suppress(Exception):
            async with asyncio.timeout(self.config.negotiation_timeout):
                if self._identify is not None:
                    await self._identify.wait_identified(conn)
                if self._datapaths is not None:
                    await self._datapaths.wait_settled(conn)
        return conn.remote_peer

    def _transport_for(self, addr: Multiaddr, *, listen: bool = False) -> Transport:
        for t in self.transports:
            if t.can_listen(addr) if listen else t.can_dial(addr):
                return t
        raise DialError(f"no transport for {addr}")

    async def _dial_addrs(self, addrs: Sequence[Multiaddr], expected: PeerID | None) -> Connection:
        if self._count(outbound=True) >= self.config.max_outbound_connections:
            raise ResourceLimitExceededError("max_outbound_connections reached")
        errors: list[BaseException] = []
        for a in addrs:
            t0 = time.perf_counter()
            try:
                async with asyncio.timeout(self.config.dial_timeout):
                    if self._busy_poll is not None:
                        self._busy_poll.kick()  # (the TCP handshake is a round trip)
                    raw = await self._transport_for(a).dial(a)
                    t1 = time.perf_counter()
                    chan = await secure_outbound(raw, self.identity, self.config, expected,
                                                 busy_poll=self._busy_poll)
                t2 = time.perf_counter()
                self._metrics.handshake.observe(t2 - t1, "outbound")
                self._metrics.dial.observe(t2 - t0, "ok")
                return self._add_connection(chan, outbound=True)
            except (PeerIDMismatchError, IdentityProofError) as exc:
                self._metrics.dial.observe(time.perf_counter() - t0, "error")
                self._metrics.error(exc, "dial")
                # Not who we asked for, or an impostor: never try other addresses. Any
                # other failure (a clean close or reset during the upgrade included)
                # moves on to the next address.
                raise
            except (P2PError, OSError, TimeoutError) as exc:
                self._metrics.dial.observe(time.perf_counter() - t0, "error")
                self._metrics.error(exc, "dial")
                errors.append(exc)
        if errors and all(isinstance(e, PnetError) for e in errors):
            raise errors[0]  # a private network we are not in: say so, typed
        if len(errors) == 1:
            raise DialError(f"dial {addrs[0]} failed: {errors[0]}", errors) from errors[0]
        raise DialError(f"all {len(addrs)} addresses failed", errors)

    async def _on_raw_inbound(self, raw: RawConnection) -> None:
        if self._closing or self._count(outbound=False) >= self.config.max_inbound_connections:
            raw.abort()
            return
        # Handshakes in progress have their own bound, and a newcomer evicts the oldest:
        # an honest peer finishes in a few round trips, a stalled socket never does, so
        # stalled sockets (in multistream or Noise) cannot lock honest peers out.
        pending = self._pending_inbound
        while len(pending) >= max(1, self.config.max_pending_inbound):
            oldest = next(iter(pending))
            del pending[oldest]
            log.debug("evicting the oldest pending inbound handshake (from %s)", oldest.remote_addr,
                      extra={"peer": "-", "conn_id": "-", "remote_addr": str(oldest.remote_addr)})
            oldest.abort()  # its upgrade fails with a closed connection
        pending[raw] = None
        t0 = time.perf_counter()
        try:
            chan = await secure_inbound(raw, self.identity, self.config, busy_poll=self._busy_poll)
            self._metrics.handshake.observe(time.perf_counter() - t0, "inbound")
        except (P2PError, OSError, TimeoutError) as exc:
            self._metrics.error(exc, "inbound_upgrade")
            log.info("inbound upgrade from %s failed: %s", raw.remote_addr, exc,
                     extra={"peer": "-", "conn_id": "-", "remote_addr": str(raw.remote_addr)})
            return
        except asyncio.CancelledError:
            raw.abort()
            raise
        finally:
            pending.pop(raw, None)
        if self._closing or self._count(outbound=False) >= self.config.max_inbound_connections:
            raw.abort()
            return
        self._add_connection(chan, outbound=False)

    def _add_connection(self, chan: SecuredChannel, *, outbound: bool) -> Connection:
        session = make_session(chan.muxer, is_client=outbound, config=self.config)
        conn = Connection(
            raw=chan.raw,
            session=session,
            send_cipher=chan.send_cipher,
            recv_cipher=chan.recv_cipher,
            remote_peer=chan.remote_peer,
            remote_public_key=chan.remote_public_key,
            muxer=chan.muxer,
            outbound=outbound,
            on_inbound_stream=self._on_inbound_stream,
            on_closed=self._on_conn_closed,
            # yamux windows bound unread data; mplex has none, so the driver pauses
            # the socket before the session's hard per-stream limit is reached.
            recv_soft_limit=getattr(session, "recv_soft_limit", None),
        )
        conn.busy_poll = self._busy_poll
        seal_threads = self.config.noise.seal_threads()
        if seal_threads:  # >= 4 cores (NoiseConfig.parallel_seal)
            chan.send_cipher.parallel_seal(seal_threads, self.config.noise.parallel_seal_min)
            chan.recv_cipher.parallel_open(seal_threads, self.config.noise.parallel_open_min)
        self._conns.setdefault(conn.remote_peer, []).append(conn)
        if chan.remote_public_key is not None:
            self.peerstore.add_public_key(conn.remote_peer, chan.remote_public_key)
        if outbound and chan.raw.remote_addr is not None:
            self.peerstore.add_addrs(conn.remote_peer, [chan.raw.remote_addr])
        conn.start(chan.plaintext_leftover)
        self._metrics.connection_opened(conn)
        if log.isEnabledFor(logging.DEBUG):  # (log_extra is made on first use)
            log.debug("connection %s %s via %s (%s)", "to" if outbound else "from", conn.remote_peer,
                      conn.remote_addr, conn.muxer, extra=conn.log_extra)
        for cb in self._on_connect:
            try:
                cb(conn)
            except Exception:
                log.exception("on_connection callback failed", extra=conn.log_extra)
        return conn

    def _on_conn_closed(self, conn: Connection) -> None:
        self._metrics.connection_closed(conn)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("connection with %s closed: %s", conn.remote_peer, conn.close_error,
                      extra=conn.log_extra)
        conns = self._conns.get(conn.remote_peer)
        if conns is not None:
            with contextlib.suppress(ValueError):
                conns.remove(conn)
            if not conns:
                del self._conns[conn.remote_peer]
        if self._on_disconnect:
            # One callback per closed connection, as a done-callback of conn.closed
            # would run, instead of a closure per service held by every open one.
            conn.loop.call_soon(self._disconnected, conn)

    def _disconnected(self, conn: Connection) -> None:
        for cb in self._on_disconnect:
            try:
                cb(conn)
            except Exception:
                log.exception("on_disconnect callback failed", extra=conn.log_extra)

    async def disconnect(self, peer: PeerID) -> None:
        """Close every connection to ``peer``."""
        for c in list(self._conns.get(peer, ())):
            await c.aclose()

    # -- streams --------------------------------------------------------------------------

    async def open_stream(self, peer: PeerID | str | Multiaddr, *protocols: str) -> Stream:
        """Open a stream to ``peer`` speaking the first of ``protocols`` it supports.

        ``peer`` may be a PeerID we are connected to (or have addresses for) or a
        multiaddr, which is dialled first. When the peer's identify listed one of
        ``protocols``, that one is proposed without waiting for the answer (as
        go-libp2p does): the proposal leaves with the first write, and should the
        peer refuse after all, the first read raises NegotiationError. Over mplex
        only a fastp2p peer gets that; with others the answer is awaited first
        (see ``_proposes_early``).

        Raises:
            NegotiationError: the peer supports none of ``protocols``.
            DialError: no connection could be made.
            ConnectionClosedError: the connection died during negotiation.

        Cancellation: the half-negotiated stream is reset.
        """
        self._check_running()
        if not protocols:
            raise ValueError("open_stream needs at least one protocol")
        if not isinstance(peer, PeerID):
            peer = await self.connect(peer)
        conn = self.connection(peer)
        if conn is None:
            await self.connect(PeerInfo(peer))
            conn = self.connection(peer)
            if conn is None:
                raise DialError(f"could not connect to {peer}")
        known = self._known_protocol(peer, protocols) if self._proposes_early(conn) else None
        stream = conn.open_stream(announce=False)  # the SYN leaves with the proposal
        try:
            # The optimistic proposal is handed over at once: no timer to arm. The
            # window may not take it yet (the SYN waits while accept_backlog of our
            # streams await the peer's ACK): then it waits on this same stream.
            if known is None or not propose_now(stream, known):
                async with asyncio.timeout(self.config.negotiation_timeout):
                    if known is not None:
                        stream.protocol = await negotiate_lazy(stream, known)
                    else:
                        stream.protocol = await negotiate_outbound(stream, protocols)
        except BaseException as exc:
            if isinstance(exc, Exception):
                self._metrics.error(exc, "negotiation")
            stream.reset(StreamErrorCode.PROTOCOL)
            await stream.aclose()
            raise
        assert stream.protocol is not None
        self._metrics.stream_opened(False, stream.protocol)
        return stream

    async def open_stream_protocol(
        self, peer: PeerID | str | Multiaddr, protocol_factory: Callable[[], asyncio.BaseProtocol],
        *protocols: str,
    ) -> tuple[StreamTransport, asyncio.BaseProtocol]:
        """``open_stream``, then run ``protocol_factory()`` on it: returns
        ``(transport, protocol)``, as ``loop.create_connection`` does.

        Raises:
            as :meth:`open_stream`; and what ``connection_made`` raised (the
            stream is reset).
        """
        stream = await self.open_stream(peer, *protocols)
        protocol = protocol_factory()
        return StreamTransport(stream, protocol), protocol

    def open_stream_nowait(self, conn: Connection, protocol: str, *,
                           reads_first: bool = False) -> Stream | None:
        """Open a stream on ``conn`` proposing ``protocol`` optimistically, without
        awaiting anything: the proposal leaves with the stream's first frame, and
        a refusal surfaces at the first read (as with ``open_stream`` for a
        protocol the peer's identify listed).

        Returns None where that cannot be done at once: over mplex to a peer
        other than fastp2p (which waits for the answer, see ``open_stream``)
        unless ``reads_first``, or when the send window cannot take the proposal
        yet (``accept_backlog`` of our streams await the peer's ACK); use
        ``open_stream`` then.

        ``reads_first``: the caller half-closes only after it read the peer's
        answer to EOF (identify), so no half-close can reach a listener that is
        still negotiating: the proposal goes early over mplex to any peer.

        Raises:
            ConnectionClosedError: the connection is closed or the peer sent GoAway.
            ResourceLimitExceededError: the stream limit is reached.
        """
        if not (reads_first or self._proposes_early(conn)):  # (see _proposes_early)
            return None
        stream = conn.open_stream(announce=False)  # the SYN leaves with the proposal
        try:
            if propose_now(stream, protocol):
                self._metrics.stream_opened(False, protocol)
                return stream
        except Exception as exc:
            self._metrics.error(exc, "negotiation")
            self._discard(stream)
            raise
        # the window cannot take it yet (accept_backlog streams await their ACK)
        self._discard(stream)
        return None

    def _discard(self, stream: Stream) -> None:
        """Reset and release a stream nothing uses yet (nothing in it waits for a
        reset stream, so its release needs no awaiting here)."""
        stream.reset(StreamErrorCode.PROTOCOL)
        self.spawn(stream.aclose())

    def _proposes_early(self, conn: Connection) -> bool:
        """Whether a stream on ``conn`` may carry its protocol proposal without
        awaiting the answer. Not over mplex to other implementations: js-libp2p's
        mplex loses a half-close that arrives while its multistream listener is
        still negotiating (the handler never sees EOF:
        tests/interop/test_js_mplex_stock.py), so they get the round trip. A
        fastp2p listener (identify's agent version) buffers the stream meanwhile."""
        if conn.muxer != MPLEX_PROTOCOL_ID:
            return True
        rec = self.peerstore.get(conn.remote_peer)
        agent = rec.agent_version if rec is not None else None
        return agent is not None and agent.startswith(AGENT_PREFIX)

    def _known_protocol(self, peer: PeerID, protocols: Sequence[str]) -> str | None:
        """The first of ``protocols`` the peer's identify listed, else None."""
        rec = self.peerstore.get(peer)
        if rec is None or not rec.protocols:
            return None
        theirs = rec.protocols
        for p in protocols:
            if p in theirs:
                return p
        return None

    def _on_inbound_stream(self, stream: Stream) -> None:
        self._spawn(self._serve_stream(stream))

    async def _serve_stream(self, stream: Stream) -> None:
        # The multistream answer waits for the end of this pass: a handler that
        # replies at once (identify) sends both in one write.
        stream.conn.hold_writes()
        owned = False
        try:
            try:
                proto = await negotiate_inbound(stream, self._supports,
                                                timeout=self.config.negotiation_timeout)
            except (NegotiationError, RemoteProtocolError, TimeoutError) as exc:
                # go-libp2p resets streams whose negotiation fails, malformed or not.
                self._metrics.error(exc, "negotiation")
                log.debug("inbound stream negotiation failed: %s", exc, extra=conn_extra(stream.conn))
                stream.reset(StreamErrorCode.PROTOCOL)
                return
            stream.protocol = proto
            handler = self._handler_for(proto)
            if handler is None:
                stream.reset(StreamErrorCode.PROTOCOL)
                return
            self._metrics.stream_opened(True, proto)
            if type(handler) is _ProtocolHandler:
                owned = handler.attach(stream)  # (a StreamTransport owns it from here on)
                return
            try:
                await handler(stream)
            except (P2PError, OSError) as exc:
                self._metrics.error(exc, "handler")
                log.debug("handler for %s ended with %r", proto, exc, extra=conn_extra(stream.conn))
                stream.reset(StreamErrorCode.INTERNAL)
            except Exception as exc:
                self._metrics.error(exc, "handler")
                log.exception("handler for %s failed", proto, extra=conn_extra(stream.conn))
                stream.reset(StreamErrorCode.INTERNAL)
        except (P2PError, OSError) as exc:
            log.debug("inbound stream failed: %r", exc, extra=conn_extra(stream.conn))
        finally:
            if not owned:
                with contextlib.suppress(P2PError):
                    await stream.aclose()

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the host cancels and awaits when it closes."""
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._untrack, context=self._untrack_ctx)
        return task

    _spawn = spawn

    async def wait_identified(self, conn: Connection) -> None:
        """Wait until identify on ``conn`` finished (at once if identify is off)."""
        if self._identify is not None:
            await self._identify.wait_identified(conn)

    def _check_running(self) -> None:
        if not self._running or self._closing:
            raise ClosedResourceError("host is not running (use `async with Host(...)`)")

    def __repr__(self) -> str:
        return f"<Host {self.peer_id} addrs={[str(a) for a in self.addrs]}>"



class _ProtocolHandler:
    """What ``set_protocol_handler`` registers: inbound streams of the protocol
    go to a :class:`StreamTransport` with a fresh protocol."""

    __slots__ = ("factory",)

    def __init__(self, factory: Callable[[], asyncio.BaseProtocol]) -> None:
        self.factory = factory

    def attach(self, stream: Stream) -> bool:
        """Run a new protocol on ``stream``; False when its factory or
        ``connection_made`` failed (logged; the stream is reset)."""
        try:
            StreamTransport(stream, self.factory())
        except Exception:
            log.exception("protocol factory for %s failed", stream.protocol, extra=conn_extra(stream.conn))
            stream.reset(StreamErrorCode.INTERNAL)
            return False
        return True

    async def __call__(self, stream: Stream) -> None:
        # (called directly, as a handler: the same, and the caller keeps nothing to await)
        self.attach(stream)
