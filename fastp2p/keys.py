"""libp2p keys (specs/libp2p-peer-ids.md, "Keys"): the four key types and their protobufs.

Rules
-----
- Keys cross the I/O boundary only as the libp2p ``PublicKey``/``PrivateKey``
  protobufs: field 1 ``KeyType`` (RSA=0, Ed25519=1, Secp256k1=2, ECDSA=3),
  field 2 ``Data``. Encoding is deterministic (tag order, minimal varints,
  both fields present); decoding rejects duplicate, missing or extra fields and
  any ``Data`` whose canonical re-encoding differs, so that a key always maps
  to exactly one PeerID (:mod:`fastp2p.peer`).
- ``verify`` never raises for a bad signature or malformed signature bytes; it
  returns False. Ed25519 signs the message itself; secp256k1 and ECDSA sign its
  SHA-256 with DER-encoded signatures; RSA uses PKCS#1 v1.5 with SHA-256.
- RSA keys must have 2048..8192 bits (go-libp2p's bounds).

Theory of operation
-------------------
Every public key class keeps the canonical ``Data`` bytes (``raw``) plus the
``cryptography`` object used to verify. Private keys exist for our own
identity and for tests; only Ed25519 is used for a host identity by default.
All cryptography is done by the ``cryptography`` package, except Ed25519
verification: libsodium (through PyNaCl) checks a signature in ~35 us where
OpenSSL 3 takes ~80, and every handshake (each side verifies the other's
signature over its Noise key) and every signed record or pubsub message waits
for one. libsodium is the stricter of the two (it also rejects small-order R);
no honest signature differs.
"""

from __future__ import annotations

import functools
import os
import tempfile
from typing import TYPE_CHECKING, ClassVar

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from nacl.bindings import crypto_sign_open as _sodium_sign_open
from nacl.exceptions import CryptoError as _SodiumError

from fastp2p.errors import InvalidKeyError, ProtobufError
from fastp2p.proto import protobuf

if TYPE_CHECKING:  # PeerID (fastp2p.peer) is derived from keys; import it lazily
    from fastp2p.peer import PeerID

__all__ = [
    "KeyType",
    "PublicKey",
    "PrivateKey",
    "Ed25519PublicKey",
    "Ed25519PrivateKey",
    "Secp256k1PublicKey",
    "Secp256k1PrivateKey",
    "ECDSAPublicKey",
    "ECDSAPrivateKey",
    "RSAPublicKey",
    "RSAPrivateKey",
    "public_key_from_protobuf",
    "private_key_from_protobuf",
    "MAX_INLINE_KEY_LENGTH",
]


class KeyType:
    """libp2p ``KeyType`` enum values."""

    RSA = 0
    ED25519 = 1
    SECP256K1 = 2
    ECDSA = 3


MAX_INLINE_KEY_LENGTH = 42
MIN_RSA_BITS = 2048
MAX_RSA_BITS = 8192
_ECDSA_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)


@functools.lru_cache(maxsize=256)
def _encode_key_pb(key_type: int, data: bytes) -> bytes:
    # cached: a host encodes its own public key several times per handshake
    return protobuf.encode([(1, key_type), (2, data)])


def _decode_key_pb(data: bytes, what: str) -> tuple[int, bytes]:
    """Strictly decode a ``PublicKey``/``PrivateKey`` message into ``(type, data)``."""
    try:
        entries = protobuf.decode(data)
    except ProtobufError as exc:
        raise InvalidKeyError(f"malformed {what} protobuf: {exc}") from exc
    if (
        len(entries) != 2
        or entries[0][:2] != (1, protobuf.WIRE_VARINT)
        or entries[1][:2] != (2, protobuf.WIRE_BYTES)
    ):
        raise InvalidKeyError(f"{what} protobuf must hold exactly Type (1) then Data (2)")
    key_type, body = entries[0][2], entries[1][2]
    assert isinstance(key_type, int) and isinstance(body, bytes)
    if _encode_key_pb(key_type, body) != bytes(data):
        raise InvalidKeyError(f"{what} protobuf is not deterministically encoded")
    return key_type, body


