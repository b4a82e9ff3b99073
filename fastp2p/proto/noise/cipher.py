"""Noise transport ciphers with libp2p framing; pure twin of csrc/fp_aead.c.

Noise spec 'ChaChaPoly' (12.3, the libp2p cipher): ChaCha20-Poly1305 (IETF),
96-bit nonce = 32 zero bits followed by the 64-bit little-endian message
counter. Noise spec 'AESGCM' (12.4, only between fastp2p peers, see
handshake.py): AES-256-GCM, 96-bit nonce = 32 zero bits followed by the 64-bit
BIG-endian counter. Associated data is empty for transport messages. Nonce 2**64-1 is reserved (Noise spec 5.1), so reaching
it raises SecurityError.

libp2p noise spec: transport messages are framed with a 2-byte big-endian length
prefix; a noise message is at most 65535 bytes, i.e. at most 65519 bytes of
plaintext plus the 16-byte tag.

One :class:`NoiseCipher` per direction. ``seal_frames`` splits one logical
plaintext (a buffer or a list of buffers) into as many frames as needed;
``open_frames`` is a streaming decryptor holding at most one partial frame.
A failed tag check kills the cipher: every later call raises DecryptError.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM, ChaCha20Poly1305

from fastp2p._typing import ReadableBuffer, byte_view
from fastp2p.errors import ClosedResourceError, DecryptError, FrameError, P2PError, SecurityError

__all__ = ["CIPHERS", "cpu_has_aes", "usable_ciphers", "MAX_FRAME", "TAG_SIZE", "MAX_PLAINTEXT",
           "SEAL_PLAINTEXT", "ALIGN_MIN", "JOIN_MAX", "JOIN_ENTRY_MAX", "MAX_NONCE", "NoiseCipher", "segments"]

MAX_FRAME = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = MAX_FRAME - TAG_SIZE  # 65519
#: plaintext bytes of the frames we seal: 511 * 128, a length OpenSSL 3's
#: ChaCha20-Poly1305 runs on its fast path (4.3 GB/s here; 65519: 3.2 GB/s);
#: any size up to MAX_PLAINTEXT is valid Noise (csrc/fp_aead.h)
SEAL_PLAINTEXT = 65408
#: an input buffer this long starts frames of its own, so its bytes are whole
#: frames (one AEAD call each, and a receiver opens them in place)
ALIGN_MIN = 16384
#: a run of shorter buffers of at most this many bytes (one muxer header) joins
#: the long one after it: a data frame's header shares the first Noise frame of
#: its payload (one AEAD operation fewer), and a receiver opens the header first
#: and the payload in place (csrc/fp_aead.h FP_AEAD_JOIN_MAX)
JOIN_MAX = 16
#: ... when the long buffer is at most this long (two frames); a longer one keeps
#: its header in a frame of its own, so all its frames are payload that a
#: receiver opens as runs on its pool (csrc/fp_aead.h FP_AEAD_JOIN_ENTRY_MAX)
JOIN_ENTRY_MAX = 2 * SEAL_PLAINTEXT
MAX_NONCE = (1 << 64) - 1  # reserved; never used to encrypt
KEY_SIZE = 32

_LEN = struct.Struct(">H")
_NONCE = struct.Struct("<4xQ")  # ChaChaPoly
_NONCE_BE = struct.Struct(">4xQ")  # AESGCM
#: Noise cipher names implemented here (and by the native twin)
CIPHERS = ("ChaChaPoly", "AESGCM")


def cpu_has_aes() -> bool:
    """True when the CPU has AES instructions (Linux ``/proc/cpuinfo`` flag ``aes``).

    Without them AES-GCM is slower than ChaCha20-Poly1305 (and not constant
    time in software), so fastp2p offers ``AESGCM`` only where this is True.
    Other platforms: False (ChaChaPoly only). Override with
    ``FASTP2P_NOISE_AES=0|1``.
    """
    forced = os.environ.get("FASTP2P_NOISE_AES")
    if forced in ("0", "1"):
        return forced == "1"
    return _CPU_AES


def _read_cpu_aes() -> bool:
    # read once at import, in binary: a process that later drops privileges or
    # enters a sandbox may no longer open /proc or import codecs
    try:
        with open("/proc/cpuinfo", "rb") as f:
            for line in f:
                if line.startswith((b"flags", b"Features")):
                    return b"aes" in line.split(b":", 1)[-1].split()
    except OSError:
        pass
    return False


_CPU_AES = _read_cpu_aes()


def usable_ciphers(preference: Sequence[str]) -> tuple[str, ...]:
    """``preference`` without the ciphers this machine should not offer (AESGCM without AES-NI)."""
    aes = None
    out = []
    for c in preference:
        if c == "AESGCM":
            if aes is None:
                aes = cpu_has_aes()
            if not aes:
                continue
        out.append(c)
    return tuple(out)


def segments(bufs: Sequence[ReadableBuffer]) -> list[memoryview]:
    """The plaintext runs sealed as contiguous frames (csrc's fp_aead_next_segment):
    each buffer of ``ALIGN_MIN`` bytes or more alone, each run of shorter ones joined,
    and a run of at most ``JOIN_MAX`` bytes joined to the long buffer after it
    when that one is at most ``JOIN_ENTRY_MAX`` bytes."""
    out: list[memoryview] = []
    small: list[memoryview] = []
    n_small = 0
    for b in bufs:
        mv = byte_view(b)
        if not len(mv):
            continue
        if len(mv) >= ALIGN_MIN:
            if small and n_small <= JOIN_MAX and len(mv) <= JOIN_ENTRY_MAX:
                out.append(memoryview(b"".join([*small, mv])))
            else:
                if small:
                    out.append(memoryview(b"".join(small)))
                out.append(mv)
            small = []
            n_small = 0
        else:
            small.append(mv)
            n_small += len(mv)
    if small:
        out.append(memoryview(b"".join(small)) if len(small) > 1 else small[0])
    return out


class NoiseCipher:
    """CipherState (ChaChaPoly or AESGCM) for one direction of a Noise transport session."""

    __slots__ = ("_aead", "_nonce", "_pack", "_pending", "_error", "cipher")
    #: the code this cipher runs on (the native twin: "vaes-avx512",
    #: "short-kernel+openssl-evp" or "openssl-evp")
    impl = "cryptography"

    def __init__(self, key: bytes, nonce: int = 0, cipher: str = "ChaChaPoly") -> None:
        if cipher not in CIPHERS:
            raise ValueError(f"unknown Noise cipher {cipher!r}")
        if len(key) != KEY_SIZE:
            raise ValueError(f"{cipher} key must be 32 bytes")
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError(f"nonce out of range: {nonce}")
        self.cipher = cipher
        self._aead: ChaCha20Poly1305 | AESGCM
        if cipher == "AESGCM":
            self._aead = AESGCM(bytes(key))
            self._pack = _NONCE_BE.pack
        else:
            self._aead = ChaCha20Poly1305(bytes(key))
            self._pack = _NONCE.pack
        self._nonce = nonce
        self._pending = bytearray()  # partial incoming frame (<= 2 + MAX_FRAME bytes)
        self._error: P2PError | None = None

    @property
    def nonce(self) -> int:
        """The counter the next message will use."""
        return self._nonce

    def parallel_seal(self, threads: int, min_bytes: int = 1 << 18) -> None:
        """Accepted for API parity with the native cipher, which seals writes of at
        least ``min_bytes`` on ``threads`` pool threads; here sealing stays serial
        (pure Python holds the GIL, so threads could not help)."""
        if threads < 0 or min_bytes < 0:
            raise ValueError("threads and min_bytes must be >= 0")

    def parallel_open(self, threads: int, min_bytes: int = 1 << 17) -> None:
        """Accepted for API parity with the native cipher, which opens reads of at
        least ``min_bytes`` on ``threads`` pool threads; here opening stays serial."""
        if threads < 0 or min_bytes < 0:
            raise ValueError("threads and min_bytes must be >= 0")

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete incoming frame held internally."""
        return len(self._pending)

    @property
    def pending_frame_len(self) -> int:
        """The length field of the buffered partial frame; -1 when fewer than
        its 2 length bytes are buffered."""
        pending = self._pending
        return _LEN.unpack_from(pending)[0] if len(pending) >= 2 else -1

    def close(self) -> None:
        """Forget the key; later calls raise ClosedResourceError. Idempotent."""
        if not isinstance(self._error, ClosedResourceError):
            self._error = ClosedResourceError("NoiseCipher is closed")
        self._pending = bytearray()

    def __enter__(self) -> NoiseCipher:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _check(self) -> None:
        if self._error is not None:
            raise type(self._error)(f"cipher is dead after: {self._error}")

    def _next_nonce(self) -> bytes:
        n = self._nonce
        if n >= MAX_NONCE:
            raise SecurityError("Noise nonce exhausted; the session must be rekeyed or closed")
        self._nonce = n + 1
        return self._pack(n)

    def encrypt(self, plaintext: ReadableBuffer) -> bytes:
        """Encrypt one message (no framing); returns ciphertext + tag."""
        self._check()
        return self._aead.encrypt(self._next_nonce(), bytes(plaintext), None)

    def decrypt(self, ciphertext: ReadableBuffer) -> bytes:
        """Decrypt one message (no framing).

        Raises:
            DecryptError: the tag did not verify (the cipher is dead afterwards).
        """
        self._check()
        ct = bytes(ciphertext)
        if len(ct) < TAG_SIZE:
            self._error = DecryptError("ciphertext shorter than the tag")
            raise self._error
        try:
            return self._aead.decrypt(self._next_nonce(), ct, None)
        except InvalidTag:
            self._error = DecryptError("Noise transport message failed authentication")
            raise self._error from None

    def seal_frames(self, bufs: ReadableBuffer | Sequence[ReadableBuffer]) -> bytes:
        """Encrypt ``bufs`` (one contiguous plaintext) into length-prefixed frames.

        Frames follow :func:`segments`: a buffer of ``ALIGN_MIN`` bytes or more
        is sealed as frames of its own, shorter ones are packed together.
        """
        self._check()
        items = bufs if isinstance(bufs, (list, tuple)) else (bufs,)
        segs = segments(items)
        nframes = sum(-(-len(seg) // SEAL_PLAINTEXT) for seg in segs)
        if self._nonce + nframes > MAX_NONCE:
            raise SecurityError("Noise nonce exhausted; the session must be rekeyed or closed")
        pieces: list[bytes] = []
        enc = self._aead.encrypt
        pack = _LEN.pack
        for mv in segs:
            for off in range(0, len(mv), SEAL_PLAINTEXT):
                ct = enc(self._next_nonce(), mv[off : off + SEAL_PLAINTEXT], None)
                pieces.append(pack(len(ct)))
                pieces.append(ct)
        return b"".join(pieces)

    def open_frames(self, data: ReadableBuffer) -> bytearray:
        """Decrypt every complete frame in (buffered +) ``data``; keep a partial one.

        Raises:
            FrameError: a frame shorter than the tag.
            DecryptError: a tag did not verify (the cipher is dead afterwards).
        """
        self._check()
        mv = byte_view(data)
        out = bytearray()
        pending = self._pending
        if pending:
            # complete the pending frame first, taking only what it needs
            if len(pending) < 2:
                take = 2 - len(pending)
                pending += mv[:take]
                mv = mv[take:]
                if len(pending) < 2:
                    return out
            flen = _LEN.unpack_from(pending)[0]
            if flen < TAG_SIZE:
                self._fail_frame(flen)
            need = 2 + flen - len(pending)
            pending += mv[:need]
            mv = mv[need:]
            if len(pending) < 2 + flen:
                return out
            out += self._open_one(memoryview(pending)[2:])
            pending.clear()
        pos = 0
        n = len(mv)
        while n - pos >= 2:
            flen = (mv[pos] << 8) | mv[pos + 1]
            if flen < TAG_SIZE:
                self._fail_frame(flen)
            if n - pos - 2 < flen:
                break
            out += self._open_one(mv[pos + 2 : pos + 2 + flen])
            pos += 2 + flen
        if pos < n:
            pending += mv[pos:]
        return out

    # -- frame by frame, for a demultiplexer that places each frame's plaintext --------

    def pending_need(self, data: ReadableBuffer) -> int:
        """Bytes of ``data`` that complete the buffered partial frame (0: none
        buffered; all of it when even that does not complete it)."""
        pending = self._pending
        p = len(pending)
        if not p:
            return 0
        mv = byte_view(data)
        n = len(mv)
        if p == 1:
            if n < 1:
                return n
            flen = pending[0] << 8 | mv[0]
        else:
            flen = _LEN.unpack_from(pending)[0]
        return min(2 + flen - p, n)

    def complete_pending(self, data: ReadableBuffer) -> bytes | None:
        """Add ``data`` (at most :meth:`pending_need` bytes) to the buffered partial
        frame. When that completes it, return its body (ciphertext + tag, for
        :meth:`open_frame`) and buffer nothing; else None.

        Raises:
            FrameError: the frame's length is shorter than the tag.
        """
        self._check()
        pending = self._pending
        pending += byte_view(data)
        if len(pending) < 2:
            return None
        flen = _LEN.unpack_from(pending)[0]
        if flen < TAG_SIZE:
            self._fail_frame(flen)
        if len(pending) < 2 + flen:
            return None
        body = bytes(memoryview(pending)[2:])
        pending.clear()
        return body

    def open_frame(self, body: ReadableBuffer) -> bytes:
        """Open one frame's body (ciphertext + tag, the length prefix taken); only
        with no partial frame buffered (see :meth:`pending_need`).

        Raises:
            FrameError: shorter than the tag. DecryptError: the tag did not verify.
            (The cipher is dead after either.)
        """
        self._check()
        mv = memoryview(body)
        if mv.nbytes < TAG_SIZE:
            self._fail_frame(mv.nbytes)
        return self._open_one(mv)

    def _fail_frame(self, flen: int) -> None:
        self._pending.clear()
        self._error = FrameError(f"noise frame of {flen} bytes is shorter than the tag")
        raise self._error

    def _open_one(self, ct: memoryview) -> bytes:
        try:
            return self._aead.decrypt(self._next_nonce(), ct, None)
        except InvalidTag:
            self._pending.clear()
            self._error = DecryptError("Noise transport message failed authentication")
            raise self._error from None
