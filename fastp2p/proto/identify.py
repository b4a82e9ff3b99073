"""libp2p identify (``/ipfs/id/1.0.0``) and identify push (``/ipfs/id/push/1.0.0``).

Rules
-----
- identify spec: the message is the proto2 ``Identify``::

      optional string protocolVersion = 5;  optional string agentVersion = 6;
      optional bytes publicKey = 1;         repeated bytes listenAddrs = 2;
      optional bytes observedAddr = 4;      repeated string protocols = 3;
      optional bytes signedPeerRecord = 8;

- Absent optional fields decode to ``None`` (not ``""``) so that a push,
  which may carry only the changed fields, can be merged with
  :meth:`IdentifyInfo.merge` without wiping what it does not mention.
- Unknown fields are ignored. A wrong wire type, invalid UTF-8, more than
  :data:`MAX_LIST_ENTRIES` addresses or protocols, or a message above
  :data:`MAX_MESSAGE_SIZE` raise :class:`~fastp2p.errors.ProtobufError`.
- On the wire (go-libp2p, js-libp2p, rust-libp2p) each message is prefixed
  with its uvarint length; the sender then closes the stream. go-libp2p
  splits a large message in two (the second carrying only
  ``signedPeerRecord``), so a reader must accept several messages up to EOF
  and merge them: :class:`IdentifyReader` does this.

Theory of operation
-------------------
``IdentifyReader.receive_data`` buffers bytes and decodes every complete
length-prefixed message; ``messages()`` drains the decoded ones;
``receive_eof()`` checks nothing is left half-read and ``result()`` merges
everything received. With ``length_prefixed=False`` (legacy peers that send
the bare protobuf and close) the whole stream up to EOF is one message.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import FrameTooLargeError, LocalProtocolError, ProtobufError
from fastp2p.proto import protobuf
from fastp2p.proto.protobuf import WIRE_BYTES
from fastp2p.proto.varint import uvarint_decode

__all__ = [
    "PROTOCOL_ID",
    "PUSH_PROTOCOL_ID",
    "MAX_MESSAGE_SIZE",
    "MAX_LIST_ENTRIES",
    "IdentifyInfo",
    "encode_identify",
    "encode_identify_frame",
    "decode_identify",
    "IdentifyReader",
]

PROTOCOL_ID = "/ipfs/id/1.0.0"
PUSH_PROTOCOL_ID = "/ipfs/id/push/1.0.0"
MAX_MESSAGE_SIZE = 64 * 1024
MAX_LIST_ENTRIES = 1024

_F_PUBLIC_KEY = 1
_F_LISTEN_ADDRS = 2
_F_PROTOCOLS = 3
_F_OBSERVED_ADDR = 4
_F_PROTOCOL_VERSION = 5
_F_AGENT_VERSION = 6
_F_SIGNED_PEER_RECORD = 8


@dataclass(slots=True)
class IdentifyInfo:
    """One Identify message.

    ``listen_addrs`` and ``observed_addr`` hold binary multiaddrs; objects with
    a ``to_bytes()`` method (``Multiaddr``) are accepted when encoding.
    ``None`` means the field was absent.
    """

    protocol_version: str | None = None
    agent_version: str | None = None
    public_key: bytes | None = None
    listen_addrs: list[Any] = field(default_factory=list)
    observed_addr: Any | None = None
    protocols: list[str] = field(default_factory=list)
    signed_peer_record: bytes | None = None

    def merge(self, update: IdentifyInfo) -> IdentifyInfo:
        """Return a copy with every field present in ``update`` taken from it.

        Repeated fields count as present when non-empty (proto2 cannot tell
        an empty list from an absent one).
        """
        out = replace(self, listen_addrs=list(self.listen_addrs), protocols=list(self.protocols))
        for name in ("protocol_version", "agent_version", "public_key", "observed_addr", "signed_peer_record"):
            value = getattr(update, name)
            if value is not None:
                setattr(out, name, value)
        if update.listen_addrs:
            out.listen_addrs = list(update.listen_addrs)
        if update.protocols:
            out.protocols = list(update.protocols)
        return out


def _addr_bytes(addr: Any) -> bytes:
    if isinstance(addr, (bytes, bytearray, memoryview)):
        return bytes(addr)
    to_bytes = getattr(addr, "to_bytes", None)
    if to_bytes is None:
        raise LocalProtocolError(f"not a binary multiaddr: {addr!r}")
    return bytes(to_bytes())


def encode_identify(info: IdentifyInfo) -> bytes:
    """Serialize ``info`` as a bare ``Identify`` protobuf (no length prefix).

    Raises:
        LocalProtocolError: an address is neither bytes nor has ``to_bytes()``.
    """
    fields: list[tuple[int, int | bytes | str]] = []
    if info.protocol_version is not None:
        fields.append((_F_PROTOCOL_VERSION, info.protocol_version))
    if info.agent_version is not None:
        fields.append((_F_AGENT_VERSION, info.agent_version))
    if info.public_key is not None:
        fields.append((_F_PUBLIC_KEY, info.public_key))
    fields += [(_F_LISTEN_ADDRS, _addr_bytes(a)) for a in info.listen_addrs]
    if info.observed_addr is not None:
        fields.append((_F_OBSERVED_ADDR, _addr_bytes(info.observed_addr)))
    fields += [(_F_PROTOCOLS, p) for p in info.protocols]
    if info.signed_peer_record is not None:
        fields.append((_F_SIGNED_PEER_RECORD, info.signed_peer_record))
    return protobuf.encode(fields)


def encode_identify_frame(info: IdentifyInfo) -> bytes:
    """``encode_identify`` with the uvarint length prefix used on the wire."""
    return protobuf.length_prefixed(encode_identify(info))


#: decoded strings by their bytes, shared by every peer that sends them (protocol ids
#: and agent versions repeat across peers: one str each, not one per peer record)
_TEXTS: dict[bytes, str] = {}
_TEXTS_MAX = 1024  # entries; a full memo starts over (a peer's junk neither grows nor fills it)
_TEXT_MAX = 256  # bytes: longer strings are not kept


def _text(number: int, raw: bytes) -> str:
    got = _TEXTS.get(raw)
    if got is not None:
        return got
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProtobufError(f"identify field {number} is not valid UTF-8") from exc
    if len(raw) <= _TEXT_MAX:
        if len(_TEXTS) >= _TEXTS_MAX:
            _TEXTS.clear()
        _TEXTS[raw] = text
    return text


def decode_identify(data: ReadableBuffer) -> IdentifyInfo:
    """Parse a bare ``Identify`` protobuf.

    Raises:
        ProtobufError: malformed, oversized, wrong wire type, bad UTF-8 or too
            many list entries.
    """
    raw = bytes(data)
    if len(raw) > MAX_MESSAGE_SIZE:
        raise ProtobufError(f"identify message of {len(raw)} bytes exceeds {MAX_MESSAGE_SIZE}")
    info = IdentifyInfo()
    for number, wire, value in protobuf.decode(raw):
        if number not in (1, 2, 3, 4, 5, 6, 8):
            continue  # unknown fields are ignored
        if wire != WIRE_BYTES or not isinstance(value, bytes):
            raise ProtobufError(f"identify field {number} must be length-delimited")
        if number == _F_PUBLIC_KEY:
            info.public_key = value
        elif number == _F_LISTEN_ADDRS:
            if len(info.listen_addrs) >= MAX_LIST_ENTRIES:
                raise ProtobufError(f"more than {MAX_LIST_ENTRIES} listen addresses")
            info.listen_addrs.append(value)
        elif number == _F_PROTOCOLS:
            if len(info.protocols) >= MAX_LIST_ENTRIES:
                raise ProtobufError(f"more than {MAX_LIST_ENTRIES} protocols")
            info.protocols.append(_text(number, value))
        elif number == _F_OBSERVED_ADDR:
            info.observed_addr = value
        elif number == _F_PROTOCOL_VERSION:
            info.protocol_version = _text(number, value)
        elif number == _F_AGENT_VERSION:
            info.agent_version = _text(number, value)
        else:
            info.signed_peer_record = value
    return info


class IdentifyReader:
    """Accumulates Identify messages read from one identify (or push) stream.

    Args:
        length_prefixed: True for the standard uvarint-prefixed framing; False
            to treat everything up to EOF as one bare protobuf (legacy peers).
        max_messages: how many messages one stream may carry.
    """

    def __init__(self, *, length_prefixed: bool = True, max_messages: int = 8) -> None:
        self._length_prefixed = length_prefixed
        self._max_messages = max_messages
        self._buf = bytearray()
        self._pending: list[IdentifyInfo] = []
        self._all: list[IdentifyInfo] = []
        self._eof = False

    def receive_data(self, data: ReadableBuffer) -> None:
        """Feed stream bytes.

        Raises:
            FrameTooLargeError: a length prefix (or legacy body) above 64 KiB.
            ProtobufError: a malformed message, or too many messages.
            VarintError: a malformed length prefix.
            LocalProtocolError: data after ``receive_eof``.
        """
        if self._eof:
            raise LocalProtocolError("data after EOF")
        self._buf += data
        if not self._length_prefixed:
            if len(self._buf) > MAX_MESSAGE_SIZE:
                raise FrameTooLargeError(f"identify message exceeds {MAX_MESSAGE_SIZE} bytes")
            return
        while self._buf:
            r = uvarint_decode(self._buf, 0)
            if r is None:
                if len(self._buf) >= 3:  # three continuation bytes: >= 2**21
                    raise FrameTooLargeError(f"identify message exceeds {MAX_MESSAGE_SIZE} bytes")
                return
            length, start = r
            if length > MAX_MESSAGE_SIZE:
                raise FrameTooLargeError(
                    f"identify message of {length} bytes exceeds {MAX_MESSAGE_SIZE}"
                )
            if len(self._buf) < start + length:
                return
            body = bytes(self._buf[start : start + length])
            del self._buf[: start + length]
            self._add(decode_identify(body))

    def _add(self, info: IdentifyInfo) -> None:
        if len(self._all) >= self._max_messages:
            raise ProtobufError(f"more than {self._max_messages} identify messages on one stream")
        self._pending.append(info)
        self._all.append(info)

    def receive_eof(self) -> None:
        """The peer closed its write side.

        Raises:
            ProtobufError: a message was cut short.
        """
        if self._eof:
            return
        self._eof = True
        if not self._length_prefixed:
            self._add(decode_identify(bytes(self._buf)))
            self._buf.clear()
        elif self._buf:
            raise ProtobufError(f"stream ended inside an identify message ({len(self._buf)} bytes)")

    def messages(self) -> list[IdentifyInfo]:
        """Messages decoded since the last call (drained)."""
        out = self._pending
        self._pending = []
        return out

    def result(self) -> IdentifyInfo:
        """Every message received so far merged in order (see ``IdentifyInfo.merge``)."""
        merged = IdentifyInfo()
        for info in self._all:
            merged = merged.merge(info)
        return merged
