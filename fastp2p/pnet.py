"""Private networks (pnet): make and load ``/key/swarm/psk/1.0.0/`` key files.

A host joins a private network with ``HostConfig(psk=...)`` (the key, the key
file's bytes, or its path) or ``--psk FILE`` on the command line; see the
README section "Private networks (pnet)". The format and the wire protection
live in ``fastp2p.proto.pnet`` and ``fastp2p.transport.pnet``.
"""

from __future__ import annotations

import os

from fastp2p.proto.pnet import MAX_PSK_FILE, PSK_SIZE, decode_psk_file, encode_psk_file

__all__ = ["generate_psk", "write_psk_file", "load_psk_file"]


def generate_psk() -> bytes:
    """A new random 32-byte pre-shared key."""
    return os.urandom(PSK_SIZE)


def write_psk_file(path: str | os.PathLike[str], psk: bytes | None = None, encoding: str = "/base16/") -> bytes:
    """Write a key file (a new random key unless ``psk``); returns the key.

    The file is created with mode 0600 and never overwritten (``FileExistsError``).
    """
    key = generate_psk() if psk is None else bytes(psk)
    data = encode_psk_file(key, encoding)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return key


def load_psk_file(path: str | os.PathLike[str]) -> bytes:
    """The 32-byte key of a key file (``PskFormatError`` if it is not one)."""
    with open(path, "rb") as f:
        return decode_psk_file(f.read(MAX_PSK_FILE + 1))
