"""noise-libp2p XX handshake, driven in memory without an event loop."""

from __future__ import annotations

import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.errors import HandshakeError, LocalProtocolError, PeerIDMismatchError
from fastp2p.peer import (
    ECDSAPrivateKey,
    Ed25519PrivateKey,
    PeerID,
    RSAPrivateKey,
    Secp256k1PrivateKey,
)
from fastp2p.proto.noise.handshake import (
    PROTOCOL_NAME,
    SIGNATURE_PREFIX,
    NoiseHandshake,
    SymmetricState,
    XXHandshakeState,
)
from fastp2p.proto.noise.payload_pb import NoiseExtensions, NoiseHandshakePayload

ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()


def pair(**kw):
    init_kw = {k[2:]: v for k, v in kw.items() if k.startswith("i_")}
    resp_kw = {k[2:]: v for k, v in kw.items() if k.startswith("r_")}
    i = NoiseHandshake(initiator=True, identity=init_kw.pop("identity", ALICE), **init_kw)
    r = NoiseHandshake(initiator=False, identity=resp_kw.pop("identity", BOB), **resp_kw)
    return i, r


def run(i: NoiseHandshake, r: NoiseHandshake) -> None:
    for _ in range(4):
        data = i.data_to_send()
        if data:
            r.receive_data(data)
        data = r.data_to_send()
        if data:
            i.receive_data(data)


def frames(data: bytes) -> list[bytes]:
    out = []
    while data:
        n = int.from_bytes(data[:2], "big")
        out.append(data[2 : 2 + n])
        data = data[2 + n :]
    return out


def nonce(n: int) -> bytes:
    return b"\x00" * 4 + n.to_bytes(8, "little")


def check_keys(i: NoiseHandshake, r: NoiseHandshake) -> None:
    i_send, i_recv = i.split()
    r_send, r_recv = r.split()
    assert i_send == r_recv and i_recv == r_send and i_send != i_recv
    assert len(i_send) == 32
    ct = ChaCha20Poly1305(i_send).encrypt(nonce(0), b"hello", None)
    assert ChaCha20Poly1305(r_recv).decrypt(nonce(0), ct, None) == b"hello"


def test_protocol_name_is_exactly_hashlen() -> None:
    assert len(PROTOCOL_NAME) == 32
    assert SymmetricState().h == PROTOCOL_NAME


def test_full_handshake() -> None:
    i, r = pair(i_muxers=["/yamux/1.0.0", "/mplex/6.7.0"], r_muxers=["/yamux/1.0.0"])
    m1 = i.data_to_send()
    assert len(m1) == 2 + 32  # -> e, empty payload, unencrypted
    r.receive_data(m1)
    assert not r.done
    m2 = r.data_to_send()
    i.receive_data(m2)
    assert i.done
    m3 = i.data_to_send()
    r.receive_data(m3)
    assert r.done
    assert i.remote_peer == PeerID.from_public_key(BOB.public_key())
    assert r.remote_peer == PeerID.from_public_key(ALICE.public_key())
    assert i.remote_public_key == BOB.public_key()
    assert i.remote_muxers == ("/yamux/1.0.0",)
    assert r.remote_muxers == ("/yamux/1.0.0", "/mplex/6.7.0")
    assert i.handshake_hash == r.handshake_hash
    assert i.remote_static_key == r.local_static_key
    check_keys(i, r)


def test_no_muxers_means_no_extensions() -> None:
    i, r = pair()
    run(i, r)
    assert i.remote_muxers == () and i.remote_extensions is None
    check_keys(i, r)


