"""File sharing: announced over pubsub, fetched from many peers, verified chunk by chunk.

``host.files`` (:class:`Files`) is the content-addressed file sharer::

    info = await host.files.share("video.mp4")      # FileInfo(cid, name, size)
    async for ann in host.files.announcements():    # {name, size, cid, addrs} heard on the topic
        ...
    res = await host.files.fetch(info.cid, "copy.mp4", progress=lambda got, size: ...)
    host.files.unshare(info.cid)

Content addressing (``fastp2p.proto.manifest``, where the manifest format is
documented): a file is cut into ``FilesConfig.chunk_size`` chunks (1 MiB), the
manifest lists their SHA-256 digests, and the file's CID is the CIDv1
(raw, sha2-256, base32) of the manifest. A fetch checks the manifest against
the CID, then every chunk against the manifest as it arrives.

Announcements: a sharing host publishes one UTF-8 JSON object per file on
``FilesConfig.topic`` (default ``fastp2p/files/1.0.0``)::

    {"name": "video.mp4", "size": 1048576, "cid": "bafkrei...", "addrs": ["/ip4/.../p2p/12D3..."]}

when it starts sharing, every ``announce_interval`` seconds, and when a new
peer subscribes to the topic. Receivers validate it (a malformed one is
rejected, which costs its sender gossipsub score; addresses naming another
peer than the signed author are ignored) and keep the newest per
(cid, provider) in a table bounded by ``max_announcements`` entries, each
forgotten ``announcement_ttl`` seconds after it was last heard.

Transfer protocol ``/fastp2p/chunks/1.0.0`` (one stream per provider and fetch):

- fetcher: ``uvarint len | binary CID | flags`` (flags bit 0: send the manifest);
- provider: 1 status byte (0 = have it, 1 = not shared here), then if asked
  ``uvarint len | manifest bytes``;
- fetcher, pipelined: ``uvarint chunk index`` per wanted chunk, half-closing
  when done;
- provider, in request order: status byte 0 then the chunk's bytes (length
  from the manifest), straight from an ``mmap`` of the file; status 1 and a
  half-close if the file stopped being shared; an index out of range resets
  the stream.

The fetch engine (multi-provider, work stealing, dropping lying providers,
resume) is ``fastp2p.services.fetcher``.

The older one-peer protocol ``/fastp2p/file/1.0.0`` (:class:`FileShare`,
whole-file SHA-256) stays for compatibility:

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
import contextlib
import hashlib
import logging
import mmap
import os
import queue
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastp2p.errors import P2PError, RemoteProtocolError
from fastp2p.proto.manifest import Manifest, ManifestError, cid_digest, cid_to_bytes
from fastp2p.proto.varint import uvarint_encode
from fastp2p.services.fetcher import ProviderRef, Swarm, _read_uvarint, open_destination

if TYPE_CHECKING:
    from fastp2p.config import FilesConfig
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.peer import PeerID
    from fastp2p.peerstore import PeerInfo
    from fastp2p.services.base import ServiceHost
    from fastp2p.services.pubsub import Pubsub, PubsubMessage, Subscription
    from fastp2p.stream import Stream

log = logging.getLogger("fastp2p.files")

__all__ = [
    "PROTOCOL_ID",
    "CHUNKS_PROTOCOL_ID",
    "Files",
    "FileInfo",
    "Announcement",
    "FetchResult",
    "NoProvidersError",
    "FileShare",
    "FileNotFoundOnPeerError",
    "HashMismatchError",
    "ManifestError",
]

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
    """Outcome of a verified fetch.

    Attributes:
        digest: hex SHA-256 the content was checked against (for
            :meth:`Files.fetch`, of the manifest the CID names).
        size: bytes of the file.
        seconds: wall time of the fetch.
        path: the destination.
        cid: the file's CID (:meth:`Files.fetch` only).
        providers: peers that delivered verified chunks.
        bytes_per_provider: verified bytes used from each of them.
        resumed: bytes already present and verified in ``path`` before the fetch.
        dropped: providers given up on, with the reason (bad chunk, stream error, ...).
    """

    digest: str
    size: int
    seconds: float
    path: str
    cid: str = ""
    providers: tuple[PeerID, ...] = ()
    bytes_per_provider: dict[PeerID, int] = field(default_factory=dict)
    resumed: int = 0
    dropped: dict[PeerID, str] = field(default_factory=dict)

    @property
    def bytes(self) -> int:
        """Same as ``size``."""
        return self.size


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


# -- content-addressed, announced, multi-provider sharing (host.files) ----------------

CHUNKS_PROTOCOL_ID = "/fastp2p/chunks/1.0.0"
_HAVE = 0
_NOT_SHARED = 1
_MAX_NAME = 255
_MAX_ADDRS = 16


class NoProvidersError(P2PError):
    """No provider could deliver the content (none known, or all failed or lied)."""


@dataclass(frozen=True)
class FileInfo:
    """A file this host shares: its CID, name (base name of the path) and size."""

    cid: str
    name: str
    size: int


@dataclass(frozen=True)
class Announcement:
    """One ``{name, size, cid, addrs}`` announcement heard on the topic.

    ``peer`` is the announcing provider (the message's signed author);
    ``received`` is ``time.time()`` when it was last heard.
    """

    cid: str
    name: str
    size: int
    peer: PeerID
    addrs: tuple[str, ...]
    received: float

    def as_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "size": self.size,
            "cid": self.cid,
            "peer": str(self.peer),
            "addrs": list(self.addrs),
        }


@dataclass
class _Shared:
    """A shared file; while served it stays mapped (pages populated once, not per stream)."""

    info: FileInfo
    path: str
    manifest: Manifest
    encoded: bytes
    file: Any = None
    mm: mmap.mmap | None = None
    view: memoryview | None = None
    streams: int = 0

    def map(self) -> memoryview | None:
        """Map the file read-only with its pages populated (call off the event loop)."""
        if self.view is not None:
            return self.view
        f = open(self.path, "rb")  # noqa: SIM115 - kept open while mapped
        size = os.fstat(f.fileno()).st_size
        if size != self.manifest.size or size == 0:
            f.close()
            return None
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
        mm = mmap.mmap(f.fileno(), size, flags=flags, prot=mmap.PROT_READ)
        self.file, self.mm, self.view = f, mm, memoryview(mm)
        return self.view

    def intact(self) -> bool:
        """Still the size it was shared with (a shrunk file would fault past its end)."""
        return self.file is not None and os.fstat(self.file.fileno()).st_size == self.manifest.size

    def unmap(self) -> None:
        view, mm, f = self.view, self.mm, self.file
        self.view = self.mm = self.file = None
        _close_map(view, mm)
        if f is not None:
            f.close()


def parse_announcement(data: bytes, author: PeerID | None) -> tuple[str, str, int, tuple[str, ...]]:
    """Validate announcement bytes; returns ``(cid, name, size, addrs)``.

    Raises:
        ValueError: not a well-formed announcement, or an address names a
            peer other than ``author``.
    """
    import json

    from fastp2p.multiaddr import Multiaddr
    from fastp2p.proto.manifest import cid_digest

    obj = json.loads(data.decode("utf-8"))
    if not isinstance(obj, dict):
        raise ValueError("announcement is not a JSON object")
    cid, name, size, addrs = obj.get("cid"), obj.get("name"), obj.get("size"), obj.get("addrs", [])
    if not isinstance(cid, str) or not isinstance(name, str) or not isinstance(addrs, list):
        raise ValueError("announcement fields have the wrong types")
    if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size < 1 << 63:
        raise ValueError("announcement size is not a non-negative integer")
    if len(name.encode()) > _MAX_NAME or len(addrs) > _MAX_ADDRS:
        raise ValueError("announcement name or address list too long")
    cid_digest(cid)
    out = []
    for a in addrs:
        if not isinstance(a, str):
            raise ValueError("announcement address is not a string")
        ma = Multiaddr(a)
        pid = ma.peer_id()
        if author is not None and pid is not None and pid != author:
            raise ValueError(f"announcement address {a} names another peer")
        out.append(str(ma if pid is not None or author is None else ma.with_peer_id(author)))
    return cid, name, size, tuple(out)


def safe_name(name: str, fallback: str) -> str:
    """A file name from an announcement that is safe to create in the current directory."""
    base = os.path.basename(name.replace("\\", "/")).strip()
    if base in ("", ".", "..") or "\0" in base:
        return fallback
    return base


class Files:
    """Content-addressed file sharing of one Host (``host.files``).

    Args:
        host: the owning host (the ``ServiceHost`` interface).
        config: ``HostConfig.files``.

    The service is lazy: it serves ``/fastp2p/chunks/1.0.0`` only once
    something is shared, and joins the announcement topic on the first
    ``share``, ``announcements`` or ``fetch``.
    """

    def __init__(self, host: ServiceHost, config: FilesConfig) -> None:
        import collections

        self.host = host
        self.config = config
        self._shared: dict[bytes, _Shared] = {}  # binary CID -> file
        self._manifests: collections.OrderedDict[bytes, Manifest] = collections.OrderedDict()
        self._table: collections.OrderedDict[tuple[str, PeerID], Announcement] = collections.OrderedDict()
        self._listeners: list[_AnnouncementQueue] = []
        self._swarms: dict[str, list[Swarm]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._serving = False
        self._map_locks: dict[str, asyncio.Lock] = {}
        self._joined = False
        self._sub: Subscription | None = None
        self._tasks: list[asyncio.Task[Any]] = []
        self._announce_now = asyncio.Event()
        self._closed = False
        #: valid announcements heard, malformed ones rejected
        self.announcements_heard = 0
        self.announcements_rejected = 0

    # -- sharing --------------------------------------------------------------------------

    async def share(self, path: str | os.PathLike[str], *, name: str | None = None) -> FileInfo:
        """Share ``path``: hash it into a manifest, serve it and announce it.

        Returns its ``FileInfo`` (the CID is the same for the same content on
        any host). Sharing the same content twice replaces the path.

        Raises:
            OSError: the file cannot be read.
            ClosedResourceError: the host is closing.

        Cancellation: nothing is shared.
        """
        self._check_open()
        p = os.path.abspath(os.fspath(path))
        if not os.path.isfile(p):
            raise FileNotFoundError(f"not a file: {p}")
        pool = self._hash_pool()
        loop = asyncio.get_running_loop()
        manifest = await loop.run_in_executor(
            None, lambda: Manifest.from_file(p, self.config.chunk_size, map_fn=pool.map)
        )
        info = FileInfo(manifest.cid, name or os.path.basename(p), manifest.size)
        key = cid_to_bytes(info.cid)
        prev = self._shared.get(key)
        self._shared[key] = _Shared(info, p, manifest, manifest.encode())
        if prev is not None and not prev.streams:
            prev.unmap()
        self._remember_manifest(key, manifest)
        if not self._serving:
            self._serving = True
            self.host.set_handler(CHUNKS_PROTOCOL_ID, self._serve)
        # Map it now (pages populated in the background), not when the first fetcher asks.
        self.host.spawn(self._source_view(self._shared[key]))
        await self._join()
        await self._announce([self._shared[key]])
        dht = self._dht()
        if dht is not None:
            self._tasks.append(self.host.spawn(self._provide(dht, info.cid)))
        return info

    def unshare(self, cid: str) -> bool:
        """Stop serving and announcing ``cid``; True if it was shared.

        Streams already transferring it stop at the next chunk request.
        """
        try:
            key = cid_to_bytes(cid)
        except ValueError:
            return False
        entry = self._shared.pop(key, None)
        if entry is None:
            return False
        if not entry.streams:
            entry.unmap()
        return True

    def shared(self) -> list[FileInfo]:
        """Files this host shares."""
        return [s.info for s in self._shared.values()]

    # -- announcements ------------------------------------------------------------------------

    async def announcements(self, *, known: bool = True, refreshes: bool = False) -> AsyncIterator[Announcement]:
        """Announcements heard on the topic, as they arrive.

        With ``known`` the table's current entries come first. Each
        (cid, provider) is yielded when first heard (or when its name, size
        or addresses change); ``refreshes`` also yields every periodic
        re-announcement. A slow reader loses the oldest entries beyond 1024.
        """
        self._check_open()
        q = _AnnouncementQueue(1024, refreshes)
        a: Announcement | None
        if known:
            for a in self.providers_table():
                q.push(a, new=True)
        self._listeners.append(q)
        try:
            await self._join()
            while True:
                a = await q.get()
                if a is None:
                    return
                yield a
        finally:
            with contextlib.suppress(ValueError):
                self._listeners.remove(q)

    def providers_table(self, cid: str | None = None) -> list[Announcement]:
        """Live announcements (of ``cid``, or all), most recently heard last."""
        self._expire()
        return [a for a in self._table.values() if cid is None or a.cid == cid]

    def _expire(self) -> None:
        cutoff = time.time() - self.config.announcement_ttl
        while self._table:
            k, a = next(iter(self._table.items()))
            if a.received >= cutoff:
                break
            del self._table[k]

    def _on_announcement(self, msg: PubsubMessage) -> None:
        if msg.from_peer is None or msg.from_peer == self.host.peer_id:
            return
        try:
            cid, name, size, addrs = parse_announcement(msg.data, msg.from_peer)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return
        self.announcements_heard += 1
        key = (cid, msg.from_peer)
        old = self._table.pop(key, None)
        ann = Announcement(cid, name, size, msg.from_peer, addrs, time.time())
        self._table[key] = ann
        while len(self._table) > self.config.max_announcements:
            self._table.popitem(last=False)
        new = old is None or (old.name, old.size, old.addrs) != (name, size, addrs)
        for q in self._listeners:
            q.push(ann, new=new)
        for sw in self._swarms.get(cid, ()):
            if sw.auto_providers:
                sw.add_provider(ProviderRef(msg.from_peer, addrs))

    def _validate(self, msg: PubsubMessage) -> str:
        try:
            parse_announcement(msg.data, msg.from_peer)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.announcements_rejected += 1
            return "reject"
        return "accept"

    async def _join(self) -> None:
        """Subscribe to the announcement topic and start the announcer (once)."""
        if self._joined or self._closed:
            return
        self._joined = True
        try:
            pubsub = self._pubsub()
        except P2PError:
            log.info("pubsub is disabled: files are neither announced nor discovered")
            return
        pubsub.set_validator(self.config.topic, self._validate)
        self._sub = await pubsub.subscribe(self.config.topic)
        self._tasks.append(self.host.spawn(self._listen(self._sub)))
        self._tasks.append(self.host.spawn(self._announcer(pubsub)))

    async def _listen(self, sub: Subscription) -> None:
        async for msg in sub:
            self._on_announcement(msg)

    def _announcement_bytes(self, s: _Shared) -> bytes:
        import json

        from fastp2p.services.fetcher import _unspecified

        # 0.0.0.0 / :: listeners announce nothing dialable; receivers fall back to
        # the connection or the peerstore
        addrs = [str(a) for a in getattr(self.host, "full_addrs", []) if not _unspecified(a)][:_MAX_ADDRS]
        return json.dumps(
            {"name": s.info.name, "size": s.info.size, "cid": s.info.cid, "addrs": addrs},
            separators=(",", ":"),
        ).encode()

    async def _announce(self, files: list[_Shared]) -> None:
        try:
            pubsub = self._pubsub()
        except P2PError:
            return
        for s in files:
            try:
                await pubsub.publish(self.config.topic, self._announcement_bytes(s))
            except P2PError as exc:
                log.debug("announcing %s failed: %s", s.info.cid, exc)

    async def _announcer(self, pubsub: Pubsub) -> None:
        """Re-announce every interval, and soon after a new peer joins the topic."""
        topic = self.config.topic
        known = set(pubsub.topic_peers(topic))
        next_all = time.monotonic() + self.config.announce_interval
        while not self._closed:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(max(0.05, min(1.0, next_all - time.monotonic()))):
                    await pubsub.wait_for_peers(topic, len(known) + 1)
            current = set(pubsub.topic_peers(topic))
            joined = current - known
            known = current
            if joined and self._shared:
                await asyncio.sleep(0.1)  # let the new peers' subscriptions settle, batch a burst
                known = set(pubsub.topic_peers(topic))
                await self._announce(list(self._shared.values()))
            if time.monotonic() >= next_all:
                next_all = time.monotonic() + self.config.announce_interval
                self._expire()
                if self._shared:
                    await self._announce(list(self._shared.values()))

    # -- serving ----------------------------------------------------------------------------

    async def _serve(self, stream: Stream) -> None:
        from fastp2p.proto.manifest import cid_from_bytes

        n = await _read_uvarint(stream)
        if n > 128:
            raise RemoteProtocolError(f"CID of {n} bytes")
        key = await stream.readexactly(n)
        flags = (await stream.readexactly(1))[0]
        try:
            cid_from_bytes(key)
        except ValueError as exc:
            raise RemoteProtocolError(str(exc)) from exc
        entry = self._shared.get(key)
        if entry is None:
            await stream.write(bytes([_NOT_SHARED]))
            await stream.close_write()
            return
        m = entry.manifest
        head = bytes([_HAVE])
        if flags & 1:
            head += uvarint_encode(len(entry.encoded)) + entry.encoded
        await stream.write(head)
        entry.streams += 1
        try:
            view = await self._source_view(entry)
            reqs = _VarintReader(stream)
            ok = bytes([_HAVE])
            while (i := await reqs.next()) is not None:
                if self._shared.get(key) is not entry or (m.size and (view is None or not entry.intact())):
                    await stream.write(bytes([_NOT_SHARED]))
                    break
                if i >= m.chunks:
                    raise RemoteProtocolError(f"chunk {i} out of range ({m.chunks} chunks)")
                s, e = m.chunk_range(i)
                await stream.write(ok)
                assert view is not None
                with view[s:e] as piece:
                    await stream.write(piece)
        finally:
            entry.streams -= 1
            if (self._closed or self._shared.get(key) is not entry) and not entry.streams:
                entry.unmap()
        await stream.close_write()

    async def _source_view(self, entry: _Shared) -> memoryview | None:
        if entry.view is not None:
            return entry.view
        lock = self._map_locks.setdefault(entry.path, asyncio.Lock())
        async with lock:
            view = await asyncio.get_running_loop().run_in_executor(None, entry.map)
        key = cid_to_bytes(entry.info.cid)
        if (self._closed or self._shared.get(key) is not entry) and not entry.streams:
            entry.unmap()  # unshared (or closed) while it was being mapped
            return None
        if view is None and entry.manifest.size:
            log.warning("shared file %s changed size; no longer serving it", entry.path)
            self._shared.pop(cid_to_bytes(entry.info.cid), None)
        return view

    # -- fetching ---------------------------------------------------------------------------

    async def fetch(
        self,
        cid: str,
        dest: str | os.PathLike[str],
        *,
        providers: Iterable[PeerID | str | Multiaddr | PeerInfo] | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> FetchResult:
        """Fetch the file ``cid`` into ``dest`` from every provider at once, verified.

        Args:
            cid: the file's CID (``FileInfo.cid`` / an announcement's ``cid``).
            dest: the destination; an existing file there is resumed (its
                chunks that already match are kept) and resized.
            providers: peers to fetch from (PeerIDs, multiaddrs with ``/p2p/``
                or ``PeerInfo``). None: the providers announced on the topic
                (joining it first), those announced while the fetch runs, the
                DHT's providers when ``HostConfig.dht`` is enabled (``share``
                provides each CID's multihash there) and, when none is known
                yet, connected peers that serve ``/fastp2p/chunks/1.0.0``.
            progress: ``progress(verified_bytes, size)`` after each verified chunk.

        Returns:
            A ``FetchResult`` once every chunk matched the manifest and the
            manifest matched ``cid``.

        Raises:
            ManifestError: ``cid`` is not a file CID.
            NoProvidersError: no provider was found within
                ``FilesConfig.provider_wait``, or every one failed or lied
                (the verified chunks stay in ``dest`` for a later resume).

        Cancellation: workers stop and their streams are reset; ``dest``
        keeps the chunks verified so far.
        """
        self._check_open()
        t0 = time.perf_counter()
        key = cid_to_bytes(cid)
        cid = cid_from_bytes_text(key)
        cfg = self.config
        sw = Swarm(
            self.host, CHUNKS_PROTOCOL_ID, cid, key,
            pipeline_bytes=cfg.pipeline_bytes, stall_timeout=cfg.stall_timeout,
            pool=self._hash_pool(), manifest=self._manifests.get(key), progress=progress,
        )
        sw.auto_providers = providers is None
        self._swarms.setdefault(cid, []).append(sw)
        f = None
        lookup: asyncio.Task[Any] | None = None
        try:
            if providers is None:
                await self._join()
                refs = [ProviderRef(a.peer, a.addrs) for a in self.providers_table(cid)]
                if not refs:
                    refs = self._connected_candidates()
                dht = self._dht()
                if dht is not None:
                    lookup = self.host.spawn(self._dht_providers(dht, sw))
            else:
                refs = [await self._provider_ref(p) for p in providers]
            for r in refs:
                sw.add_provider(r)
            await sw.run(cfg.provider_wait, sw.manifest_ready.is_set)
            m = sw.manifest
            assert m is not None
            self._remember_manifest(key, m)
            f, old = open_destination(dest, m.size)
            await sw.attach(f.fileno(), old)
            await sw.run(cfg.provider_wait, lambda: sw.complete and not sw.verifying)
        finally:
            if lookup is not None:
                lookup.cancel()
            await sw.shutdown()
            self._swarms[cid].remove(sw)
            if not self._swarms[cid]:
                del self._swarms[cid]
            if f is not None:
                f.close()
        used = {w.ref.peer: w.bytes_used for w in sw.workers.values() if w.bytes_used}
        return FetchResult(
            digest=cid_digest(key).hex(),
            size=m.size,
            seconds=time.perf_counter() - t0,
            path=os.fspath(dest),
            cid=cid,
            providers=tuple(used),
            bytes_per_provider=used,
            resumed=sw.resumed,
            dropped=dict(sw.dropped),
        )

    def _connected_candidates(self) -> list[ProviderRef]:
        out = []
        for conn in self.host.connections:
            rec = self.host.peerstore.get(conn.remote_peer)
            if rec is not None and CHUNKS_PROTOCOL_ID in rec.protocols:
                out.append(ProviderRef(conn.remote_peer))
        return out

    async def _provider_ref(self, p: PeerID | str | Multiaddr | PeerInfo) -> ProviderRef:
        from fastp2p.multiaddr import Multiaddr as _MA
        from fastp2p.peer import PeerID as _PID
        from fastp2p.peerstore import PeerInfo as _PI

        if isinstance(p, _PID):
            return ProviderRef(p)
        if isinstance(p, _PI):
            return ProviderRef(p.peer_id, tuple(str(a) for a in p.addrs))
        ma = p if isinstance(p, _MA) else _MA(p)
        pid = ma.peer_id()
        if pid is None:
            host: Any = self.host
            return ProviderRef(await host.connect(ma))
        return ProviderRef(pid, (str(ma),))

    # -- plumbing ---------------------------------------------------------------------------

    def _remember_manifest(self, key: bytes, m: Manifest) -> None:
        self._manifests[key] = m
        self._manifests.move_to_end(key)
        while len(self._manifests) > 64:
            self._manifests.popitem(last=False)

    def _dht(self) -> Any:
        """The host's DHT when enabled (``HostConfig.dht``), else None."""
        host: Any = self.host
        try:
            return host.dht
        except (AttributeError, P2PError):
            return None

    async def _provide(self, dht: Any, cid: str) -> None:
        """Tell the DHT we provide ``cid`` (keyed by its multihash, as IPFS does)."""
        try:
            n = await dht.provide(_dht_key(cid))
            log.debug("provided %s to %d DHT peers", cid, n)
        except Exception as exc:  # no DHT peers yet: announcements still work
            log.debug("DHT provide of %s failed: %r", cid, exc)

    async def _dht_providers(self, dht: Any, sw: Swarm) -> None:
        """Add the DHT's providers of ``sw.cid`` to the fetch as they are found."""
        try:
            async for info in dht.find_providers(_dht_key(sw.cid)):
                sw.add_provider(ProviderRef(info.peer_id, tuple(str(a) for a in info.addrs)))
        except Exception as exc:
            log.debug("DHT provider lookup for %s failed: %r", sw.cid, exc)

    def _pubsub(self) -> Pubsub:
        host: Any = self.host  # ``pubsub`` is a Host member, not part of ServiceHost
        ps: Pubsub = host.pubsub
        return ps

    def _hash_pool(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.config.hash_threads, thread_name_prefix="fastp2p-hash")
        return self._pool

    def _check_open(self) -> None:
        if self._closed:
            from fastp2p.errors import ClosedResourceError

            raise ClosedResourceError("files service is closed")

    def close(self) -> None:
        """Stop announcing and serving (called by the Host). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for q in self._listeners:
            q.close()
        for t in self._tasks:
            t.cancel()
        for entry in self._shared.values():
            if not entry.streams:
                entry.unmap()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


class _AnnouncementQueue:
    def __init__(self, maxsize: int, refreshes: bool) -> None:
        import collections

        self._q: collections.deque[Announcement | None] = collections.deque()
        self._max = maxsize
        self._refreshes = refreshes
        self._ev = asyncio.Event()
        self.dropped = 0

    def push(self, a: Announcement, *, new: bool) -> None:
        if not new and not self._refreshes:
            return
        if len(self._q) >= self._max:
            self._q.popleft()
            self.dropped += 1
        self._q.append(a)
        self._ev.set()

    def close(self) -> None:
        self._q.append(None)
        self._ev.set()

    async def get(self) -> Announcement | None:
        while not self._q:
            self._ev.clear()
            await self._ev.wait()
        return self._q.popleft()


class _VarintReader:
    """Uvarints from a stream, read in batches (pipelined chunk requests)."""

    def __init__(self, stream: Stream) -> None:
        self._stream = stream
        self._buf = b""

    async def next(self) -> int | None:
        from fastp2p.proto.varint import uvarint_decode

        while True:
            r = uvarint_decode(self._buf) if self._buf else None
            if r is not None:
                value, end = r
                self._buf = self._buf[end:]
                return value
            more = await self._stream.read(4096)
            if not more:
                if self._buf:
                    raise RemoteProtocolError("stream ended inside a chunk request")
                return None
            self._buf += more


def cid_from_bytes_text(key: bytes) -> str:
    from fastp2p.proto.manifest import cid_from_bytes

    return cid_from_bytes(key)


def _close_map(view: memoryview | None, mm: mmap.mmap | None) -> None:
    """Release ``view`` and close ``mm``; if a failed write still pins a slice of it
    (a reset stream's queued frame), leave the mapping to the garbage collector."""
    try:
        if view is not None:
            view.release()
        if mm is not None:
            mm.close()
    except BufferError:
        import gc

        holders = [type(r).__name__ for r in gc.get_referrers(mm)] if mm is not None else []
        log.debug("mapping still exported (%s); closed when released", holders)


def _dht_key(cid: str) -> bytes:
    """The DHT provider key of a file CID: its multihash (``cid.Hash()`` in go-libp2p)."""
    from fastp2p.multibase import multihash_encode

    return multihash_encode(0x12, cid_digest(cid))
