"""noise-libp2p handshake: ``Noise_XX_25519_ChaChaPoly_SHA256``, sans-IO.

Rules
-----
- libp2p noise spec: the protocol name is ``Noise_XX_25519_ChaChaPoly_SHA256``
  and the prologue is empty. The name is exactly HASHLEN (32) bytes long, so
  per Noise spec 5.2 ``InitializeSymmetric`` it is zero-padded (here: used
  as-is), not hashed, to form ``h``.
- XX pattern (Noise spec 7.5)::

      -> e
      <- e, ee, s, es
      -> s, se

- The responder's libp2p payload travels in message 2, the initiator's in
  message 3; message 1 carries an empty payload (a payload there is read and
  ignored: it is neither encrypted nor authenticated).
- The payload is a ``NoiseHandshakePayload`` whose ``identity_sig`` signs
  ``b"noise-libp2p-static-key:" + static X25519 public key`` with the libp2p
  identity key. A bad signature, an undecodable key or payload, a failed AEAD
  tag or a malformed message raise :class:`~fastp2p.errors.HandshakeError`;
  an authenticated peer other than ``expected_peer`` raises
  :class:`~fastp2p.errors.PeerIDMismatchError`.
- libp2p noise spec: handshake messages are framed with a 16-bit big-endian
  length, so a message is at most 65535 bytes. An empty frame is malformed.
- After a failure every further ``receive_data`` raises HandshakeError again.

Theory of operation
-------------------
Initiator::

    construct: queue msg1 -> AWAIT_MSG2 --msg2 (verify responder)--> queue msg3, DONE

Responder::

    AWAIT_MSG1 --msg1--> queue msg2 -> AWAIT_MSG3 --msg3 (verify initiator)--> DONE

Transport cipher negotiation (fastp2p extension)
------------------------------------------------
The handshake itself is always ``Noise_XX_25519_ChaChaPoly_SHA256`` (the
libp2p spec, byte for byte). Between two fastp2p peers the *transport*
cipher may then be AES-256-GCM (Noise spec 12.4 ``AESGCM``), agreed inside
the handshake, so it costs no round trip and changes nothing for others:

- ``NoiseExtensions`` carries a fastp2p-only field ``fastp2p_ciphers``
  (number 26224; other implementations skip it as an unknown protobuf field):
  the sender's transport ciphers in preference order.
- The responder lists its ciphers in message 2 when it has any besides
  ``ChaChaPoly``. The initiator lists its own in message 3 only if the
  responder listed some, so a fastp2p dialer never sends the field to
  another implementation. (A fastp2p *listener* cannot know who dials it, so
  its message 2 carries the field to everyone; it is inert there.)
- Choice: the first entry of the initiator's list that the responder also
  lists; ``ChaChaPoly`` when either list is absent or they share nothing.
  Both lists travel encrypted and are mixed into ``h``, so an attacker can
  neither read nor downgrade them.
- ``ChaChaPoly`` keys are the plain Noise ``Split()`` (libp2p-compatible).
  Any other cipher ``C`` uses ``HKDF(ck, b"fastp2p/noise-transport/" + C + h)``
  (Noise spec 4.3 HKDF, two outputs, initiator->responder first): a distinct
  label, so two peers that disagreed on the cipher fail on the first frame
  instead of talking with one key under two ciphers.

Implementation
--------------
:class:`SymmetricState` and :class:`CipherState` follow Noise spec sections
5.1/5.2 literally; :class:`XXHandshakeState` runs the XX pattern for any
prologue and payload (so the cacophony test vectors can drive it), and
:class:`NoiseHandshake` adds libp2p framing and payload authentication.
Bytes that arrive behind the final handshake message are transport frames;
:meth:`NoiseHandshake.unused_data` returns them for the transport decryptor.
"""

from __future__ import annotations

import collections
import enum
import hashlib
import hmac
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305
from nacl.bindings import crypto_scalarmult, crypto_scalarmult_base, randombytes
from nacl.exceptions import CryptoError

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import (
    HandshakeError,
    IdentityProofError,
    LocalProtocolError,
    PeerIDMismatchError,
    ProtobufError,
)
from fastp2p.proto.noise.payload_pb import NoiseExtensions, NoiseHandshakePayload

