"""The gossipsub router: meshsub v1.2/v1.1/v1.0 and floodsub, as a sans-IO state machine.

Rules
-----
Sources: libp2p-pubsub.md, gossipsub-v1.0.md, -v1.1.md, -v1.2.md.

- Protocols: ``/meshsub/1.2.0`` (IDONTWANT), ``/meshsub/1.1.0`` (PX, backoff,
  scoring), ``/meshsub/1.0.0`` and ``/floodsub/1.0.0``. Floodsub peers get
  every message of the topics they joined and no control messages.
- Message processing (v1.0 "Message Processing"): messages in topics we are
  not subscribed to are dropped; a duplicate (seen cache) is only scored; a
  new one is checked against the signature policy, then handed to the
  application (``ValidationRequested``); accepted messages are delivered
  locally, cached (mcache) and forwarded to floodsub peers, direct peers and
  the topic mesh, never back to the sender or the author.
- Signature policy (pubsub "Message Signing"): StrictSign requires from,
  seqno, signature (and key when the peer id does not inline it); the
  signature is over ``b"libp2p-pubsub:" + message without signature/key``.
  StrictNoSign requires all four to be absent.
- Control (v1.0 "Control Messages" + v1.1 "Spam Protection Measures"):
  GRAFT for an unknown topic is ignored; GRAFT inside a backoff is PRUNEd
  and penalised (P7; twice when within ``graft_flood_threshold`` of the
  prune); GRAFT from a negative-score peer is PRUNEd; GRAFT when the mesh
  holds ``D_hi`` peers is accepted only from an outbound peer (v1.1 "Outbound
  Mesh Quotas"). PRUNE removes the peer, starts the backoff it carries (or
  ``prune_backoff``) and, if the pruner scores at least
  ``accept_px_threshold``, reports its PX peers. IHAVE is ignored from
  peers below ``gossip_threshold``, beyond ``max_ihave_messages`` per
  heartbeat or ``max_ihave_length`` ids asked per heartbeat; one id of each
  IWANT we send is a promise that, broken after ``iwant_followup_time``,
  costs the advertiser one P7 point. IWANT is answered from the mcache at
  most ``gossip_retransmission`` times per message and peer.
  IDONTWANT (v1.2) ids are kept ``idontwant_ttl_heartbeats`` heartbeats and
  those messages are not sent to that peer; at most
  ``max_idontwant_messages`` ids per heartbeat are honoured.
- Graylist (v1.1 "Score Thresholds"): every RPC of a peer scoring below
  ``graylist_threshold`` is ignored.
- Publishing (v1.1 "Flood Publishing"): with ``flood_publish`` to every topic
  peer scoring at least ``publish_threshold``; otherwise to the mesh, or to
  the fanout when not subscribed.
- Heartbeat (v1.0 "Heartbeat" + v1.1 "Heartbeat Maintenance"): per mesh
  topic prune negative peers; graft up to ``D`` when below ``D_lo``; when
  above ``D_hi`` keep the best ``D_score`` by score and random others up to
  ``D`` with at least ``D_out`` outbound, pruning the rest with PX; graft
  outbound peers when short of ``D_out``; every ``opportunistic_graft_ticks``
  graft ``opportunistic_graft_peers`` above the median when the median score
  is below ``opportunistic_graft_threshold``. Fanout entries expire after
  ``fanout_ttl`` and are refilled to ``D``. Gossip (IHAVE) goes to
  ``max(D_lazy, gossip_factor * eligible)`` non-mesh peers per topic
  (adaptive gossip). Then the mcache shifts and per-heartbeat counters reset.

Theory of operation
-------------------
Inputs are imperative calls with ``now`` passed in: ``add_peer``,
``remove_peer``, ``handle_rpc``, ``report_validation``, ``subscribe``,
``unsubscribe``, ``publish`` and ``heartbeat``. Outputs are events
(``next_event``) and per-peer length-prefixed RPC frames (``data_to_send``);
control messages produced in one call are piggybacked on the same frame as
the messages. A message is encoded once and its bytes reused for every peer.
Randomness comes from the ``rng`` given at construction (seed it in tests).
"""

from __future__ import annotations

import enum
import hashlib
import random
from collections import deque
from collections.abc import Callable, Hashable, Iterable
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from fastp2p.errors import InvalidKeyError, LocalProtocolError, P2PError, PeerRecordError
from fastp2p.peer import PeerID, PrivateKey, public_key_from_protobuf
from fastp2p.proto.gossipsub.backoff import BackoffTable
from fastp2p.proto.gossipsub.events import (
    GossipsubEvent,
    MessageDelivered,
    MessageRejected,
    PeerExchangeReceived,
    PeerGrafted,
    PeerPruned,
    PeerSubscribed,
    PeerUnsubscribed,
    ValidationRequested,
)
from fastp2p.proto.gossipsub.mcache import MessageCache, SeenCache
from fastp2p.proto.gossipsub.rpc_pb import (
    RPC,
    ControlGraft,
    ControlIDontWant,
    ControlIHave,
    ControlIWant,
    ControlMessage,
    ControlPrune,
    Message,
    PeerInfoPB,
    SubOpts,
    encode_rpc,
    signing_bytes,
)
from fastp2p.proto.gossipsub.score import PeerScore
from fastp2p.proto.peer_record import PeerRecord, open_peer_record
from fastp2p.proto.protobuf import length_prefixed

if TYPE_CHECKING:
    from fastp2p.config import GossipsubConfig