# -- public keys ---------------------------------------------------------------


class PublicKey:
    """A libp2p public key; compare and hash by ``(key_type, raw)``."""

    key_type: ClassVar[int]
    __slots__ = ("_raw",)
    _raw: bytes

    @property
    def raw(self) -> bytes:
        """The canonical ``Data`` field bytes of this key."""
        return self._raw

    def verify(self, signature: bytes, data: bytes) -> bool:  # pragma: no cover - abstract
        """Return True iff ``signature`` is a valid signature of ``data``; never raises."""
        raise NotImplementedError

    def to_protobuf(self) -> bytes:
        """The deterministic libp2p ``PublicKey`` protobuf."""
        return _encode_key_pb(self.key_type, self._raw)

    def to_peer_id(self) -> PeerID:
        """The PeerID this key derives."""
        from fastp2p.peer import PeerID

        return PeerID.from_public_key(self)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PublicKey):
            return NotImplemented
        return self.key_type == other.key_type and self._raw == other._raw

    def __hash__(self) -> int:
        return hash((self.key_type, self._raw))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self._raw.hex()})"


class Ed25519PublicKey(PublicKey):
    """Ed25519 public key: ``Data`` is the 32-byte public key."""

    key_type = KeyType.ED25519
    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != 32:
            raise InvalidKeyError(f"Ed25519 public key must be 32 bytes, got {len(raw)}")
        try:
            self._key = ed25519.Ed25519PublicKey.from_public_bytes(raw)
        except ValueError as exc:
            raise InvalidKeyError(f"invalid Ed25519 public key: {exc}") from exc
        self._raw = raw

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ed25519PublicKey:
        """Build from the 32 raw public key bytes."""
        return cls(raw)

    def to_bytes(self) -> bytes:
        """The 32 raw public key bytes."""
        return self._raw

    def verify(self, signature: bytes, data: bytes) -> bool:
        if _ed25519_small_order(self._raw):
            # A small-order key "verifies" crafted signatures over any message.
            return False
        try:
            sig = bytes(signature)
            if len(sig) != 64:
                return False
            # libsodium (see the module docstring): signature + message, checked
            _sodium_sign_open(sig + bytes(data), self._raw)
        except (_SodiumError, ValueError, TypeError):
            return False
        return True


_ED25519_P = 2**255 - 19


#: y of every Ed25519 point of order dividing 8: 1 (order 1), -1 (order 2),
#: 0 (order 4) and the two of order 8; the x sign bit does not change the order
_ED25519_SMALL_Y = frozenset((
    0,
    1,
    _ED25519_P - 1,
    int.from_bytes(bytes.fromhex("26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05"), "little"),
    int.from_bytes(bytes.fromhex("c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a"), "little"),
))


def _ed25519_small_order(raw: bytes) -> bool:
    """True iff the encoded point has order dividing 8 (or is not canonical).

    A set lookup (libsodium's blacklist, by y): it runs on every handshake's
    signature check, where an X25519 round to derive the same answer cost
    ~100 us. tests/test_peer.py checks it against that derivation.
    """
    y = int.from_bytes(raw, "little") & ((1 << 255) - 1)
    return y >= _ED25519_P or y in _ED25519_SMALL_Y


