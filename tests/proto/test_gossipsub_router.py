"""GossipsubRouter, its wire format, cache and score: no event loop, ``now`` passed in."""

from __future__ import annotations

import random
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.config import GossipsubConfig
from fastp2p.errors import RemoteProtocolError
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.gossipsub.backoff import BackoffTable
from fastp2p.proto.gossipsub.events import (
    MessageDelivered,
    MessageRejected,
    PeerExchangeReceived,
    PeerGrafted,
    PeerPruned,
    PeerSubscribed,
    ValidationRequested,
)
from fastp2p.proto.gossipsub.mcache import MessageCache, SeenCache
from fastp2p.proto.gossipsub.router import (
    FLOODSUB,
    MESHSUB_V10,
    MESHSUB_V11,
    MESHSUB_V12,
    SIGN_PREFIX,
    GossipsubRouter,
    PublishError,
    PublishFailure,
    ValidationResult,
    validation_result,
)
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
    RPCLimits,
    RPCReader,
    SubOpts,
    decode_rpc,
    encode_message,
    encode_rpc_obj,
    signing_bytes,
)
from fastp2p.proto.gossipsub.score import (
    PeerScore,
    PeerScoreParams,
    PeerScoreThresholds,
    TopicScoreParams,
)
from fastp2p.proto.protobuf import length_prefixed

T = "topic"


# -- harness ---------------------------------------------------------------------------------


class Node:
    def __init__(self, seed: int, config: GossipsubConfig | None = None, *, auto_accept: bool = True) -> None:
        self.key = Ed25519PrivateKey.generate()
        self.id = PeerID.from_public_key(self.key.public_key())
        self.router = GossipsubRouter(
            self.id, config or GossipsubConfig(), identity=self.key, rng=random.Random(seed)
        )
        self.auto_accept = auto_accept
        self.delivered: list[MessageDelivered] = []
        self.events: list[object] = []
        self.readers: dict[PeerID, RPCReader] = {}

    def pump_events(self, now: float) -> None:
        while (ev := self.router.next_event()) is not None:
            self.events.append(ev)
            if isinstance(ev, ValidationRequested) and self.auto_accept:
                self.router.report_validation(ev.msg_id, ValidationResult.ACCEPT, now)
            elif isinstance(ev, MessageDelivered):
                self.delivered.append(ev)

    def of(self, kind: type) -> list[object]:
        return [e for e in self.events if isinstance(e, kind)]


class Net:
    def __init__(self) -> None:
        self.nodes: dict[PeerID, Node] = {}
        self.sent: list[tuple[PeerID, PeerID, RPC]] = []

    def add(self, node: Node) -> Node:
        self.nodes[node.id] = node
        return node

    def connect(self, a: Node, b: Node, proto_a: str = MESHSUB_V12, proto_b: str = MESHSUB_V12, now: float = 0.0) -> None:
        # a dialled b: a's view of b is outbound; the protocol a speaks to b is proto_b's.
        a.router.add_peer(b.id, proto_b, outbound=True, now=now)
        b.router.add_peer(a.id, proto_a, outbound=False, now=now)

    def run(self, now: float, rounds: int = 50) -> None:
        for _ in range(rounds):
            moved = False
            for node in self.nodes.values():
                node.pump_events(now)
            for node in list(self.nodes.values()):
                for peer, frames in node.router.data_to_send():
                    dst = self.nodes.get(peer)
                    if dst is None:
                        continue
                    reader = dst.readers.setdefault(node.id, RPCReader())
                    for rpc in reader.receive_data(frames):
                        self.sent.append((node.id, peer, rpc))
                        dst.router.handle_rpc(node.id, rpc, now)
                        moved = True
            if not moved:
                break
        for node in self.nodes.values():
            node.pump_events(now)

    def heartbeat(self, now: float) -> None:
        self.run(now)
        for node in self.nodes.values():
            node.router.heartbeat(now)
        self.run(now)


def pair(config: GossipsubConfig | None = None) -> tuple[Net, Node, Node]:
    net = Net()
    a = net.add(Node(1, config))
    b = net.add(Node(2, config))
    net.connect(a, b)
    return net, a, b


def sent_control(net: Net, src: Node, dst: Node) -> list[ControlMessage]:
    return [r.control for s, d, r in net.sent if s == src.id and d == dst.id and r.control]


# -- wire format -------------------------------------------------------------------------------


def test_rpc_roundtrip_every_field() -> None:
    ctl = ControlMessage(
        ihave=[ControlIHave("a", [b"1", b"2"])],
        iwant=[ControlIWant([b"3"])],
        graft=[ControlGraft("b")],
        prune=[ControlPrune("c", [PeerInfoPB(b"pid", b"rec"), PeerInfoPB(b"p2")], backoff=60)],
        idontwant=[ControlIDontWant([b"4", b"5"])],
    )
    msg = Message(topic="t", data=b"hello", from_=b"f", seqno=b"\x00" * 8, signature=b"s", key=b"k")
    rpc = RPC([SubOpts(True, "t"), SubOpts(False, "u")], [msg], ctl)
    back = decode_rpc(encode_rpc_obj(rpc))
    assert back.subscriptions == rpc.subscriptions
    m = back.publish[0]
    assert (m.topic, m.data, m.from_, m.seqno, m.signature, m.key) == ("t", b"hello", b"f", b"\x00" * 8, b"s", b"k")
    assert m.raw == encode_message(msg)
    assert back.control == ctl


def test_message_keeps_unknown_fields_and_order_for_signing() -> None:
    # field 7 (unknown) between data and topic: kept in raw and in the signed bytes
    raw = bytes.fromhex("0a0166") + bytes.fromhex("1201") + b"x" + bytes.fromhex("3801") + bytes.fromhex("2201") + b"t" + bytes.fromhex("2a0173")
    msg = decode_rpc(length_prefixed(raw)[1:] and (bytes([0x12, len(raw)]) + raw)).publish[0]
    assert msg.raw == raw and msg.signature == b"s"
    assert signing_bytes(msg) == raw[: -3]


