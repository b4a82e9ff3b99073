"""THE native-vs-pure switch.

This is the only module that decides whether fastp2p runs its compiled kernels
(``fastp2p._native``) or their pure-Python twins. It never falls back silently:
if the native modules cannot be imported and ``FASTP2P_NO_EXTENSIONS`` is not
set, importing fastp2p fails with an explanation.

Kernel contract (identical for both implementations):

- ``uvarint_encode(n) -> bytes``; ``uvarint_decode(buf, offset=0) -> (value, end) | None``
- ``encode_header(type, flags, stream_id, length) -> bytes`` (yamux, 12 bytes)
- ``YamuxDecoder().feed(buf) -> list[(type, flags, stream_id, length, payload)]``
- ``mplex_encode_header(stream_id, flag, length) -> bytes``
- ``MplexDecoder(max_message_size).feed(buf) -> list[(flag, stream_id, payload)]``
- ``NoiseCipher(key)``: ``seal_frames(bufs)`` and ``open_frames(buf)`` return read-only
  byte buffers (``bytes``/``bytearray`` pure; recycled ``FrameBlock`` native): use them
  through the buffer protocol, never as ``bytes``
- ``BufferPool``, ``Buffer``; ``get_default_pool()`` -> the one process-wide pool that
  serves every buffer fastp2p owns (native: AEAD frame blocks and regions come from it)
- ``MemoryRegion``, ``RegionLease``; ``alloc_region(nbytes, hugepages=False)`` (zero-filled
  pool memory) and ``register_region(obj)`` (pins a writable contiguous buffer) ->
  ``MemoryRegion``: ``view(offset=0, length=None)``, ``nbytes``, ``address``, ``closed``,
  ``close()``, ``lease()``/``_acquire_lease()``/``_release_lease()``, ``region_id``,
  ``hugepages``, ``hugepage_fallback_reason``, ``grant``/``revoke``/``revoke_all`` (through
  ``fastp2p.memory.MemoryManager``). The native region exports PEP 3118 itself; the pure
  one only through ``view()`` on Python 3.11 (``__buffer__`` on 3.12+)
"""

from __future__ import annotations

import os
from typing import Any

__all__ = [
    "HAVE_NATIVE",
    "HAVE_VERBS",
    "NATIVE_IMPORT_ERROR",
    "VERBS_IMPORT_ERROR",
    "uvarint_encode",
    "uvarint_decode",
    "encode_header",
    "YamuxDecoder",
    "mplex_encode_header",
    "MplexDecoder",
    "NoiseCipher",
    "BufferPool",
    "Buffer",
    "get_default_pool",
    "MemoryRegion",
    "RegionLease",
    "alloc_region",
    "register_region",
    "pure",
]

_NO_EXT = os.environ.get("FASTP2P_NO_EXTENSIONS", "") not in ("", "0")

NATIVE_IMPORT_ERROR: BaseException | None = None
VERBS_IMPORT_ERROR: BaseException | None = None


class _Pure:
    """The pure-Python twins, always importable (used by parity tests)."""

    def __init__(self) -> None:
        from fastp2p import _region_pure, bufferpool
        from fastp2p.proto import varint
        from fastp2p.proto.mplex import frame as mplex_frame
        from fastp2p.proto.noise import cipher
        from fastp2p.proto.yamux import frame as yamux_frame

        self.uvarint_encode = varint.uvarint_encode
        self.uvarint_decode = varint.uvarint_decode
        self.encode_header = yamux_frame.encode_header
        self.YamuxDecoder = yamux_frame.YamuxDecoder
        self.mplex_encode_header = mplex_frame.mplex_encode_header
        self.MplexDecoder = mplex_frame.MplexDecoder
        self.NoiseCipher = cipher.NoiseCipher
        self.BufferPool = bufferpool.BufferPool
        self.Buffer = bufferpool.Buffer
        self.get_default_pool = bufferpool.get_default_pool
        self.MemoryRegion = _region_pure.MemoryRegion
        self.RegionLease = _region_pure.RegionLease
        self.alloc_region = _region_pure.alloc_region
        self.register_region = _region_pure.register_region


pure = _Pure()

_impl: Any
if _NO_EXT:
    HAVE_NATIVE = False
    _impl = pure
else:
    try:
        from fastp2p._native import aead as _aead
        from fastp2p._native import buffer as _buffer
        from fastp2p._native import frame as _frame
    except ImportError as exc:  # pragma: no cover - depends on the build
        NATIVE_IMPORT_ERROR = exc
        raise ImportError(
            "fastp2p's compiled extensions could not be imported "
            f"({exc}). Build them with `pip install -e .` (or "
            "`python setup.py build_ext --inplace`; needs a C compiler, Python "
            "and OpenSSL headers), or set FASTP2P_NO_EXTENSIONS=1 to run the "
            "pure-Python implementation."
        ) from exc
    HAVE_NATIVE = True

    class _Native:
        uvarint_encode = _frame.uvarint_encode
        uvarint_decode = _frame.uvarint_decode
        encode_header = _frame.encode_header
        YamuxDecoder = _frame.YamuxDecoder
        mplex_encode_header = _frame.mplex_encode_header
        MplexDecoder = _frame.MplexDecoder
        NoiseCipher = _aead.NoiseCipher
        BufferPool = _buffer.BufferPool
        Buffer = _buffer.Buffer
        get_default_pool = _buffer.get_default_pool
        MemoryRegion = _buffer.MemoryRegion
        RegionLease = _buffer.RegionLease
        alloc_region = _buffer.alloc_region
        register_region = _buffer.register_region

    _impl = _Native()

HAVE_VERBS = False
if not _NO_EXT:
    try:
        from fastp2p._native import verbs as _verbs  # type: ignore[attr-defined]  # noqa: F401

        HAVE_VERBS = True
    except ImportError as exc:
        VERBS_IMPORT_ERROR = exc

uvarint_encode = _impl.uvarint_encode
uvarint_decode = _impl.uvarint_decode
encode_header = _impl.encode_header
YamuxDecoder = _impl.YamuxDecoder
mplex_encode_header = _impl.mplex_encode_header
MplexDecoder = _impl.MplexDecoder
NoiseCipher = _impl.NoiseCipher
BufferPool = _impl.BufferPool
Buffer = _impl.Buffer
get_default_pool = _impl.get_default_pool
MemoryRegion = _impl.MemoryRegion
RegionLease = _impl.RegionLease
alloc_region = _impl.alloc_region
register_region = _impl.register_region
