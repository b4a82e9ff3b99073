"""The pubsub ``RPC`` protobuf (pubsub spec, gossipsub v1.0/v1.1/v1.2 extensions).

Rules
-----
- libp2p-pubsub.md "The RPC": ``RPC { repeated SubOpts subscriptions = 1;
  repeated Message publish = 2; optional ControlMessage control = 3; }``,
  ``SubOpts { optional bool subscribe = 1; optional string topicid = 2; }``.
- "The Message": ``from = 1`` (bytes), ``data = 2``, ``seqno = 3``,
  ``required string topic = 4``, ``signature = 5``, ``key = 6``. A message
  without a topic is malformed.
- gossipsub v1.0 "Protobuf": ``ControlMessage { ihave = 1; iwant = 2;
  graft = 3; prune = 4; }``; v1.1 adds ``ControlPrune.peers = 2``
  (``PeerInfo { peerID = 1; signedPeerRecord = 2; }``) and ``backoff = 3``
  (uint64 seconds); v1.2 adds ``idontwant = 5`` (``ControlIDontWant
  { repeated bytes messageIDs = 1; }``).
- Unknown fields are skipped; a message keeps its exact received bytes in
  ``Message.raw`` so that it is forwarded byte for byte (its signature covers
  unknown fields too: libp2p-pubsub.md "Message Signing").
- Decoding is strict and bounded (``RPCLimits``): a wrong wire type, invalid
  UTF-8, a missing topic, more entries than the limits or an RPC above
  ``max_rpc_size`` raise :class:`~fastp2p.errors.ProtobufError` (or
  ``FrameTooLargeError`` / ``VarintError`` from :class:`RPCReader`), all
  ``RemoteProtocolError`` subclasses. Nothing else escapes the decoder.

Theory of operation
-------------------
On the wire each RPC is prefixed with its uvarint length (go, js and rust
pubsub). :class:`RPCReader` buffers stream bytes and yields decoded RPCs;
:func:`encode_rpc` builds one frame from already-encoded messages (a forwarded
message is encoded once and its bytes reused for every peer).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import FrameTooLargeError, ProtobufError
from fastp2p.proto import protobuf
from fastp2p.proto.protobuf import WIRE_BYTES, WIRE_FIXED32, WIRE_FIXED64, WIRE_VARINT
from fastp2p.proto.varint import uvarint_encode

__all__ = [
    "RPCLimits",
    "SubOpts",
    "Message",
    "ControlIHave",
    "ControlIWant",
    "ControlGraft",
    "ControlPrune",
    "ControlIDontWant",
    "PeerInfoPB",
    "ControlMessage",
    "RPC",
    "decode_rpc",
    "decode_message",
    "encode_message",
    "encode_rpc",
    "encode_control",
    "signing_bytes",
    "RPCReader",
]


@dataclass(frozen=True, slots=True)
class RPCLimits:
    """Bounds applied while decoding one RPC from a peer."""

    max_rpc_size: int = 1024 * 1024 + 64 * 1024
    max_messages: int = 4096
    max_subscriptions: int = 1024
    max_topic_length: int = 1024
    max_message_id_length: int = 1024
    #: message ids across every IHAVE, IWANT and IDONTWANT in one RPC
    max_message_ids: int = 20_000
    #: IHAVE + IWANT + GRAFT + PRUNE + IDONTWANT entries in one RPC
    max_control_entries: int = 4096
    max_px_peers: int = 128


DEFAULT_LIMITS = RPCLimits()


@dataclass(slots=True)
class SubOpts:
    """A subscription change: ``subscribe`` True joins ``topic``, False leaves it."""

    subscribe: bool
    topic: str


@dataclass(slots=True, eq=False)
class Message:
    """One pubsub message. ``raw`` holds the received (or first encoded) bytes."""

    topic: str
    data: bytes = b""
    from_: bytes | None = None
    seqno: bytes | None = None
    signature: bytes | None = None
    key: bytes | None = None
    raw: bytes | None = None

    def encode(self) -> bytes:
        """The message's protobuf bytes (the received bytes when it was decoded)."""
        if self.raw is None:
            self.raw = encode_message(self)
        return self.raw


@dataclass(slots=True)
class ControlIHave:
    topic: str
    message_ids: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class ControlIWant:
    message_ids: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class ControlGraft:
    topic: str


@dataclass(slots=True)
class PeerInfoPB:
    """gossipsub v1.1 PX entry: a peer id (bytes) and an optional signed peer record."""

    peer_id: bytes | None = None
    signed_peer_record: bytes | None = None


