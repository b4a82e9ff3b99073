"""The RDMA data-path protocol (``/fastp2p/rdma/1.0.0``): messages, sans-IO.

Rules
-----
- Runs on ordinary streams of an already Noise-secured connection, so queue
  pair numbers, PSNs, GIDs and rkeys are exchanged only with the verified
  remote PeerId (DESIGN decision 4). One exchange per stream; the first
  message says which: ``HELLO`` (upgrade), ``RMA_REQUEST`` (one-sided op) or
  ``RECONNECT`` (re-create the one-sided queue pair after an error).
- Messages are uvarint-length-prefixed protobufs of at most ``MAX_MESSAGE``
  bytes; anything longer, truncated or malformed raises ``RemoteProtocolError``.

Upgrade (dialer D, listener L)::

    D -> L  HELLO(qp info D, credits, buf_size, boot_id)  (behind the proposal)
    L       creates its queue pairs, RTR+RTS towards D's, posts receives
    L -> D  ACCEPT(qp info L, credits, buf_size)  | REFUSE(reason)
    D       RTR+RTS towards L's; D's frames go over RDMA after:
    D -> L  SWITCH      (last muxer byte D puts on TCP)
    L -> D  SWITCH      (L reads RDMA from here on, and sends over it)

  Each direction switches on its own at its marker, as with shared memory.
  "qp info" is two RC queue pairs: one for stream frames (SEND with
  immediate: the immediate carries returned receive credits), one for
  one-sided operations, so a remote-access error on the latter (which moves
  both ends of that queue pair to the error state) never touches streams.

One-sided operation (requester R, owner O), on a fresh stream::

    R -> O  RMA_REQUEST(op, token, offset, length[, compare, operand])
    O       MemoryManager.check(token, R's PeerId, ...) then registers exactly
            the checked range with exactly the right (REMOTE_WRITE for PUT,
            REMOTE_READ for GET, REMOTE_ATOMIC for CAS/FAA)
    O -> R  RMA_GRANT(address, rkey, length)  | RMA_DENIED(status, reason)
    R       RDMA WRITE / READ / atomic on its one-sided queue pair
    R -> O  RMA_DONE(status)
    O       deregisters (the rkey is dead from here on)
    O -> R  RMA_FINISHED

Theory of operation
-------------------
``encode(msg)`` gives bytes to write; ``MessageReader`` yields complete
messages. The driver is ``fastp2p.transport.rdma``.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from fastp2p.errors import FrameTooLargeError, ProtobufError, RemoteProtocolError
from fastp2p.proto import protobuf
from fastp2p.proto.varint import uvarint_decode

__all__ = [
    "PROTOCOL_ID",
    "MAX_MESSAGE",
    "Kind",
    "Op",
    "DenyStatus",
    "RdmaMessage",
    "encode",
    "MessageReader",
]

PROTOCOL_ID = "/fastp2p/rdma/1.0.0"
MAX_MESSAGE = 4096
_U63 = (1 << 63) - 1  # uvarint limit (multiformats)
_U24 = (1 << 24) - 1


class Kind(enum.IntEnum):
    HELLO = 1
    ACCEPT = 2
    REFUSE = 3
    SWITCH = 5
    RMA_REQUEST = 10
    RMA_GRANT = 11
    RMA_DENIED = 12
    RMA_DONE = 13
    RMA_FINISHED = 14
    RECONNECT = 20
    RECONNECTED = 21


class Op(enum.IntEnum):
    PUT = 1
    GET = 2
    CAS = 3
    FAA = 4


class DenyStatus(enum.IntEnum):
    ACCESS_DENIED = 1
    BOUNDS = 2
    INTERNAL = 3
    UNAVAILABLE = 4


@dataclass(frozen=True, slots=True)
class RdmaMessage:
    """One message; unused fields keep their defaults."""

    kind: Kind
    gid: bytes = b""
    lid: int = 0
    qpn: int = 0
    psn: int = 0
    rma_qpn: int = 0
    rma_psn: int = 0
    mtu: int = 0  # IBV_MTU_* enum value (1..5)
    credits: int = 0
    buf_size: int = 0
    boot_id: bytes = b""
    reason: str = ""
    op: int = 0
    token: bytes = b""
    offset: int = 0
    length: int = 0
    address: int = 0
    rkey: int = 0
    compare: int = 0
    operand: int = 0
    status: int = 0


_FIELDS = (
    # (field number, attribute, kind, limit)
    (2, "gid", bytes, 16),
    (3, "lid", int, 0xFFFF),
    (4, "qpn", int, _U24),
    (5, "psn", int, _U24),
    (6, "rma_qpn", int, _U24),
    (7, "rma_psn", int, _U24),
    (8, "mtu", int, 5),
    (9, "credits", int, 1 << 16),
    (10, "buf_size", int, 1 << 30),
    (11, "boot_id", bytes, 64),
    (12, "reason", str, 512),
    (13, "op", int, 255),
    (14, "token", bytes, 512),
    (15, "offset", int, _U63),
    (16, "length", int, _U63),
    (17, "address", int, _U63),
    (18, "rkey", int, 0xFFFFFFFF),
    (19, "compare", "u64", 8),  # 8 bytes big-endian: full 64-bit range
    (20, "operand", "u64", 8),
    (21, "status", int, 255),
)


def encode(msg: RdmaMessage) -> bytes:
    """The length-prefixed wire form of ``msg``."""
    fields: list[tuple[int, int | bytes | str]] = [(1, int(msg.kind))]
    for num, attr, kind, limit in _FIELDS:
        v = getattr(msg, attr)
        if v:
            if kind == "u64":
                v = int(v).to_bytes(8, "big")
            elif isinstance(v, str):
                v = v[:limit]
            fields.append((num, v))
    return protobuf.length_prefixed(protobuf.encode(fields))


def _decode(body: bytes) -> RdmaMessage:
    f = protobuf.fields_by_number(body)
    kw: dict[str, int | bytes | str] = {}
    for num, attr, kind, limit in _FIELDS:
        if num not in f:
            continue
        v = f[num][-1]
        if kind == "u64":
            if not isinstance(v, bytes) or len(v) != 8:
                raise ProtobufError(f"rdma message field {attr} malformed")
            kw[attr] = int.from_bytes(v, "big")
        elif kind is int:
            if not isinstance(v, int) or not 0 <= v <= limit:
                raise ProtobufError(f"rdma message field {attr} out of range")
            kw[attr] = v
        else:
            if not isinstance(v, bytes) or len(v) > limit:
                raise ProtobufError(f"rdma message field {attr} malformed")
            kw[attr] = v.decode("utf-8", "replace") if kind is str else v
    kinds = f.get(1, [0])
    k = kinds[-1]
    try:
        kind_v = Kind(k if isinstance(k, int) else -1)
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown rdma message kind: {exc}") from exc
    gid = kw.get("gid", b"")
    if gid and len(gid) != 16:  # type: ignore[arg-type]
        raise ProtobufError("rdma GID must be 16 bytes")
    return RdmaMessage(kind=kind_v, **kw)  # type: ignore[arg-type]


class MessageReader:
    """Accumulates stream bytes and returns complete messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[RdmaMessage]:
        """Feed bytes; returns every complete message (raises on malformed input)."""
        self._buf += data
        out: list[RdmaMessage] = []
        while self._buf:
            try:
                r = uvarint_decode(bytes(self._buf[:10]), 0)
            except Exception as exc:
                raise RemoteProtocolError(f"bad rdma message length prefix: {exc}") from exc
            if r is None:
                if len(self._buf) >= 10:
                    raise RemoteProtocolError("bad rdma message length prefix")
                break
            n, pos = r
            if n > MAX_MESSAGE:
                raise FrameTooLargeError(f"rdma message of {n} bytes (max {MAX_MESSAGE})")
            if len(self._buf) < pos + n:
                break
            body = bytes(self._buf[pos : pos + n])
            del self._buf[: pos + n]
            out.append(_decode(body))
        return out