@pytest.mark.parametrize(
    "data",
    [
        bytes([0x12, 0x02, 0x0A, 0x00]),  # Message without topic
        bytes([0x0A, 0x02, 0x08, 0x01]),  # SubOpts without topic
        bytes([0x10, 0x01]),  # publish as a varint
        bytes([0x0A, 0x03, 0x12, 0x01, 0xFF]),  # topic not UTF-8
        bytes([0x1A, 0x05, 0x22, 0x03, 0x18, 0x80]),  # truncated varint backoff
    ],
)
def test_malformed_rpcs_raise_remote_errors(data: bytes) -> None:
    with pytest.raises(RemoteProtocolError):
        decode_rpc(data)


def test_decoder_limits() -> None:
    limits = RPCLimits(max_subscriptions=2, max_message_ids=3, max_rpc_size=100)
    subs = RPC([SubOpts(True, str(i)) for i in range(3)])
    with pytest.raises(RemoteProtocolError, match="subscriptions"):
        decode_rpc(encode_rpc_obj(subs), limits)
    ids = RPC(control=ControlMessage(iwant=[ControlIWant([b"a", b"b", b"c", b"d"])]))
    with pytest.raises(RemoteProtocolError, match="message ids"):
        decode_rpc(encode_rpc_obj(ids), limits)
    with pytest.raises(RemoteProtocolError):
        decode_rpc(b"\x00" * 101, limits)
    reader = RPCReader(limits)
    with pytest.raises(RemoteProtocolError):
        reader.receive_data(b"\xff\x01")  # length 255 > 100


def test_reader_splits_and_buffers() -> None:
    frames = b"".join(length_prefixed(encode_rpc_obj(RPC([SubOpts(True, f"t{i}")]))) for i in range(3))
    reader = RPCReader()
    got = []
    for i in range(len(frames)):
        got += reader.receive_data(frames[i : i + 1])
    assert [r.subscriptions[0].topic for r in got] == ["t0", "t1", "t2"]
    assert reader.buffered == 0


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=8192))
def test_fuzz_decoder_raises_only_remote_errors(data: bytes) -> None:
    try:
        decode_rpc(data)
    except RemoteProtocolError:
        pass
    try:
        RPCReader().receive_data(data)
    except RemoteProtocolError:
        pass


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.booleans(), st.text(max_size=20)), max_size=5),
    st.lists(st.tuples(st.text(max_size=10), st.binary(max_size=64)), max_size=5),
    st.lists(st.binary(min_size=1, max_size=40), max_size=10),
)
def test_fuzz_structured_roundtrip(subs, msgs, ids) -> None:
    rpc = RPC(
        [SubOpts(s, t) for s, t in subs],
        [Message(topic=t, data=d) for t, d in msgs],
        ControlMessage(ihave=[ControlIHave("x", ids)], idontwant=[ControlIDontWant(ids)]) if ids else None,
    )
    back = decode_rpc(encode_rpc_obj(rpc))
    assert back.subscriptions == rpc.subscriptions
    assert [(m.topic, m.data) for m in back.publish] == [(t, d) for t, d in msgs]
    if ids:
        assert back.control is not None and back.control.ihave[0].message_ids == ids


# -- caches ------------------------------------------------------------------------------------


def test_mcache_windows_and_gossip() -> None:
    mc = MessageCache(history=3, gossip=2)
    for i in range(3):
        mc.put(bytes([i]), Message(topic=T))
        mc.shift()
    # window 0 empty, 1 has id 2, 2 has id 1; id 0 dropped
    assert mc.get(b"\x00") is None and mc.get(b"\x01") is not None
    assert mc.gossip_ids(T) == [b"\x02"]
    assert mc.get_for_peer(b"\x02", "p")[1] == 1
    assert mc.get_for_peer(b"\x02", "p")[1] == 2


def test_seen_cache_ttl() -> None:
    sc = SeenCache(ttl=10)
    assert sc.add(b"a", 0) and not sc.add(b"a", 1)
    sc.expire(9.9)
    assert b"a" in sc
    sc.expire(10.0)
    assert b"a" not in sc


def test_backoff_never_shortens() -> None:
    b = BackoffTable()
    b.add(T, "p", 60)
    b.add(T, "p", 30)
    assert b.active(T, "p", 59) and not b.active(T, "p", 60)
    b.expire(61)
    assert len(b) == 0


# -- basic flow ---------------------------------------------------------------------------------


def test_subscribe_graft_publish_deliver_signed() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.run(0)
    assert b.id in a.router.topic_peers(T) and a.id in b.router.topic_peers(T)
    net.heartbeat(1.0)
    assert a.router.mesh_peers(T) == {b.id} and b.router.mesh_peers(T) == {a.id}
    mid = a.router.publish(T, b"hello", 1.0)
    net.run(1.0)
    assert [d.message.data for d in b.delivered] == [b"hello"]
    got = b.delivered[0]
    assert got.msg_id == mid and got.received_from == a.id
    m = got.message
    assert m.from_ == a.id.to_bytes() and len(m.seqno or b"") == 8
    assert a.key.public_key().verify(m.signature or b"", SIGN_PREFIX + signing_bytes(m))
    assert m.key is None  # Ed25519 keys are inlined in the peer id
    assert not a.delivered  # emit_self is off


def test_duplicate_publish_and_too_large() -> None:
    net, a, b = pair(GossipsubConfig(max_message_size=300))
    with pytest.raises(PublishError) as ei:
        a.router.publish(T, b"x" * 400, 0)
    assert ei.value.reason is PublishFailure.TOO_LARGE
    msg = a.router.build_message(T, b"x")
    a.router.publish_message(msg, 0)
    with pytest.raises(PublishError) as ei:
        a.router.publish_message(msg, 0)
    assert ei.value.reason is PublishFailure.DUPLICATE


