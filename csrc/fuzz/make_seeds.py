#!/usr/bin/env python3
"""Hand-built seed inputs for the libFuzzer harnesses (csrc/fuzz/fuzz_*.c).

Written with ``struct`` and ``cryptography`` only (not fastp2p's encoders), one file
per seed under OUT/<harness>/. ``csrc/fuzz/update_corpus.sh`` fuzzes from them and
merges the result into the committed corpora ``csrc/fuzz/corpus/<harness>/``.

Usage: make_seeds.py OUT
"""

from __future__ import annotations

import hashlib
import struct
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305


def yamux(ftype: int, flags: int, sid: int, length: int, payload: bytes = b"") -> bytes:
    return struct.pack(">BBHII", 0, ftype, flags, sid, length) + payload


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mplex(sid: int, flag: int, payload: bytes = b"") -> bytes:
    return uvarint(sid << 3 | flag) + uvarint(len(payload)) + payload


def noise_frames(key: bytes, plain: bytes, chunk: int = 65519) -> bytes:
    aead = ChaCha20Poly1305(key)
    out = b""
    for n, i in enumerate(range(0, max(len(plain), 1), chunk)):
        ct = aead.encrypt(b"\0\0\0\0" + n.to_bytes(8, "little"), plain[i : i + chunk], None)
        out += struct.pack(">H", len(ct)) + ct
    return out


MS = b"\x13/multistream/1.0.0\n"
YAMUX_SESSION = [
    yamux(1, 1, 1, 0) + yamux(0, 0, 1, len(MS), MS),  # SYN + a multistream header
    yamux(1, 1, 1, 1 << 20) + yamux(0, 4, 1, 3, b"abc"),  # SYN with window, DATA|FIN
    yamux(2, 1, 0, 0xDEADBEEF) + yamux(2, 2, 0, 7),  # PING SYN, PING ACK
    yamux(3, 0, 0, 0) + yamux(3, 0, 0, 1),  # GoAway normal, protocol error
    yamux(1, 8, 3, 2) + yamux(1, 2, 2, 0),  # RST with a code, ACK
    yamux(0, 0, 5, 12, b"hello world!") * 3,
]
MPLEX_SESSION = [
    mplex(0, 0, b"0") + mplex(0, 2, MS) + mplex(0, 4),
    mplex(1, 0) + mplex(1, 1, b"x" * 100) + mplex(1, 5),
    mplex(7, 6) + mplex((1 << 60) - 1, 2, b"big id"),
    uvarint(2) + uvarint(1 << 20) + b"\x00" * 64,  # a 1 MiB message announced
]
FRAME_KEY = bytes([1, 2, 3]) + bytes(29)  # fuzz_frame.c's fuzz_noise key


def seeds() -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {}
    # fuzz_frame: byte 0 picks the feeding step and mplex limit; the rest is the stream
    frame = [
        bytes([k]) + s for k, s in zip(range(1, 60, 7), YAMUX_SESSION + MPLEX_SESSION, strict=False)
    ]
    frame += [b"\x05" + noise_frames(FRAME_KEY, s) for s in YAMUX_SESSION[:3]]
    frame += [b"\x03" + b"\x00\x0f" + bytes(15), b"\x09" + b"\xff\xff" + bytes(40)]
    out["fuzz_frame"] = frame
    # fuzz_noise: [chunking seed][segmenting seed (bit 7 tampers)] + plaintext
    out["fuzz_noise"] = [
        bytes([a, b]) + s
        for (a, b), s in zip(
            [
                (0, 0),
                (7, 3),
                (60, 0x81),
                (1, 0x7F),
                (33, 0x90),
                (2, 5),
                (9, 0),
                (17, 0x85),
                (0, 1),
                (4, 2),
            ],
            YAMUX_SESSION + MPLEX_SESSION,
            strict=True,
        )
    ]
    out["fuzz_varint"] = [
        b"\x00",
        b"\x7f",
        b"\x80\x01",
        b"\xff\xff\xff\xff\xff\xff\xff\xff\x7f",
        b"\x80\x00",
        b"\x80" * 9 + b"\x01",
        b"\xac\x02" + bytes(8),
    ]
    # fuzz_ring: op script (see fuzz_ring.c): writes, peeks, consumes, attacks, wakes, drains
    script = bytes([0])
    for op in (0, 2, 4, 12, 14, 16, 1, 3, 5, 13, 15, 17, 6, 8, 10):
        script += bytes([op]) + bytes([0x10, 0x01, 0x08, 0x00, 0x04, 0x00])
    out["fuzz_ring"] = [
        script,
        bytes([3]) + bytes([0, 0x40, 0, 2, 0x20, 0, 6, 0, 8, 1, 0x80, 0, 0x10]) * 4,
        bytes([1]) + b"fp2pring" + bytes([1, 0, 0, 0]) + bytes(20),
        bytes([0]) + bytes([7, 0xFF, 0x7F]) * 10 + bytes([16]) * 4,
    ]
    # fuzz_xsalsa20: key[32] nonce[24] [split count] [big-endian u16 chunk lengths] message
    key, nonce = bytes(range(32)), bytes(range(100, 124))
    out["fuzz_xsalsa20"] = [
        key + nonce + bytes([0]) + b"x",
        key + nonce + bytes([3, 0, 1, 0, 63, 2, 1]) + bytes(range(256)) * 3,
        bytes(56) + bytes([7]) + bytes([0, 64, 0, 65, 1, 255, 2, 0, 0, 0, 3, 1, 0, 7]) + b"pnet" * 200,
    ]
    return out


def main() -> int:
    root = Path(sys.argv[1])
    for harness, items in seeds().items():
        d = root / harness
        d.mkdir(parents=True, exist_ok=True)
        for data in items:
            (d / hashlib.sha1(data).hexdigest()).write_bytes(data)
        print(f"{harness}: {len(items)} seeds in {d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