@pytest.mark.parametrize(
    "key_factory",
    [Secp256k1PrivateKey.generate, ECDSAPrivateKey.generate, lambda: RSAPrivateKey.generate(2048)],
    ids=["secp256k1", "ecdsa", "rsa"],
)
def test_other_identity_key_types(key_factory) -> None:
    key = key_factory()
    i, r = pair(i_identity=key, r_identity=Ed25519PrivateKey.generate())
    run(i, r)
    assert r.remote_peer == PeerID.from_public_key(key.public_key())
    i, r = pair(r_identity=key, i_expected_peer=PeerID.from_public_key(key.public_key()))
    run(i, r)
    assert i.remote_peer == PeerID.from_public_key(key.public_key())


def test_every_split_point() -> None:
    i, r = pair(i_muxers=["/yamux/1.0.0"])
    m1 = i.data_to_send()
    for k in range(len(m1) + 1):
        probe = NoiseHandshake(initiator=False, identity=BOB)
        probe.receive_data(m1[:k])
        assert (probe.data_to_send() != b"") == (k == len(m1))
        probe.receive_data(m1[k:])
    r.receive_data(m1)
    m2 = r.data_to_send()
    for k in range(len(m2) + 1):
        i2, r2 = pair(i_ephemeral_key=EPH_I, r_ephemeral_key=EPH_R, i_static_key=S_I, r_static_key=S_R)
        r2.receive_data(i2.data_to_send())
        msg2 = r2.data_to_send()
        i2.receive_data(msg2[:k])
        assert i2.done == (k == len(msg2))
        i2.receive_data(msg2[k:])
        assert i2.done
        msg3 = i2.data_to_send() + b"\x00\x05trans"
        r2.receive_data(msg3[:k])
        r2.receive_data(msg3[k:])
        assert r2.done
        assert r2.unused_data() == b"\x00\x05trans"
        check_keys(i2, r2)


EPH_I = X25519PrivateKey.from_private_bytes(bytes(range(32)))
EPH_R = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
S_I = X25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
S_R = X25519PrivateKey.from_private_bytes(bytes(range(3, 35)))


def test_byte_by_byte() -> None:
    i, r = pair()
    for _ in range(3):
        for src, dst in ((i, r), (r, i)):
            for b in src.data_to_send():
                dst.receive_data(bytes([b]))
    assert i.done and r.done
    check_keys(i, r)


def test_transport_bytes_after_msg3_are_unused() -> None:
    i, r = pair()
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    send_key, _ = i.split()
    ct = ChaCha20Poly1305(send_key).encrypt(nonce(0), b"early app data", None)
    r.receive_data(i.data_to_send() + len(ct).to_bytes(2, "big") + ct)
    assert r.done
    tail = r.unused_data()
    _, recv_key = r.split()
    assert ChaCha20Poly1305(recv_key).decrypt(nonce(0), tail[2:], None) == b"early app data"
    assert r.unused_data() == b""
    r.receive_data(b"later")
    assert r.unused_data() == b"later"


def test_deterministic_with_fixed_keys() -> None:
    def transcript():
        i, r = pair(i_ephemeral_key=EPH_I, r_ephemeral_key=EPH_R, i_static_key=S_I, r_static_key=S_R)
        m1 = i.data_to_send()
        r.receive_data(m1)
        m2 = r.data_to_send()
        i.receive_data(m2)
        return m1, i.handshake_hash
    a, b = transcript(), transcript()
    assert a[0] == b[0] and a[1] == b[1]


