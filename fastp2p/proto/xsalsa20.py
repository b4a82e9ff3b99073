"""XSalsa20 stream cipher, pure Python: the specification and the pure-build twin.

XSalsa20 (Bernstein, "Extending the Salsa20 nonce", 2008) takes a 32-byte key
and a 24-byte nonce: HSalsa20 of the key and the first 16 nonce bytes gives a
subkey, and the keystream is Salsa20/20 under that subkey with the last 8
nonce bytes and a 64-bit block counter starting at 0. libp2p private networks
(pnet) XOR every byte of a connection with it.

Same API as the native kernel (fastp2p/_native/xsalsa20.pyx, csrc/fp_xsalsa20.c),
which ``fastp2p._accel.XSalsa20`` selects: one object is one direction, keeps
its position, ``apply`` works in place, ``apply_into`` writes into a caller's
buffer and ``apply_copy`` returns a bytearray.
Slow (about 1 MB/s): fine for tests and the pure build, not for bulk traffic.
"""

from __future__ import annotations

import struct

from fastp2p.errors import SecurityError

__all__ = ["XSalsa20", "hsalsa20", "salsa20_block", "KEY_SIZE", "NONCE_SIZE"]

KEY_SIZE = 32
NONCE_SIZE = 24
_BLOCK = 64
_M = 0xFFFFFFFF
#: "expand 32-byte k" as little-endian words (the diagonal 0, 5, 10, 15)
_SIGMA = struct.unpack("<4I", b"expand 32-byte k")
_W16 = struct.Struct("<16I")


def _rounds(x: list[int]) -> list[int]:
    """Salsa20/20's ten double rounds on 16 words (column round, then row round)."""
    x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15 = x
    for _ in range(10):
        # column round: quarter-rounds (0,4,8,12) (5,9,13,1) (10,14,2,6) (15,3,7,11)
        t = (x0 + x12) & _M; x4 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x4 + x0) & _M; x8 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x8 + x4) & _M; x12 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x12 + x8) & _M; x0 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x5 + x1) & _M; x9 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x9 + x5) & _M; x13 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x13 + x9) & _M; x1 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x1 + x13) & _M; x5 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x10 + x6) & _M; x14 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x14 + x10) & _M; x2 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x2 + x14) & _M; x6 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x6 + x2) & _M; x10 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x15 + x11) & _M; x3 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x3 + x15) & _M; x7 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x7 + x3) & _M; x11 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x11 + x7) & _M; x15 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        # row round: quarter-rounds (0,1,2,3) (5,6,7,4) (10,11,8,9) (15,12,13,14)
        t = (x0 + x3) & _M; x1 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x1 + x0) & _M; x2 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x2 + x1) & _M; x3 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x3 + x2) & _M; x0 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x5 + x4) & _M; x6 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x6 + x5) & _M; x7 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x7 + x6) & _M; x4 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x4 + x7) & _M; x5 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x10 + x9) & _M; x11 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x11 + x10) & _M; x8 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x8 + x11) & _M; x9 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x9 + x8) & _M; x10 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
        t = (x15 + x14) & _M; x12 ^= ((t << 7) | (t >> 25)) & _M  # noqa: E702
        t = (x12 + x15) & _M; x13 ^= ((t << 9) | (t >> 23)) & _M  # noqa: E702
        t = (x13 + x12) & _M; x14 ^= ((t << 13) | (t >> 19)) & _M  # noqa: E702
        t = (x14 + x13) & _M; x15 ^= ((t << 18) | (t >> 14)) & _M  # noqa: E702
    return [x0, x1, x2, x3, x4, x5, x6, x7, x8, x9, x10, x11, x12, x13, x14, x15]


def _input_words(key: bytes, middle: tuple[int, int, int, int]) -> list[int]:
    """Salsa20 input: constants on the diagonal, key in 1-4 and 11-14, ``middle`` in 6-9."""
    k = struct.unpack("<8I", key)
    return [_SIGMA[0], *k[:4], _SIGMA[1], *middle, _SIGMA[2], *k[4:], _SIGMA[3]]


