"""The Kademlia ``Message`` and ``Record`` protobufs (libp2p-kad-dht.md "RPC messages").

Rules
-----
- ``Message { MessageType type = 1; int32 clusterLevelRaw = 10; bytes key = 2;
  Record record = 3; repeated Peer closerPeers = 8; repeated Peer
  providerPeers = 9; }``, ``Peer { bytes id = 1; repeated bytes addrs = 2;
  ConnectionType connection = 3; }``, ``Record { bytes key = 1; bytes value = 2;
  string timeReceived = 5; }`` (fields 3 and 4 of Record were removed; they
  and every other unknown field are skipped).
- proto3 omits zero values: a message without ``type`` is ``PUT_VALUE`` (0).
  We always write ``type``, also when it is 0 (legal in both syntaxes).
- Every RPC is prefixed with its uvarint length ("RPC messages").
- Decoding is strict and bounded (:class:`KadLimits`): a wrong wire type,
  an unknown message type, invalid UTF-8 in ``timeReceived``, more peers or
  addresses than the limits, or a message above ``max_message_size`` raise
  :class:`~fastp2p.errors.ProtobufError` (or ``FrameTooLargeError`` /
  ``VarintError`` from :class:`KadReader`), all ``RemoteProtocolError``
  subclasses. Nothing else escapes the decoder.

Theory of operation
-------------------
Peer ids and addresses stay bytes here; the driver turns them into
``PeerID``/``Multiaddr`` and skips the ones that do not parse, so one bad
entry does not void a whole response.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import FrameTooLargeError, ProtobufError
from fastp2p.proto import protobuf
from fastp2p.proto.protobuf import WIRE_BYTES, WIRE_VARINT
from fastp2p.proto.varint import uvarint_encode

__all__ = [
    "MessageType",
    "ConnectionType",
    "KadLimits",
    "KadPeer",
    "KadRecord",
    "KadMessage",
    "decode_message",
    "encode_message",
    "KadReader",
]


class MessageType(enum.IntEnum):
    PUT_VALUE = 0
    GET_VALUE = 1
    ADD_PROVIDER = 2
    GET_PROVIDERS = 3
    FIND_NODE = 4
    PING = 5


class ConnectionType(enum.IntEnum):
    NOT_CONNECTED = 0
    CONNECTED = 1
    CAN_CONNECT = 2
    CANNOT_CONNECT = 3


@dataclass(frozen=True, slots=True)
class KadLimits:
    """Bounds applied while decoding one message from a peer."""

    max_message_size: int = 1024 * 1024
    max_key_length: int = 2048
    max_value_size: int = 256 * 1024
    #: closerPeers + providerPeers in one message
    max_peers: int = 256
    max_addrs_per_peer: int = 64
    max_addr_length: int = 1024
    max_peer_id_length: int = 128
    max_time_length: int = 64


DEFAULT_LIMITS = KadLimits()


@dataclass(slots=True)
class KadPeer:
    """A peer entry: binary PeerId, binary multiaddrs, connection hint."""

    id: bytes
    addrs: list[bytes] = field(default_factory=list)
    connection: int = ConnectionType.NOT_CONNECTED


@dataclass(slots=True)
class KadRecord:
    """A DHT record; ``time_received`` is RFC 3339, set by the receiver."""

    key: bytes = b""
    value: bytes = b""
    time_received: str = ""


@dataclass(slots=True)
class KadMessage:
    type: MessageType
    key: bytes = b""
    record: KadRecord | None = None
    closer_peers: list[KadPeer] = field(default_factory=list)
    provider_peers: list[KadPeer] = field(default_factory=list)
    cluster_level: int = 0


# -- decoding -------------------------------------------------------------------------


def _bytes(wire: int, value: int | bytes, what: str) -> bytes:
    if wire != WIRE_BYTES or not isinstance(value, bytes):
        raise ProtobufError(f"{what} must be length-delimited")
    return value


def _varint(wire: int, value: int | bytes, what: str) -> int:
    if wire != WIRE_VARINT or not isinstance(value, int):
        raise ProtobufError(f"{what} must be a varint")
    return value


def _bounded(raw: bytes, limit: int, what: str) -> bytes:
    if len(raw) > limit:
        raise ProtobufError(f"{what} of {len(raw)} bytes exceeds {limit}")
    return raw


def _decode_peer(data: bytes, limits: KadLimits) -> KadPeer:
    peer = KadPeer(b"")
    for n, wire, value in protobuf.decode(data):
        if n == 1:
            peer.id = _bounded(_bytes(wire, value, "Peer.id"), limits.max_peer_id_length, "peer id")
        elif n == 2:
            if len(peer.addrs) >= limits.max_addrs_per_peer:
                raise ProtobufError(f"more than {limits.max_addrs_per_peer} addresses for one peer")
            peer.addrs.append(_bounded(_bytes(wire, value, "Peer.addrs"), limits.max_addr_length, "address"))
        elif n == 3:
            # proto3 enums are open: an unknown connection type reads as NOT_CONNECTED
            c = _varint(wire, value, "Peer.connection")
            peer.connection = c if c in ConnectionType._value2member_map_ else 0
    return peer


def _decode_record(data: bytes, limits: KadLimits) -> KadRecord:
    rec = KadRecord()
    for n, wire, value in protobuf.decode(data):
        if n == 1:
            rec.key = _bounded(_bytes(wire, value, "Record.key"), limits.max_key_length, "record key")
        elif n == 2:
            rec.value = _bounded(_bytes(wire, value, "Record.value"), limits.max_value_size, "record value")
        elif n == 5:
            raw = _bounded(_bytes(wire, value, "Record.timeReceived"), limits.max_time_length, "timeReceived")
            try:
                rec.time_received = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise ProtobufError("Record.timeReceived is not valid UTF-8") from exc
    return rec


def decode_message(data: ReadableBuffer, limits: KadLimits = DEFAULT_LIMITS) -> KadMessage:
    """Decode one bare ``Message`` (no length prefix).

    Raises:
        FrameTooLargeError: ``data`` exceeds ``limits.max_message_size``.
        ProtobufError: anything malformed or over the limits.
    """
    raw = bytes(data)
    if len(raw) > limits.max_message_size:
        raise FrameTooLargeError(f"kad message of {len(raw)} bytes exceeds {limits.max_message_size}")
    msg = KadMessage(MessageType.PUT_VALUE)
    peers = 0
    for n, wire, value in protobuf.decode(raw):
        if n == 1:
            t = _varint(wire, value, "Message.type")
            try:
                msg.type = MessageType(t)
            except ValueError:
                raise ProtobufError(f"unknown kad message type {t}") from None
        elif n == 2:
            msg.key = _bounded(_bytes(wire, value, "Message.key"), limits.max_key_length, "key")
        elif n == 3:
            msg.record = _decode_record(_bytes(wire, value, "Message.record"), limits)
        elif n in (8, 9):
            peers += 1
            if peers > limits.max_peers:
                raise ProtobufError(f"more than {limits.max_peers} peers in one kad message")
            p = _decode_peer(_bytes(wire, value, "Message.Peer"), limits)
            (msg.closer_peers if n == 8 else msg.provider_peers).append(p)
        elif n == 10:
            msg.cluster_level = _varint(wire, value, "Message.clusterLevelRaw") & 0xFFFFFFFF
    return msg


# -- encoding -------------------------------------------------------------------------


def _encode_peer(p: KadPeer) -> bytes:
    out = bytearray(protobuf.encode_bytes_field(1, p.id))
    for a in p.addrs:
        out += protobuf.encode_bytes_field(2, a)
    if p.connection:
        out += protobuf.encode_varint_field(3, int(p.connection))
    return bytes(out)


def encode_record(rec: KadRecord) -> bytes:
    out = bytearray()
    if rec.key:
        out += protobuf.encode_bytes_field(1, rec.key)
    if rec.value:
        out += protobuf.encode_bytes_field(2, rec.value)
    if rec.time_received:
        out += protobuf.encode_bytes_field(5, rec.time_received)
    return bytes(out)


def encode_message(msg: KadMessage) -> bytes:
    """Canonical encoding of ``msg`` (fields in number order; empty fields omitted)."""
    out = bytearray(protobuf.encode_varint_field(1, int(msg.type)))
    if msg.key:
        out += protobuf.encode_bytes_field(2, msg.key)
    if msg.record is not None:
        out += protobuf.encode_bytes_field(3, encode_record(msg.record))
    for p in msg.closer_peers:
        out += protobuf.encode_bytes_field(8, _encode_peer(p))
    for p in msg.provider_peers:
        out += protobuf.encode_bytes_field(9, _encode_peer(p))
    if msg.cluster_level:
        out += protobuf.encode_varint_field(10, msg.cluster_level)
    return bytes(out)


def frame(msg: KadMessage) -> bytes:
    """``msg`` encoded with its uvarint length prefix."""
    body = encode_message(msg)
    return uvarint_encode(len(body)) + body


class KadReader(protobuf.LengthPrefixedReader[KadMessage]):
    """Splits a kad stream into messages (uvarint length prefix each).

    Args:
        limits: decoding bounds; ``max_message_size`` bounds each length prefix.
    """

    def __init__(self, limits: KadLimits = DEFAULT_LIMITS) -> None:
        super().__init__(lambda body: decode_message(body, limits), limits.max_message_size, "kad message")
