"""File sharing by content hash (/fastp2p/file/1.0.0).

Wire format (one request per stream):

- request: 32-byte SHA-256 of the wanted content;
- response: 1 status byte (0 = found, 1 = not found), then on success an
  8-byte big-endian size followed by exactly that many bytes; the server then
  half-closes.

The fetcher hashes what it receives and only reports success if the digest
matches the requested one, so a lying or corrupting peer is detected. Files go
to the wire from an ``mmap`` without Python copies, and land in a
preallocated ``mmap`` of the destination file via ``readinto``.
"""

from __future__ import annotations

import asyncio
import hashlib
import mmap
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastp2p.errors import P2PError, RemoteProtocolError

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream

__all__ = ["PROTOCOL_ID", "FileShare", "FileNotFoundOnPeerError", "HashMismatchError", "FetchResult"]

PROTOCOL_ID = "/fastp2p/file/1.0.0"
_CHUNK = 4 << 20
_FOUND = 0
_NOT_FOUND = 1


class FileNotFoundOnPeerError(P2PError):
    """The peer does not share content with that hash."""


class HashMismatchError(RemoteProtocolError):
    """The bytes received do not hash to the requested digest."""


@dataclass(frozen=True)
class FetchResult:
    """Outcome of a verified fetch."""

    digest: str
    size: int
    seconds: float
    path: str


def hash_file(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of a file, read through ``mmap`` (no Python-level copies)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        if size:
            with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                h.update(m)
    return h.hexdigest()


class _PipelinedHasher:
    """SHA-256 of a growing buffer, computed on a worker thread behind the receiver.

    ``hashlib`` releases the GIL on large updates, so hashing chunk k overlaps
    with receiving and decrypting chunk k+1. The worker holds its own view of the
    buffer and releases it before ``finish``/``abort`` return, so the caller may
    close the underlying mmap right after.
    """

    def __init__(self, buf: memoryview) -> None:
        self._h = hashlib.sha256()
        self._view = buf
        self._ranges: queue.SimpleQueue[tuple[int, int] | None] = queue.SimpleQueue()
        self._stop = False
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fastp2p-sha256", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        view = self._view
        try:
            while (r := self._ranges.get()) is not None:
                if not self._stop:
                    self._h.update(view[r[0] : r[1]])
        except BaseException as exc:  # surfaced by finish()
            self._error = exc
        finally:
            self._view = None  # type: ignore[assignment]

    def update(self, start: int, end: int) -> None:
        self._ranges.put((start, end))

    async def finish(self) -> bytes:
        self._ranges.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        if self._error is not None:
            raise self._error
        return self._h.digest()

    def abort(self) -> None:
        self._stop = True
        self._ranges.put(None)
        self._thread.join()


class FileShare:
    """Share files by SHA-256 and fetch them from peers.

    Example::

        share = FileShare(host)
        digest = share.add_file("data.bin")
        result = await FileShare(other_host).fetch(peer, digest, "copy.bin")
    """

    def __init__(self, host: ServiceHost) -> None:
        self.host = host
        self._files: dict[bytes, str] = {}
        host.set_handler(PROTOCOL_ID, self._serve)

    def add_file(self, path: str | os.PathLike[str], digest: str | None = None) -> str:
        """Share ``path``; returns its hex SHA-256 (computed unless given)."""
        d = digest or hash_file(path)
        self._files[bytes.fromhex(d)] = os.fspath(path)
        return d

    async def _serve(self, stream: Stream) -> None:
        want = await stream.readexactly(32)
        path = self._files.get(want)
        if path is None:
            await stream.write(bytes([_NOT_FOUND]))
            await stream.close_write()
            return
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            await stream.write(bytes([_FOUND]) + size.to_bytes(8, "big"))
            if size:
                with mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
                    view = memoryview(m)
                    try:
                        for off in range(0, size, _CHUNK):
                            await stream.write(view[off : off + _CHUNK])
                    finally:
                        view.release()
        await stream.close_write()

    async def fetch(
        self,
        peer: PeerID,
        digest: str,
        dest: str | os.PathLike[str],
        *,
        progress: Callable[[int, int], None] | None = None,
    ) -> FetchResult:
        """Fetch content ``digest`` from ``peer`` into ``dest`` and verify it.

        Raises:
            FileNotFoundOnPeerError: the peer does not have it.
            HashMismatchError: the received bytes do not match ``digest``
                (``dest`` is removed).
            NegotiationError, StreamResetError, ConnectionClosedError: transport failures.

        Cancellation: the stream is reset and a partial ``dest`` is removed.
        """
        import time

        t0 = time.perf_counter()
        want = bytes.fromhex(digest)
        stream = await self.host.open_stream(peer, PROTOCOL_ID)
        ok = False
        try:
            async with stream:
                await stream.write(want)
                await stream.close_write()
                status = await stream.readexactly(1)
                if status[0] != _FOUND:
                    raise FileNotFoundOnPeerError(f"{peer} does not share {digest}")
                size = int.from_bytes(await stream.readexactly(8), "big")
                got_digest = hashlib.sha256().digest()
                with open(dest, "w+b") as f:
                    if size:
                        f.truncate(size)
                        with mmap.mmap(f.fileno(), size) as m:
                            view = memoryview(m)
                            hasher = _PipelinedHasher(view)
                            try:
                                got = hashed = 0
                                while got < size:
                                    n = await stream.readinto(view[got : min(size, got + _CHUNK)])
                                    if n == 0:
                                        raise RemoteProtocolError(
                                            f"peer closed after {got} of {size} bytes"
                                        )
                                    got += n
                                    if got - hashed >= _CHUNK or got == size:
                                        hasher.update(hashed, got)
                                        hashed = got
                                    if progress is not None:
                                        progress(got, size)
                                got_digest = await hasher.finish()
                            finally:
                                hasher.abort()
                                view.release()
                    elif progress is not None:
                        progress(0, 0)
                if await stream.read(1):
                    raise RemoteProtocolError("peer sent more bytes than announced")
                if got_digest != want:
                    raise HashMismatchError(
                        f"content from {peer} hashes to {got_digest.hex()}, expected {digest}"
                    )
                ok = True
        finally:
            if not ok:
                try:
                    os.unlink(dest)
                except FileNotFoundError:
                    pass
        return FetchResult(digest, size, time.perf_counter() - t0, os.fspath(dest))