if TYPE_CHECKING:
    from fastp2p.peer import PeerID, PublicKey

__all__ = [
    "PROTOCOL_ID",
    "PROTOCOL_NAME",
    "SIGNATURE_PREFIX",
    "MAX_MESSAGE_LENGTH",
    "CipherState",
    "SymmetricState",
    "XXHandshakeState",
    "NoiseHandshake",
    "X25519Key",
    "new_x25519_key",
    "sign_static_key",
    "noise_hkdf2",
]

PROTOCOL_ID = "/noise"
PROTOCOL_NAME = b"Noise_XX_25519_ChaChaPoly_SHA256"
#: the libp2p transport cipher; always acceptable, needs no negotiation
DEFAULT_CIPHER = "ChaChaPoly"
#: label of the transport-key derivation for negotiated non-default ciphers
CIPHER_KDF_LABEL = b"fastp2p/noise-transport/"
SIGNATURE_PREFIX = b"noise-libp2p-static-key:"
MAX_MESSAGE_LENGTH = 65535
DHLEN = 32
HASHLEN = 32
TAGLEN = 16
_MAX_NONCE = 2**64 - 1


#: how many authenticated (payload, static key) pairs are remembered
VERIFIED_MEMO_SIZE = 512
# Authenticating a payload (decode it, parse the identity key, check the signature
# over the static key, derive the PeerID) is a pure function of the payload bytes
# and the static key; peers that keep one static key per host (js-libp2p,
# fastp2p) present the same pair on every connection, so a bounded memo of
# successes saves that work (a signature check above all) per handshake.
_VERIFIED: collections.OrderedDict[tuple[bytes, bytes], tuple[Any, Any, Any]] = collections.OrderedDict()
#: encoded handshake payloads of hosts that reuse one static key (see _our_payload)
_PAYLOADS: dict[tuple[Any, ...], bytes] = {}
_PAYLOADS_MAX = 64


def sign_static_key(identity: Any, static_public: bytes) -> bytes:
    """The libp2p identity signature over a Noise static public key."""
    sig: bytes = identity.sign(SIGNATURE_PREFIX + static_public)
    return sig


