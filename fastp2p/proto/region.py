"""One-sided memory operations (``/fastp2p/region/1.0.0``): messages, sans-IO.

Rules
-----
- One operation per stream. The requester sends a REQUEST (op, grant token,
  offset and length within the grant, and optionally the address of its own
  buffer for a same-host single copy); the region's owner checks the token
  (rights, bounds, expiry, revocation, the requester's PeerId) and answers
  with a RESPONSE whose ``status`` says why it refused. The owner never trusts
  the requester's bounds: it checks them against the grant itself.
- put: REQUEST -> RESPONSE(OK) -> ``length`` data bytes -> RESPONSE(DONE).
  get: REQUEST -> RESPONSE(OK) -> ``length`` data bytes.
  With ``direct`` (shared-memory path, both processes on one host) the owner
  copies with process_vm_readv/writev from/to ``address`` in the requester's
  process (whose pid the owner learnt from the kernel when the path was set
  up), then answers DONE: no data bytes follow.
- Messages are uvarint-length-prefixed protobufs of at most ``MAX_MESSAGE``
  bytes; malformed ones raise ``RemoteProtocolError``.
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
    "Op",
    "Status",
    "Request",
    "Response",
    "encode_request",
    "encode_response",
    "read_message",
    "decode_request",
    "decode_response",
]

PROTOCOL_ID = "/fastp2p/region/1.0.0"
MAX_MESSAGE = 2048
_U64 = (1 << 64) - 1


class Op(enum.IntEnum):
    PUT = 1
    GET = 2


class Status(enum.IntEnum):
    OK = 0
    DONE = 1
    ACCESS_DENIED = 2
    BOUNDS = 3
    INTERNAL = 4
    DIRECT_UNAVAILABLE = 5


@dataclass(frozen=True, slots=True)
class Request:
    op: Op
    token: bytes
    offset: int
    length: int
    direct: bool = False
    address: int = 0


@dataclass(frozen=True, slots=True)
class Response:
    status: Status
    message: str = ""


def encode_request(req: Request) -> bytes:
    """The length-prefixed wire form of ``req``."""
    fields: list[tuple[int, int | bytes | str]] = [
        (1, int(req.op)),
        (2, req.token),
        (3, req.offset),
        (4, req.length),
    ]
    if req.direct:
        fields += [(5, 1), (6, req.address)]
    return protobuf.length_prefixed(protobuf.encode(fields))


def encode_response(resp: Response) -> bytes:
    """The length-prefixed wire form of ``resp``."""
    fields: list[tuple[int, int | bytes | str]] = [(1, int(resp.status))]
    if resp.message:
        fields.append((2, resp.message[:512]))
    return protobuf.length_prefixed(protobuf.encode(fields))


def read_message(buf: bytes | bytearray) -> tuple[bytes, int] | None:
    """Split one length-prefixed message off ``buf``: ``(body, consumed)`` or None."""
    try:
        r = uvarint_decode(bytes(buf[:10]), 0)
    except Exception as exc:
        raise RemoteProtocolError(f"bad region message length: {exc}") from exc
    if r is None:
        if len(buf) >= 10:
            raise RemoteProtocolError("bad region message length")
        return None
    n, pos = r
    if n > MAX_MESSAGE:
        raise FrameTooLargeError(f"region message of {n} bytes (max {MAX_MESSAGE})")
    if len(buf) < pos + n:
        return None
    return bytes(buf[pos : pos + n]), pos + n


def _int(f: dict[int, list[int | bytes]], n: int, default: int = 0) -> int:
    v = f.get(n, [default])[-1]
    if not isinstance(v, int) or not 0 <= v <= _U64:
        raise ProtobufError(f"region message field {n} malformed")
    return v


def decode_request(body: bytes) -> Request:
    """Parse a REQUEST body (raises ``RemoteProtocolError``)."""
    f = protobuf.fields_by_number(body)
    token = f.get(2, [b""])[-1]
    if not isinstance(token, bytes) or len(token) > 512:
        raise ProtobufError("region request token malformed")
    try:
        op = Op(_int(f, 1))
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown region op: {exc}") from exc
    return Request(
        op=op,
        token=token,
        offset=_int(f, 3),
        length=_int(f, 4),
        direct=bool(_int(f, 5)),
        address=_int(f, 6),
    )


def decode_response(body: bytes) -> Response:
    """Parse a RESPONSE body (raises ``RemoteProtocolError``)."""
    f = protobuf.fields_by_number(body)
    try:
        status = Status(_int(f, 1))
    except ValueError as exc:
        raise RemoteProtocolError(f"unknown region status: {exc}") from exc
    msg = f.get(2, [b""])[-1]
    if not isinstance(msg, bytes):
        raise ProtobufError("region response message malformed")
    return Response(status=status, message=msg.decode("utf-8", "replace")[:512])