@pytest.mark.parametrize("stage", [1, 2, 3])
@pytest.mark.parametrize("where", ["start", "middle", "end"])
def test_tampered_message(stage: int, where: str) -> None:
    i, r = pair()
    data = i.data_to_send()

    def tamper(d: bytes) -> bytes:
        body = bytearray(d[2:])
        pos = {"start": 0, "middle": len(body) // 2, "end": len(body) - 1}[where]
        body[pos] ^= 0x01
        return d[:2] + bytes(body)

    if stage == 1:
        # message 1 is the bare ephemeral key: a flipped bit changes DH results,
        # so the failure surfaces when the responder's message 2 is read.
        r.receive_data(tamper(data))
        with pytest.raises(HandshakeError):
            i.receive_data(r.data_to_send())
        return
    r.receive_data(data)
    data = r.data_to_send()
    if stage == 2:
        with pytest.raises(HandshakeError):
            i.receive_data(tamper(data))
        assert not i.done and i.remote_peer is None
        with pytest.raises(HandshakeError):
            i.receive_data(b"")
        return
    i.receive_data(data)
    with pytest.raises(HandshakeError):
        r.receive_data(tamper(i.data_to_send()))
    assert not r.done and r.remote_muxers == ()
    with pytest.raises(LocalProtocolError):
        r.split()


class WrongSigner:
    """An identity that signs the wrong bytes."""

    def __init__(self, key) -> None:
        self._key = key

    def public_key(self):
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data + b"x")


class ImpostorSigner(WrongSigner):
    """Claims BOB's identity key but signs with another key."""

    def public_key(self):
        return BOB.public_key()

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(data)


@pytest.mark.parametrize("signer", [WrongSigner, ImpostorSigner])
def test_bad_signature_responder(signer) -> None:
    i, r = pair(r_identity=signer(Ed25519PrivateKey.generate()))
    r.receive_data(i.data_to_send())
    with pytest.raises(HandshakeError, match="signature"):
        i.receive_data(r.data_to_send())


def test_bad_signature_initiator() -> None:
    i, r = pair(i_identity=WrongSigner(ALICE))
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    with pytest.raises(HandshakeError, match="signature"):
        r.receive_data(i.data_to_send())


def _handshake_with_payload(payload: bytes) -> None:
    i = NoiseHandshake(initiator=True, identity=ALICE)
    r = NoiseHandshake(initiator=False, identity=BOB)
    r._our_payload = lambda: payload  # type: ignore[method-assign]
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"\xff\xff\xff",
        NoiseHandshakePayload(identity_key=b"", identity_sig=b"x").encode(),
        NoiseHandshakePayload(identity_key=b"\x08\x09\x12\x00", identity_sig=b"x").encode(),
        NoiseHandshakePayload(identity_key=BOB.public_key().to_protobuf(), identity_sig=b"").encode(),
        NoiseHandshakePayload(identity_key=BOB.public_key().to_protobuf(), identity_sig=b"\x00" * 64).encode(),
    ],
    ids=["empty", "garbage", "no-key", "bad-key", "no-sig", "zero-sig"],
)
def test_malformed_payload(payload: bytes) -> None:
    with pytest.raises(HandshakeError):
        _handshake_with_payload(payload)


def test_expected_peer() -> None:
    bob_id = PeerID.from_public_key(BOB.public_key())
    i, r = pair(i_expected_peer=bob_id)
    run(i, r)
    assert i.remote_peer == bob_id
    other = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    i, r = pair(i_expected_peer=other)
    r.receive_data(i.data_to_send())
    with pytest.raises(PeerIDMismatchError) as info:
        i.receive_data(r.data_to_send())
    assert info.value.expected == other and info.value.actual == bob_id
    assert i.data_to_send() == b""  # message 3 never sent
    assert i.remote_peer is None


def test_responder_expected_peer_mismatch() -> None:
    other = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    i, r = pair(r_expected_peer=other)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    with pytest.raises(PeerIDMismatchError):
        r.receive_data(i.data_to_send())


def test_truncated_stays_incomplete() -> None:
    i, r = pair()
    r.receive_data(i.data_to_send())
    m2 = r.data_to_send()
    i.receive_data(m2[:-1])
    assert not i.done and i.data_to_send() == b""
    i.receive_data(b"")
    assert not i.done
    i.receive_data(m2[-1:])
    assert i.done
    # a length announcing 65535 bytes with only part of them also waits
    r2 = NoiseHandshake(initiator=False, identity=BOB)
    r2.receive_data(b"\xff\xff" + b"\x00" * 1000)
    assert not r2.done and r2.data_to_send() == b""