def _ec_verify(key: ec.EllipticCurvePublicKey, signature: bytes, data: bytes) -> bool:
    try:
        key.verify(bytes(signature), bytes(data), ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


class Secp256k1PublicKey(PublicKey):
    """secp256k1 public key: ``Data`` is the 33-byte compressed SEC1 point."""

    key_type = KeyType.SECP256K1
    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        if len(raw) != 33 or raw[0] not in (2, 3):
            raise InvalidKeyError("secp256k1 public key must be a 33-byte compressed point")
        try:
            self._key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256K1(), raw)
        except (ValueError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError(f"invalid secp256k1 public key: {exc}") from exc
        self._raw = raw

    def verify(self, signature: bytes, data: bytes) -> bool:
        return _ec_verify(self._key, signature, data)


class ECDSAPublicKey(PublicKey):
    """ECDSA public key on P-256/P-384/P-521: ``Data`` is PKIX (SubjectPublicKeyInfo) DER."""

    key_type = KeyType.ECDSA
    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        key = _load_pkix(raw, "ECDSA")
        if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(
            key.curve, _ECDSA_CURVES
        ):
            raise InvalidKeyError("ECDSA public key must be on P-256, P-384 or P-521")
        _check_canonical(key, raw, "ECDSA")
        self._key = key
        self._raw = raw

    def verify(self, signature: bytes, data: bytes) -> bool:
        return _ec_verify(self._key, signature, data)


class RSAPublicKey(PublicKey):
    """RSA public key (2048..8192 bits): ``Data`` is PKIX (SubjectPublicKeyInfo) DER."""

    key_type = KeyType.RSA
    __slots__ = ("_key",)

    def __init__(self, raw: bytes) -> None:
        raw = bytes(raw)
        key = _load_pkix(raw, "RSA")
        if not isinstance(key, rsa.RSAPublicKey):
            raise InvalidKeyError("RSA key type carries a non-RSA key")
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise InvalidKeyError(f"RSA key size {key.key_size} outside 2048..8192 bits")
        _check_canonical(key, raw, "RSA")
        self._key = key
        self._raw = raw

    def verify(self, signature: bytes, data: bytes) -> bool:
        try:
            self._key.verify(bytes(signature), bytes(data), padding.PKCS1v15(), hashes.SHA256())
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


def _pkix(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def _load_pkix(raw: bytes, what: str) -> object:
    """Parse SubjectPublicKeyInfo DER; the caller checks the key's type."""
    try:
        return serialization.load_der_public_key(raw)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InvalidKeyError(f"invalid {what} public key DER: {exc}") from exc


def _check_canonical(key: ec.EllipticCurvePublicKey | rsa.RSAPublicKey, raw: bytes, what: str) -> None:
    # Two encodings of one key would give one key two PeerIDs: accept only DER
    # exactly as re-encoded.
    if _pkix(key) != raw:
        raise InvalidKeyError(f"{what} public key DER is not canonical")


_PUBLIC_KEY_CLASSES: dict[int, type[PublicKey]] = {
    KeyType.RSA: RSAPublicKey,
    KeyType.ED25519: Ed25519PublicKey,
    KeyType.SECP256K1: Secp256k1PublicKey,
    KeyType.ECDSA: ECDSAPublicKey,
}


def public_key_from_protobuf(data: bytes) -> PublicKey:
    """Decode a libp2p ``PublicKey`` protobuf.

    Raises:
        InvalidKeyError: malformed protobuf, unknown key type or invalid key bytes.
    """
    key_type, body = _decode_key_pb(bytes(data), "PublicKey")
    cls = _PUBLIC_KEY_CLASSES.get(key_type)
    if cls is None:
        raise InvalidKeyError(f"unsupported key type {key_type}")
    return cls(body)  # type: ignore[call-arg]


# -- private keys --------------------------------------------------------------


class PrivateKey:
    """A libp2p private key (our own identity, or a test key)."""

    key_type: ClassVar[int]

    def public_key(self) -> PublicKey:  # pragma: no cover - abstract
        """The matching public key."""
        raise NotImplementedError

    def sign(self, data: bytes) -> bytes:  # pragma: no cover - abstract
        """Sign ``data`` as the key type's libp2p rules say."""
        raise NotImplementedError

    def _data(self) -> bytes:  # pragma: no cover - abstract
        raise NotImplementedError

    def to_protobuf(self) -> bytes:
        """The libp2p ``PrivateKey`` protobuf (the on-disk key format)."""
        return _encode_key_pb(self.key_type, self._data())

    @classmethod
    def from_protobuf(cls, data: bytes) -> PrivateKey:
        """Decode a ``PrivateKey`` protobuf of this class's key type.

        Raises:
            InvalidKeyError: malformed, or a different key type than ``cls``.
        """
        key = private_key_from_protobuf(data)
        if cls is not PrivateKey and not isinstance(key, cls):
            raise InvalidKeyError(f"expected a {cls.__name__}, got {type(key).__name__}")
        return key

    def peer_id(self) -> PeerID:
        """The PeerID of the matching public key."""
        from fastp2p.peer import PeerID

        return PeerID.from_public_key(self.public_key())

    def save(self, path: str | os.PathLike[str]) -> None:
        """Atomically write the ``PrivateKey`` protobuf to ``path`` with mode 0600."""
        path = os.fspath(path)
        directory = os.path.dirname(os.path.abspath(path))
        fd, tmp = tempfile.mkstemp(prefix=".fastp2p-key-", dir=directory)
        try:
            os.fchmod(fd, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(self.to_protobuf())
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PrivateKey:
        """Read a key written by :meth:`save` (or go/js libp2p's key files).

        Raises:
            OSError: the file cannot be read.
            InvalidKeyError: its content is not a valid key of this class.
        """
        with open(path, "rb") as f:
            return cls.from_protobuf(f.read())

    def __repr__(self) -> str:
        return f"<{type(self).__name__} of {self.peer_id()}>"


class Ed25519PrivateKey(PrivateKey):
    """Ed25519 private key; ``Data`` is ``seed || public`` (64 bytes) as go and js write it."""

    key_type = KeyType.ED25519
    __slots__ = ("_key", "_seed", "_public")

    def __init__(self, key: ed25519.Ed25519PrivateKey) -> None:
        self._key = key
        self._seed = key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )
        self._public = Ed25519PublicKey(
            key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    @classmethod
    def generate(cls) -> Ed25519PrivateKey:
        """A fresh random key."""
        return cls(ed25519.Ed25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> Ed25519PrivateKey:
        """Build from the 32-byte seed."""
        raw = bytes(raw)
        if len(raw) != 32:
            raise InvalidKeyError(f"Ed25519 seed must be 32 bytes, got {len(raw)}")
        return cls(ed25519.Ed25519PrivateKey.from_private_bytes(raw))

    @classmethod
    def _from_data(cls, data: bytes) -> Ed25519PrivateKey:
        # 32: bare seed; 64: seed||pub (preferred); 96: seed||pub||pub (old go format).
        if len(data) == 96:
            if data[32:64] != data[64:]:
                raise InvalidKeyError("96-byte Ed25519 private key with mismatched public keys")
            data = data[:64]
        if len(data) not in (32, 64):
            raise InvalidKeyError(
                f"Ed25519 private key data must be 32/64/96 bytes, got {len(data)}"
            )
        key = cls.from_bytes(data[:32])
        if len(data) == 64 and data[32:] != key._public.raw:
            raise InvalidKeyError("Ed25519 private key's public half does not match its seed")
        return key

    def to_bytes(self) -> bytes:
        """The 32-byte seed."""
        return self._seed

    def public_key(self) -> Ed25519PublicKey:
        return self._public

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data))

    def _data(self) -> bytes:
        return self._seed + self._public.raw

    @classmethod
    def from_protobuf(cls, data: bytes) -> Ed25519PrivateKey:
        key = super().from_protobuf(data)
        assert isinstance(key, Ed25519PrivateKey)
        return key

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Ed25519PrivateKey:
        key = super().load(path)
        assert isinstance(key, Ed25519PrivateKey)
        return key


class Secp256k1PrivateKey(PrivateKey):
    """secp256k1 private key; ``Data`` is the 32-byte big-endian scalar."""

    key_type = KeyType.SECP256K1
    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> Secp256k1PrivateKey:
        return cls(ec.generate_private_key(ec.SECP256K1()))

    @classmethod
    def _from_data(cls, data: bytes) -> Secp256k1PrivateKey:
        if len(data) != 32:
            raise InvalidKeyError(f"secp256k1 private key must be 32 bytes, got {len(data)}")
        try:
            return cls(ec.derive_private_key(int.from_bytes(data, "big"), ec.SECP256K1()))
        except ValueError as exc:
            raise InvalidKeyError(f"invalid secp256k1 private key: {exc}") from exc

    def public_key(self) -> Secp256k1PublicKey:
        return Secp256k1PublicKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.CompressedPoint
            )
        )

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data), ec.ECDSA(hashes.SHA256()))

    def _data(self) -> bytes:
        return self._key.private_numbers().private_value.to_bytes(32, "big")