def test_no_peers_policy() -> None:
    net, a, b = pair(GossipsubConfig(allow_publish_to_zero_peers=False))
    with pytest.raises(PublishError) as ei:
        a.router.publish(T, b"x", 0)
    assert ei.value.reason is PublishFailure.NO_PEERS


def test_bad_signature_is_rejected_and_penalised() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    msg = a.router.build_message(T, b"evil")
    msg.data = b"tampered"
    msg.raw = None
    rpc = RPC(publish=[msg])
    b.router.handle_rpc(a.id, decode_rpc(encode_rpc_obj(rpc)), 1)
    b.pump_events(1)
    rej = b.of(MessageRejected)
    assert rej and "invalid signature" in rej[0].reason  # type: ignore[attr-defined]
    assert not b.delivered
    assert b.router.peer_score.counters(a.id, T)["invalid_message_deliveries"] == 1
    assert b.router.score(a.id, 1) < 0


@pytest.mark.parametrize("drop", ["from_", "seqno", "signature"])
def test_strict_sign_requires_fields(drop: str) -> None:
    net, a, b = pair()
    b.router.subscribe(T, 0)
    msg = a.router.build_message(T, b"x")
    setattr(msg, drop, None)
    msg.raw = None
    b.router.handle_rpc(a.id, decode_rpc(encode_rpc_obj(RPC(publish=[msg]))), 0)
    b.pump_events(0)
    assert b.of(MessageRejected) and not b.delivered


def test_strict_no_sign() -> None:
    cfg = GossipsubConfig(signature_policy="strict_no_sign")
    net, a, b = pair(cfg)
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    a.router.publish(T, b"plain", 1)
    net.run(1)
    m = b.delivered[0].message
    assert m.from_ is None and m.seqno is None and m.signature is None
    signed = Node(9).router.build_message(T, b"signed")
    b.router.handle_rpc(a.id, decode_rpc(encode_rpc_obj(RPC(publish=[signed]))), 1)
    b.pump_events(1)
    assert b.of(MessageRejected)


def test_validator_reject_and_ignore() -> None:
    net = Net()
    a = net.add(Node(1))
    b = net.add(Node(2, auto_accept=False))
    net.connect(a, b)
    for n in (a, b):
        n.router.subscribe(T, 0)
    net.heartbeat(1)
    m1 = a.router.publish(T, b"bad", 1)
    m2 = a.router.publish(T, b"meh", 1)
    net.run(1)
    reqs = b.of(ValidationRequested)
    assert [r.msg_id for r in reqs] == [m1, m2]  # type: ignore[attr-defined]
    b.router.report_validation(m1, validation_result("reject"), 1)
    b.router.report_validation(m2, validation_result("ignore"), 1)
    b.pump_events(1)
    assert not b.delivered
    assert b.router.peer_score.counters(a.id, T)["invalid_message_deliveries"] == 1
    assert validation_result(True) is ValidationResult.ACCEPT
    assert validation_result(None) is ValidationResult.ACCEPT
    assert validation_result(False) is ValidationResult.REJECT


def test_forwarding_line_and_no_echo_to_author() -> None:
    net = Net()
    nodes = [net.add(Node(i)) for i in range(4)]
    for x, y in zip(nodes, nodes[1:], strict=False):
        net.connect(x, y)
    for n in nodes:
        n.router.subscribe(T, 0)
    net.heartbeat(1)
    nodes[0].router.publish(T, b"hop", 1)
    net.run(1)
    assert all(len(n.delivered) == 1 for n in nodes[1:])
    assert not nodes[0].delivered
    # node 1 never sends the message back to node 0 (sender and author)
    back = [r for s, d, r in net.sent if s == nodes[1].id and d == nodes[0].id and r.publish]
    assert not back


# -- mesh maintenance -------------------------------------------------------------------------------


def star(n: int, config: GossipsubConfig | None = None, *, outbound_hub: bool = False) -> tuple[Net, Node, list[Node]]:
    net = Net()
    hub = net.add(Node(0, config))
    leaves = [net.add(Node(i + 1, config)) for i in range(n)]
    for leaf in leaves:
        if outbound_hub:
            net.connect(hub, leaf)
        else:
            net.connect(leaf, hub)
    return net, hub, leaves


def test_mesh_stays_within_bounds() -> None:
    cfg = GossipsubConfig()
    net, hub, leaves = star(20, cfg, outbound_hub=True)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.subscribe(T, 0)
    net.run(0)
    assert len(hub.router.mesh_peers(T)) == cfg.d
    for t in range(1, 5):
        hub.router.heartbeat(float(t))
        size = len(hub.router.mesh_peers(T))
        assert cfg.d_lo <= size <= cfg.d_hi
        # Leaves graft the hub on their own (outbound peers are accepted above D_hi);
        # the next heartbeat prunes back down to D with PX and a backoff.
        net.heartbeat(float(t))
    assert len(hub.router.mesh_peers(T)) == cfg.d
    prunes = [c for leaf in leaves for c in sent_control(net, hub, leaf) if c.prune]
    assert prunes and any(p.backoff == int(cfg.prune_backoff) for c in prunes for p in c.prune)
    assert any(p.peers for c in prunes for p in c.prune)  # PX offered


def test_graft_when_full_accepted_only_outbound() -> None:
    cfg = GossipsubConfig(d=2, d_lo=1, d_hi=2, d_score=1, d_out=0)
    net, hub, leaves = star(4, cfg)  # leaves dialled the hub: inbound for the hub
    hub.router.subscribe(T, 0)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    net.heartbeat(1)
    assert len(hub.router.mesh_peers(T)) <= cfg.d_hi
    refused = [leaf for leaf in leaves if leaf.id not in hub.router.mesh_peers(T)]
    assert refused
    assert all(hub.router.backoff_active(T, leaf.id, 1) for leaf in refused)


