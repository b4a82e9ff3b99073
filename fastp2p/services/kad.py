"""Kademlia DHT (``/ipfs/kad/1.0.0``): the asyncio driver of ``fastp2p.proto.kad``.

``host.dht`` is an instance of :class:`Dht`, created by the Host when
``HostConfig.dht.enabled``::

    await host.dht.bootstrap(["/ip4/1.2.3.4/tcp/4001/p2p/12D3KooW..."])
    info = await host.dht.find_peer(peer_id)            # PeerInfo
    await host.dht.provide(cid_multihash)
    async for info in host.dht.find_providers(cid_multihash, limit=5):
        ...
    await host.dht.put_value(b"/fastp2p/my-key", b"value")
    value = await host.dht.get_value(b"/fastp2p/my-key")

Rules
-----
- RPCs (libp2p-kad-dht.md "RPC messages"): a new stream per request, the
  uvarint-length-prefixed request, one response (none for ADD_PROVIDER),
  close; inbound streams may carry several requests, each answered in turn.
- Only servers are added to the routing table: peers whose identify
  protocols include the kad protocol, and peers that answered our requests.
  In client mode the kad protocol is not served (nor advertised).
- ``mode="auto"``: a client until a peer that dialled us reports, through
  identify's observed address, one of our listen addresses; then a server
  (and identify-push tells connected peers).
- ``ADD_PROVIDER`` records only provider entries whose id is the sender's.
- ``PUT_VALUE`` records are validated (``records.NamespacedValidator``), the
  record key must equal the message key, and ``timeReceived`` is set on
  store (RFC 3339 UTC).
- Periodic work: bucket refresh (random lookup per stale bucket plus our own
  id, ``refresh_interval``), provider republish (``provider_republish``),
  store garbage collection.

Cancellation: every coroutine cancels its outstanding RPCs and leaves the
routing table and stores consistent (an RPC cut short counts as failed).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastp2p.errors import DialError, P2PError, RemoteProtocolError, StreamErrorCode
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID
from fastp2p.peerstore import PeerInfo
from fastp2p.proto.kad.messages_pb import (
    ConnectionType,
    KadLimits,
    KadMessage,
    KadPeer,
    KadReader,
    KadRecord,
    MessageType,
    frame,
)
from fastp2p.proto.kad.query import DisjointKadQuery, KadQuery, QueryStats
from fastp2p.proto.kad.records import NamespacedValidator, RecordValidationError, default_validator
from fastp2p.proto.kad.routing_table import RoutingTable, kad_key, random_key_with_cpl
from fastp2p.proto.kad.store import ProviderStore, RecordStore

if TYPE_CHECKING:
    from fastp2p.config import DhtConfig
    from fastp2p.services.base import ServiceHost
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = [
    "Dht",
    "DhtStats",
    "QueryError",
    "PeerNotFoundError",
    "ValueNotFoundError",
    "RecordValidationError",
]

log = logging.getLogger("fastp2p.dht")

READ_CHUNK = 64 * 1024
GC_INTERVAL = 3600.0


class QueryError(P2PError):
    """A DHT operation could not complete (no peers to ask, nobody answered)."""


class PeerNotFoundError(QueryError):
    """``find_peer`` ended without learning an address of the peer."""


class ValueNotFoundError(QueryError):
    """``get_value`` ended without a valid record for the key."""


@dataclass
class DhtStats:
    """Counters of one DHT node."""

    rpcs_sent: dict[str, int] = field(default_factory=dict)
    rpcs_received: dict[str, int] = field(default_factory=dict)
    rpc_failures: int = 0
    #: failures that were timeouts (part of rpc_failures)
    rpc_timeouts: int = 0
    queries: int = 0


def _rfc3339(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_PID_CACHE: dict[bytes, PeerID] = {}
_PID_CACHE_MAX = 65536


def _peer_id(raw: bytes) -> PeerID:
    # Parsing validates the multihash; responses repeat the same few hundred ids.
    pid = _PID_CACHE.get(raw)
    if pid is None:
        pid = PeerID.from_bytes(raw)
        if len(_PID_CACHE) >= _PID_CACHE_MAX:
            _PID_CACHE.clear()
        _PID_CACHE[raw] = pid
    return pid


def _parse_peer(p: KadPeer) -> tuple[PeerID, list[Multiaddr]] | None:
    try:
        pid = _peer_id(p.id)
    except (P2PError, ValueError):
        return None
    addrs = []
    for raw in p.addrs:
        try:
            addrs.append(Multiaddr.from_bytes(raw).without_peer_id())
        except (P2PError, ValueError):
            continue
    return pid, addrs


class Dht:
    """The Kademlia DHT of one Host (created by the Host; reach it as ``host.dht``).

    Args:
        host: the owning host (its small service interface).
        config: ``HostConfig.dht``.
        validator: record rules by namespace; default ``/pk/`` and ``/fastp2p/``.
    """

    def __init__(
        self, host: ServiceHost, config: DhtConfig, validator: NamespacedValidator | None = None
    ) -> None:
        self.host = host
        self.config = config
        self.protocol = config.protocol
        self.validator = validator or default_validator(config.max_value_size)
        self._self_bytes = host.peer_id.to_bytes()
        self.table = RoutingTable(self._self_bytes, k=config.k)
        # the table holds ids only: their addresses stay in the peerstore
        table = self.table
        host.peerstore.keep_while(lambda p: p.to_bytes() in table)
        self.records = RecordStore(
            max_records=config.max_records,
            max_records_per_peer=config.max_records_per_peer,
            record_ttl=config.record_ttl,
        )
        self.providers = ProviderStore(
            max_provider_keys=config.max_provider_keys,
            max_providers_per_key=config.max_providers_per_key,
            max_keys_per_provider=config.max_keys_per_provider,
            provider_expiry=config.provider_expiry,
            provider_addr_ttl=config.provider_addr_ttl,
        )
        self.limits = KadLimits()
        self.stats = DhtStats()
        self._provided: dict[bytes, float] = {}
        self._inbound: dict[PeerID, int] = {}
        self._rng = random.Random()
        self._server = False
        self._closed = False
        if config.mode == "server":
            self._set_server(True)
        host.on_connection(self._on_connection)
        host.spawn(self._maintenance())

    # -- mode ---------------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """"server" or "client" (what ``auto`` currently is)."""
        return "server" if self._server else "client"

    def _set_server(self, server: bool) -> None:
        if server == self._server:
            return
        self._server = server
        if server:
            self.host.set_handler(self.protocol, self._handle_stream)
        else:
            self.host.remove_handler(self.protocol)
        log.info("dht mode: %s", self.mode)

    def close(self) -> None:
        """Stop answering and stop periodic work (the host cancels the tasks)."""
        self._closed = True

    # -- connections --------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        self.host.spawn(self._after_identify(conn))

    async def _after_identify(self, conn: Connection) -> None:
        await self.host.wait_identified(conn)
        peer = conn.remote_peer
        rec = self.host.peerstore.get(peer)
        if rec is None or not rec.identified:
            return
        if self.protocol in rec.protocols:
            self.table.add(peer.to_bytes(), time.monotonic())
        elif peer.to_bytes() in self.table:
            # it says it is a client now (libp2p-kad-dht.md "Client and server mode")
            self.table.remove(peer.to_bytes())
        if self.config.mode == "auto" and not self._server and not conn.outbound:
            observed = rec.observed_addr
            if observed is not None and observed.without_peer_id() in self.host.addrs:
                self._set_server(True)

    # -- RPC client ---------------------------------------------------------------------

    def _count(self, table: dict[str, int], t: MessageType) -> None:
        table[t.name] = table.get(t.name, 0) + 1

    async def _request(self, peer: PeerID, msg: KadMessage, *, expect_response: bool = True) -> KadMessage | None:
        """Send one RPC to ``peer``; its answer (None when none is expected).

        Raises:
            DialError: no connection and no known address.
            P2PError, OSError, TimeoutError, EOFError: the RPC failed.
        """
        if self.host.connection(peer) is None and not self.host.peerstore.addrs(peer):
            raise DialError(f"no address known for {peer}")
        self._count(self.stats.rpcs_sent, msg.type)
        async with asyncio.timeout(self.config.rpc_timeout):
            stream = await self.host.open_stream(peer, self.protocol)
            try:
                await stream.write(frame(msg))
                if not expect_response:
                    await stream.close_write()
                    return None
                reader = KadReader(self.limits)
                while True:
                    chunk = await stream.read(READ_CHUNK)
                    if not chunk:
                        raise EOFError(f"{peer} closed the kad stream without answering")
                    got = reader.receive_data(chunk)
                    if got:
                        return got[0]
            except BaseException:
                stream.reset(StreamErrorCode.CANCELLED)
                raise
            finally:
                with contextlib.suppress(P2PError, OSError):
                    await stream.aclose()

    def _learn(self, peers: Iterable[KadPeer]) -> list[PeerID]:
        """Parse peer entries, remember their addresses; the ids usable for queries."""
        out = []
        for p in peers:
            parsed = _parse_peer(p)
            if parsed is None:
                continue
            pid, addrs = parsed
            if pid == self.host.peer_id:
                continue
            if addrs:
                self.host.peerstore.add_addrs(pid, addrs)
            out.append(pid)
        return out

    # -- queries ------------------------------------------------------------------------

    def _new_query(self, target: bytes) -> KadQuery | DisjointKadQuery:
        seeds = self.table.closest(kad_key(target), self.config.k)
        kw: dict[str, Any] = dict(k=self.config.k, alpha=self.config.alpha,
                                  rpc_timeout=self.config.rpc_timeout, exclude=[self._self_bytes])
        if self.config.disjoint_paths > 1:
            return DisjointKadQuery(target, seeds, paths=self.config.disjoint_paths, **kw)
        return KadQuery(target, seeds, **kw)

    async def _run_query(
        self,
        target: bytes,
        request: KadMessage,
        on_response: Callable[[PeerID, KadMessage, int], Awaitable[bool] | bool] | None = None,
    ) -> tuple[KadQuery | DisjointKadQuery, QueryStats]:
        """Drive an iterative lookup; ``on_response(peer, msg, depth)`` returning True stops it."""
        q = self._new_query(target)
        self.stats.queries += 1
        self.table.mark_refreshed(kad_key(target), time.monotonic())
        pending: dict[asyncio.Task[KadMessage | None], bytes] = {}
        try:
            async with asyncio.timeout(self.config.query_timeout):
                while True:
                    for p in q.next_requests(time.monotonic()):
                        task = asyncio.ensure_future(self._request(_peer_id(p), request))
                        pending[task] = p
                    if q.finished or not pending:
                        break
                    done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                    for task in done:
                        p = pending.pop(task)
                        now = time.monotonic()
                        exc = task.exception()
                        if exc is not None or task.result() is None:
                            self.stats.rpc_failures += 1
                            timed_out = isinstance(exc, TimeoutError)
                            self.stats.rpc_timeouts += timed_out
                            q.on_failure(p, now, timeout=timed_out)
                            self.table.mark_failed(p)
                            continue
                        resp = task.result()
                        assert resp is not None
                        closer = self._learn(resp.closer_peers)
                        depth = q.depth(p)
                        q.on_success(p, [c.to_bytes() for c in closer], now)
                        self.table.add(p, now)
                        if on_response is not None:
                            r = on_response(_peer_id(p), resp, depth)
                            if not isinstance(r, bool):
                                r = await r
                            if r:
                                q.stop()
        except TimeoutError:
            log.debug("dht query for %s timed out", target.hex()[:16])
        finally:
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
        return q, q.finish_stats()

    async def _closest_peers(self, key: bytes) -> list[PeerID]:
        q, _ = await self._run_query(key, KadMessage(MessageType.FIND_NODE, key=key))
        return [_peer_id(p) for p in q.closest()]

    def _check_running(self) -> None:
        if self._closed:
            raise QueryError("the DHT is closed")

    # -- public API ---------------------------------------------------------------------

    async def bootstrap(self, peers: Iterable[str | Multiaddr | PeerInfo] = ()) -> int:
        """Connect to ``peers``, add them to the routing table, then fill it.

        Runs a lookup of our own id and one per stale bucket
        (libp2p-kad-dht.md "Bootstrap process").

        Returns:
            Peers in the routing table afterwards.

        Raises:
            QueryError: none of ``peers`` could be reached and the table is empty.

        Cancellation: connections made so far stay; the table keeps what it learned.
        """
        self._check_running()
        errors: list[BaseException] = []

        async def one(p: str | Multiaddr | PeerInfo) -> None:
            try:
                pid = await self.host.connect(p)
            except (P2PError, OSError, TimeoutError) as exc:
                errors.append(exc)
                return
            self.table.add(pid.to_bytes(), time.monotonic())

        peers = list(peers)
        if peers:
            await asyncio.gather(*(one(p) for p in peers))
        if not len(self.table):
            raise QueryError(f"bootstrap: no DHT peer reachable ({len(errors)} failed)")
        await self.refresh(force=True)
        return len(self.table)

    async def refresh(self, *, force: bool = False) -> None:
        """Look up our own id and a random key in every bucket not refreshed lately."""
        if not len(self.table):
            return
        await self._closest_peers(self._self_bytes)
        now = time.monotonic()
        interval = 0.0 if force else self.config.refresh_interval
        for cpl in self.table.buckets_to_refresh(now, interval):
            key = random_key_with_cpl(self.table.local_key, cpl, self._rng)
            await self._closest_peers(key)

    async def find_peer(self, peer: PeerID) -> PeerInfo:
        """Addresses of ``peer``: what we know, else from an iterative FIND_NODE lookup.

        Raises:
            PeerNotFoundError: the lookup ended without addresses for it.

        Cancellation: outstanding RPCs are cancelled.
        """
        info, _ = await self.find_peer_with_stats(peer)
        return info

    async def find_peer_with_stats(self, peer: PeerID) -> tuple[PeerInfo, QueryStats]:
        """:meth:`find_peer`, also returning the lookup's figures (hops = round trips)."""
        self._check_running()
        if self.host.connection(peer) is not None:
            return PeerInfo(peer, tuple(self.host.peerstore.addrs(peer))), QueryStats()
        target = peer.to_bytes()
        found: list[Multiaddr] = []
        hops = 0

        def on_response(responder: PeerID, msg: KadMessage, depth: int) -> bool:
            nonlocal hops
            if responder == peer:
                found.extend(self.host.peerstore.addrs(peer))
                hops = depth
                return True
            for p in msg.closer_peers:
                if p.id == target:
                    parsed = _parse_peer(p)
                    if parsed and parsed[1]:
                        found.extend(parsed[1])
                        hops = depth
                        return True
            return False

        _, stats = await self._run_query(target, KadMessage(MessageType.FIND_NODE, key=target), on_response)
        if not found:
            raise PeerNotFoundError(f"peer {peer} not found in the DHT")
        stats.hops = hops
        return PeerInfo(peer, tuple(dict.fromkeys(found))), stats

    async def provide(self, key: bytes) -> int:
        """Announce this host as a provider of ``key`` (a multihash) to the ``k`` closest peers.

        The announcement is republished every ``provider_republish`` (22 h).

        Returns:
            Peers that were sent the ADD_PROVIDER.

        Raises:
            QueryError: no peer to announce to.

        Cancellation: announcements already sent stay; the key stays scheduled for republish.
        """
        n, _ = await self.provide_with_stats(key)
        return n

    async def provide_with_stats(self, key: bytes) -> tuple[int, QueryStats]:
        """:meth:`provide`, also returning the figures of its lookup."""
        self._check_running()
        key = bytes(key)
        now = time.monotonic()
        self._provided[key] = now
        addrs = [a.to_bytes() for a in self.host.addrs]
        self.providers.add(key, self._self_bytes, addrs, now)
        q, stats = await self._run_query(key, KadMessage(MessageType.FIND_NODE, key=key))
        closest = [_peer_id(p) for p in q.closest()]
        if not closest:
            raise QueryError("provide: no DHT peer to announce to")
        msg = KadMessage(MessageType.ADD_PROVIDER, key=key,
                         provider_peers=[KadPeer(self._self_bytes, addrs, ConnectionType.CONNECTED)])
        results = await asyncio.gather(
            *(self._request(p, msg, expect_response=False) for p in closest), return_exceptions=True
        )
        ok = sum(1 for r in results if not isinstance(r, BaseException))
        stats.requests += len(closest)
        return ok, stats

    async def find_providers(self, key: bytes, *, limit: int = 20) -> AsyncIterator[PeerInfo]:
        """Providers of ``key`` as they are found (ours first), at most ``limit``.

        Use as ``async for info in host.dht.find_providers(key, limit=5)``;
        leaving the loop early cancels the lookup.
        """
        self._check_running()
        key = bytes(key)
        queue: asyncio.Queue[PeerInfo | None] = asyncio.Queue()
        seen: set[PeerID] = set()

        def push(pid: PeerID, addrs: list[Multiaddr]) -> bool:
            if pid in seen or len(seen) >= limit:
                return len(seen) >= limit
            seen.add(pid)
            if addrs and pid != self.host.peer_id:
                self.host.peerstore.add_addrs(pid, addrs)
            queue.put_nowait(PeerInfo(pid, tuple(addrs)))
            return len(seen) >= limit

        for sp in self.providers.get(key, time.monotonic()):
            parsed = _parse_peer(KadPeer(sp.peer, sp.addrs))
            if parsed is not None and push(*parsed):
                break

        async def run() -> None:
            try:
                if len(seen) < limit:
                    def on_response(_r: PeerID, msg: KadMessage, _d: int) -> bool:
                        done = False
                        for p in msg.provider_peers:
                            parsed = _parse_peer(p)
                            if parsed is not None:
                                done = push(*parsed) or done
                        return done

                    await self._run_query(key, KadMessage(MessageType.GET_PROVIDERS, key=key), on_response)
            finally:
                queue.put_nowait(None)

        task = asyncio.ensure_future(run())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def put_value(self, key: bytes, value: bytes) -> int:
        """Validate and store ``key -> value`` here and on the ``k`` closest peers.

        Returns:
            Peers that acknowledged the PUT_VALUE.

        Raises:
            RecordValidationError: the value is invalid for the key's namespace.
            QueryError: no peer acknowledged (and the routing table is not empty).

        Cancellation: peers already written keep the record.
        """
        self._check_running()
        key, value = bytes(key), bytes(value)
        self.validator.validate(key, value)
        rec = KadRecord(key, value, _rfc3339(time.time()))
        self.records.put(rec, self._self_bytes, time.monotonic())
        closest = await self._closest_peers(key)
        if not closest:
            return 0
        msg = KadMessage(MessageType.PUT_VALUE, key=key, record=KadRecord(key, value))
        results = await asyncio.gather(*(self._request(p, msg) for p in closest), return_exceptions=True)
        ok = sum(1 for r in results if isinstance(r, KadMessage))
        if ok == 0:
            raise QueryError(f"put_value: none of {len(closest)} peers stored the record")
        return ok

    async def get_value(self, key: bytes, *, quorum: int | None = None) -> bytes:
        """The best valid value for ``key`` (local and from up to ``quorum`` peers).

        Peers that answered an outdated value are sent the best one
        (libp2p-kad-dht.md "Entry correction").

        Raises:
            ValueNotFoundError: no valid record was found.

        Cancellation: outstanding RPCs are cancelled; no correction is sent.
        """
        self._check_running()
        key = bytes(key)
        want = quorum or self.config.quorum
        got: list[tuple[PeerID | None, KadRecord]] = []
        local = self.records.get(key, time.monotonic())
        if local is not None:
            got.append((None, local))

        def on_response(peer: PeerID, msg: KadMessage, _d: int) -> bool:
            rec = msg.record
            if rec is not None and rec.key == key:
                try:
                    self.validator.validate(key, rec.value)
                except RecordValidationError:
                    return False
                got.append((peer, rec))
            return len(got) >= want

        if len(got) < want:
            await self._run_query(key, KadMessage(MessageType.GET_VALUE, key=key), on_response)
        if not got:
            raise ValueNotFoundError(f"no value for {key!r}")
        best = got[self.validator.select(key, [r for _, r in got])][1]
        outdated = [p for p, r in got if p is not None and r.value != best.value]
        if outdated:
            fix = KadMessage(MessageType.PUT_VALUE, key=key, record=KadRecord(key, best.value))
            for p in outdated:
                self.host.spawn(self._quiet(self._request(p, fix)))
        return best.value

    def routing_table(self) -> list[PeerID]:
        """The peers in the routing table, closest to us first."""
        return [_peer_id(p) for p in self.table.closest(self.table.local_key, len(self.table))]

    @staticmethod
    async def _quiet(coro: Awaitable[Any]) -> None:
        with contextlib.suppress(P2PError, OSError, TimeoutError, EOFError):
            await coro

    # -- server -------------------------------------------------------------------------

    async def _handle_stream(self, stream: Stream) -> None:
        peer = stream.conn.remote_peer
        if self._closed or self._inbound.get(peer, 0) >= self.config.max_streams_per_peer:
            stream.reset(StreamErrorCode.RESOURCE_LIMIT)
            return
        self._inbound[peer] = self._inbound.get(peer, 0) + 1
        reader = KadReader(self.limits)
        try:
            while True:
                async with asyncio.timeout(self.config.query_timeout):
                    chunk = await stream.read(READ_CHUNK)
                if not chunk:
                    break
                try:
                    msgs = reader.receive_data(chunk)
                except RemoteProtocolError as exc:
                    log.debug("bad kad message from %s: %s", peer, exc)
                    stream.reset(StreamErrorCode.PROTOCOL)
                    return
                for msg in msgs:
                    resp = self._answer(peer, msg)
                    if resp is not None:
                        await stream.write(frame(resp))
        except (TimeoutError, RecordValidationError) as exc:
            log.debug("kad stream from %s ended: %r", peer, exc)
            stream.reset(StreamErrorCode.PROTOCOL)
        finally:
            n = self._inbound.get(peer, 1) - 1
            if n:
                self._inbound[peer] = n
            else:
                self._inbound.pop(peer, None)

    def _peer_entry(self, pid: PeerID) -> KadPeer | None:
        addrs = self.host.peerstore.addrs(pid)
        if not addrs:
            return None
        conn = ConnectionType.CONNECTED if self.host.connection(pid) is not None else ConnectionType.NOT_CONNECTED
        return KadPeer(pid.to_bytes(), [a.to_bytes() for a in addrs], conn)

    def _closer(self, key: bytes, sender: PeerID, *, find_node: bool = False) -> list[KadPeer]:
        out: list[KadPeer] = []
        if find_node:
            if key == self._self_bytes:
                return [KadPeer(self._self_bytes, [a.to_bytes() for a in self.host.addrs],
                                ConnectionType.CONNECTED)]
            with contextlib.suppress(P2PError, ValueError):
                target = PeerID.from_bytes(key)
                # The target itself comes first whenever we know an address for it
                # (connected, a client too, in the table or only in the peerstore),
                # as go-libp2p's handleFindPeer does: js-libp2p's findPeer ends
                # NotFound unless some closerPeers list names the target, however
                # near the peers it is given.
                if target != sender:
                    e = self._peer_entry(target)
                    if e is not None:
                        out.append(e)
        for p in self.table.closest(kad_key(key), self.config.k, exclude=[sender.to_bytes(), key]):
            e = self._peer_entry(_peer_id(p))
            if e is not None:
                out.append(e)
        return out[: self.config.k]

    def _answer(self, sender: PeerID, msg: KadMessage) -> KadMessage | None:
        self._count(self.stats.rpcs_received, msg.type)
        now = time.monotonic()
        t = msg.type
        if t is MessageType.FIND_NODE:
            return KadMessage(t, key=msg.key, closer_peers=self._closer(msg.key, sender, find_node=True))
        if t is MessageType.GET_VALUE:
            rec = self.records.get(msg.key, now)
            return KadMessage(t, key=msg.key, record=rec, closer_peers=self._closer(msg.key, sender))
        if t is MessageType.PUT_VALUE:
            rec = msg.record
            if rec is None or rec.key != msg.key:
                raise RecordValidationError("PUT_VALUE record key differs from the message key")
            self.validator.validate(rec.key, rec.value)
            existing = self.records.get(rec.key, now)
            stored = KadRecord(rec.key, rec.value, _rfc3339(time.time()))
            if existing is not None and existing.value != rec.value:
                # keep the better one; a tie (equal time) goes to the newcomer, newest wins
                if self.validator.select(rec.key, [stored, existing]) != 0:
                    return msg
            self.records.put(stored, sender.to_bytes(), now)
            return msg
        if t is MessageType.ADD_PROVIDER:
            sb = sender.to_bytes()
            for p in msg.provider_peers:
                if p.id != sb:
                    continue  # only the sender may announce itself
                parsed = _parse_peer(p)
                addrs = [a.to_bytes() for a in parsed[1]] if parsed else []
                if parsed and parsed[1]:
                    self.host.peerstore.add_addrs(sender, parsed[1])
                self.providers.add(msg.key, sb, addrs, now)
            return None
        if t is MessageType.GET_PROVIDERS:
            provs = []
            for sp in self.providers.get(msg.key, now):
                addrs = sp.addrs
                if not addrs:
                    with contextlib.suppress(P2PError, ValueError):
                        addrs = [a.to_bytes() for a in self.host.peerstore.addrs(PeerID.from_bytes(sp.peer))]
                provs.append(KadPeer(sp.peer, addrs))
            return KadMessage(t, key=msg.key, provider_peers=provs, closer_peers=self._closer(msg.key, sender))
        if t is MessageType.PING:
            return KadMessage(t)
        return None

    # -- periodic work ------------------------------------------------------------------

    async def _maintenance(self) -> None:
        last_refresh = last_gc = time.monotonic()
        while not self._closed:
            await asyncio.sleep(min(60.0, self.config.refresh_interval))
            now = time.monotonic()
            try:
                if now - last_refresh >= self.config.refresh_interval:
                    last_refresh = now
                    await self.refresh()
                for key, at in list(self._provided.items()):
                    if now - at >= self.config.provider_republish:
                        await self._quiet(self.provide(key))
                if now - last_gc >= GC_INTERVAL:
                    last_gc = now
                    self.records.gc(now)
                    self.providers.gc(now)
            except (P2PError, OSError) as exc:
                log.debug("dht maintenance: %r", exc)