__all__ = [
    "MESHSUB_V12",
    "MESHSUB_V11",
    "MESHSUB_V10",
    "FLOODSUB",
    "PROTOCOL_IDS",
    "SIGN_PREFIX",
    "ValidationResult",
    "PublishFailure",
    "PublishError",
    "GossipsubRouter",
    "default_msg_id",
]

MESHSUB_V12 = "/meshsub/1.2.0"
MESHSUB_V11 = "/meshsub/1.1.0"
MESHSUB_V10 = "/meshsub/1.0.0"
FLOODSUB = "/floodsub/1.0.0"
PROTOCOL_IDS = (MESHSUB_V12, MESHSUB_V11, MESHSUB_V10, FLOODSUB)
SIGN_PREFIX = b"libp2p-pubsub:"


class ValidationResult(enum.StrEnum):
    """An application validator's verdict (gossipsub v1.1 "Extended Validators")."""

    ACCEPT = "accept"
    REJECT = "reject"
    IGNORE = "ignore"


class PublishFailure(enum.Enum):
    DUPLICATE = "duplicate"
    TOO_LARGE = "too large"
    NO_PEERS = "no peers subscribed to the topic"
    SIGNING = "cannot sign"


class PublishError(P2PError):
    """``publish`` could not send the message; ``reason`` says why."""

    def __init__(self, reason: PublishFailure, message: str = "") -> None:
        super().__init__(message or reason.value)
        self.reason = reason


def default_msg_id(msg: Message) -> bytes:
    """libp2p-pubsub.md "Message Identification": ``from`` + ``seqno``."""
    return (msg.from_ or b"") + (msg.seqno or b"")


def _content_msg_id(msg: Message) -> bytes:
    return hashlib.sha256(msg.data).digest()


class _Peer:
    __slots__ = (
        "peer_id",
        "protocol",
        "outbound",
        "topics",
        "floodsub",
        "v11",
        "v12",
        "dont_send",
        "ihave_count",
        "iasked",
        "iwant_served",
        "idontwant_count",
        "raw_id",
        "graylisted_rpcs",
    )

    def __init__(self, peer_id: Hashable, protocol: str, outbound: bool) -> None:
        self.peer_id = peer_id
        self.topics: set[str] = set()
        self.outbound = outbound
        self.dont_send: dict[bytes, int] = {}
        self.ihave_count = 0
        self.iasked = 0
        self.iwant_served = 0
        self.idontwant_count = 0
        self.graylisted_rpcs = 0
        to_bytes = getattr(peer_id, "to_bytes", None)
        self.raw_id: bytes | None = to_bytes() if to_bytes is not None else None
        self.protocol = ""
        self.floodsub = self.v11 = self.v12 = False
        self.set_protocol(protocol)

    def set_protocol(self, protocol: str) -> None:
        self.protocol = protocol
        self.floodsub = protocol == FLOODSUB
        self.v11 = protocol in (MESHSUB_V11, MESHSUB_V12)
        self.v12 = protocol == MESHSUB_V12


class _Outbox:
    __slots__ = ("subs", "msgs", "ctl")

    def __init__(self) -> None:
        self.subs: list[SubOpts] = []
        self.msgs: list[bytes] = []
        self.ctl: ControlMessage | None = None

    def control(self) -> ControlMessage:
        if self.ctl is None:
            self.ctl = ControlMessage()
        return self.ctl