def _hash(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


#: the HKDF kernel's signature: ``(chaining_key, ikm) -> (out1, out2)``
Hkdf = Callable[[bytes, bytes], "tuple[bytes, bytes]"]


def noise_hkdf2(chaining_key: bytes, ikm: bytes) -> tuple[bytes, bytes]:
    """Noise spec 4.3 HKDF with two outputs (not RFC 5869's info form).

    The pure twin of ``fastp2p._accel.noise_hkdf2`` (the native one is what the
    upgrader injects: ``hkdf=`` of the classes below)."""
    temp = hmac.digest(chaining_key, ikm, "sha256")
    out1 = hmac.digest(temp, b"\x01", "sha256")
    out2 = hmac.digest(temp, out1 + b"\x02", "sha256")
    return out1, out2


#: an X25519 key as the handshake takes it: ``cryptography``'s private key object,
#: or the raw (private, public) pair that :func:`new_x25519_key` makes
X25519Key = X25519PrivateKey | tuple[bytes, bytes]


def new_x25519_key() -> tuple[bytes, bytes]:
    """A fresh X25519 key pair, raw (private, public).

    libsodium's fixed-base multiplication makes it in about half the time of
    ``X25519PrivateKey.generate()`` (17 against 33 us here), and every handshake
    makes one.
    """
    priv = randombytes(DHLEN)
    return priv, crypto_scalarmult_base(priv)


def _raw_pair(key: X25519Key) -> tuple[bytes, bytes]:
    if isinstance(key, tuple):
        priv, pub = key
        if len(priv) != DHLEN or len(pub) != DHLEN:
            raise ValueError("an X25519 key pair is two 32-byte strings")
        return key
    return key.private_bytes_raw(), key.public_key().public_bytes_raw()


def _dh(priv: bytes, pub: bytes) -> bytes:
    # (libsodium reads 32 bytes whatever it is given: the length is checked here)
    if len(pub) != DHLEN:
        raise HandshakeError(f"invalid X25519 public key: {len(pub)} bytes")
    try:
        return crypto_scalarmult(priv, pub)
    except CryptoError as exc:
        # libsodium rejects low-order points (an all-zero shared secret)
        raise HandshakeError("invalid X25519 public key: a low-order point") from exc


class CipherState:
    """Noise spec 5.1: a key (maybe empty) and a 64-bit nonce.

    ``cipher`` is ``"ChaChaPoly"`` (libp2p) or ``"AESGCM"`` (test vectors).
    """

    __slots__ = ("_aead", "cipher", "key", "n")

    def __init__(self, key: bytes | None = None, cipher: str = DEFAULT_CIPHER) -> None:
        if cipher not in ("ChaChaPoly", "AESGCM"):
            raise ValueError(f"unknown Noise cipher {cipher!r}")
        self.cipher = cipher
        self.key: bytes | None = None
        self._aead: ChaCha20Poly1305 | AESGCM | None = None
        self.n = 0
        if key is not None:
            self.initialize_key(key)

    def initialize_key(self, key: bytes) -> None:
        """InitializeKey(k): sets the key and resets the nonce."""
        self.key = key
        self._aead = AESGCM(key) if self.cipher == "AESGCM" else ChaCha20Poly1305(key)
        self.n = 0

    def has_key(self) -> bool:
        """HasKey()."""
        return self._aead is not None

    def _nonce(self) -> bytes:
        # Noise spec 12.3 ChaChaPoly: 32 bits of zeros then the 64-bit little-endian nonce;
        # 12.4 AESGCM: 32 bits of zeros then the 64-bit big-endian nonce.
        if self.n >= _MAX_NONCE:
            raise HandshakeError("nonce exhausted")
        if self.cipher == "AESGCM":
            return b"\x00\x00\x00\x00" + self.n.to_bytes(8, "big")
        return b"\x00\x00\x00\x00" + self.n.to_bytes(8, "little")

    def encrypt_with_ad(self, ad: bytes, plaintext: bytes) -> bytes:
        """EncryptWithAd; the identity function while no key is set."""
        if self._aead is None:
            return plaintext
        out = self._aead.encrypt(self._nonce(), plaintext, ad)
        self.n += 1
        return out

    def decrypt_with_ad(self, ad: bytes, ciphertext: bytes) -> bytes:
        """DecryptWithAd.

        Raises:
            HandshakeError: the tag did not verify (the nonce is not advanced).
        """
        if self._aead is None:
            return ciphertext
        try:
            out = self._aead.decrypt(self._nonce(), ciphertext, ad)
        except InvalidTag as exc:
            raise HandshakeError("handshake message failed authentication") from exc
        self.n += 1
        return out


class SymmetricState:
    """Noise spec 5.2: chaining key ``ck``, handshake hash ``h`` and a CipherState."""

    __slots__ = ("_hkdf", "ck", "cs", "h")

    def __init__(self, protocol_name: bytes = PROTOCOL_NAME, hkdf: Hkdf = noise_hkdf2) -> None:
        self._hkdf = hkdf
        if len(protocol_name) <= HASHLEN:
            self.h = protocol_name.ljust(HASHLEN, b"\x00")
        else:
            self.h = _hash(protocol_name)
        self.ck = self.h
        # the cipher named in the protocol name (Noise spec 8: Noise_XX_25519_<cipher>_SHA256)
        self.cs = CipherState(cipher="AESGCM" if b"_AESGCM_" in protocol_name else DEFAULT_CIPHER)

    def mix_key(self, ikm: bytes) -> None:
        """MixKey(input_key_material)."""
        self.ck, temp_k = self._hkdf(self.ck, ikm)
        self.cs.initialize_key(temp_k)

    def mix_hash(self, data: bytes) -> None:
        """MixHash(data): h = HASH(h || data)."""
        self.h = _hash(self.h + data)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        """EncryptAndHash(plaintext)."""
        ct = self.cs.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ct)
        return ct

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        """DecryptAndHash(ciphertext); raises HandshakeError on a bad tag."""
        pt = self.cs.decrypt_with_ad(self.h, ciphertext)
        self.mix_hash(ciphertext)
        return pt

    def split(self) -> tuple[bytes, bytes]:
        """Split(): the two transport keys (initiator->responder, responder->initiator)."""
        return self._hkdf(self.ck, b"")

    def derive(self, ikm: bytes) -> tuple[bytes, bytes]:
        """HKDF(ck, ikm) with two outputs, leaving the state unchanged: keys bound
        to this handshake for another use (the fastp2p cipher's transport keys)."""
        return self._hkdf(self.ck, ikm)


