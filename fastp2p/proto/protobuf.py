"""Minimal protobuf (proto2/proto3 wire format) encoder and decoder.

Only what libp2p's small messages need: varint (wire type 0) and
length-delimited (wire type 2) fields. Unknown fields of other wire types
(fixed32/fixed64) are skipped as the protobuf spec requires.

Rules
-----
- ``decode`` never allocates more than the input length, rejects truncated
  fields, overlong varints and groups (wire types 3/4) with ``ProtobufError``.
- Field numbers are positive; repeated fields appear as several entries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Generic, TypeVar

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import FrameTooLargeError, ProtobufError
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

WIRE_VARINT = 0
WIRE_FIXED64 = 1
WIRE_BYTES = 2
WIRE_FIXED32 = 5

Field = tuple[int, int, "int | bytes"]


def encode_varint_field(number: int, value: int) -> bytes:
    """Encode one varint field (``number``, ``value``)."""
    return uvarint_encode(number << 3 | WIRE_VARINT) + uvarint_encode(value)


def encode_bytes_field(number: int, value: bytes | str) -> bytes:
    """Encode one length-delimited field; ``str`` is encoded as UTF-8."""
    if isinstance(value, str):
        value = value.encode()
    return uvarint_encode(number << 3 | WIRE_BYTES) + uvarint_encode(len(value)) + bytes(value)


def encode(fields: Iterable[tuple[int, int | bytes | str]]) -> bytes:
    """Encode ``(number, value)`` pairs: ints as varints, bytes/str as length-delimited."""
    out = bytearray()
    for number, value in fields:
        if isinstance(value, int):
            out += encode_varint_field(number, value)
        else:
            out += encode_bytes_field(number, value)
    return bytes(out)


def _read_varint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        r = uvarint_decode(buf, pos)
    except Exception as exc:
        raise ProtobufError(f"bad {what} at offset {pos}: {exc}") from exc
    if r is None:
        raise ProtobufError(f"truncated {what} at offset {pos}")
    return r


def decode(data: bytes | bytearray | memoryview) -> list[tuple[int, int, int | bytes]]:
    """Decode a message into ``(number, wire_type, value)`` entries in wire order.

    Raises:
        ProtobufError: truncated or malformed input.
    """
    buf = bytes(data)
    out: list[tuple[int, int, int | bytes]] = []
    pos = 0
    end = len(buf)
    # One-byte varints (field keys up to 15, lengths and values below 128: most
    # of libp2p's small messages) are read inline; longer ones by _read_varint.
    while pos < end:
        key = buf[pos]
        if key < 0x80:
            pos += 1
        else:
            key, pos = _read_varint(buf, pos, "field key")
        number, wire = key >> 3, key & 7
        if number == 0:
            raise ProtobufError("field number 0 is invalid")
        if wire == WIRE_VARINT:
            if pos < end and buf[pos] < 0x80:
                value = buf[pos]
                pos += 1
            else:
                value, pos = _read_varint(buf, pos, f"varint in field {number}")
            out.append((number, wire, value))
        elif wire == WIRE_BYTES:
            if pos < end and buf[pos] < 0x80:
                length = buf[pos]
                pos += 1
            else:
                length, pos = _read_varint(buf, pos, f"length in field {number}")
            if length > end - pos:
                raise ProtobufError(f"field {number} length {length} exceeds message")
            out.append((number, wire, buf[pos : pos + length]))
            pos += length
        elif wire in (WIRE_FIXED64, WIRE_FIXED32):
            size = 8 if wire == WIRE_FIXED64 else 4
            if end - pos < size:
                raise ProtobufError(f"truncated fixed{size * 8} in field {number}")
            out.append((number, wire, int.from_bytes(buf[pos : pos + size], "little")))
            pos += size
        else:
            raise ProtobufError(f"unsupported wire type {wire} in field {number}")
    return out


def fields_by_number(data: bytes | bytearray | memoryview) -> dict[int, list[int | bytes]]:
    """Decode and group values by field number (repeated fields keep order)."""
    grouped: dict[int, list[int | bytes]] = {}
    for number, _wire, value in decode(data):
        grouped.setdefault(number, []).append(value)
    return grouped


def length_prefixed(message: bytes) -> bytes:
    """Prefix ``message`` with its uvarint length (libp2p's usual message framing)."""
    return uvarint_encode(len(message)) + message


_M = TypeVar("_M")


class LengthPrefixedReader(Generic[_M]):
    """Splits a stream of uvarint-length-prefixed messages (libp2p's usual framing).

    Args:
        decode: turns one message body into its object (raises on malformed input).
        max_size: the largest body accepted; a longer length prefix is an error
            before any of the body is buffered.
        what: the message's name in error texts (e.g. ``"RPC"``).
    """

    def __init__(self, decode: Callable[[bytes], _M], max_size: int, what: str) -> None:
        self._decode = decode
        self._max = max_size
        self._what = what
        self._buf = bytearray()

    def receive_data(self, data: ReadableBuffer) -> list[_M]:
        """Feed stream bytes; returns every message completed by them.

        Raises:
            FrameTooLargeError: a length prefix above ``max_size``.
            VarintError: a malformed length prefix.
            ProtobufError: (or whatever ``decode`` raises) a malformed message.
        """
        self._buf += data
        out: list[_M] = []
        buf = self._buf
        pos = 0
        limit = self._max
        while pos < len(buf):
            r = uvarint_decode(buf, pos)
            if r is None:
                # 5 bytes of varint already exceed any limit we accept (< 2**28)
                if len(buf) - pos >= 5:
                    raise FrameTooLargeError(f"{self._what} length prefix exceeds {limit}")
                break
            length, start = r
            if length > limit:
                raise FrameTooLargeError(f"{self._what} of {length} bytes exceeds {limit}")
            if len(buf) < start + length:
                break
            out.append(self._decode(bytes(buf[start : start + length])))
            pos = start + length
        if pos:
            del buf[:pos]
        return out

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete message held."""
        return len(self._buf)
