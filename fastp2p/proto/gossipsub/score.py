"""gossipsub v1.1 peer scoring: parameters P1-P7, decay, thresholds.

Rules
-----
gossipsub v1.1 "The Score Function"::

    Score(p) = TopicCap(Σ tᵢ·(w₁P₁ + w₂P₂ + w₃P₃ + w₃bP₃b + w₄P₄)) + w₅P₅ + w₆P₆ + w₇P₇

- P₁ time in mesh: ``min(mesh_time / quantum, cap)`` while in the mesh.
- P₂ first message deliveries: counter, capped at increment.
- P₃ mesh message delivery rate: once the peer has been in the mesh longer
  than the activation window, ``(threshold - deliveries)²`` when below the
  threshold, else 0. Deliveries count first and near-first (within
  ``mesh_message_deliveries_window`` of the first) deliveries by mesh peers.
- P₃b mesh failure penalty: at prune time, the P₃ deficit squared is added
  (sticky, decays).
- P₄ invalid messages: counter squared.
- P₅ application specific: ``app_specific_score(peer)``.
- P₆ IP colocation: ``(peers_on_ip - threshold)²`` for each IP above the
  threshold (whitelisted IPs never count).
- P₇ behavioural penalty: counter squared (above an optional threshold,
  0 by default, as in the spec).
- "Parameter Decay": P₂, P₃, P₃b, P₄ and P₇ counters are multiplied by their
  decay factor each ``decay_interval`` and snap to 0 below ``decay_to_zero``.
- A topic without parameters contributes nothing (spec); fastp2p's
  ``default_topic`` parameters, when set, apply to every unconfigured topic.
- Scores of disconnected peers are retained for ``retain_score`` seconds when
  not positive (so a negative score cannot be reset by reconnecting); their
  counters do not decay meanwhile.

Theory of operation
-------------------
``PeerScore`` holds per-peer, per-topic counters updated by the router's
calls (graft/prune/validate/deliver/reject/duplicate/penalty). ``score()``
computes the value on demand from the counters and ``now`` (the time in mesh
is computed from the graft time, not sampled). ``refresh(now)`` applies decay
when a decay interval has passed and forgets expired peers and delivery
records.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field

__all__ = [
    "TopicScoreParams",
    "PeerScoreParams",
    "PeerScoreThresholds",
    "PeerScore",
]


@dataclass(frozen=True, slots=True)
class TopicScoreParams:
    """Per-topic score parameters (gossipsub v1.1 "Overview of New Parameters").

    The defaults suit a general-purpose topic: P₁ and P₂ reward staying and
    forwarding, P₄ punishes invalid messages; P₃/P₃b are off (weight 0)
    because a delivery-rate threshold only makes sense for a known message rate.
    """

    topic_weight: float = 1.0
    time_in_mesh_weight: float = 0.01
    time_in_mesh_quantum: float = 1.0
    time_in_mesh_cap: float = 300.0
    first_message_deliveries_weight: float = 1.0
    first_message_deliveries_decay: float = 0.9
    first_message_deliveries_cap: float = 20.0
    mesh_message_deliveries_weight: float = 0.0
    mesh_message_deliveries_decay: float = 0.9
    mesh_message_deliveries_threshold: float = 1.0
    mesh_message_deliveries_cap: float = 20.0
    mesh_message_deliveries_activation: float = 5.0
    mesh_message_deliveries_window: float = 0.01
    mesh_failure_penalty_weight: float = 0.0
    mesh_failure_penalty_decay: float = 0.9
    invalid_message_deliveries_weight: float = -10.0
    invalid_message_deliveries_decay: float = 0.9


@dataclass(frozen=True, slots=True)
class PeerScoreThresholds:
    """gossipsub v1.1 "Score Thresholds" (gossip < 0, publish <= gossip, graylist < publish)."""

    gossip_threshold: float = -10.0
    publish_threshold: float = -50.0
    graylist_threshold: float = -80.0
    accept_px_threshold: float = 10.0
    opportunistic_graft_threshold: float = 1.0

    def check(self) -> None:
        """Raise ``ValueError`` unless the spec's constraints hold."""
        if not self.gossip_threshold < 0:
            raise ValueError("gossip_threshold must be < 0")
        if not self.publish_threshold <= self.gossip_threshold:
            raise ValueError("publish_threshold must be <= gossip_threshold")
        if not self.graylist_threshold < self.publish_threshold:
            raise ValueError("graylist_threshold must be < publish_threshold")
        if self.accept_px_threshold < 0 or self.opportunistic_graft_threshold < 0:
            raise ValueError("accept_px_threshold and opportunistic_graft_threshold must be >= 0")


