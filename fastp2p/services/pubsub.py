"""Pubsub (gossipsub v1.2/v1.1/v1.0, floodsub): the asyncio driver of ``GossipsubRouter``.

``host.pubsub`` is an instance of :class:`Pubsub`, created by the Host when
``HostConfig.pubsub.enabled`` (the default)::

    sub = await host.pubsub.subscribe("news")
    await host.pubsub.publish("news", b"hello")
    async for msg in sub:                 # msg.data, msg.topic, msg.from_peer, msg.seqno, msg.id
        ...
    await sub.aclose()

Streams (libp2p-pubsub.md "Stream management"): one long-lived outbound
stream per peer carries everything we send; inbound streams opened by peers
are only read. Every RPC is a uvarint-length-prefixed protobuf.

The service is lazy: until the application first subscribes, publishes or
waits for topic peers, it answers inbound pubsub streams (learning peers'
subscriptions) but opens no streams of its own, so hosts that never use
pubsub pay nothing per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastp2p.errors import (
    ClosedResourceError,
    InvalidKeyError,
    NegotiationError,
    P2PError,
    RemoteProtocolError,
    StreamErrorCode,
)
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID
from fastp2p.proto.gossipsub.events import (
    MessageDelivered,
    PeerExchangeReceived,
    PeerSubscribed,
    ValidationRequested,
)
from fastp2p.proto.gossipsub.router import (
    GossipsubRouter,
    PublishError,
    PublishFailure,
    ValidationResult,
    validation_result,
)
from fastp2p.proto.gossipsub.rpc_pb import Message, RPCReader

if TYPE_CHECKING:
    from fastp2p.config import GossipsubConfig
    from fastp2p.services.base import ServiceHost
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = [
    "Pubsub",
    "PubsubMessage",
    "Subscription",
    "Validator",
    "ValidationResult",
    "PublishError",
    "PublishFailure",
]

log = logging.getLogger("fastp2p.pubsub")

#: ``fn(msg)`` returning ``ValidationResult``/"accept"/"reject"/"ignore"/bool, or an awaitable of one
Validator = Callable[["PubsubMessage"], Any]

READ_CHUNK = 256 * 1024
VALIDATION_TIMEOUT = 10.0
MAX_OUTBOUND_RETRIES = 3


@dataclass(frozen=True, slots=True)
class PubsubMessage:
    """A message delivered to a subscription (or given to a validator).

    Attributes:
        data: the payload.
        topic: the topic it was published to.
        from_peer: the author (None under StrictNoSign).
        seqno: the author's sequence number (None under StrictNoSign).
        id: the message id (``GossipsubConfig.msg_id_fn``).
        received_from: the peer that forwarded it to us (None for our own).
    """

    data: bytes
    topic: str
    from_peer: PeerID | None
    seqno: int | None
    id: bytes
    received_from: PeerID | None


def _to_message(msg: Message, msg_id: bytes, received_from: Any) -> PubsubMessage:
    author = None
    if msg.from_ is not None:
        with contextlib.suppress(InvalidKeyError, P2PError, ValueError):
            author = PeerID.from_bytes(msg.from_)
    seqno = int.from_bytes(msg.seqno, "big") if msg.seqno else None
    return PubsubMessage(msg.data, msg.topic, author, seqno, msg_id, received_from)


class Subscription:
    """Messages of one topic, in arrival order.

    The queue is bounded by ``GossipsubConfig.subscription_queue_size``; when a
    slow reader lets it fill, the oldest message is dropped and ``dropped``
    counts it (memory never grows without bound).

    Use ``async for msg in sub`` or ``await sub.get()``; ``await sub.aclose()``
    (or ``async with sub``) leaves the topic when it was the last subscription.
    """

    def __init__(self, pubsub: Pubsub, topic: str, maxsize: int) -> None:
        self.topic = topic
        self._pubsub = pubsub
        self._queue: deque[PubsubMessage] = deque()
        self._maxsize = max(1, maxsize)
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        #: messages dropped because the queue was full (oldest first)
        self.dropped = 0

    def _push(self, msg: PubsubMessage) -> None:
        if self._closed:
            return
        if len(self._queue) >= self._maxsize:
            self._queue.popleft()
            self.dropped += 1
        self._queue.append(msg)
        self._wake()

    def _wake(self) -> None:
        w = self._waiter
        if w is not None and not w.done():
            w.set_result(None)

    @property
    def closed(self) -> bool:
        return self._closed

    def qsize(self) -> int:
        """Messages waiting to be read."""
        return len(self._queue)

    async def get(self) -> PubsubMessage:
        """The next message.

        Raises:
            ClosedResourceError: the subscription (or the host) was closed and
                no message is left.

        Cancellation: no message is lost; the next call returns it.
        """
        while not self._queue:
            if self._closed:
                raise ClosedResourceError("subscription closed")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._queue.popleft()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> PubsubMessage:
        try:
            return await self.get()
        except ClosedResourceError:
            raise StopAsyncIteration from None

    async def aclose(self) -> None:
        """Stop receiving; leave the topic if this was its last subscription. Idempotent."""
        if self._closed:
            return
        self._close()
        self._pubsub._remove_subscription(self)

    def _close(self) -> None:
        self._closed = True
        self._wake()

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Subscription {self.topic!r} queued={len(self._queue)} dropped={self.dropped}>"


class _Link:
    """Our outbound stream to one peer and the frames waiting for it."""

    __slots__ = ("queue", "queued_bytes", "event", "task", "dropped", "failures")

    def __init__(self) -> None:
        self.queue: deque[bytes] = deque()
        self.queued_bytes = 0
        self.event = asyncio.Event()
        self.task: asyncio.Task[Any] | None = None
        self.dropped = 0
        self.failures = 0


class Pubsub:
    """The pubsub service of one Host (``host.pubsub``).

    Args:
        host: the owning host (the ``ServiceHost`` interface).
        config: the ``GossipsubConfig`` (``HostConfig.pubsub``).
    """

    def __init__(self, host: ServiceHost, config: GossipsubConfig) -> None:
        self.host = host
        self.config = config
        self.router = GossipsubRouter(host.peer_id, config, identity=host.identity)
        self._loop = asyncio.get_running_loop()
        self._active = False
        self._closed = False
        self._links: dict[PeerID, _Link] = {}
        self._subs: dict[str, list[Subscription]] = {}
        self._validators: dict[str, Validator] = {}
        self._topic_waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        self._heartbeat_task: asyncio.Task[Any] | None = None
        self._px_dialing: set[PeerID] = set()
        self._direct_task: asyncio.Task[Any] | None = None
        #: explicit peers (``GossipsubConfig.direct_peers``) and where to dial them
        self.direct_peers: dict[PeerID, tuple[Multiaddr, ...]] = _parse_direct_peers(config.direct_peers)
        host.peerstore.keep_while(self.direct_peers.__contains__)  # their addresses are redialled
        for pid, addrs in self.direct_peers.items():
            self.router.add_direct_peer(pid)
            host.peerstore.add_addrs(pid, addrs)
        self.router.signed_record_of = self._signed_record_of
        #: pubsub bytes written to / read from peers' streams
        self.bytes_sent = 0
        self.bytes_received = 0
        #: frames dropped because a peer's queue was full
        self.frames_dropped = 0
        protocols = tuple(config.protocols)
        host.set_handler(protocols[0], self._handle_inbound, match=lambda p: p in protocols)
        host.on_connection(self._on_connection)
        host.on_disconnect(self._on_disconnect)

    # -- public API --------------------------------------------------------------------------

    async def subscribe(self, topic: str) -> Subscription:
        """Subscribe to ``topic``; the returned ``Subscription`` yields its messages.

        Raises:
            ClosedResourceError: the host is closing.

        Cancellation: nothing to undo (the call does not wait).
        """
        self._check_open()
        self._activate()
        sub = Subscription(self, topic, self.config.subscription_queue_size)
        subs = self._subs.setdefault(topic, [])
        subs.append(sub)
        if len(subs) == 1:
            self.router.subscribe(topic, self._now())
            self._process()
        return sub

    async def publish(self, topic: str, data: bytes | bytearray | memoryview) -> bytes:
        """Publish ``data`` to ``topic`` (signed under StrictSign); returns the message id.

        The message goes to every topic peer above the publish threshold
        (flood publishing) or to the mesh/fanout; this call does not wait for
        the bytes to leave.

        Raises:
            PublishError: too large, a duplicate, no peers (only when
                ``allow_publish_to_zero_peers`` is False).
            ClosedResourceError: the host is closing.

        Cancellation: not applicable (the call does not wait).
        """
        self._check_open()
        self._activate()
        msg_id = self.router.publish(topic, bytes(data), self._now())
        self._process()
        return msg_id

    def set_validator(self, topic: str, fn: Validator | None) -> None:
        """Validate every new message of ``topic`` with ``fn(msg)``.

        ``fn`` may be sync or async and returns ``"accept"``, ``"reject"``
        (P4 penalty for the sender) or ``"ignore"`` (dropped, no penalty), a
        ``ValidationResult``, or a bool (True accept, False reject). An
        exception or a timeout (10 s) counts as ignore. ``None`` removes it.
        """
        if fn is None:
            self._validators.pop(topic, None)
        else:
            self._validators[topic] = fn

    def topic_peers(self, topic: str) -> list[PeerID]:
        """Peers known to be subscribed to ``topic``."""
        return sorted(self.router.topic_peers(topic), key=str)  # type: ignore[arg-type]

    def mesh(self, topic: str) -> list[PeerID]:
        """Our gossipsub mesh for ``topic``."""
        return sorted(self.router.mesh_peers(topic), key=str)  # type: ignore[arg-type]

    def score(self, peer: PeerID) -> float:
        """``peer``'s current score as this host computes it."""
        return self.router.score(peer, self._now())

    @property
    def topics(self) -> list[str]:
        """Topics we are subscribed to."""
        return sorted(self.router.subscriptions)

    async def wait_for_peers(self, topic: str, n: int = 1) -> list[PeerID]:
        """Wait until at least ``n`` peers are subscribed to ``topic``.

        Cancellation: nothing to undo. Use ``asyncio.timeout`` to bound it.
        """
        self._check_open()
        self._activate()
        while len(self.router.topic_peers(topic)) < n:
            fut = self._loop.create_future()
            entry = (topic, n, fut)
            self._topic_waiters.append(entry)
            try:
                await fut
            finally:
                with contextlib.suppress(ValueError):
                    self._topic_waiters.remove(entry)
            self._check_open()
        return self.topic_peers(topic)

    async def flush(self) -> None:
        """Wait until every frame queued so far has been written to its peer's stream.

        Frames for a peer whose stream cannot be opened are dropped, not waited for.

        Cancellation: frames keep going out in the background.
        """
        while any(link.queue and link.task is not None and not link.task.done() for link in self._links.values()):
            await asyncio.sleep(0.005)

    def close(self) -> None:
        """Close every subscription and stop (called by the Host). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for subs in self._subs.values():
            for s in subs:
                s._close()
        self._subs.clear()
        for _, _, fut in self._topic_waiters:
            if not fut.done():
                fut.set_result(None)
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
        if self._direct_task is not None:
            self._direct_task.cancel()
        for link in self._links.values():
            if link.task is not None:
                link.task.cancel()

    # -- internals -----------------------------------------------------------------------------

    def _now(self) -> float:
        return self._loop.time()

    def _check_open(self) -> None:
        if self._closed:
            raise ClosedResourceError("pubsub is closed")

    def _activate(self) -> None:
        if self._active:
            return
        self._active = True
        self._heartbeat_task = self.host.spawn(self._heartbeat())
        if self.direct_peers:
            self._direct_task = self.host.spawn(self._keep_direct_peers())
        for conn in self.host.connections:
            self._ensure_link(conn.remote_peer)

    def _remove_subscription(self, sub: Subscription) -> None:
        subs = self._subs.get(sub.topic)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if not subs:
            del self._subs[sub.topic]
            if not self._closed:
                self.router.unsubscribe(sub.topic, self._now())
                self._process()

    async def _keep_direct_peers(self) -> None:
        """v1.1 explicit peering: connect to every direct peer soon after start, then
        redial the ones not connected every ``direct_connect_interval`` seconds."""
        cfg = self.config
        await asyncio.sleep(cfg.direct_connect_initial_delay)
        while not self._closed:
            for pid in self.direct_peers:
                if self._conn_of(pid) is None and pid not in self._px_dialing:
                    self._px_dialing.add(pid)
                    self.host.spawn(self._dial(pid, "direct peer"))
            await asyncio.sleep(cfg.direct_connect_interval)

    async def _heartbeat(self) -> None:
        cfg = self.config
        await asyncio.sleep(cfg.heartbeat_initial_delay)
        while not self._closed:
            try:
                self.router.heartbeat(self._now())
                self._process()
            except Exception:
                log.exception("pubsub heartbeat failed")
            await asyncio.sleep(cfg.heartbeat_interval)

    def _process(self) -> None:
        """Drain router events, then hand queued frames to the peers' writers."""
        router = self.router
        while (ev := router.next_event()) is not None:
            if isinstance(ev, ValidationRequested):
                self._validate(ev)
            elif isinstance(ev, MessageDelivered):
                subs = self._subs.get(ev.message.topic)
                if subs:
                    pm = _to_message(ev.message, ev.msg_id, ev.received_from)
                    for s in subs:
                        s._push(pm)
            elif isinstance(ev, PeerSubscribed):
                for topic, n, fut in self._topic_waiters:
                    if topic == ev.topic and not fut.done() and len(router.topic_peers(topic)) >= n:
                        fut.set_result(None)
            elif isinstance(ev, PeerExchangeReceived):
                self._on_px(ev)
        if router.has_data_to_send():
            limit = self.config.peer_queue_size
            for peer, frames in router.data_to_send():
                link = self._links.get(peer)  # type: ignore[call-overload]
                if link is None:
                    link = self._ensure_link(peer)  # type: ignore[arg-type]
                    if link is None:
                        continue
                if len(link.queue) >= limit:
                    link.dropped += 1
                    self.frames_dropped += 1
                    continue
                link.queue.append(frames)
                link.queued_bytes += len(frames)
                link.event.set()

    def _validate(self, ev: ValidationRequested) -> None:
        fn = self._validators.get(ev.message.topic)
        if fn is None:
            self.router.report_validation(ev.msg_id, ValidationResult.ACCEPT, self._now())
            return
        pm = _to_message(ev.message, ev.msg_id, ev.received_from)
        try:
            result = fn(pm)
        except Exception:
            log.exception("validator for %r failed", ev.message.topic)
            self.router.report_validation(ev.msg_id, ValidationResult.IGNORE, self._now())
            return
        if inspect.isawaitable(result):
            self.host.spawn(self._validate_async(ev.msg_id, ev.message.topic, result))
            return
        self.router.report_validation(ev.msg_id, self._verdict(result, ev.message.topic), self._now())

    def _verdict(self, value: Any, topic: str) -> ValidationResult:
        try:
            return validation_result(value)
        except ValueError:
            log.warning("validator for %r returned %r; ignoring the message", topic, value)
            return ValidationResult.IGNORE

    async def _validate_async(self, msg_id: bytes, topic: str, aw: Awaitable[Any]) -> None:
        try:
            async with asyncio.timeout(VALIDATION_TIMEOUT):
                verdict = self._verdict(await aw, topic)
        except Exception:
            log.exception("validator for %r failed", topic)
            verdict = ValidationResult.IGNORE
        if self._closed:
            return
        self.router.report_validation(msg_id, verdict, self._now())
        self._process()

    # -- peers and streams -------------------------------------------------------------------

    def _on_connection(self, conn: Connection) -> None:
        if self._active and not self._closed:
            self._ensure_link(conn.remote_peer)

    def _on_disconnect(self, conn: Connection) -> None:
        self._on_conn_closed(conn.remote_peer)

    def _on_conn_closed(self, peer: PeerID) -> None:
        if self._closed:
            return
        for c in self.host.connections:
            if c.remote_peer == peer and not c.is_closed:
                return
        link = self._links.pop(peer, None)
        if link is not None and link.task is not None:
            link.task.cancel()
        self.router.remove_peer(peer, self._now())
        self._process()

    def _ensure_link(self, peer: PeerID) -> _Link | None:
        if not self._active or self._closed:
            return None
        link = self._links.get(peer)
        if link is None:
            link = self._links[peer] = _Link()
            link.task = self.host.spawn(self._writer(peer, link))
        return link

    def _conn_of(self, peer: PeerID) -> Connection | None:
        for c in self.host.connections:
            if c.remote_peer == peer and not c.is_closed:
                return c
        return None

    def _add_router_peer(self, peer: PeerID, protocol: str, conn: Connection | None) -> None:
        ips: tuple[str, ...] = ()
        outbound = False
        if conn is not None:
            outbound = conn.outbound
            addr = conn.remote_addr
            if addr is not None:
                ip = addr.value_for("ip4") or addr.value_for("ip6")
                if ip:
                    ips = (ip,)
        self.router.add_peer(peer, protocol, outbound=outbound, ips=ips, now=self._now())

    async def _open_outbound(self, peer: PeerID) -> Stream | None:
        conn = self._conn_of(peer)
        if conn is None:
            return None
        if self.host.config.enable_identify:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.host.config.negotiation_timeout):
                    await self.host.wait_identified(conn)
            protos = self.host.peerstore.record(peer).protocols
            if protos and not any(p in protos for p in self.config.protocols):
                return None  # identify says it speaks no pubsub
        return await self.host.open_stream(peer, *self.config.protocols)

    async def _writer(self, peer: PeerID, link: _Link) -> None:
        stream: Stream | None = None
        try:
            try:
                stream = await self._open_outbound(peer)
            except NegotiationError:
                stream = None
            if stream is None:
                if self._links.get(peer) is link:
                    del self._links[peer]
                return
            self._add_router_peer(peer, stream.protocol or "", stream.conn)
            self._process()
            while True:
                if not link.queue:
                    link.event.clear()
                    await link.event.wait()
                    continue
                data = b"".join(link.queue) if len(link.queue) > 1 else link.queue[0]
                link.queue.clear()
                link.queued_bytes = 0
                await stream.write(data)
                self.bytes_sent += len(data)
        except (P2PError, OSError, TimeoutError) as exc:
            log.debug("pubsub stream to %s ended: %r", peer, exc)
            if self._links.get(peer) is link:
                del self._links[peer]
                link.failures += 1
                if self._conn_of(peer) is not None and link.failures < MAX_OUTBOUND_RETRIES and not self._closed:
                    retry = self._ensure_link(peer)
                    if retry is not None:
                        retry.failures = link.failures
        finally:
            if stream is not None:
                with contextlib.suppress(P2PError, OSError):
                    stream.reset(StreamErrorCode.CANCELLED)
                    await stream.aclose()

    async def _handle_inbound(self, stream: Stream) -> None:
        peer = stream.peer
        if self._closed:
            stream.reset(StreamErrorCode.CANCELLED)
            return
        if peer not in self.router.peers:
            self._add_router_peer(peer, stream.protocol or "", stream.conn)
            self._process()
        reader = RPCReader(self.config.limits)
        router = self.router
        try:
            while chunk := await stream.read(READ_CHUNK):
                self.bytes_received += len(chunk)
                rpcs = reader.receive_data(chunk)
                if not rpcs:
                    continue
                now = self._now()
                for rpc in rpcs:
                    router.handle_rpc(peer, rpc, now)
                self._process()
        except RemoteProtocolError as exc:
            log.info("pubsub peer %s sent a malformed RPC: %s", peer, exc)
            stream.reset(StreamErrorCode.PROTOCOL)

    def _signed_record_of(self, peer: Any) -> bytes | None:
        rec = self.host.peerstore.get(peer) if isinstance(peer, PeerID) else None
        return rec.signed_record if rec is not None else None

    def _on_px(self, ev: PeerExchangeReceived) -> None:
        """Connect to PX peers we have addresses for: from their signed peer records
        (verified by the router against each peer's own key) or the peerstore."""
        for rec in ev.records:
            if rec.peer_id != self.host.peer_id and rec.addrs:
                self.host.peerstore.add_addrs(rec.peer_id, rec.addrs)
        for info in ev.peers:
            try:
                pid = PeerID.from_bytes(info.peer_id or b"")
            except (InvalidKeyError, P2PError, ValueError):
                continue
            if pid == self.host.peer_id or pid in self._px_dialing or self._conn_of(pid) is not None:
                continue
            if not self.host.peerstore.addrs(pid):
                continue
            self._px_dialing.add(pid)
            self.host.spawn(self._dial(pid, "PX"))

    async def _dial(self, pid: PeerID, why: str) -> None:
        from fastp2p.peerstore import PeerInfo

        try:
            connect = getattr(self.host, "connect", None)
            if connect is not None:
                await connect(PeerInfo(pid))
        except (P2PError, OSError, TimeoutError) as exc:
            log.debug("%s connect to %s failed: %r", why, pid, exc)
        finally:
            self._px_dialing.discard(pid)

    def __repr__(self) -> str:
        return f"<Pubsub topics={self.topics} peers={len(self.router.peers)}>"


def _parse_direct_peers(addrs: tuple[str, ...]) -> dict[PeerID, tuple[Multiaddr, ...]]:
    """``GossipsubConfig.direct_peers`` as ``{peer: dialable addresses}``; each
    multiaddr must name its peer with ``/p2p/`` (else ``ValueError``)."""
    out: dict[PeerID, tuple[Multiaddr, ...]] = {}
    for text in addrs:
        ma = Multiaddr(text)
        pid = ma.peer_id()
        if pid is None:
            raise ValueError(f"GossipsubConfig.direct_peers: {text!r} has no /p2p/ peer id")
        out[pid] = (*out.get(pid, ()), ma.without_peer_id())
    return out