@dataclass(slots=True)
class RouterStats:
    """Counters for diagnostics and simulations."""

    messages_received: int = 0
    duplicates: int = 0
    delivered: int = 0
    rejected: int = 0
    ignored: int = 0
    graylisted_rpcs: int = 0
    idontwant_sent: int = 0
    px_records_verified: int = 0
    #: GRAFTs from direct peers (answered with PRUNE: direct peers are never meshed)
    direct_grafts_refused: int = 0
    px_records_rejected: int = 0
    idontwant_skipped: int = 0
    iwant_sent: int = 0
    ihave_sent: int = 0
    forwarded: int = 0
    broken_promises: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class GossipsubRouter:
    """A gossipsub router (one per pubsub instance).

    Args:
        local_peer: our PeerID (the ``from`` of our messages).
        config: a ``GossipsubConfig``.
        identity: our private key; required to publish under StrictSign.
        rng: randomness for peer selection (seed it for reproducible tests).
        score_enabled: False turns peer scoring off (every score is 0).

    The router performs no I/O and reads no clock; ``now`` (seconds) is
    always passed in.
    """

    def __init__(
        self,
        local_peer: PeerID,
        config: GossipsubConfig,
        *,
        identity: PrivateKey | None = None,
        rng: random.Random | None = None,
        score_enabled: bool = True,
    ) -> None:
        self.local_peer = local_peer
        self._local_bytes = local_peer.to_bytes()
        self.config = config
        self._identity = identity
        self._rng = rng or random.Random()
        if config.signature_policy not in ("strict_sign", "strict_no_sign"):
            raise ValueError(f"unknown signature policy {config.signature_policy!r}")
        if not (0 <= config.d_out < config.d_lo or config.d_lo == 0) or config.d_out > config.d // 2:
            raise ValueError("d_out must be below d_lo and at most d/2")
        config.thresholds.check()
        self._strict_sign = config.signature_policy == "strict_sign"
        self._msg_id_fn: Callable[[Message], bytes] = config.msg_id_fn or (
            default_msg_id if self._strict_sign else _content_msg_id
        )
        self._seqno = self._rng.getrandbits(62) << 1
        self.peers: dict[Hashable, _Peer] = {}
        self._by_raw: dict[bytes, Hashable] = {}
        self.topics: dict[str, set[Hashable]] = {}
        self.mesh: dict[str, set[Hashable]] = {}
        self.fanout: dict[str, set[Hashable]] = {}
        self._fanout_last_pub: dict[str, float] = {}
        self.subscriptions: set[str] = set()
        self.direct: set[Hashable] = set()
        #: ``fn(peer) -> envelope bytes | None``: a peer's own signed peer record, sent
        #: with it in our PRUNE PX (set by the driver; None: bare peer ids)
        self.signed_record_of: Callable[[Hashable], bytes | None] | None = None
        self._backoff = BackoffTable()
        self._mcache = MessageCache(config.mcache_len, config.mcache_gossip)
        self._seen = SeenCache(config.seen_ttl)
        self._score = PeerScore(config.score, delivery_ttl=config.seen_ttl)
        self._score_enabled = score_enabled
        self._th = config.thresholds
        self._promises: dict[bytes, dict[Hashable, float]] = {}
        self._pending: dict[bytes, tuple[Message, Hashable]] = {}
        self._outbox: dict[Hashable, _Outbox] = {}
        self._events: deque[GossipsubEvent] = deque()
        self._ticks = 0
        self.stats = RouterStats()

    # -- peers ----------------------------------------------------------------------------

    def add_peer(
        self,
        peer: Hashable,
        protocol: str,
        *,
        outbound: bool = False,
        ips: tuple[str, ...] = (),
        now: float = 0.0,
    ) -> None:
        """A peer speaking ``protocol`` is reachable; our subscriptions are queued to it.

        Calling it again for a known peer updates the protocol (the one our
        outbound stream negotiated wins) and the direction.
        """
        if protocol not in PROTOCOL_IDS:
            raise LocalProtocolError(f"unknown pubsub protocol {protocol!r}")
        p = self.peers.get(peer)
        if p is not None:
            p.set_protocol(protocol)
            p.outbound = p.outbound or outbound
            return
        p = self.peers[peer] = _Peer(peer, protocol, outbound)
        if p.raw_id is not None:
            self._by_raw[p.raw_id] = peer
        if self._score_enabled:
            self._score.add_peer(peer, ips)
        if self.subscriptions:
            self._box(peer).subs.extend(SubOpts(True, t) for t in sorted(self.subscriptions))

    def remove_peer(self, peer: Hashable, now: float) -> None:
        """The peer is gone (connection closed)."""
        p = self.peers.pop(peer, None)
        if p is None:
            return
        if p.raw_id is not None:
            self._by_raw.pop(p.raw_id, None)
        for topic in p.topics:
            s = self.topics.get(topic)
            if s is not None:
                s.discard(peer)
                if not s:
                    del self.topics[topic]
            self._events.append(PeerUnsubscribed(peer, topic))
        for topic, m in self.mesh.items():
            if peer in m:
                m.discard(peer)
                self._events.append(PeerPruned(peer, topic))
        for f in self.fanout.values():
            f.discard(peer)
        self._outbox.pop(peer, None)
        for prom in self._promises.values():
            prom.pop(peer, None)
        if self._score_enabled:
            self._score.remove_peer(peer, now)

    def add_direct_peer(self, peer: Hashable) -> None:
        """Explicit peering (v1.1): always forward to ``peer``, never mesh it.

        A peer already in a mesh leaves it (without a PRUNE: direct peers are
        configured on both sides and never graft each other).
        """
        self.direct.add(peer)
        for topic, mesh in self.mesh.items():
            if peer in mesh:
                mesh.discard(peer)
                if self._score_enabled:
                    self._score.prune(peer, topic, 0.0)
                self._events.append(PeerPruned(peer, topic))
        for fan in self.fanout.values():
            fan.discard(peer)

    def score(self, peer: Hashable, now: float) -> float:
        """``peer``'s current score (0 when scoring is off)."""
        if not self._score_enabled:
            return 0.0
        return self._score.score(peer, now)

    @property
    def peer_score(self) -> PeerScore:
        """The score bookkeeping (diagnostics, tests)."""
        return self._score

    def topic_peers(self, topic: str) -> set[Hashable]:
        """Peers that announced a subscription to ``topic``."""
        return set(self.topics.get(topic, ()))

    def mesh_peers(self, topic: str) -> set[Hashable]:
        """Our mesh for ``topic``."""
        return set(self.mesh.get(topic, ()))

    def graylisted_rpcs(self, peer: Hashable) -> int:
        """RPCs of ``peer`` ignored because its score was below the graylist threshold."""
        p = self.peers.get(peer)
        return p.graylisted_rpcs if p is not None else 0

    def backoff_active(self, topic: str, peer: Hashable, now: float) -> bool:
        return self._backoff.active(topic, peer, now)

    # -- local API --------------------------------------------------------------------------

    def subscribe(self, topic: str, now: float) -> None:
        """Join ``topic``: announce it and build the mesh (from the fanout first)."""
        if topic in self.subscriptions:
            return
        self.subscriptions.add(topic)
        for peer in self.peers:
            self._box(peer).subs.append(SubOpts(True, topic))
        mesh: set[Hashable] = set()
        fan = self.fanout.pop(topic, None)
        self._fanout_last_pub.pop(topic, None)
        if fan:
            mesh = {p for p in fan if self.score(p, now) >= 0 and not self._backoff.active(topic, p, now)}
        self.mesh[topic] = set()
        if len(mesh) < self.config.d:
            more = self._candidates(topic, now, exclude=mesh)
            mesh |= set(more[: self.config.d - len(mesh)])
        for p in mesh:
            self._graft(p, topic, now)

    def unsubscribe(self, topic: str, now: float) -> None:
        """Leave ``topic``: announce it and PRUNE the mesh with ``unsubscribe_backoff``."""
        if topic not in self.subscriptions:
            return
        self.subscriptions.discard(topic)
        for peer in self.peers:
            self._box(peer).subs.append(SubOpts(False, topic))
        for p in list(self.mesh.get(topic, ())):
            self._prune(p, topic, now, px=False, backoff=self.config.unsubscribe_backoff)
        self.mesh.pop(topic, None)

    def next_seqno(self) -> bytes:
        self._seqno += 1
        return (self._seqno & (1 << 64) - 1).to_bytes(8, "big")

    def build_message(self, topic: str, data: bytes) -> Message:
        """A new message from us, signed as the policy requires.

        Raises:
            PublishError: StrictSign without an identity to sign with.
        """
        if not self._strict_sign:
            return Message(topic=topic, data=bytes(data))
        if self._identity is None:
            raise PublishError(PublishFailure.SIGNING, "StrictSign needs the host's private key")
        msg = Message(topic=topic, data=bytes(data), from_=self._local_bytes, seqno=self.next_seqno())
        msg.signature = self._identity.sign(SIGN_PREFIX + signing_bytes(msg))
        if self.local_peer.extract_public_key() is None:
            msg.key = self._identity.public_key().to_protobuf()
        msg.raw = None
        msg.encode()
        return msg

    def publish(self, topic: str, data: bytes, now: float) -> bytes:
        """Publish ``data`` to ``topic``; returns the message id.

        Raises:
            PublishError: too large, a duplicate, no peers (when
                ``allow_publish_to_zero_peers`` is False) or unsignable.
        """
        msg = self.build_message(topic, data)
        return self.publish_message(msg, now)

    def publish_message(self, msg: Message, now: float) -> bytes:
        """Publish an already built (and locally validated) message of ours."""
        raw = msg.encode()
        if len(raw) > self.config.max_message_size:
            raise PublishError(
                PublishFailure.TOO_LARGE,
                f"message of {len(raw)} bytes exceeds {self.config.max_message_size}",
            )
        msg_id = self._msg_id_fn(msg)
        if msg_id in self._seen:
            raise PublishError(PublishFailure.DUPLICATE)
        topic = msg.topic
        targets = self._publish_targets(topic, now)
        if not targets and not self.config.allow_publish_to_zero_peers:
            raise PublishError(PublishFailure.NO_PEERS)
        self._seen.add(msg_id, now)
        self._mcache.put(msg_id, msg)
        if self.config.emit_self and topic in self.subscriptions:
            self._events.append(MessageDelivered(msg_id, msg, None))
        for p in targets:
            self._box(p).msgs.append(raw)
        cfg = self.config
        if cfg.enable_idontwant and cfg.idontwant_on_publish and len(msg.data) >= cfg.idontwant_message_size_threshold:
            # v1.2 "on networks where multiple messages share the same messageId, a user
            # may choose to broadcast IDONTWANT when publishing": opt-in.
            for q in self.mesh.get(topic, ()):
                if self.peers[q].v12:
                    self._box(q).control().idontwant.append(ControlIDontWant([msg_id]))
                    self.stats.idontwant_sent += 1
        return msg_id

    def _publish_targets(self, topic: str, now: float) -> set[Hashable]:
        cfg = self.config
        tpeers = self.topics.get(topic, set())
        out: set[Hashable] = set()
        if cfg.flood_publish:
            pt = self._th.publish_threshold
            for p in tpeers:
                if p in self.direct or self.score(p, now) >= pt:
                    out.add(p)
            return out
        for p in tpeers:
            if self.peers[p].floodsub and self.score(p, now) >= self._th.publish_threshold:
                out.add(p)
            if p in self.direct:
                out.add(p)
        if topic in self.mesh:
            out |= self.mesh[topic]
        else:
            fan = self.fanout.get(topic)
            if not fan:
                cands = [
                    p
                    for p in tpeers
                    if not self.peers[p].floodsub
                    and p not in self.direct
                    and self.score(p, now) >= self._th.publish_threshold
                ]
                self._rng.shuffle(cands)
                fan = self.fanout[topic] = set(cands[: cfg.d])
            out |= fan
            self._fanout_last_pub[topic] = now
        return out

    # -- input from peers -------------------------------------------------------------------

    def handle_rpc(self, peer: Hashable, rpc: RPC, now: float) -> None:
        """Process one RPC from ``peer`` (added with ``add_peer`` first)."""
        p = self.peers.get(peer)
        if p is None:
            return
        if peer not in self.direct and self.score(peer, now) < self._th.graylist_threshold:
            self.stats.graylisted_rpcs += 1
            p.graylisted_rpcs += 1
            return
        for sub in rpc.subscriptions:
            self._handle_subscription(p, sub, now)
        for msg in rpc.publish:
            self._handle_message(p, msg, now)
        ctl = rpc.control
        if ctl is not None and not p.floodsub:
            self._handle_control(p, ctl, now)

    def _handle_subscription(self, p: _Peer, sub: SubOpts, now: float) -> None:
        topic = sub.topic
        peer = p.peer_id
        if sub.subscribe:
            if topic in p.topics or len(p.topics) >= self.config.max_peer_topics:
                return
            p.topics.add(topic)
            self.topics.setdefault(topic, set()).add(peer)
            self._events.append(PeerSubscribed(peer, topic))
        else:
            if topic not in p.topics:
                return
            p.topics.discard(topic)
            s = self.topics.get(topic)
            if s is not None:
                s.discard(peer)
                if not s:
                    del self.topics[topic]
            m = self.mesh.get(topic)
            if m is not None and peer in m:
                m.discard(peer)
                if self._score_enabled:
                    self._score.prune(peer, topic, now)
                self._events.append(PeerPruned(peer, topic))
            f = self.fanout.get(topic)
            if f is not None:
                f.discard(peer)
            self._events.append(PeerUnsubscribed(peer, topic))

    def _check_signature(self, msg: Message) -> str | None:
        """None when ``msg`` satisfies the signature policy, else the reason."""
        if not self._strict_sign:
            if msg.from_ is not None or msg.seqno is not None or msg.signature is not None or msg.key is not None:
                return "StrictNoSign: message carries from/seqno/signature/key"
            return None
        if msg.from_ is None or msg.seqno is None or msg.signature is None:
            return "StrictSign: missing from, seqno or signature"
        try:
            author = PeerID.from_bytes(msg.from_)
            if msg.key is not None:
                key = public_key_from_protobuf(msg.key)
                if not author.matches_public_key(key):
                    return "StrictSign: key does not match from"
            else:
                inlined = author.extract_public_key()
                if inlined is None:
                    return "StrictSign: no key for a peer id that does not inline it"
                key = inlined
            if not key.verify(msg.signature, SIGN_PREFIX + signing_bytes(msg)):
                return "StrictSign: invalid signature"
        except (InvalidKeyError, P2PError, ValueError) as exc:
            return f"StrictSign: {exc}"
        return None

    def _handle_message(self, p: _Peer, msg: Message, now: float) -> None:
        topic = msg.topic
        if topic not in self.subscriptions:
            return
        self.stats.messages_received += 1
        peer = p.peer_id
        raw = msg.raw
        if raw is not None and len(raw) > self.config.max_message_size:
            self.stats.rejected += 1
            if self._score_enabled:
                self._score.reject_message(peer, None, topic, now)
            self._events.append(MessageRejected(None, topic, peer, "message too large"))
            return
        try:
            msg_id = self._msg_id_fn(msg)
        except Exception as exc:  # an application id function choked on hostile input
            self._events.append(MessageRejected(None, topic, peer, f"message id: {exc!r}"))
            return
        if msg_id in self._seen:
            self.stats.duplicates += 1
            if self._score_enabled:
                self._score.duplicate_message(peer, msg_id, topic, now)
            self._promises.pop(msg_id, None)
            return
        self._seen.add(msg_id, now)
        self._promises.pop(msg_id, None)
        if msg.from_ is not None and msg.from_ == self._local_bytes:
            return  # our own message, relayed back after we forgot it
        reason = self._check_signature(msg)
        if reason is not None:
            self.stats.rejected += 1
            if self._score_enabled:
                self._score.reject_message(peer, None, topic, now)
            self._events.append(MessageRejected(msg_id, topic, peer, reason))
            return
        cfg = self.config
        if cfg.enable_idontwant and len(msg.data) >= cfg.idontwant_message_size_threshold:
            # v1.2: tell mesh peers at once, before validation.
            for q in self.mesh.get(topic, ()):
                if q != peer and self.peers[q].v12:
                    self._box(q).control().idontwant.append(ControlIDontWant([msg_id]))
                    self.stats.idontwant_sent += 1
        if len(self._pending) >= cfg.max_pending_validations:
            self.stats.ignored += 1
            return
        if self._score_enabled:
            self._score.validate_message(peer, msg_id, now)
        self._pending[msg_id] = (msg, peer)
        self._events.append(ValidationRequested(msg_id, msg, peer))

    def report_validation(self, msg_id: bytes, result: ValidationResult | str, now: float) -> None:
        """The application's verdict on a ``ValidationRequested`` message."""
        entry = self._pending.pop(msg_id, None)
        if entry is None:
            return
        msg, src = entry
        result = ValidationResult(result)
        topic = msg.topic
        if result is ValidationResult.ACCEPT:
            if self._score_enabled:
                self._score.deliver_message(src, msg_id, topic, now)
            self._mcache.put(msg_id, msg)
            self.stats.delivered += 1
            if topic in self.subscriptions:
                self._events.append(MessageDelivered(msg_id, msg, src))
            self._forward(msg_id, msg, src, now)
        elif result is ValidationResult.REJECT:
            self.stats.rejected += 1
            if self._score_enabled:
                self._score.reject_message(src, msg_id, topic, now)
            self._events.append(MessageRejected(msg_id, topic, src, "rejected by validator"))
        else:
            self.stats.ignored += 1
            if self._score_enabled:
                self._score.ignore_message(msg_id, now)

    def _forward(self, msg_id: bytes, msg: Message, src: Hashable, now: float) -> None:
        topic = msg.topic
        author = self._by_raw.get(msg.from_) if msg.from_ is not None else None
        targets: set[Hashable] = set()
        for q in self.topics.get(topic, ()):
            qp = self.peers[q]
            if (qp.floodsub and self.score(q, now) >= self._th.publish_threshold) or q in self.direct:
                targets.add(q)
        targets |= self.mesh.get(topic, set())
        targets.discard(src)
        if author is not None:
            targets.discard(author)
        raw = msg.encode()
        for q in targets:
            if msg_id in self.peers[q].dont_send:
                self.stats.idontwant_skipped += 1
                continue
            self._box(q).msgs.append(raw)
            self.stats.forwarded += 1

    # -- control ------------------------------------------------------------------------------

    def _handle_control(self, p: _Peer, ctl: ControlMessage, now: float) -> None:
        if ctl.ihave:
            self._handle_ihave(p, ctl.ihave, now)
        if ctl.iwant:
            self._handle_iwant(p, ctl.iwant, now)
        if ctl.graft:
            self._handle_graft(p, ctl.graft, now)
        if ctl.prune:
            self._handle_prune(p, ctl.prune, now)
        if ctl.idontwant:
            self._handle_idontwant(p, ctl.idontwant)

    def _handle_ihave(self, p: _Peer, ihaves: list[ControlIHave], now: float) -> None:
        cfg = self.config
        peer = p.peer_id
        if self.score(peer, now) < self._th.gossip_threshold:
            return
        p.ihave_count += 1
        if p.ihave_count > cfg.max_ihave_messages or p.iasked >= cfg.max_ihave_length:
            return
        want: dict[bytes, None] = {}
        for ih in ihaves:
            if ih.topic not in self.mesh:
                continue
            for mid in ih.message_ids:
                if mid not in self._seen and mid not in self._pending:
                    want[mid] = None
        if not want:
            return
        ids = list(want)
        n = min(len(ids), cfg.max_ihave_length - p.iasked)
        self._rng.shuffle(ids)
        ids = ids[:n]
        p.iasked += n
        promise = self._rng.choice(ids)
        self._promises.setdefault(promise, {}).setdefault(peer, now + cfg.iwant_followup_time)
        self._box(peer).control().iwant.append(ControlIWant(ids))
        self.stats.iwant_sent += 1

    def _handle_iwant(self, p: _Peer, iwants: list[ControlIWant], now: float) -> None:
        cfg = self.config
        peer = p.peer_id
        if self.score(peer, now) < self._th.gossip_threshold:
            return
        box = None
        for iw in iwants:
            for mid in iw.message_ids:
                if p.iwant_served >= cfg.max_iwant_ids:
                    return
                msg, count = self._mcache.get_for_peer(mid, peer)
                if msg is None or count > cfg.gossip_retransmission:
                    continue
                p.iwant_served += 1
                if box is None:
                    box = self._box(peer)
                box.msgs.append(msg.encode())

    def _handle_graft(self, p: _Peer, grafts: list[ControlGraft], now: float) -> None:
        cfg = self.config
        peer = p.peer_id
        prunes: list[str] = []
        do_px = cfg.do_px
        score = self.score(peer, now)
        for g in grafts:
            topic = g.topic
            mesh = self.mesh.get(topic)
            if mesh is None:
                do_px = False  # unknown topic: never leak peers (v1.1 spam protection)
                continue
            if peer in mesh:
                continue
            if peer in self.direct:
                self.stats.direct_grafts_refused += 1
                prunes.append(topic)
                do_px = False
                continue
            expiry = self._backoff.expiry(topic, peer)
            if expiry is not None and expiry > now:
                # v1.1: GRAFT inside the backoff: penalise, twice if it is a flood.
                if self._score_enabled:
                    self._score.add_penalty(peer, 1)
                    if now + cfg.graft_flood_threshold - cfg.prune_backoff < expiry:
                        self._score.add_penalty(peer, 1)
                do_px = False
                self._backoff.add(topic, peer, now + cfg.prune_backoff)
                prunes.append(topic)
                continue
            if score < 0:
                do_px = False
                self._backoff.add(topic, peer, now + cfg.prune_backoff)
                prunes.append(topic)
                continue
            if len(mesh) >= cfg.d_hi and not p.outbound:
                self._backoff.add(topic, peer, now + cfg.prune_backoff)
                prunes.append(topic)
                continue
            mesh.add(peer)
            if self._score_enabled:
                self._score.graft(peer, topic, now)
            self._events.append(PeerGrafted(peer, topic))
        for topic in prunes:
            self._box(peer).control().prune.append(self._make_prune(p, topic, now, do_px, cfg.prune_backoff))

    def _handle_prune(self, p: _Peer, prunes: list[ControlPrune], now: float) -> None:
        cfg = self.config
        peer = p.peer_id
        score = self.score(peer, now)
        for pr in prunes:
            topic = pr.topic
            mesh = self.mesh.get(topic)
            if mesh is None:
                continue
            if peer in mesh:
                mesh.discard(peer)
                if self._score_enabled:
                    self._score.prune(peer, topic, now)
                self._events.append(PeerPruned(peer, topic))
            backoff = float(pr.backoff) if pr.backoff else cfg.prune_backoff
            self._backoff.add(topic, peer, now + backoff)
            if pr.peers and score >= self._th.accept_px_threshold:
                peers = tuple(i for i in pr.peers[: cfg.prune_peers] if i.peer_id)
                if peers:
                    records = tuple(r for i in peers if (r := self._px_record(i)) is not None)
                    self._events.append(PeerExchangeReceived(topic, peers, peer, records))

    def _px_record(self, info: PeerInfoPB) -> PeerRecord | None:
        """The verified signed peer record of a PX entry, None when absent or invalid
        (bad signature, another peer's record): the entry then carries no addresses."""
        if not info.signed_peer_record:
            return None
        try:
            rec = open_peer_record(info.signed_peer_record)
        except PeerRecordError:
            self.stats.px_records_rejected += 1
            return None
        if rec.peer_id.to_bytes() != info.peer_id:
            self.stats.px_records_rejected += 1
            return None
        self.stats.px_records_verified += 1
        return rec

    def _handle_idontwant(self, p: _Peer, items: list[ControlIDontWant]) -> None:
        cfg = self.config
        for item in items:
            for mid in item.message_ids:
                if p.idontwant_count >= cfg.max_idontwant_messages:
                    return
                p.idontwant_count += 1
                p.dont_send[mid] = self._ticks

    # -- mesh helpers --------------------------------------------------------------------------

    def _box(self, peer: Hashable) -> _Outbox:
        box = self._outbox.get(peer)
        if box is None:
            box = self._outbox[peer] = _Outbox()
        return box

    def _candidates(
        self, topic: str, now: float, *, exclude: Iterable[Hashable] = (), min_score: float = 0.0
    ) -> list[Hashable]:
        """Shuffled topic peers that could be grafted."""
        ex = set(exclude)
        out = []
        for q in self.topics.get(topic, ()):
            if q in ex or q in self.direct:
                continue
            qp = self.peers[q]
            if qp.floodsub or self._backoff.active(topic, q, now):
                continue
            if self.score(q, now) < min_score:
                continue
            out.append(q)
        self._rng.shuffle(out)
        return out

    def _graft(self, peer: Hashable, topic: str, now: float) -> None:
        self.mesh.setdefault(topic, set()).add(peer)
        if self._score_enabled:
            self._score.graft(peer, topic, now)
        self._box(peer).control().graft.append(ControlGraft(topic))
        self._events.append(PeerGrafted(peer, topic))

    def _prune(self, peer: Hashable, topic: str, now: float, *, px: bool, backoff: float) -> None:
        m = self.mesh.get(topic)
        if m is not None:
            m.discard(peer)
        if self._score_enabled:
            self._score.prune(peer, topic, now)
        self._backoff.add(topic, peer, now + backoff)
        p = self.peers.get(peer)
        if p is not None:
            self._box(peer).control().prune.append(self._make_prune(p, topic, now, px, backoff))
        self._events.append(PeerPruned(peer, topic))

    def _make_prune(self, p: _Peer, topic: str, now: float, px: bool, backoff: float) -> ControlPrune:
        if not p.v11:
            return ControlPrune(topic)  # v1.0 peers know neither PX nor backoff
        prune = ControlPrune(topic, backoff=int(backoff))
        if px and self.config.do_px and self.score(p.peer_id, now) >= 0:
            cands = [
                q
                for q in self.topics.get(topic, ())
                if q != p.peer_id and self.score(q, now) >= 0 and self.peers[q].raw_id is not None
            ]
            self._rng.shuffle(cands)
            rec = self.signed_record_of
            prune.peers = [
                PeerInfoPB(peer_id=self.peers[q].raw_id, signed_peer_record=rec(q) if rec else None)
                for q in cands[: self.config.prune_peers]
            ]
        return prune

    # -- heartbeat -------------------------------------------------------------------------------

    def heartbeat(self, now: float) -> None:
        """Run one heartbeat: mesh and fanout maintenance, gossip, cache shift, decay."""
        cfg = self.config
        self._ticks += 1
        if self._score_enabled:
            self._score.refresh(now)
        self._apply_broken_promises(now)
        scores: dict[Hashable, float] = {}

        def sc(q: Hashable) -> float:
            v = scores.get(q)
            if v is None:
                v = scores[q] = self.score(q, now)
            return v

        for topic, mesh in self.mesh.items():
            # v1.1: negative-score peers leave every mesh.
            for q in [q for q in mesh if sc(q) < 0]:
                self._prune(q, topic, now, px=False, backoff=cfg.prune_backoff)
            if len(mesh) < cfg.d_lo:
                more = self._candidates(topic, now, exclude=mesh)
                for q in more[: cfg.d - len(mesh)]:
                    self._graft(q, topic, now)
            if len(mesh) > cfg.d_hi:
                self._shrink_mesh(topic, mesh, now, sc)
            if len(mesh) >= cfg.d_lo:
                n_out = sum(1 for q in mesh if self.peers[q].outbound)
                if n_out < cfg.d_out:
                    outs = [
                        q for q in self._candidates(topic, now, exclude=mesh) if self.peers[q].outbound
                    ]
                    for q in outs[: cfg.d_out - n_out]:
                        self._graft(q, topic, now)
            if (
                self._score_enabled
                and cfg.opportunistic_graft_ticks > 0
                and self._ticks % cfg.opportunistic_graft_ticks == 0
                and len(mesh) > 1
            ):
                ordered = sorted(sc(q) for q in mesh)
                median = ordered[len(ordered) // 2]
                if median < self._th.opportunistic_graft_threshold:
                    better = [
                        q for q in self._candidates(topic, now, exclude=mesh) if sc(q) > median
                    ]
                    for q in better[: cfg.opportunistic_graft_peers]:
                        self._graft(q, topic, now)
            self._emit_gossip(topic, mesh, now, sc)

        for topic in list(self.fanout):
            if self._fanout_last_pub.get(topic, 0.0) + cfg.fanout_ttl < now:
                del self.fanout[topic]
                self._fanout_last_pub.pop(topic, None)
                continue
            fan = self.fanout[topic]
            tpeers = self.topics.get(topic, set())
            for q in [q for q in fan if q not in tpeers or sc(q) < self._th.publish_threshold]:
                fan.discard(q)
            if len(fan) < cfg.d:
                more = [
                    q
                    for q in self._candidates(
                        topic, now, exclude=fan, min_score=self._th.publish_threshold
                    )
                ]
                fan.update(more[: cfg.d - len(fan)])
            self._emit_gossip(topic, fan, now, sc)

        self._mcache.shift()
        self._seen.expire(now)
        if self._ticks % 15 == 0:
            self._backoff.expire(now - cfg.backoff_slack * cfg.heartbeat_interval)
        ttl = cfg.idontwant_ttl_heartbeats
        for p in self.peers.values():
            p.ihave_count = p.iasked = p.iwant_served = p.idontwant_count = 0
            if p.dont_send:
                p.dont_send = {k: t for k, t in p.dont_send.items() if self._ticks - t < ttl}

    def _shrink_mesh(
        self, topic: str, mesh: set[Hashable], now: float, sc: Callable[[Hashable], float]
    ) -> None:
        """v1.1 "Heartbeat Maintenance": keep D_score best, random others, D_out outbound."""
        cfg = self.config
        peers = list(mesh)
        self._rng.shuffle(peers)
        peers.sort(key=sc, reverse=True)
        keep = peers[: cfg.d_score]
        rest = peers[cfg.d_score :]
        self._rng.shuffle(rest)
        keep += rest[: cfg.d - len(keep)]
        n_out = sum(1 for q in keep if self.peers[q].outbound)
        if n_out < cfg.d_out:
            spare_out = [q for q in peers if q not in keep and self.peers[q].outbound]
            # Replace the lowest-ranked inbound peers (keep is best-first).
            for q in spare_out[: cfg.d_out - n_out]:
                for i in range(len(keep) - 1, -1, -1):
                    if not self.peers[keep[i]].outbound:
                        keep[i] = q
                        break
        kept = set(keep)
        for q in peers:
            if q not in kept:
                self._prune(q, topic, now, px=True, backoff=cfg.prune_backoff)

    def _emit_gossip(
        self, topic: str, exclude: set[Hashable], now: float, sc: Callable[[Hashable], float]
    ) -> None:
        cfg = self.config
        ids = self._mcache.gossip_ids(topic)
        if not ids:
            return
        cands = [
            q
            for q in self.topics.get(topic, ())
            if q not in exclude
            and q not in self.direct
            and not self.peers[q].floodsub
            and sc(q) >= self._th.gossip_threshold
        ]
        if not cands:
            return
        target = max(cfg.d_lazy, int(cfg.gossip_factor * len(cands)))
        self._rng.shuffle(cands)
        if len(ids) > cfg.max_ihave_length:
            self._rng.shuffle(ids)
            ids = ids[: cfg.max_ihave_length]
        for q in cands[:target]:
            self._box(q).control().ihave.append(ControlIHave(topic, list(ids)))
            self.stats.ihave_sent += 1

    def _apply_broken_promises(self, now: float) -> None:
        if not self._promises:
            return
        broken: dict[Hashable, int] = {}
        for mid in list(self._promises):
            prom = self._promises[mid]
            for q, expiry in list(prom.items()):
                if expiry < now:
                    del prom[q]
                    broken[q] = broken.get(q, 0) + 1
            if not prom:
                del self._promises[mid]
        for q, n in broken.items():
            self.stats.broken_promises += n
            if self._score_enabled:
                self._score.add_penalty(q, n)

    # -- output ----------------------------------------------------------------------------------

    def next_event(self) -> GossipsubEvent | None:
        """The next event, or None."""
        return self._events.popleft() if self._events else None

    def events(self) -> list[GossipsubEvent]:
        """Every pending event (drained)."""
        out = list(self._events)
        self._events.clear()
        return out

    def data_to_send(self) -> list[tuple[Hashable, bytes]]:
        """``(peer, frames)`` for every peer with something queued; frames are
        uvarint-length-prefixed RPCs, each at most ``limits.max_rpc_size``."""
        if not self._outbox:
            return []
        out = []
        limit = self.config.limits.max_rpc_size - 64
        for peer, box in self._outbox.items():
            p = self.peers.get(peer)
            if p is None:
                continue
            ctl = None if p.floodsub else box.ctl
            if ctl is not None and ctl.prune:
                # A PRUNE and a GRAFT of one topic in one RPC: the PRUNE wins.
                pruned = {x.topic for x in ctl.prune}
                ctl.graft = [g for g in ctl.graft if g.topic not in pruned]
            msgs = box.msgs
            if not msgs and not box.subs and (ctl is None or ctl.is_empty()):
                continue
            frames = bytearray()
            if len(msgs) <= 1 or sum(len(m) for m in msgs) < limit:
                frames += length_prefixed(encode_rpc(box.subs, msgs, ctl))
            else:
                chunk: list[bytes] = []
                size = 0
                first = True
                for m in msgs:
                    if chunk and size + len(m) + 8 > limit:
                        frames += length_prefixed(encode_rpc(box.subs if first else (), chunk, ctl if first else None))
                        first = False
                        chunk, size = [], 0
                    chunk.append(m)
                    size += len(m) + 8
                frames += length_prefixed(encode_rpc(box.subs if first else (), chunk, ctl if first else None))
            out.append((peer, bytes(frames)))
        self._outbox.clear()
        return out

    def has_data_to_send(self) -> bool:
        return bool(self._outbox)


def validation_result(value: Any) -> ValidationResult:
    """Normalise a validator's return value: a ``ValidationResult``, ``"accept"``/
    ``"reject"``/``"ignore"``, or a bool (True accept, False reject); None accepts."""
    if value is None or value is True:
        return ValidationResult.ACCEPT
    if value is False:
        return ValidationResult.REJECT
    return ValidationResult(value)
