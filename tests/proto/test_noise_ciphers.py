"""Noise transport ciphers: AESGCM against the cacophony vectors, and the
fastp2p-only transport-cipher negotiation inside the XX handshake."""

from __future__ import annotations

import json
import pathlib

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from fastp2p import _accel
from fastp2p.config import NoiseConfig
from fastp2p.errors import DecryptError
from fastp2p.peer import Ed25519PrivateKey
from fastp2p.proto.noise import cipher as pure_cipher
from fastp2p.proto.noise.handshake import NoiseHandshake, XXHandshakeState
from fastp2p.proto.noise.payload_pb import NoiseExtensions

VECTORS = pathlib.Path("/work/shared/specs/noise-xx-test-vectors.json")
if not VECTORS.exists():  # pragma: no cover - a checkout without the shared specs
    VECTORS = pathlib.Path(__file__).parent / "noise-xx-test-vectors.json"
ALICE = Ed25519PrivateKey.generate()
BOB = Ed25519PrivateKey.generate()
BOTH = ("AESGCM", "ChaChaPoly")


def _vectors() -> list[dict]:
    if not VECTORS.exists():
        return []
    return json.loads(VECTORS.read_text())["vectors"]


def _priv(h: str) -> X25519PrivateKey:
    return X25519PrivateKey.from_private_bytes(bytes.fromhex(h))


@pytest.mark.parametrize("vec", _vectors(), ids=lambda v: v["protocol_name"])
def test_cacophony_vector(vec: dict, impl) -> None:
    name = vec["protocol_name"].encode()
    cipher = "AESGCM" if b"_AESGCM_" in name else "ChaChaPoly"
    init = XXHandshakeState(
        initiator=True, static_key=_priv(vec["init_static"]),
        ephemeral_key=_priv(vec["init_ephemeral"]),
        prologue=bytes.fromhex(vec["init_prologue"]), protocol_name=name, hkdf=impl.noise_hkdf2,
    )
    resp = XXHandshakeState(
        initiator=False, static_key=_priv(vec["resp_static"]),
        ephemeral_key=_priv(vec["resp_ephemeral"]),
        prologue=bytes.fromhex(vec["resp_prologue"]), protocol_name=name, hkdf=impl.noise_hkdf2,
    )
    msgs = vec["messages"]
    for idx in range(3):
        w, r = (init, resp) if idx % 2 == 0 else (resp, init)
        payload = bytes.fromhex(msgs[idx]["payload"])
        ct = w.write_message(payload)
        assert ct.hex() == msgs[idx]["ciphertext"]
        assert r.read_message(ct) == payload
    assert init.ss.h.hex() == resp.ss.h.hex() == vec["handshake_hash"]
    k1, k2 = init.ss.split()
    # the handshake (its HKDF from ``impl``) and the transport messages: the fastp2p
    # transport CipherState (both twins), nonces from 0
    i_send, i_recv = impl.NoiseCipher(k1, 0, cipher), impl.NoiseCipher(k2, 0, cipher)
    r_send, r_recv = impl.NoiseCipher(k2, 0, cipher), impl.NoiseCipher(k1, 0, cipher)
    assert i_send.cipher == cipher
    for idx in range(3, len(msgs)):
        send, recv = (i_send, r_recv) if idx % 2 == 0 else (r_send, i_recv)
        payload = bytes.fromhex(msgs[idx]["payload"])
        ct = send.encrypt(payload)
        assert ct.hex() == msgs[idx]["ciphertext"]
        assert recv.decrypt(ct) == payload


def test_aesgcm_nonce_is_big_endian_and_frames_roundtrip(impl) -> None:
    key = bytes(range(32))
    c = impl.NoiseCipher(key, 258, "AESGCM")
    ct = c.encrypt(b"hello")
    assert ct == AESGCM(key).encrypt(b"\0" * 4 + (258).to_bytes(8, "big"), b"hello", None)
    data = bytes(range(256)) * 1000
    sealed = bytes(impl.NoiseCipher(key, 0, "AESGCM").seal_frames([data[:7], data[7:]]))
    assert sealed == bytes(_accel.pure.NoiseCipher(key, 0, "AESGCM").seal_frames([data[:7], data[7:]]))
    assert bytes(impl.NoiseCipher(key, 0, "AESGCM").open_frames(sealed)) == data
    with pytest.raises(DecryptError):
        impl.NoiseCipher(key, 0, "ChaChaPoly").open_frames(sealed)
    with pytest.raises(ValueError):
        impl.NoiseCipher(key, 0, "AES128")


