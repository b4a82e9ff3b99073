"""Content addressing for file sharing: chunk manifests and their CIDs (sans-IO).

A shared file is cut into fixed-size chunks (1 MiB by default; the last one
may be shorter). Each chunk is hashed with SHA-256; the list of chunk hashes,
with the sizes needed to interpret it, is the file's *manifest*, and the
file's address is the CIDv1 of the manifest bytes
(``multiformats-cid.md``): ``b`` (multibase base32, lower case) +
``0x01`` (CIDv1) + ``0x55`` (multicodec ``raw``) + multihash
``0x12 0x20 <sha2-256 of the manifest>``. A fetcher that checks the manifest
against the CID can then check every chunk on arrival, not only the whole file.

Manifest format (version 1), all integers unsigned varints (minimal encoding)::

    manifest    = magic version chunk_size file_size hash_code digest_len digests
    magic       = "FPMF"                 ; 4 bytes 0x46 0x50 0x4d 0x46
    version     = uvarint 1
    chunk_size  = uvarint                ; 4 KiB .. 64 MiB, a power of two
    file_size   = uvarint                ; bytes
    hash_code   = uvarint 0x12           ; multihash code of the chunk hash (sha2-256)
    digest_len  = uvarint 32             ; bytes per chunk digest
    digests     = ceil(file_size / chunk_size) * digest_len bytes
                                         ; chunk i covers [i*chunk_size, min((i+1)*chunk_size, file_size))

Nothing else: no name, no timestamps, no trailing bytes, so the same content
cut with the same chunk size always has the same CID and a decoder accepts
exactly one encoding of each manifest. The file's name travels in the
announcement, not in the manifest. The codec is ``raw`` because the
multicodec table has no code for this format; any multiformats tool can still
check the manifest against the CID, and each chunk ``i`` is itself addressable
as the CIDv1 ``raw``/sha2-256 of its bytes (:meth:`Manifest.chunk_cid`), the
form IPFS uses for raw leaves.
"""

from __future__ import annotations

import hashlib
import mmap
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fastp2p.errors import VarintError
from fastp2p.multibase import (
    SHA2_256,
    cid_v1_decode,
    cid_v1_encode,
    multibase_decode,
    multihash_decode,
    multihash_encode,
)
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

__all__ = [
    "MAGIC",
    "VERSION",
    "RAW",
    "DEFAULT_CHUNK_SIZE",
    "MIN_CHUNK_SIZE",
    "MAX_CHUNK_SIZE",
    "MAX_MANIFEST_SIZE",
    "Manifest",
    "ManifestError",
    "cid_digest",
    "cid_to_bytes",
    "cid_from_bytes",
    "hash_chunks",
]

MAGIC = b"FPMF"
VERSION = 1
RAW = 0x55
DEFAULT_CHUNK_SIZE = 1 << 20
MIN_CHUNK_SIZE = 4 << 10
MAX_CHUNK_SIZE = 64 << 20
DIGEST_LEN = 32
#: bound on a manifest we accept from a peer (32 MiB: 1 TiB of 1 MiB chunks)
MAX_MANIFEST_SIZE = 32 << 20


class ManifestError(ValueError):
    """A manifest or CID that is malformed or does not match."""


def _chunk_count(size: int, chunk_size: int) -> int:
    return (size + chunk_size - 1) // chunk_size


