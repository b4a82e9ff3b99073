"""THE native-vs-pure switch.

This is the only module that decides whether fastp2p runs its compiled kernels
(``fastp2p._native``) or their pure-Python twins. It never falls back silently:
if the native modules cannot be imported and ``FASTP2P_NO_EXTENSIONS`` is not
set, importing fastp2p fails with an explanation.

Kernel contract (identical for both implementations):

- ``uvarint_encode(n) -> bytes``; ``uvarint_decode(buf, offset=0) -> (value, end) | None``
- ``encode_header(type, flags, stream_id, length) -> bytes`` (yamux, 12 bytes)
- ``YamuxDecoder().feed(buf) -> list[(type, flags, stream_id, length, payload)]``
- ``YamuxDemux()``: a ``YamuxDecoder`` with a stream-id table (``attach``/``detach``/
  ``take``/``set_credit``) whose ``feed(buf) -> (fast, records)`` delivers plain DATA on
  attached streams within their credit and returns the rest (see its pure twin);
  ``sealed_step(cipher, on_records, on_error)`` is its ``feed_sealed`` as one callable
  per socket read (records left for the session to ``on_records``, errors to ``on_error``)
- ``ReadPump``: the read half of the TCP protocol (``get_buffer``, ``buffer_updated``:
  each read to ``_on_data(view)``, or ``_read_early(nbytes)`` before that is set)
- ``WritePump``: the TCP connection's write half (``write`` and its loop-pass state)
- ``SealState``: ``NoisePath``'s pass state (``raw``, ``_send``, ``_pend``, ...)
- ``SendStep(session, streams, yamux, max_frame, path, fallback)``: a stream's write as
  one call, ``step(stream_id, data) -> bytes taken``: a write to an open stream with
  window is framed, sealed and written as ``path.send`` would; the rest to ``fallback``
- ``mplex_encode_header(stream_id, flag, length) -> bytes``
- ``MplexDecoder(max_message_size).feed(buf) -> list[(flag, stream_id, payload)]``
- ``MplexDemux(max_message_size)``: an ``MplexDecoder`` with a stream-key table, as
  ``YamuxDemux`` (Message records on attached keys go the fast way; see its pure twin)
- ``NoiseCipher(key, nonce=0, cipher="ChaChaPoly"|"AESGCM")`` (``.cipher`` names it): ``seal_frames(bufs)`` and ``open_frames(buf)`` return read-only
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
- ``XSalsa20(key32, nonce24)`` (pnet): one keystream, position kept across calls;
  ``apply(writable)`` XORs in place, ``apply_into(src, dst)``, ``apply_copy(buf) -> bytearray``
- ``noise_hkdf2(chaining_key, ikm) -> (out1, out2)``: Noise spec 4.3 HKDF (HMAC-SHA256),
  32 bytes each; any key and input length
"""

from __future__ import annotations

import importlib
import os
import types
from typing import TYPE_CHECKING

__all__ = [
    "HAVE_NATIVE",
    "HAVE_VERBS",
    "NATIVE_IMPORT_ERROR",
    "VERBS_IMPORT_ERROR",
    "KERNELS",
    "pure",
    "native",
]

# The one list of kernels: name -> (pure twin's module, native module). The
# attribute has the same name in both; everything below is derived from it.
KERNELS: dict[str, tuple[str, str]] = {
    "uvarint_encode": ("fastp2p.proto.varint", "fastp2p._native.frame"),
    "uvarint_decode": ("fastp2p.proto.varint", "fastp2p._native.frame"),
    "encode_header": ("fastp2p.proto.yamux.frame", "fastp2p._native.frame"),
    "YamuxDecoder": ("fastp2p.proto.yamux.frame", "fastp2p._native.frame"),
    "YamuxDemux": ("fastp2p.proto.yamux.frame", "fastp2p._native.frame"),
    "mplex_encode_header": ("fastp2p.proto.mplex.frame", "fastp2p._native.frame"),
    "MplexDecoder": ("fastp2p.proto.mplex.frame", "fastp2p._native.frame"),
    "MplexDemux": ("fastp2p.proto.mplex.frame", "fastp2p._native.frame"),
    "ReadPump": ("fastp2p.transport._pump", "fastp2p._native.frame"),
    "WritePump": ("fastp2p.transport._pump", "fastp2p._native.frame"),
    "SealState": ("fastp2p.transport._pump", "fastp2p._native.frame"),
    "SendStep": ("fastp2p.transport._pump", "fastp2p._native.frame"),
    "NoiseCipher": ("fastp2p.proto.noise.cipher", "fastp2p._native.aead"),
    "BufferPool": ("fastp2p.bufferpool", "fastp2p._native.buffer"),
    "Buffer": ("fastp2p.bufferpool", "fastp2p._native.buffer"),
    "get_default_pool": ("fastp2p.bufferpool", "fastp2p._native.buffer"),
    "MemoryRegion": ("fastp2p._region_pure", "fastp2p._native.buffer"),
    "RegionLease": ("fastp2p._region_pure", "fastp2p._native.buffer"),
    "alloc_region": ("fastp2p._region_pure", "fastp2p._native.buffer"),
    "register_region": ("fastp2p._region_pure", "fastp2p._native.buffer"),
    "XSalsa20": ("fastp2p.proto.xsalsa20", "fastp2p._native.xsalsa20"),
    "noise_hkdf2": ("fastp2p.proto.noise.handshake", "fastp2p._native.aead"),
}
__all__ += list(KERNELS)

_NO_EXT = os.environ.get("FASTP2P_NO_EXTENSIONS", "") not in ("", "0")

NATIVE_IMPORT_ERROR: BaseException | None = None
VERBS_IMPORT_ERROR: BaseException | None = None


def _load(which: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        **{name: getattr(importlib.import_module(mods[which]), name) for name, mods in KERNELS.items()}
    )


#: The pure-Python twins, always importable (used by parity tests).
pure = _load(0)
#: The native kernels, or None in the pure build.
native: types.SimpleNamespace | None = None

if _NO_EXT:
    HAVE_NATIVE = False
else:
    try:
        native = _load(1)
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

HAVE_VERBS = False
if not _NO_EXT:
    try:
        importlib.import_module("fastp2p._native.verbs")
        HAVE_VERBS = True
    except ImportError as exc:
        VERBS_IMPORT_ERROR = exc

#: The implementation in use (``native`` unless FASTP2P_NO_EXTENSIONS).
_impl: types.SimpleNamespace = native if native is not None else pure

if TYPE_CHECKING:
    # Typed by the pure twins, whose signatures the native kernels share.
    from fastp2p._region_pure import MemoryRegion, RegionLease, alloc_region, register_region  # noqa: F401
    from fastp2p.bufferpool import Buffer, BufferPool, get_default_pool  # noqa: F401
    from fastp2p.proto.mplex.frame import MplexDecoder, MplexDemux, mplex_encode_header  # noqa: F401
    from fastp2p.proto.noise.cipher import NoiseCipher  # noqa: F401
    from fastp2p.proto.noise.handshake import noise_hkdf2  # noqa: F401
    from fastp2p.proto.varint import uvarint_decode, uvarint_encode  # noqa: F401
    from fastp2p.proto.xsalsa20 import XSalsa20  # noqa: F401
    from fastp2p.proto.yamux.frame import YamuxDecoder, YamuxDemux, encode_header  # noqa: F401
    from fastp2p.transport._pump import ReadPump, SealState, SendStep, WritePump  # noqa: F401
else:
    globals().update(vars(_impl))
