"""One-sided put/get on granted memory regions (``/fastp2p/region/1.0.0``).

The requester side (``put``/``get``, reached as ``Connection.put``/``get``)
and the owner side (``serve``, the Host's handler) of the protocol in
``fastp2p.proto.region``. Rights, bounds, expiry and revocation are checked
by the owner only (``MemoryManager.check``); the requester's claims are never
trusted.

Bytes travel over the stream on any data path. On the shared-memory path the
owner can instead copy once, straight between the two processes' buffers,
with ``process_vm_readv``/``process_vm_writev`` (Linux CMA): the requester
names its buffer's address and the owner targets the pid the kernel reported
for the peer when the path was set up (SO_PEERCRED), never one from the
request. Where the kernel refuses (ptrace policy), the owner says so and the
requester repeats the operation over the stream.

In-flight ownership (DESIGN boundary rule 4): each operation runs in its own
task holding a lease on the local region until the owner's final answer or the
connection's end. Cancelling the caller does not cancel that task, because the
owner may still be copying into the caller's memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import os
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastp2p.errors import (
    AccessDeniedError,
    AccessError,
    ClosedResourceError,
    ConnectionClosedError,
    P2PError,
    RegionBoundsError,
    RemoteProtocolError,
)
from fastp2p.proto import region as rp
from fastp2p.proto.region import Op, Request, Response, Status

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.transport.conn import Connection
    from fastp2p.transport.stream import Stream

__all__ = ["PROTOCOL_ID", "put", "get", "serve"]

PROTOCOL_ID = rp.PROTOCOL_ID
# Direct copies above this size run on a worker thread (the loop stays responsive).
_THREAD_THRESHOLD = 1 << 20


# -- process_vm_readv/writev ---------------------------------------------------------


class _IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


_libc: Any = None


def _cma(write: bool, pid: int, local: int, remote: int, n: int) -> None:
    """Copy ``n`` bytes between our ``local`` address and ``remote`` in ``pid``."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        for name in ("process_vm_readv", "process_vm_writev"):
            fn = getattr(_libc, name)
            fn.restype = ctypes.c_ssize_t
            fn.argtypes = [
                ctypes.c_int,
                ctypes.POINTER(_IoVec),
                ctypes.c_ulong,
                ctypes.POINTER(_IoVec),
                ctypes.c_ulong,
                ctypes.c_ulong,
            ]
    fn = _libc.process_vm_writev if write else _libc.process_vm_readv
    done = 0
    while done < n:
        lv = _IoVec(local + done, n - done)
        rv = _IoVec(remote + done, n - done)
        r = fn(pid, ctypes.byref(lv), 1, ctypes.byref(rv), 1, 0)
        if r < 0:
            e = ctypes.get_errno()
            raise OSError(e, os.strerror(e))
        if r == 0:
            raise OSError(0, "process_vm copy made no progress")
        done += r


# -- message helpers ------------------------------------------------------------------


async def _read_msg(stream: Stream, buf: bytearray) -> bytes:
    """One length-prefixed message; bytes after it stay in ``buf``."""
    while True:
        r = rp.read_message(buf)
        if r is not None:
            body, used = r
            del buf[:used]
            return body
        chunk = await stream.read(4096)
        if not chunk:
            raise ConnectionClosedError("region stream ended before the answer", remote=True)
        buf += chunk


async def _read_into(stream: Stream, view: memoryview, leftover: bytearray) -> None:
    got = 0
    if leftover:
        k = min(len(leftover), len(view))
        view[:k] = leftover[:k]
        del leftover[:k]
        got = k
    n = len(view)
    while got < n:
        k = await stream.readinto(view[got:])
        if k == 0:
            raise ConnectionClosedError("region stream ended before all data arrived", remote=True)
        got += k


def _raise_for(resp: Response) -> None:
    if resp.status is Status.ACCESS_DENIED:
        raise AccessDeniedError(f"owner refused: {resp.message}")
    if resp.status is Status.BOUNDS:
        raise RegionBoundsError(f"owner refused: {resp.message}")
    raise RemoteProtocolError(f"region operation failed on the owner: {resp.status.name} {resp.message}")


# -- requester side ---------------------------------------------------------------------


def _local_view(region: Any, local_offset: int, length: int | None) -> tuple[memoryview, int]:
    if local_offset < 0 or local_offset > region.nbytes:
        raise RegionBoundsError(f"local offset {local_offset} outside the {region.nbytes}-byte region")
    if length is None:
        length = region.nbytes - local_offset
    if length < 0 or local_offset + length > region.nbytes:
        raise RegionBoundsError(
            f"local range [{local_offset}, {local_offset + length}) outside the {region.nbytes}-byte region"
        )
    return region.view(local_offset, length), region.address + local_offset


