"""Signed peer records (libp2p signed envelope + peer record): seal, open, reject forgeries."""

from __future__ import annotations

import pytest

from fastp2p.errors import PeerRecordError
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto import protobuf
from fastp2p.proto.peer_record import (
    MAX_RECORD_ADDRS,
    PEER_RECORD_PAYLOAD_TYPE,
    PeerRecord,
    open_peer_record,
    seal_peer_record,
)

# Sealed by py-libp2p 0.8.1 (libp2p.peer.envelope.seal_record, Ed25519 key from seed 0x07 * 32):
# an independent implementation's bytes, so the field numbers, payload type and signing
# domain are checked against the deployed format, not against ourselves.
PY_LIBP2P_PEER = "12D3KooWRawPbxPtP1eZaJpumGnyWX2DcUyd3RQnydr3eAto4Az7"
PY_LIBP2P_ENVELOPE = bytes.fromhex(
    "0a2408011220ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c120203011a520a26"
    "002408011220ea4a6c63e29c520abef5507b132ec5f9954776aebebe7b92421eea691446d22c1080e2cfaa061a0a"
    "0a08040a000001060fa11a160a142900000000000000000000000000000001060fa22a4025b7d1bd3da27579a411"
    "30b18c91225b67997b6416b5897652b9a92aef05f10254c21382ec37b824e20b2cd08ee0c14415739b68280e5a4f"
    "fbf3e73a79f45909"
)


def _key() -> tuple[Ed25519PrivateKey, PeerID]:
    k = Ed25519PrivateKey.generate()
    return k, PeerID.from_public_key(k.public_key())


def test_opens_a_record_sealed_by_py_libp2p() -> None:
    rec = open_peer_record(PY_LIBP2P_ENVELOPE)
    assert str(rec.peer_id) == PY_LIBP2P_PEER and rec.seq == 1700000000
    assert [str(a) for a in rec.addrs] == ["/ip4/10.0.0.1/tcp/4001", "/ip6/::1/tcp/4002"]


def test_seal_open_roundtrip_and_format() -> None:
    k, pid = _key()
    addrs = (Multiaddr("/ip4/192.0.2.1/tcp/4001"), Multiaddr("/ip6/2001:db8::1/udp/4001/quic-v1"))
    env = seal_peer_record(k, PeerRecord(pid, 42, addrs))
    assert open_peer_record(env) == PeerRecord(pid, 42, addrs)
    f = protobuf.fields_by_number(env)
    assert sorted(f) == [1, 2, 3, 5] and f[2] == [PEER_RECORD_PAYLOAD_TYPE]
    # the payload decodes on its own too
    assert PeerRecord.decode(f[3][0]) == PeerRecord(pid, 42, addrs)  # type: ignore[arg-type]


def test_only_the_peer_itself_can_seal() -> None:
    k, _ = _key()
    _, other = _key()
    with pytest.raises(PeerRecordError):
        seal_peer_record(k, PeerRecord(other, 1, ()))


def _reseal(env: bytes, **replace: bytes) -> bytes:
    f = {n: v[-1] for n, v in protobuf.fields_by_number(env).items()}
    names = {"key": 1, "type": 2, "payload": 3, "sig": 5}
    for name, value in replace.items():
        f[names[name]] = value
    return protobuf.encode(sorted(f.items()))


def test_forgeries_are_rejected() -> None:
    k, pid = _key()
    env = seal_peer_record(k, PeerRecord(pid, 1, (Multiaddr("/ip4/192.0.2.1/tcp/1"),)))
    f = protobuf.fields_by_number(env)
    payload, sig = f[3][0], f[5][0]
    assert isinstance(payload, bytes) and isinstance(sig, bytes)
    mallory, mallory_id = _key()
    # another address list under the original signature
    forged = PeerRecord(pid, 2, (Multiaddr("/ip4/203.0.113.9/tcp/1"),)).encode()
    with pytest.raises(PeerRecordError, match="signature"):
        open_peer_record(_reseal(env, payload=forged))
    # a flipped signature bit
    with pytest.raises(PeerRecordError, match="signature"):
        open_peer_record(_reseal(env, sig=bytes([sig[0] ^ 1]) + sig[1:]))
    # mallory signs a record that names pid: the key does not derive the record's peer id
    rec_for_pid = PeerRecord(pid, 3, ()).encode()
    from fastp2p.proto.peer_record import _signing_buffer

    msig = mallory.sign(_signing_buffer(PEER_RECORD_PAYLOAD_TYPE, rec_for_pid))
    with pytest.raises(PeerRecordError, match="another peer"):
        open_peer_record(_reseal(env, key=mallory.public_key().to_protobuf(), payload=rec_for_pid, sig=msig))
    # a signature made for another domain/type does not pass as a peer record
    with pytest.raises(PeerRecordError, match="payload type"):
        open_peer_record(_reseal(env, type=b"/libp2p/routing-state-record"))
    for bad in (b"", b"\x0a\xff", b"\x0a\x00\x12\x02\x03\x01\x1a\x00\x2a\x00"):
        with pytest.raises(PeerRecordError):
            open_peer_record(bad)
    assert mallory_id != pid


def test_addresses_are_bounded_and_bad_ones_skipped() -> None:
    k, pid = _key()
    addrs = tuple(Multiaddr(f"/ip4/10.0.0.1/tcp/{1000 + i}") for i in range(MAX_RECORD_ADDRS + 10))
    rec = PeerRecord(pid, 1, addrs)
    env = seal_peer_record(k, rec)
    assert open_peer_record(env).addrs == addrs[:MAX_RECORD_ADDRS]
    # an undecodable address among good ones: skipped, the record stands
    payload = protobuf.encode(
        [(1, pid.to_bytes()), (2, 7), (3, protobuf.encode([(1, b"\xff\xff\xff")])),
         (3, protobuf.encode([(1, Multiaddr("/ip4/10.0.0.2/tcp/1").to_bytes())]))]
    )
    assert [str(a) for a in PeerRecord.decode(payload).addrs] == ["/ip4/10.0.0.2/tcp/1"]
