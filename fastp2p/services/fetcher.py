"""Multi-provider chunk fetch for ``host.files`` (the engine behind ``Files.fetch``).

One :class:`Swarm` per fetch. Every provider gets a worker: one stream
(``/fastp2p/chunks/1.0.0``, see ``fastp2p.services.files``) carrying
pipelined chunk requests, up to ``FilesConfig.pipeline_bytes`` outstanding.

Scheduling (work stealing): chunks wait in one shared queue and a worker
takes the next one whenever its pipeline has room, so a fast provider takes
more chunks than a slow one. When the queue is empty (end game), an idle
worker also requests chunks still in flight at other providers; whichever
verified copy lands first is kept, so one slow or stalled provider cannot
hold up the tail.

Verification and writing: each chunk is read with ``readinto`` into a
chunk buffer from a small bounded pool (reused, so its pages stay mapped and
warm), then one job on a hash thread (GIL released) hashes it against the
manifest and, only if it matches, ``pwrite``s it into the destination. Only
verified bytes ever reach the file, so end-game duplicates simply race:
whichever verified copy lands first counts, a later one changes nothing.
The destination's blocks are ``fallocate``d up front. Writing through
``pwrite`` rather than into an ``mmap`` of a fresh file matters: faulting a
new file's pages in makes the kernel zero every page before the data is
copied over it (measured on ext4: ~2x the CPU of ``pwrite`` into allocated
blocks, and on the event loop thread unless prefaulted elsewhere).

A provider whose chunk does not match (or who does not have it, or whose
stream fails) is dropped: its stream is reset and every chunk it had in
flight goes back to the front of the queue for the others.

Resume: chunks already present in the destination that hash correctly are
not fetched again.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import hashlib
import logging
import os
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastp2p.errors import BrokenResourceError, P2PError
from fastp2p.proto.manifest import Manifest, ManifestError
from fastp2p.proto.varint import uvarint_encode

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream

__all__ = ["Swarm", "ProviderRef", "open_destination"]

log = logging.getLogger("fastp2p.files")

PENDING, INFLIGHT, VERIFYING, DONE = 0, 1, 2, 3


@dataclass
class ProviderRef:
    """Where to reach one provider: a PeerID and optional addresses (multiaddr text)."""

    peer: PeerID
    addrs: tuple[str, ...] = ()


@dataclass
class _Worker:
    ref: ProviderRef
    task: asyncio.Task[Any] | None = None
    stream: Stream | None = None
    #: (chunk index, stolen) in request order
    inflight: collections.deque[tuple[int, bool]] = field(default_factory=collections.deque)
    stolen: set[int] = field(default_factory=set)
    receiving: int = -1
    dropped: str | None = None
    bytes_used: int = 0
    bytes_received: int = 0
    started: bool = False


#: chunk buffers in use at once beyond the workers' own: hashing and writing run
#: behind the receivers by at most this many chunks (then receivers wait)
_SPARE_BUFFERS = 8


def _fallocate(fd: int, ranges: list[tuple[int, int]]) -> None:
    """Allocate the destination's missing blocks in extents (call off the event loop).

    Best effort: where the file system lacks ``fallocate`` the writes allocate
    as they go (no emulation: glibc's ``posix_fallocate`` would write zeros).
    """
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        fa = libc.fallocate64
        fa.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    except (OSError, AttributeError):
        return
    for start, end in ranges:
        if fa(fd, 0, start, end - start) != 0:
            return  # EOPNOTSUPP


def _pending_runs(state: bytearray, m: Manifest) -> list[tuple[int, int]]:
    """Byte ranges of consecutive not-yet-verified chunks."""
    runs: list[tuple[int, int]] = []
    for i in range(m.chunks):
        if state[i] == DONE:
            continue
        s, e = m.chunk_range(i)
        if runs and runs[-1][1] == s:
            runs[-1] = (runs[-1][0], e)
        else:
            runs.append((s, e))
    return runs


def _hash_range(fd: int, offset: int, n: int) -> bytes:
    """SHA-256 of ``n`` bytes of ``fd`` at ``offset`` (resume check; short reads hash short)."""
    return hashlib.sha256(os.pread(fd, n, offset)).digest()


def _verify_and_write(view: memoryview, want: bytes, fd: int, offset: int) -> bool:
    """Hash a received chunk; only if it matches ``want``, write it at ``offset``.

    Runs on a hash thread: hashlib and ``pwrite`` release the GIL. A write
    error (disk full) raises ``OSError``, which fails the fetch rather than
    blaming the provider.
    """
    if hashlib.sha256(view).digest() != want:
        return False
    done = 0
    while done < len(view):
        done += os.pwrite(fd, view[done:], offset + done)
    return True


def open_destination(path: str | os.PathLike[str], size: int) -> tuple[Any, int]:
    """Open ``path`` for a fetch of ``size`` bytes: ``(file, old size)``.

    An existing file is kept (its chunks may be resumed) and resized.
    """
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    f = os.fdopen(fd, "r+b")
    try:
        old = os.fstat(fd).st_size
        if old != size:
            f.truncate(size)
    except BaseException:
        f.close()
        raise
    return f, old


class Swarm:
    """State of one multi-provider fetch (used by ``Files.fetch``)."""

    def __init__(
        self,
        host: ServiceHost,
        protocol: str,
        cid: str,
        cid_bytes: bytes,
        *,
        pipeline_bytes: int,
        stall_timeout: float,
        pool: Executor,
        manifest: Manifest | None,
        progress: Callable[[int, int], None] | None,
    ) -> None:
        self.host = host
        self.protocol = protocol
        self.cid = cid
        self.cid_bytes = cid_bytes
        self.pipeline_bytes = pipeline_bytes
        self.stall_timeout = stall_timeout
        self.pool = pool
        self.manifest = manifest
        self.progress = progress
        self.loop = asyncio.get_running_loop()
        self.workers: dict[PeerID, _Worker] = {}
        self.manifest_ready = asyncio.Event()
        if manifest is not None:
            self.manifest_ready.set()
        self.ready = asyncio.Event()  # destination mapped, resume check done
        self._changed = asyncio.Event()
        #: new announcements of this CID add providers while it runs
        self.auto_providers = False
        self.finished = False
        #: a local failure (the destination could not be written): ends the fetch
        self.failed: BaseException | None = None
        self.fd = -1
        self.state = bytearray()
        self.pending: collections.deque[int] = collections.deque()
        self.owner: list[_Worker | None] = []
        self.steals: collections.Counter[int] = collections.Counter()
        self.verifying = 0
        self.done_bytes = 0
        self.done_chunks = 0
        self.resumed = 0
        self.dropped: dict[PeerID, str] = {}
        self._free: list[bytearray] = []  # chunk buffers not in use
        self._buffers = 0  # chunk buffers in existence

    # -- set-up -----------------------------------------------------------------------------

    def set_manifest(self, m: Manifest) -> None:
        if self.manifest is None:
            self.manifest = m
            self.manifest_ready.set()
            self.notify()

    async def attach(self, fd: int, old_size: int) -> None:
        """Use the open destination ``fd`` (already resized); chunks already there
        (within ``old_size``) and valid count as done; the missing ones' blocks are
        allocated."""
        m = self.manifest
        assert m is not None
        n = m.chunks
        self.fd = fd
        self.state = bytearray(n)
        self.owner = [None] * n
        have: list[int] = []
        if old_size > 0:
            full = [i for i in range(n) if m.chunk_range(i)[1] <= old_size]
            futs = [
                self.loop.run_in_executor(self.pool, _hash_range, fd, m.chunk_range(i)[0], m.chunk_len(i))
                for i in full
            ]
            digests = await asyncio.gather(*futs)
            have = [i for i, d in zip(full, digests, strict=True) if d == m.digest(i)]
        for i in have:
            self.state[i] = DONE
            self.done_bytes += m.chunk_len(i)
            self.done_chunks += 1
        self.resumed = self.done_bytes
        self.pending.extend(i for i in range(n) if self.state[i] != DONE)
        if self.pending:
            await self.loop.run_in_executor(self.pool, _fallocate, fd, _pending_runs(self.state, m))
        self.ready.set()
        if self.progress is not None:
            self.progress(self.done_bytes, m.size)

    @property
    def complete(self) -> bool:
        m = self.manifest
        return m is not None and self.ready.is_set() and self.done_chunks == m.chunks

    # -- providers ------------------------------------------------------------------------

    def add_provider(self, ref: ProviderRef) -> bool:
        """Start a worker for ``ref`` unless it already has one (or was dropped)."""
        if self.finished or ref.peer in self.workers or ref.peer == self.host.peer_id:
            return False
        w = _Worker(ref)
        self.workers[ref.peer] = w
        w.task = self.host.spawn(self._run_worker(w))
        return True

    @property
    def live_workers(self) -> int:
        return sum(1 for w in self.workers.values() if w.dropped is None)

    # -- change notification --------------------------------------------------------

    def notify(self) -> None:
        ev = self._changed
        self._changed = asyncio.Event()
        ev.set()

    async def wait_changed(self, timeout: float | None = None) -> None:
        ev = self._changed
        if timeout is None:
            await ev.wait()
        else:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await ev.wait()

    # -- scheduling -----------------------------------------------------------------------

    def _take(self, w: _Worker) -> int | None:
        while self.pending:
            i = self.pending.popleft()
            if self.state[i] == PENDING:
                self.state[i] = INFLIGHT
                self.owner[i] = w
                return i
        return None

    def _steal(self, w: _Worker) -> int | None:
        best: int | None = None
        for other in self.workers.values():
            if other is w or other.dropped is not None:
                continue
            for i, stolen in other.inflight:
                if stolen or self.state[i] != INFLIGHT or i in w.stolen or self.steals[i]:
                    continue
                if best is None or i < best:
                    best = i
                break  # the oldest chunk of each provider is the one to race
        if best is not None:
            w.stolen.add(best)
            self.steals[best] += 1
        return best

    def _requeue(self, i: int) -> None:
        if self.state[i] != DONE:
            self.state[i] = PENDING
            self.owner[i] = None
            self.pending.appendleft(i)

    def _accept(self, w: _Worker, i: int) -> None:
        m = self.manifest
        assert m is not None
        if self.state[i] == DONE:
            return
        self.state[i] = DONE
        n = m.chunk_len(i)
        self.done_bytes += n
        self.done_chunks += 1
        w.bytes_used += n
        if self.progress is not None:
            try:
                self.progress(self.done_bytes, m.size)
            except Exception:
                log.exception("fetch progress callback failed")
        self.notify()

    def drop(self, w: _Worker, reason: str) -> None:
        """Stop using provider ``w``: reset its stream, give its chunks to the others."""
        if w.dropped is not None:
            return
        w.dropped = reason
        self.dropped[w.ref.peer] = reason
        log.info("fetch %s: dropping provider %s: %s", self.cid, w.ref.peer, reason)
        if w.stream is not None:
            w.stream.reset()
        self._release_inflight(w)
        if w.task is not None and w.task is not asyncio.current_task():
            w.task.cancel()
        self.notify()

    def _release_inflight(self, w: _Worker) -> None:
        for i, stolen in w.inflight:
            if stolen:
                self.steals[i] -= 1
                continue
            if self.owner[i] is w and self.state[i] == INFLIGHT:
                self._requeue(i)
        w.inflight.clear()

    # -- chunk buffers --------------------------------------------------------------------

    async def _buffer(self, w: _Worker) -> bytearray:
        """A chunk buffer; waits while every buffer is busy (hashing lags the network)."""
        m = self.manifest
        assert m is not None
        while not self._free and self._buffers >= self.live_workers + _SPARE_BUFFERS and not self.finished:
            if w.stream is not None and w.stream.is_closed:
                raise BrokenResourceError(f"the stream from {w.ref.peer} failed")
            await self.wait_changed(1.0)
        if self._free:
            return self._free.pop()
        self._buffers += 1
        return bytearray(m.chunk_size)

    def _give_back(self, buf: bytearray) -> None:
        self._free.append(buf)
        self.notify()

    # -- the worker -----------------------------------------------------------------------

    async def _run_worker(self, w: _Worker) -> None:
        try:
            await self._worker(w)
        except asyncio.CancelledError:
            if w.dropped is None and not self.finished:
                self.drop(w, "cancelled")
            raise
        except (P2PError, OSError, asyncio.IncompleteReadError, ManifestError, TimeoutError) as exc:
            if not self.finished:
                self.drop(w, f"{type(exc).__name__}: {exc}")
        except Exception as exc:
            log.exception("fetch worker for %s failed", w.ref.peer)
            if not self.finished:
                self.drop(w, f"{type(exc).__name__}: {exc}")
        finally:
            if w.stream is not None:
                with contextlib.suppress(Exception):
                    await w.stream.aclose()

    async def _connect(self, w: _Worker) -> Stream:
        from fastp2p.multiaddr import Multiaddr
        from fastp2p.peerstore import PeerInfo

        host: Any = self.host
        peer = w.ref.peer
        if w.ref.addrs and not any(c.remote_peer == peer for c in host.connections):
            # Announced addresses that can be dialled, then whatever the peerstore knows
            # (a provider listening on 0.0.0.0 announces an address nobody can dial).
            addrs: list[Multiaddr] = []
            for a in (*map(Multiaddr, w.ref.addrs), *host.peerstore.addrs(peer)):
                a = a.without_peer_id()
                if a not in addrs and not _unspecified(a):
                    addrs.append(a)
            await host.connect(PeerInfo(peer, tuple(addrs)))
        return await host.open_stream(peer, self.protocol)

    async def _worker(self, w: _Worker) -> None:
        stream = w.stream = await self._connect(w)
        want_manifest = self.manifest is None
        await stream.write(
            uvarint_encode(len(self.cid_bytes)) + self.cid_bytes + bytes([1 if want_manifest else 0])
        )
        status = (await stream.readexactly(1))[0]
        if status != 0:
            raise _NotHere(f"{w.ref.peer} does not have {self.cid}")
        if want_manifest:
            n = await _read_uvarint(stream)
            from fastp2p.proto.manifest import MAX_MANIFEST_SIZE

            if n > MAX_MANIFEST_SIZE:
                raise ManifestError(f"manifest of {n} bytes is too large")
            data = await stream.readexactly(n)
            if self.manifest is None:
                try:
                    self.set_manifest(Manifest.from_cid_and_bytes(self.cid_bytes, data))
                except ManifestError as exc:
                    self.drop(w, f"bad manifest: {exc}")
                    return
        await self.ready.wait()
        m = self.manifest
        assert m is not None
        w.started = True
        depth = max(2, self.pipeline_bytes // m.chunk_size)
        while not self.finished and w.dropped is None:
            # Fill the pipeline: queued chunks first, then (end game) race others' oldest.
            reqs = bytearray()
            while len(w.inflight) < depth:
                i = self._take(w)
                stolen = False
                if i is None:
                    i = self._steal(w)
                    stolen = True
                    if i is None:
                        break
                w.inflight.append((i, stolen))
                reqs += uvarint_encode(i)
            if reqs:
                await stream.write(reqs)
            if not w.inflight:
                await self.wait_changed(1.0)
                continue
            i, stolen = w.inflight[0]
            await self._receive(w, stream, m, i, stolen)
            if w.inflight and w.inflight[0] == (i, stolen):
                w.inflight.popleft()

    async def _receive(self, w: _Worker, stream: Stream, m: Manifest, i: int, stolen: bool) -> None:
        async with asyncio.timeout(self.stall_timeout):
            # The status byte before a buffer: a worker waits on its stream, where a
            # provider's failure shows at once, rather than on the buffers.
            status = (await stream.readexactly(1))[0]
        if status != 0:
            raise _NotHere(f"{w.ref.peer} no longer serves {self.cid}")
        buf = await self._buffer(w)
        handed = False
        failed = True
        try:
            stall = asyncio.timeout(self.stall_timeout)  # pushed back on every byte received
            async with stall:
                s, e = m.chunk_range(i)
                n = e - s
                target = memoryview(buf)[:n]
                got = 0
                while got < n:
                    k = await stream.readinto(target[got:])
                    if k == 0:
                        raise asyncio.IncompleteReadError(b"", n)
                    got += k
                    stall.reschedule(self.loop.time() + self.stall_timeout)
                del target
            failed = False
            w.bytes_received += n
            if stolen:
                self.steals[i] -= 1
            if self.state[i] == DONE:
                return  # a duplicate that lost the race
            owned = not stolen and self.owner[i] is w and self.state[i] == INFLIGHT
            if owned:
                self.state[i] = VERIFYING
            self._verify(w, i, buf, owned)
            handed = True
        finally:
            if failed:
                # A failed read may leave a view of ``buf`` with the (reset) stream:
                # never reuse it.
                self._buffers -= 1
                self.notify()
            elif not handed:
                self._give_back(buf)

    def _verify(self, w: _Worker, i: int, buf: bytearray, owned: bool) -> None:
        m = self.manifest
        assert m is not None
        s, e = m.chunk_range(i)
        view = memoryview(buf)[: e - s]
        self.verifying += 1
        fut = self.loop.run_in_executor(self.pool, _verify_and_write, view, m.digest(i), self.fd, s)
        fut.add_done_callback(lambda f: self._hashed(w, i, f, view, buf, owned))

    def _hashed(
        self, w: _Worker, i: int, fut: asyncio.Future[bool], view: memoryview, buf: bytearray, owned: bool
    ) -> None:
        self.verifying -= 1
        view.release()
        self._give_back(buf)
        try:
            ok = fut.result()
        except OSError as exc:  # the destination could not be written: a local failure
            if self.failed is None:
                self.failed = exc
            if owned and self.state[i] == VERIFYING:
                self.state[i] = INFLIGHT
                self._requeue(i)
            self.notify()
            return
        except BaseException as exc:  # the pool shut down
            log.debug("verifying chunk %d failed: %r", i, exc)
            ok = False
        self._verified(w, i, ok, owned)

    def _verified(self, w: _Worker, i: int, ok: bool, owned: bool) -> None:
        """Chunk ``i`` from ``w`` matched (and is written) or did not (and was not).

        ``owned``: ``w`` owned the chunk and moved it to VERIFYING; otherwise it
        was a duplicate. The first verified copy counts; a bad one drops ``w``.
        """
        if ok:
            if self.state[i] != DONE:
                self._accept(w, i)
        else:
            if owned and self.state[i] == VERIFYING:
                self.state[i] = INFLIGHT
                self._requeue(i)
            self.drop(w, f"chunk {i} does not match the manifest")
        self.notify()

    # -- the whole fetch ----------------------------------------------------------------

    async def run(self, provider_wait: float, until: Callable[[], bool]) -> None:
        """Wait until ``until()``; raise ``NoProvidersError`` when no provider is left
        (nor any verification pending) for ``provider_wait`` seconds."""
        idle_since: float | None = None
        while not until():
            if self.failed is not None:
                raise self.failed
            if self.live_workers == 0 and self.verifying == 0:
                now = time.monotonic()
                idle_since = idle_since or now
                if now - idle_since >= provider_wait:
                    from fastp2p.services.files import NoProvidersError

                    why = "; ".join(f"{p}: {r}" for p, r in self.dropped.items()) or "none found"
                    total = self.manifest.chunks if self.manifest else "?"
                    raise NoProvidersError(
                        f"no provider could deliver {self.cid} ({self.done_chunks} of {total} "
                        f"chunks verified; providers tried: {why})"
                    )
            else:
                idle_since = None
            await self.wait_changed(0.25)

    async def shutdown(self) -> None:
        """Stop every worker (done or failed); idle streams close cleanly, busy ones reset."""
        self.finished = True
        self.notify()
        tasks = []
        for w in self.workers.values():
            if w.task is None or w.task.done():
                continue
            tasks.append(w.task)
            if w.inflight or not w.started:
                if w.stream is not None:
                    w.stream.reset()
                w.task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
        # Verifications still on the pool write into the destination: wait for them.
        while self.verifying:
            await self.wait_changed(0.05)


def _unspecified(addr: Any) -> bool:
    host = addr.value_for("ip4") or addr.value_for("ip6")
    return host in ("0.0.0.0", "::")


class _NotHere(P2PError):
    """The provider does not (or no longer) serve this content."""


async def _read_uvarint(stream: Stream) -> int:
    value = shift = 0
    for _ in range(9):
        b = (await stream.readexactly(1))[0]
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value
        shift += 7
    raise ManifestError("varint too long")