def test_graft_in_backoff_is_pruned_and_penalised() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    a.router.unsubscribe(T, 1)
    a.router.subscribe(T, 2)  # re-join inside b's backoff for a... a's backoff of b
    net.run(2)
    # b grafts a while a is backing off from b: a prunes and charges P7 twice (flood).
    a.router.handle_rpc(b.id, RPC(control=ControlMessage(graft=[ControlGraft(T)])), 3)
    assert a.router.peer_score.counters(b.id, T).get("behaviour_penalty", 0) >= 1
    assert b.id not in a.router.mesh_peers(T)


def test_prune_sets_backoff_and_px_event() -> None:
    thresholds = PeerScoreThresholds(accept_px_threshold=0.0)
    net, a, b = pair(GossipsubConfig(thresholds=thresholds))
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    other = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    prune = ControlPrune(T, [PeerInfoPB(other.to_bytes())], backoff=30)
    a.router.handle_rpc(b.id, RPC(control=ControlMessage(prune=[prune])), 2)
    a.pump_events(2)
    assert b.id not in a.router.mesh_peers(T)
    assert a.router.backoff_active(T, b.id, 31) and not a.router.backoff_active(T, b.id, 32.1)
    px = a.of(PeerExchangeReceived)
    assert px and px[0].peers[0].peer_id == other.to_bytes()  # type: ignore[attr-defined]
    # the heartbeat does not regraft during the backoff
    for t in range(3, 30, 5):
        a.router.heartbeat(float(t))
    assert b.id not in a.router.mesh_peers(T)


def test_px_ignored_below_threshold() -> None:
    net, a, b = pair()  # accept_px_threshold 10: a fresh peer scores ~0
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    prune = ControlPrune(T, [PeerInfoPB(b"\x00\x01x")], backoff=30)
    a.router.handle_rpc(b.id, RPC(control=ControlMessage(prune=[prune])), 2)
    a.pump_events(2)
    assert not a.of(PeerExchangeReceived)


def test_v10_peer_gets_prune_without_px_or_backoff() -> None:
    net = Net()
    a = net.add(Node(1))
    b = net.add(Node(2))
    net.connect(a, b, proto_a=MESHSUB_V12, proto_b=MESHSUB_V10)
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    a.router.unsubscribe(T, 2)
    net.run(2)
    prunes = [p for c in sent_control(net, a, b) for p in c.prune]
    assert prunes and prunes[0].backoff is None and not prunes[0].peers


def test_outbound_quota_grafts_outbound_peers() -> None:
    cfg = GossipsubConfig(d=4, d_lo=3, d_hi=6, d_score=2, d_out=2)
    net = Net()
    hub = net.add(Node(0, cfg))
    inbound = [net.add(Node(i + 1, cfg)) for i in range(4)]
    outbound = [net.add(Node(i + 10, cfg)) for i in range(3)]
    for n in inbound:
        net.connect(n, hub)
    for leaf in inbound + outbound:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.subscribe(T, 0)  # mesh of 4 inbound peers
    for n in outbound:
        net.connect(hub, n)
        n.router.add_peer(hub.id, MESHSUB_V12)
    for n in outbound:
        # their subscriptions reach the hub now
        hub.router.handle_rpc(n.id, RPC([SubOpts(True, T)]), 0)
    hub.router.heartbeat(1)
    mesh = hub.router.mesh_peers(T)
    assert sum(1 for n in outbound if n.id in mesh) >= cfg.d_out


def test_floodsub_peer_gets_messages_no_control() -> None:
    net = Net()
    a = net.add(Node(1))
    f = net.add(Node(2))
    net.connect(a, f, proto_a=FLOODSUB, proto_b=FLOODSUB)
    f.router.subscribe(T, 0)
    a.router.subscribe(T, 0)
    net.heartbeat(1)
    assert f.id not in a.router.mesh_peers(T)
    a.router.publish(T, b"flood", 1)
    net.run(1)
    assert [d.message.data for d in f.delivered] == [b"flood"]
    assert not any(r.control for s, d, r in net.sent if s == a.id)


def test_fanout_without_flood_publish() -> None:
    cfg = GossipsubConfig(flood_publish=False, d=2, d_lo=1, d_hi=3, d_score=1, d_out=0)
    net, hub, leaves = star(5, cfg, outbound_hub=True)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.publish(T, b"fan", 0)
    net.run(0)
    assert len(hub.router.fanout[T]) == 2
    assert sum(len(leaf.delivered) for leaf in leaves) == 2  # leaves are not linked to each other
    hub.router.heartbeat(100.0)  # past fanout_ttl
    assert T not in hub.router.fanout


def test_flood_publish_reaches_every_topic_peer() -> None:
    net, hub, leaves = star(15, outbound_hub=True)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.subscribe(T, 0)
    hub.router.publish(T, b"all", 0)
    first_hop = {d for s, d, r in net.sent if s == hub.id and r.publish}
    net.run(0)
    first_hop = {d for s, d, r in net.sent if s == hub.id and r.publish}
    assert first_hop == {leaf.id for leaf in leaves}


# -- gossip ----------------------------------------------------------------------------------------


def test_ihave_iwant_recovers_message() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.run(0)
    # b not in a's mesh (backoff prevents grafting), so a gossips to it
    for x, y in ((a, b), (b, a)):
        x.router._backoff.add(T, y.id, 1000)
        x.router.mesh[T].discard(y.id)
    mid = a.router.build_message(T, b"gossiped")
    a.router.publish_message(mid, 0)  # flood publish would reach b directly: drop it
    a.router.data_to_send()
    net.heartbeat(1)
    ctl_ab = sent_control(net, a, b)
    assert any(c.ihave for c in ctl_ab)
    assert any(c.iwant for c in sent_control(net, b, a))
    assert [d.message.data for d in b.delivered] == [b"gossiped"]
    assert a.router.stats.ihave_sent >= 1 and b.router.stats.iwant_sent == 1