def _pair(i_ciphers=(), r_ciphers=()):
    i = NoiseHandshake(initiator=True, identity=ALICE, muxers=["/yamux/1.0.0"], ciphers=i_ciphers)
    r = NoiseHandshake(initiator=False, identity=BOB, muxers=["/yamux/1.0.0"], ciphers=r_ciphers)
    r.receive_data(i.data_to_send())
    i.receive_data(r.data_to_send())
    r.receive_data(i.data_to_send())
    assert i.done and r.done
    return i, r


def _check(i: NoiseHandshake, r: NoiseHandshake, cipher: str) -> None:
    assert i.transport_cipher == r.transport_cipher == cipher
    i_send, i_recv = i.split()
    r_send, r_recv = r.split()
    assert i_send == r_recv and i_recv == r_send and i_send != i_recv
    ct = _accel.NoiseCipher(i_send, 0, cipher).seal_frames(b"x" * 100)
    assert bytes(_accel.NoiseCipher(r_recv, 0, cipher).open_frames(ct)) == b"x" * 100


def test_both_fastp2p_agree_on_aesgcm_with_distinct_keys() -> None:
    i, r = _pair(BOTH, BOTH)
    _check(i, r, "AESGCM")
    assert i.remote_ciphers == r.remote_ciphers == BOTH
    # not the plain Noise Split() keys: a distinct, labelled derivation
    assert i.split()[0] not in i._state.ss.split()


@pytest.mark.parametrize(
    "i_c, r_c, want",
    [
        (BOTH, (), "ChaChaPoly"),  # responder is not fastp2p (or offers nothing)
        ((), BOTH, "ChaChaPoly"),  # initiator is not fastp2p
        (("ChaChaPoly",), BOTH, "ChaChaPoly"),
        (("ChaChaPoly", "AESGCM"), ("AESGCM", "ChaChaPoly"), "ChaChaPoly"),  # initiator order wins
        (("AESGCM", "ChaChaPoly"), ("ChaChaPoly", "AESGCM"), "AESGCM"),
        (("AESGCM",), ("ChaChaPoly",), "ChaChaPoly"),
    ],
)
def test_choice(i_c, r_c, want) -> None:
    i, r = _pair(i_c, r_c)
    _check(i, r, want)
    if want == "ChaChaPoly":
        assert i.split() == (i._state.ss.split())  # the libp2p keys, unchanged


def test_dialer_never_sends_the_field_to_a_responder_without_it() -> None:
    # a responder that is not fastp2p (no fastp2p_ciphers): the initiator's
    # message 3 must be exactly what the libp2p spec describes
    i, r = _pair(BOTH, ())
    assert r.remote_ciphers == ()
    assert r.remote_extensions == NoiseExtensions(stream_muxers=["/yamux/1.0.0"])


def test_no_ciphers_means_libp2p_payload() -> None:
    i, r = _pair(("ChaChaPoly",), ("ChaChaPoly",))
    assert i.remote_extensions == NoiseExtensions(stream_muxers=["/yamux/1.0.0"])


def test_unknown_field_is_skipped_by_a_plain_protobuf_reader() -> None:
    ext = NoiseExtensions(stream_muxers=["/yamux/1.0.0"], fastp2p_ciphers=list(BOTH))
    assert NoiseExtensions.decode(ext.encode()) == ext
    # field 26224 is varint-tagged length-delimited: an unknown-field skipper handles it
    assert ext.encode().startswith(NoiseExtensions(stream_muxers=["/yamux/1.0.0"]).encode())


def test_usable_ciphers_drops_aesgcm_without_aes(monkeypatch) -> None:
    monkeypatch.setenv("FASTP2P_NOISE_AES", "0")
    assert pure_cipher.usable_ciphers(BOTH) == ("ChaChaPoly",)
    monkeypatch.setenv("FASTP2P_NOISE_AES", "1")
    assert pure_cipher.usable_ciphers(BOTH) == BOTH


def test_config_validates_ciphers() -> None:
    assert NoiseConfig().ciphers == BOTH
    with pytest.raises(ValueError):
        NoiseConfig(ciphers=("AES128",))


def test_chachapoly_reference_unchanged() -> None:
    key = bytes(32)
    assert _accel.NoiseCipher(key).cipher == "ChaChaPoly"
    assert _accel.NoiseCipher(key).encrypt(b"a") == ChaCha20Poly1305(key).encrypt(b"\0" * 12, b"a", None)