def salsa20_block(words: list[int]) -> bytes:
    """The 64-byte Salsa20/20 block of 16 input words (rounds plus feed-forward)."""
    x = _rounds(words)
    return _W16.pack(*[(a + b) & _M for a, b in zip(x, words, strict=True)])


def hsalsa20(key: bytes, nonce16: bytes) -> bytes:
    """HSalsa20: the 32-byte subkey of ``key`` and 16 nonce bytes (no feed-forward)."""
    if len(key) != KEY_SIZE or len(nonce16) != 16:
        raise ValueError("hsalsa20 needs a 32-byte key and 16 input bytes")
    x = _rounds(_input_words(key, struct.unpack("<4I", nonce16)))
    return struct.pack("<8I", x[0], x[5], x[10], x[15], x[6], x[7], x[8], x[9])


class XSalsa20:
    """One XSalsa20 keystream (key: 32 bytes, nonce: 24 bytes), position kept."""

    __slots__ = ("_words", "_counter", "_block", "_used")

    def __init__(self, key: bytes, nonce: bytes) -> None:
        key, nonce = bytes(key), bytes(nonce)
        if len(key) != KEY_SIZE:
            raise ValueError(f"XSalsa20 key must be 32 bytes, got {len(key)}")
        if len(nonce) != NONCE_SIZE:
            raise ValueError(f"XSalsa20 nonce must be 24 bytes, got {len(nonce)}")
        sub = hsalsa20(key, nonce[:16])
        n0, n1 = struct.unpack("<2I", nonce[16:])
        self._words = _input_words(sub, (n0, n1, 0, 0))
        self._counter = 0
        self._block = b""  # unused keystream of the current block
        self._used = 0

    def _keystream(self, n: int) -> bytes:
        """The next ``n`` keystream bytes."""
        out = [self._block[self._used :]] if self._used < len(self._block) else []
        have = len(self._block) - self._used
        w = self._words
        while have < n:
            if self._counter >> 64:
                raise SecurityError("XSalsa20 keystream exhausted (2^70 bytes)")
            w[8] = self._counter & _M
            w[9] = self._counter >> 32
            self._counter += 1
            blk = salsa20_block(w)
            out.append(blk)
            have += _BLOCK
        ks = b"".join(out)
        # keep the tail of the last block for the next call
        extra = have - n
        self._block = ks[n:] if extra else b""
        self._used = 0
        return ks[:n]

    def apply_copy(self, data: bytes | bytearray | memoryview) -> bytearray:
        """Return ``data`` XOR the keystream as a new ``bytearray``."""
        mv = memoryview(data).cast("B")
        n = len(mv)
        if not n:
            return bytearray()
        ks = self._keystream(n)
        return bytearray((int.from_bytes(mv, "little") ^ int.from_bytes(ks, "little")).to_bytes(n, "little"))

    def apply_into(self, src: bytes | bytearray | memoryview, dst: bytearray | memoryview) -> None:
        """Write ``src`` XOR the keystream into the writable ``dst`` (same length; may be ``src``)."""
        out = memoryview(dst).cast("B")
        if out.readonly:
            raise TypeError("XSalsa20.apply_into needs a writable dst")
        if len(out) != memoryview(src).nbytes:
            raise ValueError(f"apply_into: dst has {len(out)} bytes, src {memoryview(src).nbytes}")
        out[:] = self.apply_copy(src)

    def apply(self, buf: bytearray | memoryview) -> None:
        """XOR the keystream into the writable buffer ``buf``, in place."""
        mv = memoryview(buf).cast("B")
        if mv.readonly:
            raise TypeError("XSalsa20.apply needs a writable buffer")
        mv[:] = self.apply_copy(mv)