def test_broken_iwant_promise_costs_p7() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    fake = [bytes([i]) * 20 for i in range(3)]
    b.router.handle_rpc(a.id, RPC(control=ControlMessage(ihave=[ControlIHave(T, fake)])), 1)
    assert b.router.data_to_send()  # the IWANT
    b.router.heartbeat(2)
    assert b.router.peer_score.counters(a.id, T)["behaviour_penalty"] == 0
    b.router.heartbeat(4.5)  # past iwant_followup_time (3 s)
    assert b.router.stats.broken_promises == 1
    assert b.router.peer_score.counters(a.id, T)["behaviour_penalty"] == 1.0
    assert b.router.score(a.id, 4.5) < 0


def test_ihave_flood_limits() -> None:
    cfg = GossipsubConfig(max_ihave_messages=2, max_ihave_length=5)
    net, a, b = pair(cfg)
    b.router.subscribe(T, 0)
    for i in range(5):
        ids = [bytes([i, j]) * 10 for j in range(4)]
        b.router.handle_rpc(a.id, RPC(control=ControlMessage(ihave=[ControlIHave(T, ids)])), 0)
    asked = sum(len(w.message_ids) for _, frames in b.router.data_to_send() for r in RPCReader().receive_data(frames) for w in (r.control.iwant if r.control else []))
    assert asked == 5


def test_iwant_retransmission_limit() -> None:
    net, a, b = pair(GossipsubConfig(gossip_retransmission=2))
    a.router.subscribe(T, 0)
    mid = a.router.publish(T, b"x", 0)
    a.router.data_to_send()
    for _ in range(4):
        a.router.handle_rpc(b.id, RPC(control=ControlMessage(iwant=[ControlIWant([mid])])), 0)
    n = sum(len(r.publish) for _, frames in a.router.data_to_send() for r in RPCReader().receive_data(frames))
    assert n == 2


def test_adaptive_gossip_targets_factor_of_peers() -> None:
    cfg = GossipsubConfig(d=2, d_lo=1, d_hi=3, d_score=1, d_out=0, d_lazy=2, gossip_factor=0.5)
    net, hub, leaves = star(30, cfg, outbound_hub=True)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.subscribe(T, 0)
    hub.router.publish(T, b"g", 0)
    hub.router.data_to_send()
    hub.router.heartbeat(1)
    ihave_to = [p for p, frames in hub.router.data_to_send() for r in RPCReader().receive_data(frames) if r.control and r.control.ihave]
    assert len(ihave_to) == int(0.5 * (30 - len(hub.router.mesh_peers(T))))


# -- IDONTWANT (v1.2) ---------------------------------------------------------------------------------


def test_idontwant_sent_to_v12_mesh_peers_and_honoured() -> None:
    cfg = GossipsubConfig(idontwant_message_size_threshold=10)
    net = Net()
    a, b, c = (net.add(Node(i, cfg)) for i in range(3))
    net.connect(a, b)
    net.connect(b, c)
    net.connect(a, c, proto_a=MESHSUB_V11, proto_b=MESHSUB_V11)
    for n in (a, b, c):
        n.router.subscribe(T, 0)
    net.heartbeat(1)
    c.router.publish(T, b"x" * 100, 1)
    net.run(1)
    # a and b each received it first from c; b tells its v1.2 mesh peer a; a (v1.1 to c) tells b only
    idw = [(s, d) for s, d, r in net.sent if r.control and r.control.idontwant]
    assert (b.id, a.id) in idw and (a.id, b.id) in idw
    assert (a.id, c.id) not in idw  # c speaks v1.1 to a
    # honoured: b skips forwarding to a a message a said it does not want
    assert b.router.peers[a.id].dont_send or a.router.peers[b.id].dont_send
    small = GossipsubConfig(idontwant_message_size_threshold=1000)
    assert small.idontwant_message_size_threshold == 1000


def test_idontwant_skips_forward_and_expires() -> None:
    net = Net()
    a, b, c = (net.add(Node(i)) for i in range(3))
    net.connect(a, b)
    net.connect(b, c)
    for n in (a, b, c):
        n.router.subscribe(T, 0)
    net.heartbeat(1)
    msg = a.router.build_message(T, b"y")
    mid = b.router._msg_id_fn(msg)
    b.router.handle_rpc(c.id, RPC(control=ControlMessage(idontwant=[ControlIDontWant([mid])])), 1)
    a.router.publish_message(msg, 1)
    net.run(1)
    assert not c.delivered and b.router.stats.idontwant_skipped == 1
    for t in range(2, 6):
        b.router.heartbeat(float(t))
    assert not b.router.peers[c.id].dont_send


# -- graylist -----------------------------------------------------------------------------------------


def test_graylisted_peer_is_ignored() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    b.router.peer_score.add_penalty(a.id, 3)  # 9 * -10 = -90 < -80
    assert b.router.score(a.id, 1) < b.router.config.thresholds.graylist_threshold
    a.router.publish(T, b"ignored", 1)
    net.run(1)
    assert not b.delivered and b.router.stats.graylisted_rpcs >= 1
    net.heartbeat(2)  # and pruned from the mesh for a negative score
    assert a.id not in b.router.mesh_peers(T)


# -- scoring formulas (gossipsub v1.1 "The Score Function") ----------------------------------------


