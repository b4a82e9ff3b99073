"""libp2p private networks (pnet), sans-IO: the PSK file format and the per-connection codec.

Spec: libp2p ``pnet/Private-Networks-PSK-V1.md``. A private network is a 32-byte
pre-shared key (PSK). On every connection, before multistream, each side sends
a random 24-byte nonce; from then on each direction is XORed with
XSalsa20(PSK, the sender's nonce). Peers with another key (or none) read
garbage, so the security handshake above fails at once.

Key file (``swarm.key``), a path-based multicodec::

    /key/swarm/psk/1.0.0/
    /base16/
    <64 hex digits>

The encoding line may also be ``/base64/`` (standard alphabet, padded) or
``/bin/`` (the 32 raw bytes follow). Parsing is strict: exactly those lines,
trailing whitespace after a text key only, nothing else.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Protocol

from fastp2p.errors import PnetError, PskFormatError
from fastp2p.proto.multistream import HEADER_MESSAGE

__all__ = [
    "PSK_CODEC",
    "PSK_SIZE",
    "NONCE_SIZE",
    "ENCODINGS",
    "MAX_PSK_FILE",
    "decode_psk_file",
    "encode_psk_file",
    "PnetCodec",
]

#: the one codec the spec defines
PSK_CODEC = "/key/swarm/psk/1.0.0/"
PSK_SIZE = 32
NONCE_SIZE = 24
ENCODINGS = ("/base16/", "/base64/", "/bin/")
#: a key file is a few lines; anything longer is not one (bounds what we read)
MAX_PSK_FILE = 1024
#: what every libp2p peer sends first, inside pnet as without it
MULTISTREAM_HEADER = HEADER_MESSAGE


def _line(data: bytes, start: int) -> tuple[bytes, int]:
    """The line at ``start`` (without its LF or CRLF) and the offset after it."""
    end = data.find(b"\n", start)
    if end < 0:
        raise PskFormatError("PSK file: missing line break after the header lines")
    line = data[start:end]
    if line.endswith(b"\r"):
        line = line[:-1]
    return line, end + 1


def decode_psk_file(data: bytes) -> bytes:
    """Parse a ``/key/swarm/psk/1.0.0/`` file; returns the 32-byte PSK.

    Raises:
        PskFormatError: wrong codec, unknown encoding, bad digits, or a key that
            is not exactly 32 bytes.
    """
    data = bytes(data)
    if len(data) > MAX_PSK_FILE:
        raise PskFormatError(f"PSK file: {len(data)} bytes, at most {MAX_PSK_FILE}")
    codec, pos = _line(data, 0)
    if codec != PSK_CODEC.encode():
        raise PskFormatError(f"PSK file: first line must be {PSK_CODEC}, got {codec[:40]!r}")
    enc, pos = _line(data, pos)
    rest = data[pos:]
    if enc == b"/bin/":
        # raw key; a single trailing newline is tolerated (the length says which)
        if len(rest) == PSK_SIZE + 1 and rest.endswith(b"\n"):
            rest = rest[:-1]
        key = rest
    elif enc in (b"/base16/", b"/base64/"):
        text = rest.rstrip(b" \t\r\n")
        if not text or any(c in b" \t\r\n" for c in text):
            raise PskFormatError("PSK file: the key must be one line")
        try:
            if enc == b"/base16/":
                key = bytes.fromhex(text.decode("ascii"))
            else:
                key = base64.b64decode(text, validate=True)
        except (ValueError, UnicodeDecodeError, binascii.Error) as exc:
            raise PskFormatError(f"PSK file: key is not valid {enc.decode()[1:-1]}: {exc}") from None
    else:
        raise PskFormatError(f"PSK file: unknown encoding {enc[:40]!r} (expected one of {', '.join(ENCODINGS)})")
    if len(key) != PSK_SIZE:
        raise PskFormatError(f"PSK file: key is {len(key)} bytes, must be {PSK_SIZE}")
    return key


def encode_psk_file(psk: bytes, encoding: str = "/base16/") -> bytes:
    """The key file for ``psk`` (``/base16/`` by default, as go- and js-libp2p write it)."""
    psk = bytes(psk)
    if len(psk) != PSK_SIZE:
        raise ValueError(f"a PSK is {PSK_SIZE} bytes, got {len(psk)}")
    head = f"{PSK_CODEC}\n{encoding}\n".encode()
    if encoding == "/base16/":
        return head + psk.hex().encode() + b"\n"
    if encoding == "/base64/":
        return head + base64.b64encode(psk) + b"\n"
    if encoding == "/bin/":
        return head + psk
    raise ValueError(f"unknown PSK encoding {encoding!r} (expected one of {', '.join(ENCODINGS)})")


class StreamCipher(Protocol):
    """The XSalsa20 kernel contract (``fastp2p._accel.XSalsa20``)."""

    def apply(self, buf: bytearray | memoryview) -> None: ...
    def apply_into(self, src: bytes | bytearray | memoryview, dst: bytearray | memoryview) -> None: ...
    def apply_copy(self, data: bytes | bytearray | memoryview) -> bytearray: ...


class PnetCodec:
    """One connection's pnet layer: our nonce out first, the peer's nonce in first.

    ``cipher`` is the XSalsa20 kernel (injected, see ``fastp2p._accel``);
    ``local_nonce`` 24 random bytes from the caller.

    Fast failure: a peer with another key is only seen through garbage, and a
    garbage multistream length can make both sides wait for bytes that never
    come. libp2p starts every connection with the multistream header, so the
    first plaintext bytes must be exactly that header (``expect``); the first
    byte that differs raises ``PnetError``. A peer without pnet shows up as
    the plain header in place of the nonce, also ``PnetError``.
    """

    __slots__ = ("_psk", "_cipher", "_local_nonce", "_send", "_recv", "_nonce_in", "_expect", "_checked")

    def __init__(
        self,
        psk: bytes,
        local_nonce: bytes,
        cipher: Callable[[bytes, bytes], StreamCipher],
        *,
        expect: bytes = MULTISTREAM_HEADER,
    ) -> None:
        if len(psk) != PSK_SIZE:
            raise ValueError(f"a PSK is {PSK_SIZE} bytes, got {len(psk)}")
        if len(local_nonce) != NONCE_SIZE:
            raise ValueError(f"a pnet nonce is {NONCE_SIZE} bytes, got {len(local_nonce)}")
        self._psk = bytes(psk)
        self._cipher = cipher
        self._local_nonce = bytes(local_nonce)
        self._send = cipher(self._psk, self._local_nonce)
        self._recv: StreamCipher | None = None
        self._nonce_in = bytearray()
        self._expect = bytes(expect)
        self._checked = 0  # plaintext bytes compared with ``expect`` so far

    def preamble(self) -> bytes:
        """The bytes to send before anything else: our nonce."""
        return self._local_nonce

    @property
    def verified(self) -> bool:
        """Whether the peer's first bytes decrypted to ``expect`` (same key: it is in our network)."""
        return self._recv is not None and self._checked >= len(self._expect)

    @property
    def remote_nonce_received(self) -> bool:
        """Whether the peer's nonce has arrived (the inbound stream is keyed)."""
        return self._recv is not None

    def encrypt(self, data: bytes | bytearray | memoryview) -> bytearray:
        """``data`` XOR our keystream, as a new buffer (the input may be read-only)."""
        return self._send.apply_copy(data)

    def encrypt_into(self, data: bytes | bytearray | memoryview, out: bytearray | memoryview) -> None:
        """Write ``data`` XOR our keystream into the writable ``out`` of the same length."""
        self._send.apply_into(data, out)

    def decrypt_in_place(self, view: memoryview) -> memoryview:
        """Decrypt received bytes in the writable ``view``; returns the plaintext part.

        The first 24 bytes the peer ever sends are its nonce: they are consumed
        (the returned view starts after them) and key the inbound stream.

        Raises:
            PnetError: the peer is not in this private network (see the class doc).
        """
        if self._recv is None:
            take = min(NONCE_SIZE - len(self._nonce_in), len(view))
            self._nonce_in += view[:take]
            view = view[take:]
            n = len(self._nonce_in)
            h = len(self._expect)
            if h and n >= h and self._nonce_in[:h] == self._expect:
                raise PnetError(
                    "private network handshake failed: the peer sent plain multistream-select "
                    "(it has no PSK; this host is in a private network)"
                )
            if n < NONCE_SIZE:
                return view
            self._recv = self._cipher(self._psk, bytes(self._nonce_in))
        if len(view):
            self._recv.apply(view)
            if self._checked < len(self._expect):
                k = min(len(self._expect) - self._checked, len(view))
                if view[:k] != self._expect[self._checked : self._checked + k]:
                    self._checked = len(self._expect)  # report once
                    raise PnetError(
                        "private network handshake failed: wrong or missing PSK? "
                        "(the peer's first bytes do not decrypt to multistream-select)"
                    )
                self._checked += k
        return view