@dataclass(slots=True)
class ControlPrune:
    topic: str
    peers: list[PeerInfoPB] = field(default_factory=list)
    #: seconds; None when absent (v1.0 peers)
    backoff: int | None = None


@dataclass(slots=True)
class ControlIDontWant:
    message_ids: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class ControlMessage:
    ihave: list[ControlIHave] = field(default_factory=list)
    iwant: list[ControlIWant] = field(default_factory=list)
    graft: list[ControlGraft] = field(default_factory=list)
    prune: list[ControlPrune] = field(default_factory=list)
    idontwant: list[ControlIDontWant] = field(default_factory=list)

    def is_empty(self) -> bool:
        return not (self.ihave or self.iwant or self.graft or self.prune or self.idontwant)


@dataclass(slots=True)
class RPC:
    subscriptions: list[SubOpts] = field(default_factory=list)
    publish: list[Message] = field(default_factory=list)
    control: ControlMessage | None = None


# -- decoding -------------------------------------------------------------------------


def _text(raw: bytes, what: str, limit: int) -> str:
    if len(raw) > limit:
        raise ProtobufError(f"{what} of {len(raw)} bytes exceeds {limit}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"{what} is not valid UTF-8") from exc


def _bytes_field(wire: int, value: int | bytes, what: str) -> bytes:
    if wire != WIRE_BYTES or not isinstance(value, bytes):
        raise ProtobufError(f"{what} must be length-delimited")
    return value


def _varint_field(wire: int, value: int | bytes, what: str) -> int:
    if wire != WIRE_VARINT or not isinstance(value, int):
        raise ProtobufError(f"{what} must be a varint")
    return value


class _Budget:
    __slots__ = ("ids", "entries", "limits")

    def __init__(self, limits: RPCLimits) -> None:
        self.limits = limits
        self.ids = 0
        self.entries = 0

    def take_id(self, raw: bytes) -> bytes:
        if len(raw) > self.limits.max_message_id_length:
            raise ProtobufError(f"message id of {len(raw)} bytes is too long")
        self.ids += 1
        if self.ids > self.limits.max_message_ids:
            raise ProtobufError(f"more than {self.limits.max_message_ids} message ids in one RPC")
        return raw

    def take_entry(self) -> None:
        self.entries += 1
        if self.entries > self.limits.max_control_entries:
            raise ProtobufError(
                f"more than {self.limits.max_control_entries} control entries in one RPC"
            )


def decode_message(data: bytes, limits: RPCLimits = DEFAULT_LIMITS) -> Message:
    """Decode one ``Message``; ``raw`` is set to ``data``.

    Raises:
        ProtobufError: malformed, missing topic, wrong wire type or bad UTF-8.
    """
    topic: str | None = None
    msg = Message(topic="", raw=bytes(data))
    for number, wire, value in protobuf.decode(data):
        if number == 1:
            msg.from_ = _bytes_field(wire, value, "Message.from")
        elif number == 2:
            msg.data = _bytes_field(wire, value, "Message.data")
        elif number == 3:
            msg.seqno = _bytes_field(wire, value, "Message.seqno")
        elif number == 4:
            topic = _text(_bytes_field(wire, value, "Message.topic"), "topic", limits.max_topic_length)
        elif number == 5:
            msg.signature = _bytes_field(wire, value, "Message.signature")
        elif number == 6:
            msg.key = _bytes_field(wire, value, "Message.key")
    if topic is None:
        raise ProtobufError("Message without the required topic")
    msg.topic = topic
    return msg


def _decode_ids(data: bytes, number: int, budget: _Budget, what: str) -> list[bytes]:
    out = []
    for n, wire, value in protobuf.decode(data):
        if n == number:
            out.append(budget.take_id(_bytes_field(wire, value, what)))
    return out


def _decode_topic_only(data: bytes, limits: RPCLimits, what: str) -> str:
    topic = ""
    for n, wire, value in protobuf.decode(data):
        if n == 1:
            topic = _text(_bytes_field(wire, value, what), what, limits.max_topic_length)
    return topic


def _decode_prune(data: bytes, limits: RPCLimits) -> ControlPrune:
    prune = ControlPrune(topic="")
    for n, wire, value in protobuf.decode(data):
        if n == 1:
            prune.topic = _text(_bytes_field(wire, value, "PRUNE topic"), "PRUNE topic", limits.max_topic_length)
        elif n == 2:
            if len(prune.peers) >= limits.max_px_peers:
                raise ProtobufError(f"more than {limits.max_px_peers} PX peers in one PRUNE")
            info = PeerInfoPB()
            for m, w, v in protobuf.decode(_bytes_field(wire, value, "PRUNE peer")):
                if m == 1:
                    info.peer_id = _bytes_field(w, v, "PeerInfo.peerID")
                elif m == 2:
                    info.signed_peer_record = _bytes_field(w, v, "PeerInfo.signedPeerRecord")
            prune.peers.append(info)
        elif n == 3:
            prune.backoff = _varint_field(wire, value, "PRUNE backoff")
    return prune


def _decode_control(data: bytes, limits: RPCLimits, budget: _Budget) -> ControlMessage:
    ctl = ControlMessage()
    for n, wire, value in protobuf.decode(data):
        if n not in (1, 2, 3, 4, 5):
            continue
        body = _bytes_field(wire, value, f"control field {n}")
        budget.take_entry()
        if n == 1:
            ihave = ControlIHave(topic="")
            for m, w, v in protobuf.decode(body):
                if m == 1:
                    ihave.topic = _text(_bytes_field(w, v, "IHAVE topic"), "IHAVE topic", limits.max_topic_length)
                elif m == 2:
                    ihave.message_ids.append(budget.take_id(_bytes_field(w, v, "IHAVE id")))
            ctl.ihave.append(ihave)
        elif n == 2:
            ctl.iwant.append(ControlIWant(_decode_ids(body, 1, budget, "IWANT id")))
        elif n == 3:
            ctl.graft.append(ControlGraft(_decode_topic_only(body, limits, "GRAFT topic")))
        elif n == 4:
            ctl.prune.append(_decode_prune(body, limits))
        else:
            ctl.idontwant.append(ControlIDontWant(_decode_ids(body, 1, budget, "IDONTWANT id")))
    return ctl


def decode_rpc(data: ReadableBuffer, limits: RPCLimits = DEFAULT_LIMITS) -> RPC:
    """Decode one bare ``RPC`` (no length prefix).

    Raises:
        FrameTooLargeError: ``data`` exceeds ``limits.max_rpc_size``.
        ProtobufError: anything malformed or over the limits.
    """
    raw = bytes(data)
    if len(raw) > limits.max_rpc_size:
        raise FrameTooLargeError(f"RPC of {len(raw)} bytes exceeds {limits.max_rpc_size}")
    rpc = RPC()
    budget = _Budget(limits)
    for number, wire, value in protobuf.decode(raw):
        if number == 1:
            if len(rpc.subscriptions) >= limits.max_subscriptions:
                raise ProtobufError(f"more than {limits.max_subscriptions} subscriptions in one RPC")
            sub = True
            topic: str | None = None
            for m, w, v in protobuf.decode(_bytes_field(wire, value, "SubOpts")):
                if m == 1:
                    sub = bool(_varint_field(w, v, "SubOpts.subscribe"))
                elif m == 2:
                    topic = _text(_bytes_field(w, v, "SubOpts.topicid"), "topic", limits.max_topic_length)
            if topic is None:
                raise ProtobufError("SubOpts without a topic")
            rpc.subscriptions.append(SubOpts(sub, topic))
        elif number == 2:
            if len(rpc.publish) >= limits.max_messages:
                raise ProtobufError(f"more than {limits.max_messages} messages in one RPC")
            rpc.publish.append(decode_message(_bytes_field(wire, value, "RPC.publish"), limits))
        elif number == 3:
            ctl = _decode_control(_bytes_field(wire, value, "RPC.control"), limits, budget)
            if rpc.control is None:
                rpc.control = ctl
            else:  # proto2: a repeated occurrence of a message field merges
                rpc.control.ihave += ctl.ihave
                rpc.control.iwant += ctl.iwant
                rpc.control.graft += ctl.graft
                rpc.control.prune += ctl.prune
                rpc.control.idontwant += ctl.idontwant
    return rpc


# -- encoding -------------------------------------------------------------------------

_TAG_PUBLISH = uvarint_encode(2 << 3 | WIRE_BYTES)


def encode_message(msg: Message) -> bytes:
    """Canonical encoding of ``msg`` (fields in number order; absent fields omitted)."""
    out = bytearray()
    if msg.from_ is not None:
        out += protobuf.encode_bytes_field(1, msg.from_)
    if msg.data:
        out += protobuf.encode_bytes_field(2, msg.data)
    if msg.seqno is not None:
        out += protobuf.encode_bytes_field(3, msg.seqno)
    out += protobuf.encode_bytes_field(4, msg.topic)
    if msg.signature is not None:
        out += protobuf.encode_bytes_field(5, msg.signature)
    if msg.key is not None:
        out += protobuf.encode_bytes_field(6, msg.key)
    return bytes(out)


def signing_bytes(msg: Message) -> bytes:
    """The bytes a StrictSign signature covers, without the ``libp2p-pubsub:`` prefix.

    libp2p-pubsub.md "Message Signing": the marshalled message without the
    ``signature`` (and, as every implementation does, ``key``) field,
    including unrecognised fields. Fields keep their received order.
    """
    if msg.raw is None:
        return encode_message(
            Message(topic=msg.topic, data=msg.data, from_=msg.from_, seqno=msg.seqno)
        )
    out = bytearray()
    for number, wire, value in protobuf.decode(msg.raw):
        if number in (5, 6):
            continue
        out += uvarint_encode(number << 3 | wire)
        if wire == WIRE_VARINT:
            assert isinstance(value, int)
            out += uvarint_encode(value)
        elif wire == WIRE_BYTES:
            assert isinstance(value, bytes)
            out += uvarint_encode(len(value)) + value
        elif wire == WIRE_FIXED64:
            assert isinstance(value, int)
            out += value.to_bytes(8, "little")
        elif wire == WIRE_FIXED32:
            assert isinstance(value, int)
            out += value.to_bytes(4, "little")
    return bytes(out)


def _sub(number: int, body: bytes) -> bytes:
    return protobuf.encode_bytes_field(number, body)


def encode_control(ctl: ControlMessage) -> bytes:
    """Encode a ``ControlMessage`` body."""
    out = bytearray()
    for ih in ctl.ihave:
        body = protobuf.encode_bytes_field(1, ih.topic) + b"".join(
            protobuf.encode_bytes_field(2, i) for i in ih.message_ids
        )
        out += _sub(1, body)
    for iw in ctl.iwant:
        out += _sub(2, b"".join(protobuf.encode_bytes_field(1, i) for i in iw.message_ids))
    for g in ctl.graft:
        out += _sub(3, protobuf.encode_bytes_field(1, g.topic))
    for p in ctl.prune:
        pbody = bytearray(protobuf.encode_bytes_field(1, p.topic))
        for info in p.peers:
            pi = b""
            if info.peer_id is not None:
                pi += protobuf.encode_bytes_field(1, info.peer_id)
            if info.signed_peer_record is not None:
                pi += protobuf.encode_bytes_field(2, info.signed_peer_record)
            pbody += _sub(2, pi)
        if p.backoff is not None:
            pbody += protobuf.encode_varint_field(3, p.backoff)
        out += _sub(4, bytes(pbody))
    for d in ctl.idontwant:
        out += _sub(5, b"".join(protobuf.encode_bytes_field(1, i) for i in d.message_ids))
    return bytes(out)


def encode_rpc(
    subscriptions: list[SubOpts] | tuple[SubOpts, ...] = (),
    messages: list[bytes] | tuple[bytes, ...] = (),
    control: ControlMessage | None = None,
) -> bytes:
    """Encode a bare ``RPC`` from subscriptions, encoded messages and control."""
    out = bytearray()
    for s in subscriptions:
        out += _sub(1, protobuf.encode_varint_field(1, int(s.subscribe)) + protobuf.encode_bytes_field(2, s.topic))
    for m in messages:
        out += _TAG_PUBLISH
        out += uvarint_encode(len(m))
        out += m
    if control is not None and not control.is_empty():
        out += _sub(3, encode_control(control))
    return bytes(out)


def encode_rpc_obj(rpc: RPC) -> bytes:
    """Encode an ``RPC`` object (tests and tools; the router uses :func:`encode_rpc`)."""
    return encode_rpc(rpc.subscriptions, [m.encode() for m in rpc.publish], rpc.control)


class RPCReader(protobuf.LengthPrefixedReader[RPC]):
    """Splits an inbound pubsub stream into RPCs (uvarint length prefix each).

    Args:
        limits: decoding bounds; ``max_rpc_size`` bounds each length prefix.
    """

    def __init__(self, limits: RPCLimits = DEFAULT_LIMITS) -> None:
        super().__init__(lambda body: decode_rpc(body, limits), limits.max_rpc_size, "RPC")