class XXHandshakeState:
    """Noise spec 5.3 HandshakeState specialised to the XX pattern.

    ``write_message``/``read_message`` must alternate as the pattern dictates
    (initiator writes messages 0 and 2, reads 1; the responder the opposite).
    """

    def __init__(
        self,
        *,
        initiator: bool,
        static_key: X25519Key,
        ephemeral_key: X25519Key | None = None,
        prologue: bytes = b"",
        protocol_name: bytes = PROTOCOL_NAME,
        hkdf: Hkdf = noise_hkdf2,
    ) -> None:
        self.initiator = initiator
        self.ss = SymmetricState(protocol_name, hkdf)
        self.ss.mix_hash(prologue)
        self.s, self.s_pub = _raw_pair(static_key)
        self._e: bytes | None = None
        self._e_pub = b""
        if ephemeral_key is not None:
            self._e, self._e_pub = _raw_pair(ephemeral_key)
        self.re: bytes | None = None
        self.rs: bytes | None = None
        self.message_index = 0

    def _new_ephemeral(self) -> bytes:
        if self._e is None:
            self._e, self._e_pub = new_x25519_key()
        e_pub = self._e_pub
        self.ss.mix_hash(e_pub)
        return e_pub

    @property
    def finished(self) -> bool:
        """True after all three messages."""
        return self.message_index >= 3

    def write_message(self, payload: bytes) -> bytes:
        """Produce the next handshake message carrying ``payload``.

        Raises:
            LocalProtocolError: it is not our turn to write.
        """
        idx = self.message_index
        if idx >= 3 or (idx % 2 == 0) != self.initiator:
            raise LocalProtocolError(f"not our turn to write handshake message {idx + 1}")
        out = bytearray()
        if idx == 0:  # -> e
            out += self._new_ephemeral()
        elif idx == 1:  # <- e, ee, s, es
            assert self.re is not None
            out += self._new_ephemeral()
            assert self._e is not None
            self.ss.mix_key(_dh(self._e, self.re))
            out += self.ss.encrypt_and_hash(self.s_pub)
            self.ss.mix_key(_dh(self.s, self.re))
        else:  # -> s, se
            assert self.re is not None
            out += self.ss.encrypt_and_hash(self.s_pub)
            self.ss.mix_key(_dh(self.s, self.re))
        out += self.ss.encrypt_and_hash(payload)
        self.message_index += 1
        return bytes(out)

    def read_message(self, message: bytes) -> bytes:
        """Consume the peer's next handshake message; returns its payload.

        Raises:
            HandshakeError: too short, invalid key or failed authentication.
            LocalProtocolError: it is not the peer's turn.
        """
        idx = self.message_index
        if idx >= 3 or (idx % 2 == 1) != self.initiator:
            raise LocalProtocolError(f"not the peer's turn for handshake message {idx + 1}")
        pos = 0
        if idx in (0, 1):  # e
            if len(message) < DHLEN:
                raise HandshakeError(f"handshake message {idx + 1} too short")
            self.re = bytes(message[:DHLEN])
            self.ss.mix_hash(self.re)
            pos = DHLEN
        if idx == 1:  # ee, s, es (as initiator)
            assert self._e is not None
            self.ss.mix_key(_dh(self._e, self.re))  # type: ignore[arg-type]
            if len(message) - pos < DHLEN + TAGLEN:
                raise HandshakeError("handshake message 2 too short")
            self.rs = self.ss.decrypt_and_hash(bytes(message[pos : pos + DHLEN + TAGLEN]))
            pos += DHLEN + TAGLEN
            self.ss.mix_key(_dh(self._e, self.rs))
        elif idx == 2:  # s, se (as responder)
            if len(message) < DHLEN + TAGLEN:
                raise HandshakeError("handshake message 3 too short")
            self.rs = self.ss.decrypt_and_hash(bytes(message[: DHLEN + TAGLEN]))
            pos = DHLEN + TAGLEN
            assert self._e is not None
            self.ss.mix_key(_dh(self._e, self.rs))
        rest = bytes(message[pos:])
        if self.ss.cs.has_key() and len(rest) < TAGLEN:
            raise HandshakeError(f"handshake message {idx + 1} too short for its payload")
        payload = self.ss.decrypt_and_hash(rest)
        self.message_index += 1
        return payload