@dataclass(frozen=True, slots=True)
class Manifest:
    """The chunk hashes of one file.

    Attributes:
        size: file size in bytes.
        chunk_size: bytes per chunk (the last chunk may be shorter).
        digests: concatenated SHA-256 digests, 32 bytes per chunk.
    """

    size: int
    chunk_size: int
    digests: bytes

    def __post_init__(self) -> None:
        cs = self.chunk_size
        if cs < MIN_CHUNK_SIZE or cs > MAX_CHUNK_SIZE or cs & (cs - 1):
            raise ManifestError(f"chunk size {cs} is not a power of two in [4 KiB, 64 MiB]")
        if self.size < 0:
            raise ManifestError("negative file size")
        if len(self.digests) != _chunk_count(self.size, cs) * DIGEST_LEN:
            raise ManifestError(
                f"{len(self.digests)} digest bytes for {_chunk_count(self.size, cs)} chunks"
            )

    # -- shape -------------------------------------------------------------------------

    @property
    def chunks(self) -> int:
        """Number of chunks."""
        return _chunk_count(self.size, self.chunk_size)

    def chunk_range(self, i: int) -> tuple[int, int]:
        """``(start, end)`` byte offsets of chunk ``i``."""
        if not 0 <= i < self.chunks:
            raise IndexError(f"chunk {i} out of range (0..{self.chunks - 1})")
        start = i * self.chunk_size
        return start, min(start + self.chunk_size, self.size)

    def chunk_len(self, i: int) -> int:
        start, end = self.chunk_range(i)
        return end - start

    def digest(self, i: int) -> bytes:
        """SHA-256 of chunk ``i``."""
        if not 0 <= i < self.chunks:
            raise IndexError(f"chunk {i} out of range (0..{self.chunks - 1})")
        return self.digests[i * DIGEST_LEN : (i + 1) * DIGEST_LEN]

    def verify_chunk(self, i: int, data: bytes | bytearray | memoryview) -> bool:
        """True when ``data`` is exactly chunk ``i`` (length and SHA-256)."""
        return len(data) == self.chunk_len(i) and hashlib.sha256(data).digest() == self.digest(i)

    def chunk_cid(self, i: int) -> str:
        """CIDv1 (raw, sha2-256, base32) of chunk ``i``'s bytes."""
        return cid_v1_encode(RAW, multihash_encode(SHA2_256, self.digest(i)))

    # -- encoding ----------------------------------------------------------------------

    def encode(self) -> bytes:
        """The canonical manifest bytes (the CID is their hash)."""
        return b"".join(
            (
                MAGIC,
                uvarint_encode(VERSION),
                uvarint_encode(self.chunk_size),
                uvarint_encode(self.size),
                uvarint_encode(SHA2_256),
                uvarint_encode(DIGEST_LEN),
                self.digests,
            )
        )

    @classmethod
    def decode(cls, data: bytes | bytearray | memoryview) -> Manifest:
        """Parse manifest bytes; raises ``ManifestError`` on anything but version 1."""
        buf = bytes(data)
        if len(buf) > MAX_MANIFEST_SIZE:
            raise ManifestError(f"manifest of {len(buf)} bytes exceeds {MAX_MANIFEST_SIZE}")
        if buf[:4] != MAGIC:
            raise ManifestError("not a fastp2p manifest (bad magic)")
        pos = 4
        fields = []
        for what in ("version", "chunk size", "file size", "hash code", "digest length"):
            try:
                r = uvarint_decode(buf, pos)
            except VarintError as exc:
                raise ManifestError(f"bad {what}: {exc}") from exc
            if r is None:
                raise ManifestError(f"truncated manifest ({what})")
            value, pos = r
            fields.append(value)
        version, chunk_size, size, code, dlen = fields
        if version != VERSION:
            raise ManifestError(f"unsupported manifest version {version}")
        if code != SHA2_256 or dlen != DIGEST_LEN:
            raise ManifestError(f"unsupported chunk hash 0x{code:x}/{dlen}")
        if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
            raise ManifestError(f"chunk size {chunk_size} out of range")
        n = _chunk_count(size, chunk_size)
        if len(buf) - pos != n * DIGEST_LEN:
            raise ManifestError(
                f"manifest for {n} chunks carries {len(buf) - pos} digest bytes, "
                f"expected {n * DIGEST_LEN}"
            )
        return cls(size, chunk_size, buf[pos:])

    @property
    def multihash(self) -> bytes:
        """sha2-256 multihash of the encoded manifest."""
        return multihash_encode(SHA2_256, hashlib.sha256(self.encode()).digest())

    @property
    def cid(self) -> str:
        """The file's address: CIDv1 raw sha2-256 of the manifest, base32."""
        return cid_v1_encode(RAW, self.multihash)

    @classmethod
    def from_cid_and_bytes(cls, cid: str | bytes, data: bytes | bytearray | memoryview) -> Manifest:
        """Decode ``data`` after checking that it hashes to ``cid``.

        Raises:
            ManifestError: wrong hash, or not a manifest.
        """
        want = cid_digest(cid)
        if hashlib.sha256(data).digest() != want:
            raise ManifestError("manifest bytes do not hash to the CID")
        return cls.decode(data)

    # -- building --------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Manifest:
        """Manifest of an in-memory blob."""
        view = memoryview(data).cast("B")
        size = len(view)
        return cls(size, chunk_size, b"".join(
            hashlib.sha256(view[o : o + chunk_size]).digest() for o in range(0, size, chunk_size)
        ))

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        *,
        map_fn: Callable[..., Iterator[bytes]] | None = None,
    ) -> Manifest:
        """Manifest of a file, read through ``mmap``.

        ``map_fn(fn, iterable)`` (e.g. ``ThreadPoolExecutor.map``) hashes
        chunks in parallel; ``hashlib`` releases the GIL on large buffers.
        """
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return cls(0, chunk_size, b"")
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                view = memoryview(m)
                try:
                    digests = hash_chunks(view, chunk_size, map_fn=map_fn)
                finally:
                    view.release()
        return cls(size, chunk_size, digests)


