"""noise-libp2p handshake payload messages (proto2), hand-written codec.

libp2p noise spec::

    message NoiseExtensions {
        repeated bytes webtransport_certhashes = 1;
        repeated string stream_muxers = 2;
        // fastp2p only (not in the libp2p spec; other implementations skip it
        // as an unknown field): transport ciphers in preference order, see
        // fastp2p/proto/noise/handshake.py "Transport cipher negotiation".
        repeated string fastp2p_ciphers = 26224;
    }
    message NoiseHandshakePayload {
        optional bytes identity_key = 1;
        optional bytes identity_sig = 2;
        optional NoiseExtensions extensions = 4;
    }

Unknown fields are skipped; malformed input raises ProtobufError.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fastp2p.errors import ProtobufError
from fastp2p.proto import protobuf
from fastp2p.proto.protobuf import WIRE_BYTES

__all__ = ["FASTP2P_CIPHERS_FIELD", "NoiseExtensions", "NoiseHandshakePayload"]

#: field number of NoiseExtensions.fastp2p_ciphers (0x6670, "fp")
FASTP2P_CIPHERS_FIELD = 26224


def _bytes_value(number: int, wire: int, value: int | bytes) -> bytes:
    if wire != WIRE_BYTES or not isinstance(value, bytes):
        raise ProtobufError(f"field {number} must be length-delimited")
    return value


@dataclass(slots=True)
class NoiseExtensions:
    """Extension registry carried in the handshake payload."""

    webtransport_certhashes: list[bytes] = field(default_factory=list)
    stream_muxers: list[str] = field(default_factory=list)
    fastp2p_ciphers: list[str] = field(default_factory=list)

    def encode(self) -> bytes:
        """Serialize to protobuf bytes."""
        fields: list[tuple[int, int | bytes | str]] = []
        fields += [(1, h) for h in self.webtransport_certhashes]
        fields += [(2, m) for m in self.stream_muxers]
        fields += [(FASTP2P_CIPHERS_FIELD, c) for c in self.fastp2p_ciphers]
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> NoiseExtensions:
        """Parse protobuf bytes.

        Raises:
            ProtobufError: malformed input or a non-UTF-8 muxer name.
        """
        out = cls()
        for number, wire, value in protobuf.decode(data):
            if number == 1:
                out.webtransport_certhashes.append(_bytes_value(number, wire, value))
            elif number == 2:
                raw = _bytes_value(number, wire, value)
                try:
                    out.stream_muxers.append(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ProtobufError("stream_muxers entry is not UTF-8") from exc
            elif number == FASTP2P_CIPHERS_FIELD:
                raw = _bytes_value(number, wire, value)
                try:
                    out.fastp2p_ciphers.append(raw.decode("utf-8"))
                except UnicodeDecodeError as exc:
                    raise ProtobufError("fastp2p_ciphers entry is not UTF-8") from exc
        return out


@dataclass(slots=True)
class NoiseHandshakePayload:
    """The libp2p payload of Noise handshake messages 2 and 3."""

    identity_key: bytes = b""
    identity_sig: bytes = b""
    extensions: NoiseExtensions | None = None

    def encode(self) -> bytes:
        """Serialize to protobuf bytes."""
        fields: list[tuple[int, int | bytes | str]] = [
            (1, self.identity_key),
            (2, self.identity_sig),
        ]
        if self.extensions is not None:
            fields.append((4, self.extensions.encode()))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> NoiseHandshakePayload:
        """Parse protobuf bytes (the last occurrence of a singular field wins).

        Raises:
            ProtobufError: malformed input.
        """
        out = cls()
        for number, wire, value in protobuf.decode(data):
            if number == 1:
                out.identity_key = _bytes_value(number, wire, value)
            elif number == 2:
                out.identity_sig = _bytes_value(number, wire, value)
            elif number == 4:
                out.extensions = NoiseExtensions.decode(_bytes_value(number, wire, value))
        return out