async def _op(
    conn: Connection,
    op: Op,
    region: Any,
    token: bytes,
    offset: int,
    length: int | None,
    local_offset: int,
) -> int:
    from fastp2p.transport.upgrader import negotiate_outbound

    lease = region.lease()
    try:
        view, address = _local_view(region, local_offset, length)
        with view:
            n = len(view)
            if n and conn.data_path == "rdma" and _rdma_usable(conn):
                # one-sided: the owner scopes an rkey to the checked range
                from fastp2p.proto.rdma import Op as RdmaOp
                from fastp2p.transport import rdma

                rop = RdmaOp.PUT if op is Op.PUT else RdmaOp.GET
                return await rdma.rma(conn, rop, region, token, offset, n, local_offset)
            direct = conn.peer_process is not None and n > 0
            while True:
                stream = conn.open_stream()
                try:
                    stream.protocol = await negotiate_outbound(stream, [PROTOCOL_ID])
                    buf = bytearray()
                    await stream.write(
                        rp.encode_request(Request(op, bytes(token), offset, n, direct=direct, address=address))
                    )
                    resp = rp.decode_response(await _read_msg(stream, buf))
                    if resp.status is Status.DIRECT_UNAVAILABLE and direct:
                        direct = False
                        continue
                    if resp.status is Status.DONE and direct:
                        return n
                    if resp.status is not Status.OK:
                        _raise_for(resp)
                    if op is Op.PUT:
                        await stream.write(view)
                        resp = rp.decode_response(await _read_msg(stream, buf))
                        if resp.status is not Status.DONE:
                            _raise_for(resp)
                    else:
                        await _read_into(stream, view, buf)
                    return n
                except BaseException:
                    stream.reset()
                    raise
                finally:
                    with contextlib.suppress(P2PError):
                        await stream.aclose()
    finally:
        if lease is not None:
            lease.release()


async def _run(conn: Connection, op: Op, region: Any, token: bytes, offset: int, length: int | None, local_offset: int) -> int:
    conn.check_open()
    if not 0 <= offset < 1 << 63:
        raise RegionBoundsError(f"remote offset {offset} out of range")
    task = conn.loop.create_task(_op(conn, op, region, token, offset, length, local_offset))
    # The task, not the caller, owns the lease: a cancelled caller leaves it
    # running until the owner answers or the connection ends.
    conn.track_task(task)
    return await asyncio.shield(task)


def _rdma_usable(conn: Connection) -> bool:
    from fastp2p.transport.rdma import RdmaPath

    return isinstance(conn.tx_path, RdmaPath)


async def atomic(conn: Connection, kind: str, token: bytes, offset: int, compare: int, operand: int) -> int:
    """``conn.atomic_cas``/``atomic_fetch_add``: an RDMA atomic on a granted 8-byte slot."""
    from fastp2p.errors import TransportUnavailableError
    from fastp2p.proto.rdma import Op as RdmaOp
    from fastp2p.transport import rdma

    conn.check_open()
    if conn.data_path != "rdma" or not _rdma_usable(conn):
        raise TransportUnavailableError(
            f"atomics need the RDMA data path (this connection uses {conn.data_path})"
        )
    for name, v in (("compare", compare), ("operand", operand)):
        if not 0 <= v < 1 << 64:
            raise ValueError(f"{name} must be an unsigned 64-bit integer")
    rop = RdmaOp.CAS if kind == "cas" else RdmaOp.FAA
    task = conn.loop.create_task(
        rdma.rma(conn, rop, None, token, offset, 8, 0, compare=compare, operand=operand)
    )
    conn.track_task(task)
    return await asyncio.shield(task)


async def put(
    conn: Connection, region: Any, token: bytes, *, offset: int = 0, length: int | None = None, local_offset: int = 0
) -> int:
    """Write ``region[local_offset:local_offset+length]`` into the granted remote range at ``offset``."""
    return await _run(conn, Op.PUT, region, token, offset, length, local_offset)


async def get(
    conn: Connection, region: Any, token: bytes, *, offset: int = 0, length: int | None = None, local_offset: int = 0
) -> int:
    """Read the granted remote range at ``offset`` into ``region[local_offset:...]``."""
    return await _run(conn, Op.GET, region, token, offset, length, local_offset)


# -- owner side ---------------------------------------------------------------------------


async def serve(stream: Stream, check: Callable[..., tuple[Any, int]]) -> None:
    """Handle one put/get on ``stream``; ``check`` is ``MemoryManager.check``."""
    conn = stream.conn
    req = rp.decode_request(await _read_msg(stream, bytearray()))
    write = req.op is Op.PUT
    peer: PeerID = conn.remote_peer
    try:
        region, at = check(req.token, peer, write=write, offset=req.offset, length=req.length)
        lease = region.lease()
    except RegionBoundsError as exc:
        await stream.write(rp.encode_response(Response(Status.BOUNDS, str(exc))))
        return
    except (AccessError, ClosedResourceError) as exc:
        await stream.write(rp.encode_response(Response(Status.ACCESS_DENIED, str(exc))))
        return
    try:
        view = region.view(at, req.length)
        with view:
            if req.direct:
                pid = conn.peer_process
                if pid is None:
                    await stream.write(rp.encode_response(Response(Status.DIRECT_UNAVAILABLE, "not on one host")))
                    return
                local = region.address + at
                try:
                    if req.length > _THREAD_THRESHOLD:
                        job = asyncio.ensure_future(
                            asyncio.to_thread(_cma, not write, pid, local, req.address, req.length)
                        )
                        try:
                            await asyncio.shield(job)
                        except asyncio.CancelledError:
                            # The thread is still copying into the region: it keeps
                            # the lease until it is done.
                            held, lease = lease, None
                            job.add_done_callback(lambda j: (held.release(), j.exception()))
                            raise
                    else:
                        _cma(not write, pid, local, req.address, req.length)
                except OSError as exc:
                    await stream.write(rp.encode_response(Response(Status.DIRECT_UNAVAILABLE, str(exc))))
                    return
                await stream.write(rp.encode_response(Response(Status.DONE)))
                return
            await stream.write(rp.encode_response(Response(Status.OK)))
            if write:
                await _read_into(stream, view, bytearray())
                await stream.write(rp.encode_response(Response(Status.DONE)))
            else:
                await stream.write(view)
    finally:
        if lease is not None:
            lease.release()