class _Stage(enum.Enum):
    RUNNING = "running"
    DONE = "done"
    FAILED = "failed"


class NoiseHandshake:
    """libp2p Noise XX handshake for one connection, sans-IO.

    Args:
        initiator: True on the dialing side.
        identity: the libp2p identity private key (``.public_key()``, ``.sign()``).
        expected_peer: when dialling ``/p2p/<id>``, the PeerID that must answer.
        muxers: stream muxers to offer through the early-negotiation extension
            (omitted from the payload when empty).
        ciphers: transport ciphers in preference order for the fastp2p-only
            negotiation (see "Transport cipher negotiation"); not sent at all
            when it names nothing but ``ChaChaPoly``.
        static_key: the Noise static X25519 key (an ``X25519PrivateKey`` or a raw
            pair from :func:`new_x25519_key`); a fresh one by default.
        static_signature: ``identity``'s signature over
            ``SIGNATURE_PREFIX + static public key`` (see :func:`sign_static_key`),
            for a host that reuses one static key: saves a signature per handshake.
        ephemeral_key: the ephemeral key to use (fixed ones for test vectors;
            the upgrader passes keys made ahead of time): never reuse one.
        webtransport_certhashes: extension field for WebTransport.
        hkdf: the Noise HKDF kernel (the upgrader passes the native
            ``fastp2p._accel.noise_hkdf2``; this module's pure twin by default).

    Outputs: :meth:`data_to_send` (framed handshake messages), then after
    ``done`` :meth:`split`, :meth:`unused_data` and the ``remote_*`` attributes.
    """

    def __init__(
        self,
        *,
        initiator: bool,
        identity: Any,
        expected_peer: PeerID | None = None,
        muxers: Sequence[str] = (),
        ciphers: Sequence[str] = (),
        static_key: X25519Key | None = None,
        static_signature: bytes | None = None,
        ephemeral_key: X25519Key | None = None,
        webtransport_certhashes: Sequence[bytes] = (),
        hkdf: Hkdf = noise_hkdf2,
    ) -> None:
        if static_signature is not None and static_key is None:
            raise ValueError("static_signature needs the static_key it signs")
        self.initiator = initiator
        self._static_sig = static_signature
        self._identity = identity
        self._expected_peer = expected_peer
        self._muxers = tuple(muxers)
        self._ciphers = tuple(ciphers)
        #: the remote's ``fastp2p_ciphers`` (empty: not a fastp2p peer, or none offered)
        self.remote_ciphers: tuple[str, ...] = ()
        #: the transport cipher agreed (``ChaChaPoly`` unless both ends negotiated another)
        self.transport_cipher = DEFAULT_CIPHER
        self._certhashes = tuple(webtransport_certhashes)
        self._state = XXHandshakeState(
            initiator=initiator,
            static_key=static_key or new_x25519_key(),
            ephemeral_key=ephemeral_key,
            hkdf=hkdf,
        )
        self._stage = _Stage.RUNNING
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._unused = bytearray()
        self._keys: tuple[bytes, bytes] | None = None
        self.remote_public_key: PublicKey | None = None
        self.remote_peer: PeerID | None = None
        self.remote_static_key: bytes | None = None
        self.remote_muxers: tuple[str, ...] = ()
        self.remote_extensions: NoiseExtensions | None = None
        self._handshake_hash: bytes | None = None
        if initiator:
            # -> e (empty payload: extensions only go where secrecy is guaranteed)
            self._send(self._state.write_message(b""))

    # -- outputs -------------------------------------------------------------

    @property
    def done(self) -> bool:
        """True once the handshake completed and the peer is authenticated."""
        return self._stage is _Stage.DONE

    @property
    def local_static_key(self) -> bytes:
        """Our Noise static X25519 public key."""
        return self._state.s_pub

    @property
    def handshake_hash(self) -> bytes:
        """The final ``h`` (channel binding value).

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if self._handshake_hash is None:
            raise LocalProtocolError("handshake not complete")
        return self._handshake_hash

    def data_to_send(self) -> bytes:
        """Framed handshake bytes to write now (drains the buffer)."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def unused_data(self) -> bytes:
        """Bytes that followed the last handshake message: transport frames
        for the decryptor (drained on each call)."""
        out = bytes(self._unused)
        self._unused.clear()
        return out

    def split(self) -> tuple[bytes, bytes]:
        """``(send_key, recv_key)``: 32-byte keys for the transport CipherStates.

        Noise spec 5.2 Split: the first key encrypts initiator-to-responder
        traffic. Both CipherStates start at nonce 0.

        Raises:
            LocalProtocolError: the handshake is not complete.
        """
        if self._keys is None:
            raise LocalProtocolError("handshake not complete")
        k1, k2 = self._keys
        if self.transport_cipher != DEFAULT_CIPHER:
            assert self._handshake_hash is not None
            label = CIPHER_KDF_LABEL + self.transport_cipher.encode("ascii")
            k1, k2 = self._state.ss.derive(label + self._handshake_hash)
        return (k1, k2) if self.initiator else (k2, k1)

    # -- input ---------------------------------------------------------------

    def receive_data(self, data: ReadableBuffer) -> None:
        """Feed bytes read from the connection; partial frames are buffered.

        Raises:
            HandshakeError: malformed message, failed decryption, bad key or
                signature (also on any call after a failure).
            PeerIDMismatchError: the peer authenticated as another PeerID.
        """
        if self._stage is _Stage.FAILED:
            raise HandshakeError("handshake already failed")
        if self._stage is _Stage.DONE:
            self._unused += data
            return
        self._inbuf += data
        try:
            while self._stage is _Stage.RUNNING and len(self._inbuf) >= 2:
                # libp2p noise spec: 16-bit big-endian length prefix, max 65535.
                length = int.from_bytes(self._inbuf[:2], "big")
                if length == 0:
                    raise HandshakeError("empty handshake message")
                if len(self._inbuf) < 2 + length:
                    break
                message = bytes(self._inbuf[2 : 2 + length])
                del self._inbuf[: 2 + length]
                self._handle(message)
        except BaseException:
            self._stage = _Stage.FAILED
            self._discard_remote()
            raise
        if self._stage is _Stage.DONE:
            self._unused += self._inbuf
            self._inbuf.clear()

    # -- internals -----------------------------------------------------------

    def _send(self, message: bytes) -> None:
        if len(message) > MAX_MESSAGE_LENGTH:
            raise LocalProtocolError(f"handshake message of {len(message)} bytes exceeds 65535")
        self._outbuf += len(message).to_bytes(2, "big") + message

    def _discard_remote(self) -> None:
        # libp2p noise spec: early data MUST be discarded if the handshake fails.
        self.remote_muxers = ()
        self.remote_ciphers = ()
        self.transport_cipher = DEFAULT_CIPHER
        self.remote_extensions = None
        self.remote_peer = None
        self.remote_public_key = None
        self._keys = None

    def _our_payload(self) -> bytes:
        ext = None
        ciphers: list[str] = []
        if any(c != DEFAULT_CIPHER for c in self._ciphers) and (
            not self.initiator or self.remote_ciphers
        ):
            # the initiator answers only a fastp2p responder that offered ciphers
            ciphers = list(self._ciphers)
        # With a reused static key (its signature given) the payload is the same
        # bytes on every connection: encode it once. The signature names the
        # identity and the static key, the rest of the key names the extensions.
        memo = None
        if self._static_sig is not None:
            memo = (self._static_sig, self._muxers, self._certhashes, tuple(ciphers))
            cached = _PAYLOADS.get(memo)
            if cached is not None:
                return cached
        if self._muxers or self._certhashes or ciphers:
            ext = NoiseExtensions(
                webtransport_certhashes=list(self._certhashes),
                stream_muxers=list(self._muxers),
                fastp2p_ciphers=ciphers,
            )
        sig = self._static_sig or sign_static_key(self._identity, self._state.s_pub)
        out = NoiseHandshakePayload(
            identity_key=self._identity.public_key().to_protobuf(),
            identity_sig=sig,
            extensions=ext,
        ).encode()
        if memo is not None:
            if len(_PAYLOADS) >= _PAYLOADS_MAX:
                _PAYLOADS.clear()
            _PAYLOADS[memo] = out
        return out

    def _handle(self, message: bytes) -> None:
        idx = self._state.message_index
        if self.initiator:
            if idx != 1:
                raise HandshakeError(f"unexpected handshake message at step {idx + 1}")
            payload = self._state.read_message(message)
            self._authenticate(payload)
            self._send(self._state.write_message(self._our_payload()))
            self._finish()
        elif idx == 0:
            self._state.read_message(message)  # payload of message 1 is ignored
            self._send(self._state.write_message(self._our_payload()))
        elif idx == 2:
            payload = self._state.read_message(message)
            self._authenticate(payload)
            self._finish()
        else:  # pragma: no cover - the loop stops at DONE
            raise HandshakeError("unexpected handshake message")

    def _authenticate(self, payload: bytes) -> None:
        rs = self._state.rs
        assert rs is not None
        memo = (payload, rs)
        known = _VERIFIED.get(memo)
        if known is not None:
            _VERIFIED.move_to_end(memo)
            public_key, peer, extensions = known
        else:
            public_key, peer, extensions = self._verify_payload(payload, rs)
            _VERIFIED[memo] = (public_key, peer, extensions)
            if len(_VERIFIED) > VERIFIED_MEMO_SIZE:
                _VERIFIED.popitem(last=False)
        if self._expected_peer is not None and peer != self._expected_peer:
            raise PeerIDMismatchError(self._expected_peer, peer)
        self.remote_public_key = public_key
        self.remote_peer = peer
        self.remote_static_key = rs
        self.remote_extensions = extensions
        if extensions is not None:
            self.remote_muxers = tuple(extensions.stream_muxers)
            self.remote_ciphers = tuple(extensions.fastp2p_ciphers)

    @staticmethod
    def _verify_payload(payload: bytes, rs: bytes) -> tuple[PublicKey, PeerID, NoiseExtensions | None]:
        from fastp2p.peer import PeerID, public_key_from_protobuf

        try:
            decoded = NoiseHandshakePayload.decode(payload)
        except ProtobufError as exc:
            raise HandshakeError(f"malformed handshake payload: {exc}") from exc
        if not decoded.identity_key or not decoded.identity_sig:
            raise HandshakeError("handshake payload lacks identity key or signature")
        try:
            public_key = public_key_from_protobuf(decoded.identity_key)
        except Exception as exc:  # InvalidKeyError, or whatever a key parser raises
            raise IdentityProofError(f"bad identity key in handshake payload: {exc}") from exc
        try:
            valid = public_key.verify(decoded.identity_sig, SIGNATURE_PREFIX + rs)
        except Exception as exc:  # a verifier must never let the peer crash us
            raise IdentityProofError(f"identity signature check failed: {exc}") from exc
        if not valid:
            raise IdentityProofError("identity signature does not cover the Noise static key")
        return public_key, PeerID.from_public_key(public_key), decoded.extensions

    def _choose_cipher(self) -> str:
        ours = self._ciphers if any(c != DEFAULT_CIPHER for c in self._ciphers) else ()
        if not ours or not self.remote_ciphers:
            return DEFAULT_CIPHER
        initiator, responder = (ours, self.remote_ciphers) if self.initiator else (
            self.remote_ciphers,
            ours,
        )
        for c in initiator:
            if c in responder:
                return c
        return DEFAULT_CIPHER

    def _finish(self) -> None:
        self.transport_cipher = self._choose_cipher()
        self._keys = self._state.ss.split()
        self._handshake_hash = self._state.ss.h
        self._stage = _Stage.DONE
