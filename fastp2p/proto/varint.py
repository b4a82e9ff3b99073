"""Unsigned varint (multiformats unsigned-varint) encode/decode; pure twin of csrc/fp_frame.c.

Rules (multiformats unsigned-varint spec): at most 9 bytes (63 bits), minimal
encoding only (no trailing 0x80 0x00 padding).
"""

from __future__ import annotations

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import VarintError

MAX_VARINT_BYTES = 9

#: the one-byte encodings: most varints on the wire (protobuf keys and short
#: lengths, multistream lines) are below 128
_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def uvarint_encode(n: int) -> bytes:
    """Encode a non-negative int < 2**63 as an unsigned varint."""
    if 0 <= n < 0x80:
        return _ONE_BYTE[n]
    if n < 0 or n >= 1 << 63:
        raise ValueError(f"uvarint out of range: {n}")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def uvarint_decode(buf: ReadableBuffer, offset: int = 0) -> tuple[int, int] | None:
    """Decode a varint at ``offset``; returns ``(value, end_offset)`` or None if incomplete.

    Raises:
        VarintError: more than 9 bytes or a non-minimal encoding.
    """
    if type(buf) is bytes and offset < len(buf) and buf[offset] < 0x80:
        return buf[offset], offset + 1  # one byte: the common case
    mv = memoryview(buf).cast("B") if not isinstance(buf, (bytes, bytearray)) else buf
    value = 0
    shift = 0
    pos = offset
    end = len(mv)
    while pos < end:
        b = mv[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            if b == 0 and shift:
                raise VarintError("non-minimal varint encoding")
            return value, pos
        shift += 7
        if pos - offset >= MAX_VARINT_BYTES:
            raise VarintError("varint longer than 9 bytes")
    return None