def hash_chunks(
    view: memoryview,
    chunk_size: int,
    *,
    map_fn: Callable[..., Iterator[bytes]] | None = None,
) -> bytes:
    """Concatenated SHA-256 digests of ``view`` cut into ``chunk_size`` pieces."""
    size = len(view)

    def one(off: int) -> bytes:
        return hashlib.sha256(view[off : off + chunk_size]).digest()

    offs = range(0, size, chunk_size)
    return b"".join((map_fn or map)(one, offs))


def cid_to_bytes(cid: str) -> bytes:
    """Binary CID (``<0x01><codec><multihash>``) of a text CIDv1; raises ``ManifestError``."""
    try:
        codec, mh = cid_v1_decode(cid)
    except ValueError as exc:
        raise ManifestError(f"not a CIDv1: {cid!r}: {exc}") from exc
    return uvarint_encode(1) + uvarint_encode(codec) + mh


def cid_from_bytes(raw: bytes) -> str:
    """Text (base32) CIDv1 of a binary CID; raises ``ManifestError``."""
    try:
        version, pos = _uvarint(raw, 0)
        codec, pos = _uvarint(raw, pos)
        if version != 1:
            raise ManifestError(f"unsupported CID version {version}")
        multihash_decode(raw[pos:])
    except ValueError as exc:
        raise ManifestError(f"bad binary CID: {exc}") from exc
    return cid_v1_encode(codec, raw[pos:])


def _uvarint(buf: bytes, pos: int) -> tuple[int, int]:
    try:
        r = uvarint_decode(buf, pos)
    except VarintError as exc:
        raise ManifestError(str(exc)) from exc
    if r is None:
        raise ManifestError("truncated varint")
    return r


def cid_digest(cid: str | bytes) -> bytes:
    """The sha2-256 digest a file CID names (text or binary form).

    Raises:
        ManifestError: not a CIDv1 with codec ``raw`` and a sha2-256 multihash.
    """
    try:
        if isinstance(cid, str):
            if len(cid) == 46 and cid.startswith("Qm"):
                raise ManifestError("a CIDv0 cannot name a fastp2p manifest (codec dag-pb)")
            raw = multibase_decode(cid)
        else:
            raw = bytes(cid)
        version, pos = _uvarint(raw, 0)
        if version != 1:
            raise ManifestError(f"unsupported CID version {version}")
        codec, pos = _uvarint(raw, pos)
        code, digest, _ = multihash_decode(raw[pos:])
    except ValueError as exc:
        if isinstance(exc, ManifestError):
            raise
        raise ManifestError(f"not a CIDv1: {cid!r}: {exc}") from exc
    if codec != RAW:
        raise ManifestError(f"CID codec 0x{codec:x} is not raw (0x55)")
    if code != SHA2_256:
        raise ManifestError(f"CID multihash 0x{code:x} is not sha2-256")
    return digest
