"""Multiformats text and hash helpers: base58btc, base32, base36, multibase, multihash, CID.

Rules
-----
- Every decoder raises ``ValueError`` (never ``IndexError``/``KeyError``) on bad
  input, so callers can translate it into their own error type.
- base32 is RFC 4648 without padding; ``multibase_encode`` uses the lower-case
  alphabet (prefix ``b``) as the CID spec recommends, the decoder accepts both
  cases (``b``/``B``).
- Multihashes are ``<code uvarint><length uvarint><digest>``; ``multihash_decode``
  insists that the length matches the rest of the input exactly.
- CIDs here are version 1 only (``<0x01><codec uvarint><multihash>``); a CIDv0
  is a bare base58 sha2-256 multihash and is handled by the caller.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from fastp2p.errors import VarintError
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

__all__ = [
    "IDENTITY",
    "SHA2_256",
    "LIBP2P_KEY",
    "b58encode",
    "b58decode",
    "b32encode",
    "b32decode",
    "b36encode",
    "b36decode",
    "multibase_encode",
    "multibase_decode",
    "multihash_encode",
    "multihash_decode",
    "multihash_digest",
    "cid_v1_encode",
    "cid_v1_decode",
]

IDENTITY = 0x00
SHA2_256 = 0x12
LIBP2P_KEY = 0x72
CID_V1 = 0x01

_B58_ALPHABET = "123456789ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz"
_B58_INDEX = {c: i for i, c in enumerate(_B58_ALPHABET)}
_B36_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
_B36_INDEX = {c: i for i, c in enumerate(_B36_ALPHABET)}


def _encode_base_n(data: bytes, alphabet: str) -> str:
    """Big-integer base-N encoding with one leading zero digit per leading zero byte."""
    zeros = len(data) - len(data.lstrip(b"\0"))
    n = int.from_bytes(data, "big")
    base = len(alphabet)
    out: list[str] = []
    while n:
        n, r = divmod(n, base)
        out.append(alphabet[r])
    return alphabet[0] * zeros + "".join(reversed(out))


def _decode_base_n(text: str, index: dict[str, int], name: str) -> bytes:
    base = len(index)
    zero = next(c for c, i in index.items() if i == 0)
    zeros = len(text) - len(text.lstrip(zero))
    n = 0
    for pos, ch in enumerate(text):
        digit = index.get(ch)
        if digit is None:
            raise ValueError(f"invalid {name} character {ch!r} at position {pos}")
        n = n * base + digit
    body = n.to_bytes((n.bit_length() + 7) // 8, "big") if n else b""
    return b"\0" * zeros + body


def b58encode(data: bytes) -> str:
    """Encode bytes as base58btc (Bitcoin alphabet)."""
    return _encode_base_n(bytes(data), _B58_ALPHABET)


def b58decode(text: str) -> bytes:
    """Decode base58btc text; raises ``ValueError`` on a character outside the alphabet."""
    return _decode_base_n(text, _B58_INDEX, "base58btc")


def b36encode(data: bytes) -> str:
    """Encode bytes as lower-case base36."""
    return _encode_base_n(bytes(data), _B36_ALPHABET)


def b36decode(text: str) -> bytes:
    """Decode base36 text (either case)."""
    return _decode_base_n(text.lower(), _B36_INDEX, "base36")


def b32encode(data: bytes) -> str:
    """Encode bytes as RFC 4648 base32, lower case, no padding."""
    return base64.b32encode(bytes(data)).decode("ascii").rstrip("=").lower()


def b32decode(text: str) -> bytes:
    """Decode unpadded RFC 4648 base32 (either case, not mixed); raises ``ValueError``."""
    if text != text.lower() and text != text.upper():
        raise ValueError("mixed-case base32")
    if "=" in text:
        raise ValueError("padded base32 is not accepted")
    if len(text) % 8 in (1, 3, 6):
        raise ValueError(f"impossible base32 length {len(text)}")
    try:
        return base64.b32decode(text.upper() + "=" * (-len(text) % 8))
    except binascii.Error as exc:
        raise ValueError(f"invalid base32: {exc}") from exc


def _b64decode(text: str, altchars: bytes | None) -> bytes:
    if "=" in text:
        raise ValueError("padded base64 is not accepted")
    if len(text) % 4 == 1:
        raise ValueError(f"impossible base64 length {len(text)}")
    try:
        return base64.b64decode(text + "=" * (-len(text) % 4), altchars=altchars, validate=True)
    except binascii.Error as exc:
        raise ValueError(f"invalid base64: {exc}") from exc


def multibase_encode(data: bytes, base: str = "base32") -> str:
    """Encode ``data`` with a multibase prefix: ``base32`` (``b``), ``base58btc`` (``z``),
    ``base36`` (``k``), ``base16`` (``f``), ``base64`` (``m``) or ``base64url`` (``u``)."""
    data = bytes(data)
    if base == "base32":
        return "b" + b32encode(data)
    if base == "base58btc":
        return "z" + b58encode(data)
    if base == "base36":
        return "k" + b36encode(data)
    if base == "base16":
        return "f" + data.hex()
    if base == "base64":
        return "m" + base64.b64encode(data).decode("ascii").rstrip("=")
    if base == "base64url":
        return "u" + base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")
    raise ValueError(f"unsupported multibase {base!r}")


def multibase_decode(text: str) -> bytes:
    """Decode multibase text by its one-character prefix; raises ``ValueError``."""
    if not text:
        raise ValueError("empty multibase string")
    prefix, body = text[0], text[1:]
    if prefix in "bB":
        if prefix == "b" and body != body.lower() or prefix == "B" and body != body.upper():
            raise ValueError("base32 case does not match its multibase prefix")
        return b32decode(body)
    if prefix == "z":
        return b58decode(body)
    if prefix in "kK":
        return b36decode(body)
    if prefix in "fF":
        if prefix == "f" and body != body.lower() or prefix == "F" and body != body.upper():
            raise ValueError("base16 case does not match its multibase prefix")
        try:
            return bytes.fromhex(body)
        except ValueError as exc:
            raise ValueError(f"invalid base16: {exc}") from exc
    if prefix == "m":
        return _b64decode(body, None)
    if prefix == "u":
        return _b64decode(body, b"-_")
    raise ValueError(f"unsupported multibase prefix {prefix!r}")


def _read_uvarint(buf: bytes, pos: int, what: str) -> tuple[int, int]:
    try:
        r = uvarint_decode(buf, pos)
    except VarintError as exc:
        raise ValueError(f"bad {what} varint: {exc}") from exc
    if r is None:
        raise ValueError(f"truncated {what} varint")
    return r


def multihash_encode(code: int, digest: bytes) -> bytes:
    """Build a multihash from an already computed ``digest``."""
    digest = bytes(digest)
    return uvarint_encode(code) + uvarint_encode(len(digest)) + digest


def multihash_digest(data: bytes, code: int = SHA2_256) -> bytes:
    """Hash ``data`` with ``identity`` or ``sha2-256`` and return the multihash."""
    if code == IDENTITY:
        return multihash_encode(IDENTITY, data)
    if code == SHA2_256:
        return multihash_encode(SHA2_256, hashlib.sha256(data).digest())
    raise ValueError(f"unsupported multihash function 0x{code:x}")


def multihash_decode(mh: bytes, *, exact: bool = True) -> tuple[int, bytes, int]:
    """Split a multihash into ``(code, digest, end_offset)``.

    With ``exact`` the multihash must span the whole input. A sha2-256
    multihash must carry a 32-byte digest.

    Raises:
        ValueError: truncated, inconsistent length or trailing bytes.
    """
    mh = bytes(mh)
    code, pos = _read_uvarint(mh, 0, "multihash code")
    length, pos = _read_uvarint(mh, pos, "multihash length")
    if length > len(mh) - pos:
        raise ValueError(f"multihash digest truncated: need {length} bytes, have {len(mh) - pos}")
    end = pos + length
    if exact and end != len(mh):
        raise ValueError(f"{len(mh) - end} trailing bytes after multihash")
    if code == SHA2_256 and length != 32:
        raise ValueError(f"sha2-256 multihash with {length}-byte digest")
    return code, mh[pos:end], end


def cid_v1_encode(codec: int, mh: bytes, base: str = "base32") -> str:
    """Text form of a CIDv1 ``<multibase>(<0x01><codec><multihash>)``."""
    return multibase_encode(uvarint_encode(CID_V1) + uvarint_encode(codec) + bytes(mh), base)


def cid_v1_decode(text: str) -> tuple[int, bytes]:
    """Decode a multibase CIDv1 into ``(codec, multihash)``; raises ``ValueError``."""
    raw = multibase_decode(text)
    version, pos = _read_uvarint(raw, 0, "CID version")
    if version != CID_V1:
        raise ValueError(f"unsupported CID version {version}")
    codec, pos = _read_uvarint(raw, pos, "CID codec")
    mh = raw[pos:]
    multihash_decode(mh)
    return codec, mh