TP = TopicScoreParams(
    topic_weight=0.5,
    time_in_mesh_weight=0.1,
    time_in_mesh_quantum=2.0,
    time_in_mesh_cap=10.0,
    first_message_deliveries_weight=2.0,
    first_message_deliveries_decay=0.5,
    first_message_deliveries_cap=3.0,
    mesh_message_deliveries_weight=-1.0,
    mesh_message_deliveries_decay=0.5,
    mesh_message_deliveries_threshold=4.0,
    mesh_message_deliveries_cap=10.0,
    mesh_message_deliveries_activation=5.0,
    mesh_message_deliveries_window=0.01,
    mesh_failure_penalty_weight=-0.5,
    mesh_failure_penalty_decay=0.5,
    invalid_message_deliveries_weight=-3.0,
    invalid_message_deliveries_decay=0.5,
)


def make_score(**kw: object) -> PeerScore:
    params = PeerScoreParams(topics={T: TP}, default_topic=None, **kw)  # type: ignore[arg-type]
    ps = PeerScore(params)
    ps.add_peer("p")
    return ps


def test_score_p1_time_in_mesh() -> None:
    ps = make_score()
    ps.graft("p", T, 0.0)
    # P1 = 3 s / 2 s quantum = 1.5 -> 1.5 * 0.1 * topic weight 0.5
    assert ps.score("p", 3.0) == pytest.approx(1.5 * 0.1 * 0.5)
    # capped at 10 quanta (P3 active at t=100: deficit 4 -> -16 * 0.5)
    assert ps.score("p", 100.0) == pytest.approx((10 * 0.1 - 16) * 0.5)


def test_score_p2_first_deliveries_cap_and_decay() -> None:
    ps = make_score()
    for i in range(5):
        ps.validate_message("p", bytes([i]), 0)
        ps.deliver_message("p", bytes([i]), T, 0)
    assert ps.counters("p", T)["first_message_deliveries"] == 3.0  # capped
    assert ps.score("p", 0) == pytest.approx(3 * 2.0 * 0.5)
    ps.decay(1.0)
    assert ps.score("p", 1) == pytest.approx(1.5 * 2.0 * 0.5)


def test_score_p3_deficit_activation_and_p3b() -> None:
    ps = make_score()
    ps.graft("p", T, 0.0)
    ps.validate_message("p", b"m", 0)
    ps.deliver_message("p", b"m", T, 0.0)  # P2 = 1, P3 deliveries = 1
    base = 0.0 * 0.1 + 1 * 2.0
    assert ps.score("p", 4.0) == pytest.approx((base + 2 * 0.1) * 0.5)  # not active before 5 s
    p1 = 6.0 / 2.0 * 0.1
    # active: deficit 4 - 1 = 3 -> P3 = 9
    assert ps.score("p", 6.0) == pytest.approx((p1 + base + 9 * -1.0) * 0.5)
    ps.prune("p", T, 6.0)  # P3b += 9
    assert ps.counters("p", T)["mesh_failure_penalty"] == 9.0
    assert ps.score("p", 6.0) == pytest.approx((base + 9 * -0.5) * 0.5)


def test_score_p3_near_first_window() -> None:
    ps = make_score()
    ps.add_peer("q")
    ps.graft("q", T, 0.0)
    ps.validate_message("p", b"m", 0)
    ps.duplicate_message("q", b"m", T, 0.001)  # arrives while validating: counts
    ps.deliver_message("p", b"m", T, 0.002)
    assert ps.counters("q", T)["mesh_message_deliveries"] == 1
    ps.validate_message("p", b"n", 1)
    ps.deliver_message("p", b"n", T, 1.0)
    ps.duplicate_message("q", b"n", T, 1.005)  # within 10 ms window
    ps.validate_message("p", b"o", 2)
    ps.deliver_message("p", b"o", T, 2.0)
    ps.duplicate_message("q", b"o", T, 2.5)  # too late
    assert ps.counters("q", T)["mesh_message_deliveries"] == 2


def test_score_p4_invalid_squared_and_shared_blame() -> None:
    ps = make_score()
    ps.add_peer("q")
    ps.validate_message("p", b"m", 0)
    ps.duplicate_message("q", b"m", T, 0)
    ps.reject_message("p", b"m", T, 0)
    ps.reject_message("p", None, T, 0)
    assert ps.score("p", 0) == pytest.approx(4 * -3.0 * 0.5)  # 2 invalid -> 2^2
    assert ps.score("q", 0) == pytest.approx(1 * -3.0 * 0.5)
    ps.duplicate_message("q", b"m", T, 1)  # another copy of a known-invalid message
    assert ps.counters("q", T)["invalid_message_deliveries"] == 2


def test_score_p5_p6_p7_and_cap() -> None:
    ps = make_score(
        app_specific_score=lambda p: 4.0,
        app_specific_weight=0.5,
        ip_colocation_factor_weight=-2.0,
        ip_colocation_factor_threshold=1,
        ip_colocation_factor_whitelist=frozenset({"10.0.0.9"}),
        behaviour_penalty_weight=-1.0,
        behaviour_penalty_threshold=1.0,
        topic_score_cap=1.0,
    )
    for i in range(3):
        ps.add_peer(f"x{i}", ("10.0.0.1",))
    ps.set_ips("p", ("10.0.0.1", "10.0.0.9"))
    ps.add_penalty("p", 4)
    for i in range(5):
        ps.validate_message("p", bytes([i]), 0)
        ps.deliver_message("p", bytes([i]), T, 0)
    topic = min(3 * 2.0 * 0.5, 1.0)  # capped
    p5 = 4.0 * 0.5
    p6 = (4 - 1) ** 2 * -2.0  # 4 peers on 10.0.0.1, threshold 1; whitelisted IP ignored
    p7 = (4 - 1) ** 2 * -1.0
    assert ps.score("p", 0) == pytest.approx(topic + p5 + p6 + p7)


