"""Signed peer records: a libp2p signed envelope around a peer record (sans-IO).

A peer states its own listen addresses in a ``PeerRecord`` and signs it, so
a third party can relay the addresses (gossipsub PRUNE peer exchange, the
``signedPeerRecord`` of identify) without being able to forge them.

Wire format (protobuf, as js-libp2p, go-libp2p and py-libp2p exchange it)::

    message Envelope {            // RFC 0002 "signed envelopes"
      PublicKey public_key = 1;   // the signer's key (peer-ids spec protobuf)
      bytes payload_type = 2;     // 0x03 0x01: multicodec libp2p-peer-record (0x0301)
      bytes payload = 3;          // the encoded PeerRecord
      bytes signature = 5;
    }
    message PeerRecord {          // RFC 0003 "routing records"
      bytes peer_id = 1;
      uint64 seq = 2;             // increases with each new record of a peer
      repeated AddressInfo addresses = 3;   // AddressInfo { bytes multiaddr = 1; }
    }

The signature covers ``uvarint(len(domain)) || domain || uvarint(len(type))
|| type || uvarint(len(payload)) || payload`` with the domain string
``libp2p-peer-record`` (domain separation: a record signature can never pass
as, say, a pubsub message signature). RFC 0003's draft names the domain
``libp2p-routing-state`` and the type ``/libp2p/routing-state-record``; the
deployed implementations settled on the values above, which are used here.

Opening checks, in order: the envelope decodes, the payload type is a peer
record, the signature verifies under the enclosed key, and only then is the
payload decoded and its ``peer_id`` required to be the key's peer id.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastp2p.errors import InvalidKeyError, PeerRecordError, ProtobufError
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID, PrivateKey, public_key_from_protobuf
from fastp2p.proto import protobuf
from fastp2p.proto.varint import uvarint_encode

__all__ = [
    "PEER_RECORD_DOMAIN",
    "PEER_RECORD_PAYLOAD_TYPE",
    "MAX_RECORD_ADDRS",
    "PeerRecord",
    "seal_peer_record",
    "open_peer_record",
]

PEER_RECORD_DOMAIN = "libp2p-peer-record"
#: multicodec ``libp2p-peer-record`` (0x0301) as its two big-endian bytes, as deployed
PEER_RECORD_PAYLOAD_TYPE = b"\x03\x01"
#: addresses kept from one record (the rest are ignored): bounded work per record
MAX_RECORD_ADDRS = 32

_ENV_KEY, _ENV_TYPE, _ENV_PAYLOAD, _ENV_SIG = 1, 2, 3, 5
_REC_PEER, _REC_SEQ, _REC_ADDRS = 1, 2, 3
_ADDR_MA = 1


@dataclass(frozen=True, slots=True)
class PeerRecord:
    """A peer's own statement of its addresses; ``seq`` orders records of one peer."""

    peer_id: PeerID
    seq: int
    addrs: tuple[Multiaddr, ...]

    def encode(self) -> bytes:
        fields: list[tuple[int, int | bytes | str]] = [
            (_REC_PEER, self.peer_id.to_bytes()),
            (_REC_SEQ, self.seq),
        ]
        for a in self.addrs:
            fields.append((_REC_ADDRS, protobuf.encode([(_ADDR_MA, a.to_bytes())])))
        return protobuf.encode(fields)

    @classmethod
    def decode(cls, data: bytes) -> PeerRecord:
        """Decode a record; undecodable addresses are skipped, at most
        ``MAX_RECORD_ADDRS`` kept. Raises ``PeerRecordError``."""
        try:
            f = protobuf.fields_by_number(data)
            pid_raw = _one_bytes(f, _REC_PEER, "peer_id")
            seq = f.get(_REC_SEQ, [0])[-1]
            if not isinstance(seq, int):
                raise PeerRecordError("peer record seq is not a varint")
            peer = PeerID.from_bytes(pid_raw)
            addrs: list[Multiaddr] = []
            for entry in f.get(_REC_ADDRS, []):
                if len(addrs) >= MAX_RECORD_ADDRS:
                    break
                if not isinstance(entry, bytes):
                    continue
                raw = protobuf.fields_by_number(entry).get(_ADDR_MA, [])
                if raw and isinstance(raw[-1], bytes):
                    try:
                        addrs.append(Multiaddr.from_bytes(raw[-1]))
                    except ValueError:
                        continue  # one address we cannot parse does not void the record
        except PeerRecordError:
            raise
        except (ProtobufError, InvalidKeyError, ValueError) as exc:
            raise PeerRecordError(f"bad peer record: {exc}") from exc
        return cls(peer, seq, tuple(addrs))


def _one_bytes(f: dict[int, list[int | bytes]], number: int, what: str) -> bytes:
    values = f.get(number)
    if not values or not isinstance(values[-1], bytes):
        raise PeerRecordError(f"missing {what}")
    return values[-1]


def _signing_buffer(payload_type: bytes, payload: bytes) -> bytes:
    domain = PEER_RECORD_DOMAIN.encode()
    return b"".join(
        (
            uvarint_encode(len(domain)), domain,
            uvarint_encode(len(payload_type)), payload_type,
            uvarint_encode(len(payload)), payload,
        )
    )


def seal_peer_record(key: PrivateKey, record: PeerRecord) -> bytes:
    """The signed envelope (bytes) of ``record``, signed by ``key`` (its peer's key)."""
    if PeerID.from_public_key(key.public_key()) != record.peer_id:
        raise PeerRecordError("a peer record must be signed by its own peer's key")
    payload = record.encode()
    sig = key.sign(_signing_buffer(PEER_RECORD_PAYLOAD_TYPE, payload))
    return protobuf.encode(
        [
            (_ENV_KEY, key.public_key().to_protobuf()),
            (_ENV_TYPE, PEER_RECORD_PAYLOAD_TYPE),
            (_ENV_PAYLOAD, payload),
            (_ENV_SIG, sig),
        ]
    )


def open_peer_record(envelope: bytes) -> PeerRecord:
    """Verify a signed envelope and return the peer record inside.

    Raises:
        PeerRecordError: undecodable, not a peer record, a bad signature, or a
            record about another peer than the signer.
    """
    try:
        f = protobuf.fields_by_number(envelope)
    except ProtobufError as exc:
        raise PeerRecordError(f"bad envelope: {exc}") from exc
    key_raw = _one_bytes(f, _ENV_KEY, "envelope public key")
    ptype = _one_bytes(f, _ENV_TYPE, "envelope payload type")
    payload = _one_bytes(f, _ENV_PAYLOAD, "envelope payload")
    sig = _one_bytes(f, _ENV_SIG, "envelope signature")
    if ptype != PEER_RECORD_PAYLOAD_TYPE:
        raise PeerRecordError(f"envelope payload type {ptype.hex()} is not a peer record")
    try:
        key = public_key_from_protobuf(key_raw)
        ok = key.verify(sig, _signing_buffer(ptype, payload))
    except (InvalidKeyError, ValueError) as exc:
        raise PeerRecordError(f"envelope key: {exc}") from exc
    if not ok:
        raise PeerRecordError("envelope signature does not verify")
    record = PeerRecord.decode(payload)
    if not record.peer_id.matches_public_key(key):
        raise PeerRecordError("peer record names another peer than its signer")
    return record