@dataclass(frozen=True, slots=True)
class PeerScoreParams:
    """Global score parameters plus per-topic ones."""

    topics: Mapping[str, TopicScoreParams] = field(default_factory=dict)
    #: applies to topics missing from ``topics``; None gives the spec's "no contribution"
    default_topic: TopicScoreParams | None = field(default_factory=TopicScoreParams)
    #: cap on the summed topic contribution; 0 means no cap
    topic_score_cap: float = 0.0
    app_specific_score: Callable[[Hashable], float] | None = None
    app_specific_weight: float = 1.0
    ip_colocation_factor_weight: float = -1.0
    ip_colocation_factor_threshold: int = 10
    ip_colocation_factor_whitelist: frozenset[str] = frozenset({"127.0.0.1", "::1"})
    behaviour_penalty_weight: float = -10.0
    behaviour_penalty_threshold: float = 0.0
    behaviour_penalty_decay: float = 0.9
    decay_interval: float = 1.0
    decay_to_zero: float = 0.01
    retain_score: float = 3600.0

    def topic(self, topic: str) -> TopicScoreParams | None:
        """The parameters that apply to ``topic`` (None: it does not count)."""
        p = self.topics.get(topic)
        return p if p is not None else self.default_topic


class _TopicStats:
    __slots__ = (
        "in_mesh",
        "graft_time",
        "first_message_deliveries",
        "mesh_message_deliveries",
        "mesh_failure_penalty",
        "invalid_message_deliveries",
    )

    def __init__(self) -> None:
        self.in_mesh = False
        self.graft_time = 0.0
        self.first_message_deliveries = 0.0
        self.mesh_message_deliveries = 0.0
        self.mesh_failure_penalty = 0.0
        self.invalid_message_deliveries = 0.0


class _PeerStats:
    __slots__ = ("connected", "expire", "topics", "ips", "behaviour_penalty")

    def __init__(self) -> None:
        self.connected = True
        self.expire = 0.0
        self.topics: dict[str, _TopicStats] = {}
        self.ips: tuple[str, ...] = ()
        self.behaviour_penalty = 0.0


# Delivery record states (go-libp2p-pubsub score.go deliveryRecord).
_UNKNOWN, _VALID, _INVALID, _IGNORED = range(4)


class _Delivery:
    __slots__ = ("status", "first_seen", "validated", "peers", "expire")

    def __init__(self, now: float, expire: float) -> None:
        self.status = _UNKNOWN
        self.first_seen = now
        self.validated = 0.0
        self.peers: set[Hashable] = set()
        self.expire = expire