def test_score_retained_after_disconnect_when_negative() -> None:
    ps = make_score(retain_score=10.0)
    ps.add_penalty("p", 2)
    ps.remove_peer("p", 0)
    ps.add_peer("p")
    assert ps.score("p", 1) < 0
    ps.remove_peer("p", 1)
    ps.decay(5)  # not connected: no decay, still retained
    assert ps.known("p")
    ps.decay(12)
    assert not ps.known("p")
    good = make_score()
    good.validate_message("p", b"m", 0)
    good.deliver_message("p", b"m", T, 0)
    good.remove_peer("p", 0)
    assert not good.known("p")  # positive scores are not retained


def test_decay_to_zero() -> None:
    ps = make_score(decay_to_zero=0.1, behaviour_penalty_decay=0.5)
    ps.add_penalty("p", 0.15)
    ps.decay(1)
    assert ps.score("p", 1) == 0.0


def test_thresholds_are_checked() -> None:
    with pytest.raises(ValueError):
        PeerScoreThresholds(gossip_threshold=1).check()
    with pytest.raises(ValueError):
        PeerScoreThresholds(publish_threshold=-1, gossip_threshold=-10).check()
    with pytest.raises(ValueError):
        GossipsubRouter(
            PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()),
            GossipsubConfig(thresholds=PeerScoreThresholds(graylist_threshold=-10, publish_threshold=-10)),
        )


def test_opportunistic_graft() -> None:
    cfg = GossipsubConfig(
        d=3, d_lo=2, d_hi=4, d_score=1, d_out=0, opportunistic_graft_ticks=2,
        thresholds=PeerScoreThresholds(opportunistic_graft_threshold=5.0),
    )
    net, hub, leaves = star(6, cfg, outbound_hub=True)
    for leaf in leaves:
        leaf.router.subscribe(T, 0)
    net.run(0)
    hub.router.subscribe(T, 0)
    mesh = hub.router.mesh_peers(T)
    good = [leaf for leaf in leaves if leaf.id not in mesh][:2]
    for i, g in enumerate(good):
        for j in range(8):  # first deliveries push these two peers far above the median
            mid = bytes([i, j])
            hub.router.peer_score.validate_message(g.id, mid, 0)
            hub.router.peer_score.deliver_message(g.id, mid, T, 0)
    hub.router.heartbeat(1)
    assert not any(g.id in hub.router.mesh_peers(T) for g in good)
    hub.router.heartbeat(2)  # tick 2: opportunistic grafting
    assert all(g.id in hub.router.mesh_peers(T) for g in good)


def test_events_for_subscriptions_and_mesh() -> None:
    net, a, b = pair()
    b.router.subscribe(T, 0)
    net.run(0)
    assert a.of(PeerSubscribed)
    a.router.subscribe(T, 0)
    net.run(0)
    assert a.of(PeerGrafted) and b.of(PeerGrafted)
    b.router.remove_peer(a.id, 1)
    b.pump_events(1)
    assert b.of(PeerPruned)


def test_router_rejects_bad_config() -> None:
    pid = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(ValueError):
        GossipsubRouter(pid, GossipsubConfig(signature_policy="lax"))
    with pytest.raises(ValueError):
        GossipsubRouter(pid, replace(GossipsubConfig(), d_out=5))


# -- PX signed peer records, direct peers, IDONTWANT on publish (issue 10 spec gaps) ----------


def _px_entry(key: Ed25519PrivateKey | None = None, *, addrs: tuple[str, ...] = ("/ip4/10.1.2.3/tcp/4001",),
              seq: int = 1) -> tuple[PeerID, PeerInfoPB]:
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.proto.peer_record import PeerRecord, seal_peer_record

    key = key or Ed25519PrivateKey.generate()
    pid = PeerID.from_public_key(key.public_key())
    env = seal_peer_record(key, PeerRecord(pid, seq, tuple(Multiaddr(a) for a in addrs)))
    return pid, PeerInfoPB(pid.to_bytes(), env)


def test_px_signed_records_verified_and_forgeries_dropped() -> None:
    """PRUNE PX carrying signed peer records: a valid record's addresses reach the driver;
    a record with a broken signature, one signed by a third key for the named peer, and
    garbage are dropped (the entry stays, without addresses)."""
    thresholds = PeerScoreThresholds(accept_px_threshold=0.0)
    net, a, b = pair(GossipsubConfig(thresholds=thresholds))
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    good_id, good = _px_entry()
    tampered_id, tampered = _px_entry()
    assert tampered.signed_peer_record is not None
    raw = bytearray(tampered.signed_peer_record)
    raw[-1] ^= 1  # last byte of the signature
    tampered = PeerInfoPB(tampered.peer_id, bytes(raw))
    # a record validly signed by mallory, presented as victim's
    mallory_id, mallory_rec = _px_entry()
    victim = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    impostor = PeerInfoPB(victim.to_bytes(), mallory_rec.signed_peer_record)
    junk = PeerInfoPB(PeerID.from_public_key(Ed25519PrivateKey.generate().public_key()).to_bytes(), b"\x0a\x05junk!")
    prune = ControlPrune(T, [good, tampered, impostor, junk], backoff=30)
    a.router.handle_rpc(b.id, RPC(control=ControlMessage(prune=[prune])), 2)
    a.pump_events(2)
    (px,) = a.of(PeerExchangeReceived)
    assert len(px.peers) == 4  # type: ignore[attr-defined]
    recs = px.records  # type: ignore[attr-defined]
    assert [r.peer_id for r in recs] == [good_id]
    assert [str(x) for x in recs[0].addrs] == ["/ip4/10.1.2.3/tcp/4001"]
    assert a.router.stats.px_records_verified == 1 and a.router.stats.px_records_rejected == 3
    assert tampered_id not in [r.peer_id for r in recs] and mallory_id not in [r.peer_id for r in recs]


