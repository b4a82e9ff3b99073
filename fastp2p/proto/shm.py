"""The same-host data-path upgrade (``/fastp2p/shm/1.0.0``): messages, sans-IO.

Rules
-----
- Runs on an ordinary stream of an already Noise-secured connection, so every
  message is authenticated and bound to the verified remote PeerId.
- Messages are uvarint-length-prefixed protobufs of at most ``MAX_MESSAGE``
  bytes; anything longer, truncated or malformed raises ``RemoteProtocolError``
  (``ProtobufError``/``FrameTooLargeError``), and the upgrade falls back to TCP.
- The dialer (D) drives; the listener (L) answers; one round trip::

      D -> L  HELLO(boot_id, pid, uid, capacity, sealed, socket, secret)
              (sent right behind the multistream proposal; D already listens
              on the abstract Unix socket ``socket``)
      L connects to ``socket`` and sends ``secret``; D checks it (constant
      time) and the kernel's SO_PEERCRED uid, then passes (memfd, eventfd D,
      eventfd L) with SCM_RIGHTS; L checks SO_PEERCRED pid == HELLO's pid and
      attaches the rings. The pid each side keeps for the other is the one the
      kernel reported, never a claimed one.
      L -> D  SWITCH(sealed)               | REFUSE(reason)
      D -> L  SWITCH

  The rings are sealed with the connection's Noise ciphers when either side
  asked for it (HELLO's ``sealed`` or the listener's own setting, which its
  SWITCH carries).

  ``SWITCH`` is the last muxer byte its sender puts on TCP: every later frame
  in that direction goes through the ring, and the receiver starts reading
  the ring once it has read ``SWITCH``. Each direction switches on its own.
- Same host means the same kernel boot id; a different one is refused at once.

Theory of operation
-------------------
``encode(msg)`` gives the bytes to write; ``MessageReader`` accumulates bytes
and yields complete messages; the driver (``fastp2p.transport.shm``) does the
I/O, the fd passing and the switch.
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
    "SECRET_SIZE",
    "Kind",
    "ShmMessage",
    "encode",
    "MessageReader",
]

PROTOCOL_ID = "/fastp2p/shm/1.0.0"
MAX_MESSAGE = 4096
SECRET_SIZE = 32
MAX_CAPACITY = 256 * 1024 * 1024  # fp_ring's FP_RING_MAX_CAP


class Kind(enum.IntEnum):
    HELLO = 1
    REFUSE = 3
    SWITCH = 5


@dataclass(frozen=True, slots=True)
class ShmMessage:
    """One upgrade message; unused fields keep their defaults."""

    kind: Kind
    boot_id: bytes = b""
    pid: int = 0
    uid: int = 0
    capacity: int = 0
    sealed: bool = False
    reason: str = ""
    socket: bytes = b""
    secret: bytes = b""


# field numbers
_KIND, _BOOT, _PID, _UID, _CAP, _SEALED, _REASON, _SOCKET, _SECRET = range(1, 10)


def encode(msg: ShmMessage) -> bytes:
    """The length-prefixed wire form of ``msg``."""
    fields: list[tuple[int, int | bytes | str]] = [(_KIND, int(msg.kind))]
    if msg.boot_id:
        fields.append((_BOOT, msg.boot_id))
    if msg.pid:
        fields.append((_PID, msg.pid))
    if msg.uid:
        fields.append((_UID, msg.uid))
    if msg.capacity:
        fields.append((_CAP, msg.capacity))
    if msg.sealed:
        fields.append((_SEALED, 1))
    if msg.reason:
        fields.append((_REASON, msg.reason.encode()[:512].decode("utf-8", "ignore")))
    if msg.socket:
        fields.append((_SOCKET, msg.socket))
    if msg.secret:
        fields.append((_SECRET, msg.secret))
    return protobuf.length_prefixed(protobuf.encode(fields))


def _decode(body: bytes) -> ShmMessage:
    f = protobuf.fields_by_number(body)

    def one_int(n: int, limit: int) -> int:
        v = f.get(n, [0])[-1]
        if not isinstance(v, int) or v < 0 or v > limit:
            raise ProtobufError(f"shm upgrade field {n} out of range")
        return v

    def one_bytes(n: int, limit: int) -> bytes:
        v = f.get(n, [b""])[-1]
        if not isinstance(v, bytes) or len(v) > limit:
            raise ProtobufError(f"shm upgrade field {n} malformed")
        return v

    try:
        kind = Kind(one_int(_KIND, 255))
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown shm upgrade message kind: {exc}") from exc
    secret = one_bytes(_SECRET, SECRET_SIZE)
    return ShmMessage(
        kind=kind,
        boot_id=one_bytes(_BOOT, 64),
        pid=one_int(_PID, 1 << 31),
        uid=one_int(_UID, 1 << 32),
        capacity=one_int(_CAP, MAX_CAPACITY),
        sealed=bool(one_int(_SEALED, 1)),
        reason=one_bytes(_REASON, 512).decode("utf-8", "replace"),
        socket=one_bytes(_SOCKET, 107),
        secret=secret,
    )


class MessageReader:
    """Accumulates stream bytes and returns complete upgrade messages."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[ShmMessage]:
        """Feed bytes; returns every complete message (raises on malformed input)."""
        self._buf += data
        out: list[ShmMessage] = []
        while self._buf:
            try:
                r = uvarint_decode(bytes(self._buf[:10]), 0)
            except Exception as exc:
                raise RemoteProtocolError(f"bad shm upgrade length prefix: {exc}") from exc
            if r is None:
                if len(self._buf) >= 10:
                    raise RemoteProtocolError("bad shm upgrade length prefix")
                break
            n, pos = r
            if n > MAX_MESSAGE:
                raise FrameTooLargeError(f"shm upgrade message of {n} bytes (max {MAX_MESSAGE})")
            if len(self._buf) < pos + n:
                break
            body = bytes(self._buf[pos : pos + n])
            del self._buf[: pos + n]
            out.append(_decode(body))
        if len(self._buf) > MAX_MESSAGE + 10:
            raise FrameTooLargeError("shm upgrade message too large")
        return out