class PeerScore:
    """Score bookkeeping for every peer a router knows.

    Args:
        params: score parameters.
        delivery_ttl: how long to remember per-message delivery records (the
            seen-cache TTL is a good value).
    """

    def __init__(self, params: PeerScoreParams, *, delivery_ttl: float = 120.0) -> None:
        self.params = params
        self._peers: dict[Hashable, _PeerStats] = {}
        self._ip_peers: dict[str, set[Hashable]] = {}
        self._deliveries: dict[bytes, _Delivery] = {}
        self._delivery_ttl = delivery_ttl
        self._next_decay: float | None = None

    # -- peers ------------------------------------------------------------------------

    def add_peer(self, peer: Hashable, ips: tuple[str, ...] = ()) -> None:
        """A peer connected (a retained score is reused)."""
        st = self._peers.get(peer)
        if st is None:
            st = self._peers[peer] = _PeerStats()
        st.connected = True
        self.set_ips(peer, ips)

    def set_ips(self, peer: Hashable, ips: tuple[str, ...]) -> None:
        """Record the IP addresses ``peer`` connects from (P₆)."""
        st = self._peers.get(peer)
        if st is None:
            return
        for ip in st.ips:
            s = self._ip_peers.get(ip)
            if s is not None:
                s.discard(peer)
                if not s:
                    del self._ip_peers[ip]
        st.ips = tuple(ips)
        for ip in st.ips:
            self._ip_peers.setdefault(ip, set()).add(peer)

    def remove_peer(self, peer: Hashable, now: float) -> None:
        """A peer disconnected: keep a non-positive score for ``retain_score`` seconds."""
        st = self._peers.get(peer)
        if st is None:
            return
        if self.score(peer, now) > 0:
            self.set_ips(peer, ())
            del self._peers[peer]
            return
        for topic, ts in st.topics.items():
            # Reset first deliveries so a reconnecting peer cannot farm them.
            ts.first_message_deliveries = 0.0
            if ts.in_mesh:
                self._apply_mesh_failure(topic, ts, now)
            ts.in_mesh = False
        st.connected = False
        st.expire = now + self.params.retain_score

    def known(self, peer: Hashable) -> bool:
        """Whether any score state exists for ``peer``."""
        return peer in self._peers

    # -- mesh -------------------------------------------------------------------------

    def _tstats(self, peer: Hashable, topic: str) -> _TopicStats | None:
        st = self._peers.get(peer)
        if st is None or self.params.topic(topic) is None:
            return None
        ts = st.topics.get(topic)
        if ts is None:
            ts = st.topics[topic] = _TopicStats()
        return ts

    def graft(self, peer: Hashable, topic: str, now: float) -> None:
        """``peer`` joined our mesh for ``topic``."""
        ts = self._tstats(peer, topic)
        if ts is None:
            return
        ts.in_mesh = True
        ts.graft_time = now

    def prune(self, peer: Hashable, topic: str, now: float) -> None:
        """``peer`` left our mesh for ``topic``: P₃b takes the current P₃ deficit."""
        ts = self._tstats(peer, topic)
        if ts is None or not ts.in_mesh:
            return
        self._apply_mesh_failure(topic, ts, now)
        ts.in_mesh = False

    def _p3_deficit(self, tp: TopicScoreParams, ts: _TopicStats, now: float) -> float:
        active = ts.in_mesh and now - ts.graft_time > tp.mesh_message_deliveries_activation
        if active and ts.mesh_message_deliveries < tp.mesh_message_deliveries_threshold:
            return tp.mesh_message_deliveries_threshold - ts.mesh_message_deliveries
        return 0.0

    def _apply_mesh_failure(self, topic: str, ts: _TopicStats, now: float) -> None:
        tp = self.params.topic(topic)
        if tp is None:
            return
        deficit = self._p3_deficit(tp, ts, now)
        ts.mesh_failure_penalty += deficit * deficit

    # -- messages ---------------------------------------------------------------------

    def _record(self, msg_id: bytes, now: float) -> _Delivery:
        rec = self._deliveries.get(msg_id)
        if rec is None:
            rec = self._deliveries[msg_id] = _Delivery(now, now + self._delivery_ttl)
        return rec

    def validate_message(self, peer: Hashable, msg_id: bytes, now: float) -> None:
        """The first copy of ``msg_id`` arrived from ``peer`` and goes to validation."""
        self._record(msg_id, now)

    def deliver_message(self, peer: Hashable, msg_id: bytes, topic: str, now: float) -> None:
        """``msg_id`` from ``peer`` was validated: P₂ for ``peer``, P₃ for every mesh
        peer that delivered it while it was being validated."""
        rec = self._record(msg_id, now)
        if rec.status != _UNKNOWN:
            return
        rec.status = _VALID
        rec.validated = now
        self._mark_first_delivery(peer, topic)
        for p in rec.peers:
            if p != peer:
                self._mark_duplicate_delivery(p, topic)
        rec.peers.clear()

    def reject_message(self, peer: Hashable, msg_id: bytes | None, topic: str, now: float) -> None:
        """``peer`` sent an invalid message: P₄ for it and for every peer that sent a copy."""
        self._mark_invalid(peer, topic)
        if msg_id is None:
            return
        rec = self._record(msg_id, now)
        if rec.status != _UNKNOWN:
            return
        rec.status = _INVALID
        for p in rec.peers:
            self._mark_invalid(p, topic)
        rec.peers.clear()

    def ignore_message(self, msg_id: bytes, now: float) -> None:
        """The application ignored ``msg_id`` (no penalty, no reward)."""
        rec = self._record(msg_id, now)
        if rec.status == _UNKNOWN:
            rec.status = _IGNORED
            rec.peers.clear()

    def duplicate_message(self, peer: Hashable, msg_id: bytes, topic: str, now: float) -> None:
        """``peer`` sent a copy of a message we already have."""
        rec = self._deliveries.get(msg_id)
        if rec is None or peer in rec.peers:
            return
        if rec.status == _UNKNOWN:
            rec.peers.add(peer)
        elif rec.status == _VALID:
            rec.peers.add(peer)
            tp = self.params.topic(topic)
            if tp is not None and now <= rec.validated + tp.mesh_message_deliveries_window:
                self._mark_duplicate_delivery(peer, topic)
        elif rec.status == _INVALID:
            self._mark_invalid(peer, topic)

    def _mark_first_delivery(self, peer: Hashable, topic: str) -> None:
        ts = self._tstats(peer, topic)
        if ts is None:
            return
        tp = self.params.topic(topic)
        assert tp is not None
        ts.first_message_deliveries = min(
            ts.first_message_deliveries + 1, tp.first_message_deliveries_cap
        )
        if ts.in_mesh:
            ts.mesh_message_deliveries = min(
                ts.mesh_message_deliveries + 1, tp.mesh_message_deliveries_cap
            )

    def _mark_duplicate_delivery(self, peer: Hashable, topic: str) -> None:
        ts = self._tstats(peer, topic)
        if ts is None or not ts.in_mesh:
            return
        tp = self.params.topic(topic)
        assert tp is not None
        ts.mesh_message_deliveries = min(
            ts.mesh_message_deliveries + 1, tp.mesh_message_deliveries_cap
        )

    def _mark_invalid(self, peer: Hashable, topic: str) -> None:
        ts = self._tstats(peer, topic)
        if ts is not None:
            ts.invalid_message_deliveries += 1

    def add_penalty(self, peer: Hashable, count: float = 1.0) -> None:
        """Increase ``peer``'s behavioural penalty counter (P₇)."""
        st = self._peers.get(peer)
        if st is not None:
            st.behaviour_penalty += count

    # -- the score --------------------------------------------------------------------

    def score(self, peer: Hashable, now: float) -> float:
        """``peer``'s score at ``now`` (0 for an unknown peer)."""
        st = self._peers.get(peer)
        if st is None:
            return 0.0
        params = self.params
        total = 0.0
        for topic, ts in st.topics.items():
            tp = params.topic(topic)
            if tp is None:
                continue
            s = 0.0
            if ts.in_mesh:
                p1 = (now - ts.graft_time) / tp.time_in_mesh_quantum
                s += min(max(p1, 0.0), tp.time_in_mesh_cap) * tp.time_in_mesh_weight
            s += ts.first_message_deliveries * tp.first_message_deliveries_weight
            deficit = self._p3_deficit(tp, ts, now)
            s += deficit * deficit * tp.mesh_message_deliveries_weight
            s += ts.mesh_failure_penalty * tp.mesh_failure_penalty_weight
            s += ts.invalid_message_deliveries**2 * tp.invalid_message_deliveries_weight
            total += s * tp.topic_weight
        if params.topic_score_cap > 0 and total > params.topic_score_cap:
            total = params.topic_score_cap
        if params.app_specific_score is not None:
            total += params.app_specific_score(peer) * params.app_specific_weight
        for ip in st.ips:
            if ip in params.ip_colocation_factor_whitelist:
                continue
            n = len(self._ip_peers.get(ip, ()))
            if n > params.ip_colocation_factor_threshold:
                surplus = n - params.ip_colocation_factor_threshold
                total += surplus * surplus * params.ip_colocation_factor_weight
        if st.behaviour_penalty > params.behaviour_penalty_threshold:
            excess = st.behaviour_penalty - params.behaviour_penalty_threshold
            total += excess * excess * params.behaviour_penalty_weight
        return total

    # -- decay ------------------------------------------------------------------------

    def refresh(self, now: float) -> bool:
        """Decay counters if a decay interval has passed; returns True when it did."""
        if self._next_decay is None:
            self._next_decay = now + self.params.decay_interval
            return False
        if now < self._next_decay:
            return False
        self._next_decay = now + self.params.decay_interval
        self.decay(now)
        return True

    def decay(self, now: float) -> None:
        """One decay step for every connected peer; forget expired peers and records."""
        params = self.params
        zero = params.decay_to_zero
        for peer in list(self._peers):
            st = self._peers[peer]
            if not st.connected:
                if st.expire < now:
                    self.set_ips(peer, ())
                    del self._peers[peer]
                continue
            for topic, ts in st.topics.items():
                tp = params.topic(topic)
                if tp is None:
                    continue
                ts.first_message_deliveries *= tp.first_message_deliveries_decay
                if ts.first_message_deliveries < zero:
                    ts.first_message_deliveries = 0.0
                ts.mesh_message_deliveries *= tp.mesh_message_deliveries_decay
                if ts.mesh_message_deliveries < zero:
                    ts.mesh_message_deliveries = 0.0
                ts.mesh_failure_penalty *= tp.mesh_failure_penalty_decay
                if ts.mesh_failure_penalty < zero:
                    ts.mesh_failure_penalty = 0.0
                ts.invalid_message_deliveries *= tp.invalid_message_deliveries_decay
                if ts.invalid_message_deliveries < zero:
                    ts.invalid_message_deliveries = 0.0
            st.behaviour_penalty *= params.behaviour_penalty_decay
            if st.behaviour_penalty < zero:
                st.behaviour_penalty = 0.0
        if self._deliveries:
            self._deliveries = {k: v for k, v in self._deliveries.items() if v.expire > now}

    def counters(self, peer: Hashable, topic: str) -> dict[str, float]:
        """Raw counters of ``peer`` in ``topic`` (tests, diagnostics)."""
        st = self._peers.get(peer)
        ts = st.topics.get(topic) if st else None
        if st is None or ts is None:
            return {}
        return {
            "in_mesh": float(ts.in_mesh),
            "first_message_deliveries": ts.first_message_deliveries,
            "mesh_message_deliveries": ts.mesh_message_deliveries,
            "mesh_failure_penalty": ts.mesh_failure_penalty,
            "invalid_message_deliveries": ts.invalid_message_deliveries,
            "behaviour_penalty": st.behaviour_penalty,
        }