class ECDSAPrivateKey(PrivateKey):
    """ECDSA private key (P-256/384/521); ``Data`` is SEC1 ``ECPrivateKey`` DER as go writes it."""

    key_type = KeyType.ECDSA
    __slots__ = ("_key",)

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, curve: ec.EllipticCurve | None = None) -> ECDSAPrivateKey:
        return cls(ec.generate_private_key(curve or ec.SECP256R1()))

    @classmethod
    def _from_data(cls, data: bytes) -> ECDSAPrivateKey:
        try:
            key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError(f"invalid ECDSA private key DER: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(
            key.curve, _ECDSA_CURVES
        ):
            raise InvalidKeyError("ECDSA private key must be on P-256, P-384 or P-521")
        return cls(key)

    def public_key(self) -> ECDSAPublicKey:
        return ECDSAPublicKey(_pkix(self._key.public_key()))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data), ec.ECDSA(hashes.SHA256()))

    def _data(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


class RSAPrivateKey(PrivateKey):
    """RSA private key; ``Data`` is PKCS#1 ``RSAPrivateKey`` DER."""

    key_type = KeyType.RSA
    __slots__ = ("_key",)

    def __init__(self, key: rsa.RSAPrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls, bits: int = 2048) -> RSAPrivateKey:
        return cls(rsa.generate_private_key(public_exponent=65537, key_size=bits))

    @classmethod
    def _from_data(cls, data: bytes) -> RSAPrivateKey:
        try:
            key = serialization.load_der_private_key(data, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise InvalidKeyError(f"invalid RSA private key DER: {exc}") from exc
        if not isinstance(key, rsa.RSAPrivateKey):
            raise InvalidKeyError("RSA key type carries a non-RSA key")
        if not MIN_RSA_BITS <= key.key_size <= MAX_RSA_BITS:
            raise InvalidKeyError(f"RSA key size {key.key_size} outside 2048..8192 bits")
        return cls(key)

    def public_key(self) -> RSAPublicKey:
        return RSAPublicKey(_pkix(self._key.public_key()))

    def sign(self, data: bytes) -> bytes:
        return self._key.sign(bytes(data), padding.PKCS1v15(), hashes.SHA256())

    def _data(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )


_PRIVATE_KEY_CLASSES: dict[int, type] = {
    KeyType.RSA: RSAPrivateKey,
    KeyType.ED25519: Ed25519PrivateKey,
    KeyType.SECP256K1: Secp256k1PrivateKey,
    KeyType.ECDSA: ECDSAPrivateKey,
}


def private_key_from_protobuf(data: bytes) -> PrivateKey:
    """Decode a libp2p ``PrivateKey`` protobuf of any supported type.

    Raises:
        InvalidKeyError: malformed protobuf, unknown type or invalid key bytes.
    """
    key_type, body = _decode_key_pb(bytes(data), "PrivateKey")
    cls = _PRIVATE_KEY_CLASSES.get(key_type)
    if cls is None:
        raise InvalidKeyError(f"unsupported key type {key_type}")
    key: PrivateKey = cls._from_data(body)  # type: ignore[attr-defined]
    return key