def test_px_records_not_parsed_below_accept_px_threshold() -> None:
    net, a, b = pair()  # accept_px_threshold 10: a fresh peer scores ~0
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    _, good = _px_entry()
    a.router.handle_rpc(b.id, RPC(control=ControlMessage(prune=[ControlPrune(T, [good], backoff=30)])), 2)
    a.pump_events(2)
    assert not a.of(PeerExchangeReceived) and a.router.stats.px_records_verified == 0


def test_direct_peers_forwarded_to_never_meshed() -> None:
    """v1.1 explicit peering: a and d are direct peers; a's mesh is {b, c}. d gets every
    message a publishes or forwards, never enters a mesh (a GRAFT from it is answered with
    PRUNE), gets no gossip, and is not graylisted however badly it scores."""
    net = Net()
    a, b, c, d = (net.add(Node(i)) for i in range(4))
    for x in (b, c, d):
        net.connect(a, x)
    a.router.add_direct_peer(d.id)
    d.router.add_direct_peer(a.id)
    for n in (a, b, c, d):
        n.router.subscribe(T, 0)
    for t in range(1, 4):
        net.heartbeat(float(t))
    assert a.router.mesh_peers(T) == {b.id, c.id} and a.id not in d.router.mesh_peers(T)
    got_before = len(d.delivered)
    a.router.publish(T, b"from a", 4)
    b.router.publish(T, b"from b", 4)  # reaches d only through a's forwarding
    net.run(4)
    assert [bytes(e.message.data) for e in d.delivered[got_before:]] == [b"from a", b"from b"]
    # an unsolicited GRAFT from the direct peer is refused with a PRUNE
    d.router.handle_rpc(a.id, RPC(), 5)  # no-op keeps d's view
    a.router.handle_rpc(d.id, RPC(control=ControlMessage(graft=[ControlGraft(T)])), 5)
    a.pump_events(5)
    assert d.id not in a.router.mesh_peers(T) and a.router.stats.direct_grafts_refused == 1
    prunes = [p for ctl in [a.router._box(d.id).control()] for p in ctl.prune]
    assert prunes and prunes[0].topic == T and not prunes[0].peers  # no PX to a direct peer
    # no IHAVE gossip to direct peers
    net.heartbeat(6)
    assert not any(s == a.id and dd == d.id and r.control and r.control.ihave for s, dd, r in net.sent)
    # never graylisted: penalise d far below the graylist threshold, its RPCs still count
    a.router.peer_score.add_penalty(d.id, 10_000)
    assert a.router.score(d.id, 7) < a.router._th.graylist_threshold
    msg = d.router.build_message(T, b"from d")
    a.router.handle_rpc(d.id, RPC(publish=[msg]), 7)
    a.pump_events(7)
    assert any(bytes(e.message.data) == b"from d" for e in a.delivered)


def test_add_direct_peer_leaves_the_mesh() -> None:
    net, a, b = pair()
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    assert b.id in a.router.mesh_peers(T)
    a.router.add_direct_peer(b.id)
    a.pump_events(1)
    assert b.id not in a.router.mesh_peers(T) and a.of(PeerPruned)
    for t in range(2, 6):
        net.heartbeat(float(t))
    assert b.id not in a.router.mesh_peers(T)


@pytest.mark.parametrize("on_publish", [False, True])
def test_idontwant_on_publish_is_opt_in(on_publish: bool) -> None:
    """v1.2 sends IDONTWANT for received messages; for published ones only "on networks
    where multiple messages share the same messageId, a user may choose to" (opt-in)."""
    cfg = GossipsubConfig(idontwant_message_size_threshold=10, idontwant_on_publish=on_publish)
    net, a, b = pair(cfg)
    a.router.subscribe(T, 0)
    b.router.subscribe(T, 0)
    net.heartbeat(1)
    net.sent.clear()
    mid = a.router.publish(T, b"y" * 100, 2)
    a.router.publish(T, b"tiny", 2)  # below the size threshold: never
    net.run(2)
    idw = [r.control.idontwant for s, d, r in net.sent if s == a.id and r.control and r.control.idontwant]
    assert bool(idw) == on_publish
    if on_publish:
        assert [i.message_ids for i in idw[0]] == [[mid]]
        assert mid in b.router.peers[a.id].dont_send


def test_our_px_carries_the_suggested_peers_own_signed_records() -> None:
    """A PRUNE with PX includes, for each suggested peer, the signed record that peer gave us
    (via ``signed_record_of``), and the receiver verifies and accepts it."""
    thresholds = PeerScoreThresholds(accept_px_threshold=0.0)
    cfg = GossipsubConfig(thresholds=thresholds, d=1, d_lo=1, d_hi=1, d_score=0, d_out=0)
    net = Net()
    a, b, c = (net.add(Node(i, cfg)) for i in range(3))
    net.connect(b, a)  # inbound at a: a refuses their GRAFTs when its mesh is full
    net.connect(c, a)
    records = {n.id: _px_entry(n.key, addrs=(f"/ip4/10.9.9.{k}/tcp/4001",))[1].signed_peer_record
               for k, n in enumerate((b, c))}
    a.router.signed_record_of = lambda q: records.get(q) if isinstance(q, PeerID) else None
    for n in (a, b, c):
        n.router.subscribe(T, 0)
    net.heartbeat(1)
    net.heartbeat(2)
    (kept,) = [n for n in (b, c) if n.id in a.router.mesh_peers(T)]
    pruned = c if kept is b else b
    prunes = [p for s, d, r in net.sent if s == a.id and d == pruned.id and r.control for p in r.control.prune]
    entries = [i for p in prunes for i in p.peers]
    assert entries and {i.peer_id for i in entries} == {kept.id.to_bytes()}
    assert all(i.signed_peer_record == records[kept.id] for i in entries)
    recs = [r for ev in pruned.of(PeerExchangeReceived) for r in ev.records]  # type: ignore[attr-defined]
    assert recs and {r.peer_id for r in recs} == {kept.id}
