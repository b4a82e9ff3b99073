"""libp2p peer identities (specs/libp2p-peer-ids.md, "Peer Ids").

A PeerID is a multihash of the encoded public key (:mod:`fastp2p.keys`):
identity when the protobuf is at most 42 bytes, sha2-256 otherwise. Only these
two multihash functions are accepted (as rust-libp2p does). Text forms: the
legacy base58btc multihash and the CIDv1 ``libp2p-key`` form.

The key classes are re-exported here, where they have always been importable
from (``from fastp2p.peer import Ed25519PrivateKey``).
"""

from __future__ import annotations

import functools

from fastp2p.errors import InvalidKeyError
from fastp2p.keys import (
    MAX_INLINE_KEY_LENGTH,
    ECDSAPrivateKey,
    ECDSAPublicKey,
    Ed25519PrivateKey,
    Ed25519PublicKey,
    KeyType,
    PrivateKey,
    PublicKey,
    RSAPrivateKey,
    RSAPublicKey,
    Secp256k1PrivateKey,
    Secp256k1PublicKey,
    private_key_from_protobuf,
    public_key_from_protobuf,
)
from fastp2p.multibase import (
    IDENTITY,
    LIBP2P_KEY,
    SHA2_256,
    b58decode,
    b58encode,
    cid_v1_decode,
    cid_v1_encode,
    multihash_decode,
    multihash_digest,
)

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
    "PeerID",
    "MAX_INLINE_KEY_LENGTH",
]


# -- peer ids ------------------------------------------------------------------


@functools.total_ordering
class PeerID:
    """An immutable libp2p peer identity: a multihash of the peer's public key.

    Equality, hashing and ordering use the multihash bytes. ``str()`` is the
    legacy base58btc form, which the spec says to display.
    """

    __slots__ = ("_bytes", "_b58")
    _bytes: bytes
    _b58: str | None

    def __init__(self, multihash: bytes) -> None:
        """Wrap multihash bytes (see :meth:`from_bytes`).

        Raises:
            InvalidKeyError: not an identity (<= 42 bytes) or sha2-256 multihash.
        """
        mh = bytes(multihash)
        try:
            code, digest, _ = multihash_decode(mh)
        except ValueError as exc:
            raise InvalidKeyError(f"peer id is not a valid multihash: {exc}") from exc
        if code == IDENTITY:
            if len(digest) > MAX_INLINE_KEY_LENGTH:
                raise InvalidKeyError(
                    f"identity peer id of {len(digest)} bytes exceeds {MAX_INLINE_KEY_LENGTH}"
                )
        elif code != SHA2_256:
            raise InvalidKeyError(f"peer id uses unsupported multihash function 0x{code:x}")
        object.__setattr__(self, "_bytes", mh)
        object.__setattr__(self, "_b58", None)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("PeerID is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("PeerID is immutable")

    def __reduce__(self) -> tuple[type[PeerID], tuple[bytes]]:
        return (type(self), (self._bytes,))

    @classmethod
    def from_bytes(cls, multihash: bytes) -> PeerID:
        """Wrap the binary (multihash) form.

        Raises:
            InvalidKeyError: malformed multihash or unsupported hash function.
        """
        return cls(multihash)

    @classmethod
    def from_public_key(cls, key: PublicKey) -> PeerID:
        """Derive the PeerID of ``key`` (identity multihash iff its protobuf is <= 42 bytes)."""
        encoded = key.to_protobuf()
        code = IDENTITY if len(encoded) <= MAX_INLINE_KEY_LENGTH else SHA2_256
        return cls(multihash_digest(encoded, code))

    @classmethod
    def from_string(cls, text: str) -> PeerID:
        """Parse a base58btc multihash (``Qm...``, ``12D3KooW...``, ``16U...``) or a
        multibase CIDv1 with the ``libp2p-key`` codec (``bafz...``, ``k51...``).

        Raises:
            InvalidKeyError: anything else.
        """
        if not isinstance(text, str) or not text:
            raise InvalidKeyError("empty peer id string")
        if text[0] == "1" or text.startswith("Qm"):
            try:
                return cls(b58decode(text))
            except ValueError as exc:
                raise InvalidKeyError(f"invalid base58 peer id {text!r}: {exc}") from exc
        try:
            codec, mh = cid_v1_decode(text)
        except ValueError as exc:
            raise InvalidKeyError(f"invalid peer id {text!r}: {exc}") from exc
        if codec != LIBP2P_KEY:
            raise InvalidKeyError(f"CID codec 0x{codec:x} is not libp2p-key (0x72)")
        return cls(mh)

    def to_bytes(self) -> bytes:
        """The binary form (the multihash)."""
        return self._bytes

    def to_base58(self) -> str:
        """The legacy base58btc text form."""
        b58 = self._b58
        if b58 is None:
            b58 = b58encode(self._bytes)
            object.__setattr__(self, "_b58", b58)
        return b58

    def to_cid(self, base: str = "base32") -> str:
        """The CIDv1 ``libp2p-key`` text form (base32 by default)."""
        return cid_v1_encode(LIBP2P_KEY, self._bytes, base)

    def extract_public_key(self) -> PublicKey | None:
        """The public key inlined in an identity PeerID, or None for a sha2-256 one.

        Raises:
            InvalidKeyError: the inlined bytes are not a valid public key.
        """
        code, digest, _ = multihash_decode(self._bytes)
        if code != IDENTITY:
            return None
        return public_key_from_protobuf(digest)

    def matches_public_key(self, key: PublicKey) -> bool:
        """True iff ``key`` derives this PeerID."""
        return PeerID.from_public_key(key) == self

    def __str__(self) -> str:
        return self.to_base58()

    def __repr__(self) -> str:
        return f"PeerID({self.to_base58()!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, PeerID):
            return NotImplemented
        return self._bytes == other._bytes

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, PeerID):
            return NotImplemented
        return self._bytes < other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)