def test_malformed_frames() -> None:
    r = NoiseHandshake(initiator=False, identity=BOB)
    with pytest.raises(HandshakeError):
        r.receive_data(b"\x00\x00")  # empty message
    r = NoiseHandshake(initiator=False, identity=BOB)
    with pytest.raises(HandshakeError):
        r.receive_data(b"\x00\x10" + b"\x01" * 16)  # shorter than an ephemeral key
    i = NoiseHandshake(initiator=True, identity=ALICE)
    i.data_to_send()
    with pytest.raises(HandshakeError):
        i.receive_data(b"\x00\x20" + b"\x09" * 32)  # message 2 without s and payload
    i = NoiseHandshake(initiator=True, identity=ALICE)
    with pytest.raises(HandshakeError):
        i.receive_data(b"\xff\xff" + b"\x09" * 65535)  # max-size garbage


_P25519 = 2**255 - 19
# Curve25519 points of small order (u-coordinates, and their non-canonical forms)
_LOW_ORDER_U = [0, 1, _P25519 - 1, _P25519, _P25519 + 1,
                325606250916557431795983626356110631294008115727848805560023387167927233504,
                39382357235489614581723060781553021112529911719440698176882885853963445705823]


@pytest.mark.parametrize("u", _LOW_ORDER_U)
def test_low_order_ephemeral_rejected(u: int) -> None:
    r = NoiseHandshake(initiator=False, identity=BOB)
    with pytest.raises(HandshakeError, match="invalid X25519 public key"):
        r.receive_data(b"\x00\x20" + u.to_bytes(32, "little"))


@pytest.mark.parametrize("u", _LOW_ORDER_U)
def test_low_order_static_key_rejected(u: int) -> None:
    """The initiator's static key comes encrypted in message 3: a low-order one
    fails the responder's se before any payload is looked at."""
    from fastp2p.proto.noise.handshake import _dh

    with pytest.raises(HandshakeError, match="invalid X25519 public key"):
        _dh(bytes(range(32)), u.to_bytes(32, "little"))


def test_dh_refuses_a_key_of_the_wrong_length() -> None:
    # libsodium would read 32 bytes from whatever it is given
    from fastp2p.proto.noise.handshake import _dh

    for n in (0, 31, 33):
        with pytest.raises(HandshakeError):
            _dh(bytes(32), b"\x09" * n)


def test_raw_key_pairs_match_cryptography_and_give_the_same_secret() -> None:
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

    from fastp2p.proto.noise.handshake import _dh, _raw_pair, new_x25519_key

    a, b = new_x25519_key(), new_x25519_key()
    assert a != b and len(a[0]) == len(a[1]) == 32
    ca = X25519PrivateKey.from_private_bytes(a[0])
    assert ca.public_key().public_bytes_raw() == a[1]  # same clamping, same public key
    assert _raw_pair(ca) == a
    assert _dh(a[0], b[1]) == _dh(b[0], a[1]) == ca.exchange(X25519PublicKey.from_public_bytes(b[1]))
    with pytest.raises(ValueError):
        _raw_pair((a[0], a[1][:31]))


def test_oversize_outgoing_payload() -> None:
    with pytest.raises(LocalProtocolError):
        i, r = pair(r_muxers=["/m" + "x" * 1000] * 70)
        r.receive_data(i.data_to_send())


def test_split_before_done() -> None:
    i, _ = pair()
    with pytest.raises(LocalProtocolError):
        i.split()
    with pytest.raises(LocalProtocolError):
        _ = i.handshake_hash


def test_signature_covers_static_key() -> None:
    i, r = pair()
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    pk = i.remote_public_key
    assert pk is not None
    # the responder's payload signature is over prefix || responder static key
    sig = BOB.sign(SIGNATURE_PREFIX + r.local_static_key)
    assert pk.verify(sig, SIGNATURE_PREFIX + r.local_static_key)


