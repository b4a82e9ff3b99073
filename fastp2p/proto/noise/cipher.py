"""Noise transport cipher (ChaChaPoly) with libp2p framing; pure twin of csrc/fp_aead.c.

Noise spec 'ChaChaPoly': ChaCha20-Poly1305 (IETF), 96-bit nonce = 32 zero bits
followed by the 64-bit little-endian message counter; associated data is empty
for transport messages. Nonce 2**64-1 is reserved (Noise spec 5.1), so reaching
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

import struct
from collections.abc import Sequence

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import ClosedResourceError, DecryptError, FrameError, P2PError, SecurityError

__all__ = ["MAX_FRAME", "TAG_SIZE", "MAX_PLAINTEXT", "MAX_NONCE", "NoiseCipher"]

MAX_FRAME = 65535
TAG_SIZE = 16
MAX_PLAINTEXT = MAX_FRAME - TAG_SIZE  # 65519
MAX_NONCE = (1 << 64) - 1  # reserved; never used to encrypt
KEY_SIZE = 32

_LEN = struct.Struct(">H")
_NONCE = struct.Struct("<4xQ")


class NoiseCipher:
    """ChaChaPoly CipherState for one direction of a Noise transport session."""

    __slots__ = ("_aead", "_nonce", "_pending", "_error")

    def __init__(self, key: bytes, nonce: int = 0) -> None:
        if len(key) != KEY_SIZE:
            raise ValueError("ChaChaPoly key must be 32 bytes")
        if not 0 <= nonce <= MAX_NONCE:
            raise ValueError(f"nonce out of range: {nonce}")
        self._aead = ChaCha20Poly1305(bytes(key))
        self._nonce = nonce
        self._pending = bytearray()  # partial incoming frame (<= 2 + MAX_FRAME bytes)
        self._error: P2PError | None = None

    @property
    def nonce(self) -> int:
        """The counter the next message will use."""
        return self._nonce

    @property
    def buffered(self) -> int:
        """Bytes of an incomplete incoming frame held internally."""
        return len(self._pending)

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
        return _NONCE.pack(n)

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
        """Encrypt ``bufs`` (one contiguous plaintext) into length-prefixed frames."""
        self._check()
        if isinstance(bufs, (list, tuple)):
            data = bufs[0] if len(bufs) == 1 else b"".join(bufs)
        else:
            data = bufs
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
        n = len(mv)
        if n == 0:
            return b""
        nframes = -(-n // MAX_PLAINTEXT)
        if self._nonce + nframes > MAX_NONCE:
            raise SecurityError("Noise nonce exhausted; the session must be rekeyed or closed")
        pieces: list[bytes] = []
        enc = self._aead.encrypt
        pack = _LEN.pack
        for off in range(0, n, MAX_PLAINTEXT):
            ct = enc(self._next_nonce(), mv[off : off + MAX_PLAINTEXT], None)
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
        mv = memoryview(data)
        if mv.ndim != 1 or mv.format != "B":
            mv = mv.cast("B")
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