def test_payload_roundtrip() -> None:
    p = NoiseHandshakePayload(
        identity_key=b"k",
        identity_sig=b"s",
        extensions=NoiseExtensions(webtransport_certhashes=[b"h1"], stream_muxers=["/yamux/1.0.0"]),
    )
    assert NoiseHandshakePayload.decode(p.encode()) == p
    # unknown fields are skipped
    assert NoiseHandshakePayload.decode(p.encode() + b"\x18\x01") == p


def test_xx_state_matches_manual_transcript() -> None:
    """Recompute h after message 1 by hand: h = SHA256(SHA256(name || prologue) ...)."""
    st_i = XXHandshakeState(initiator=True, static_key=S_I, ephemeral_key=EPH_I)
    m1 = st_i.write_message(b"")
    e_pub = m1[:32]
    h0 = PROTOCOL_NAME
    h1 = hashlib.sha256(h0 + b"").digest()  # MixHash(empty prologue)
    h2 = hashlib.sha256(h1 + e_pub).digest()
    h3 = hashlib.sha256(h2 + b"").digest()  # EncryptAndHash(empty payload) without key
    assert st_i.ss.h == h3


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_receive_only_handshake_errors(data: bytes, initiator: bool) -> None:
    hs = NoiseHandshake(initiator=initiator, identity=ALICE)
    try:
        hs.receive_data(data)
    except HandshakeError:
        pass


@settings(max_examples=100, deadline=None)
@given(st.binary(min_size=1, max_size=200))
def test_fuzz_message2_tail(tail: bytes) -> None:
    i, r = pair()
    r.receive_data(i.data_to_send())
    m2 = r.data_to_send()
    body = m2[2 : 2 + 32] + tail
    try:
        i.receive_data(len(body).to_bytes(2, "big") + body)
    except HandshakeError:
        pass
    assert not i.done


def _run(i: NoiseHandshake, r: NoiseHandshake) -> None:
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())


def test_reused_static_key_payload_is_remembered_but_still_checked():
    """A host that reuses one static key sends the same payload each time: it is
    encoded once and authenticated once, but the expected PeerID is checked on
    every handshake, and another identity's payload is verified afresh."""
    from fastp2p.proto.noise.handshake import sign_static_key

    static = X25519PrivateKey.generate()
    sig = sign_static_key(BOB, static.public_key().public_bytes_raw())
    bob_id = PeerID.from_public_key(BOB.public_key())
    kw = {"static_key": static, "static_signature": sig}
    i, r = pair(i_expected_peer=bob_id, **{"r_" + k: v for k, v in kw.items()})
    _run(i, r)
    assert i.done and i.remote_peer == bob_id
    payloads = set()
    for _ in range(2):  # the same payload bytes again (remembered), same result
        i, r = pair(i_expected_peer=bob_id, **{"r_" + k: v for k, v in kw.items()})
        _run(i, r)
        assert i.remote_peer == bob_id
        payloads.add(r._our_payload())  # noqa: SLF001 - the cached encoding
    assert len(payloads) == 1
    # remembered or not, a handshake expecting someone else fails
    i, r = pair(i_expected_peer=PeerID.from_public_key(ALICE.public_key()),
                **{"r_" + k: v for k, v in kw.items()})
    r.receive_data(i.data_to_send())
    with pytest.raises(PeerIDMismatchError):
        i.receive_data(r.data_to_send())
    # a signature over this static key by another identity is not taken from the memo
    forged = sign_static_key(ALICE, static.public_key().public_bytes_raw())
    i, r = pair(r_identity=BOB, r_static_key=static, r_static_signature=forged)
    r.receive_data(i.data_to_send())
    with pytest.raises(HandshakeError):  # IdentityProofError: BOB's key, ALICE's signature
        i.receive_data(r.data_to_send())
