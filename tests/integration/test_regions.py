"""One-sided put/get across processes (issue 6 §2.3 and §4).

The region owner is a spawned child (``shm_peer.py``) driven over a JSON
control stream; this process is the requester. Every case runs on the
shared-memory path (single process_vm copy) and on a TCP-only connection
(bytes over a stream). Every rejected put is checked to have written nothing.
"""

from __future__ import annotations

import asyncio
import mmap
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

import fastp2p
from fastp2p.config import HostConfig
from fastp2p.errors import AccessDeniedError, ConnectionClosedError, RegionBoundsError
from fastp2p.memory import TOKEN_SIZE
from fastp2p.transport import shm

np = pytest.importorskip("numpy", reason="numpy is in bench/requirements.txt, not [test]")

from tests.integration.shm_peer import Child, RegionControl, crc, pattern  # noqa: E402

KiB = 1 << 10
MiB = 1 << 20
SIZE = 1 * MiB

PATHS = ["shm", "tcp"]
if not shm.available()[0]:
    PATHS = [pytest.param("shm", marks=pytest.mark.skip(reason=shm.available()[1])), "tcp"]


@pytest.fixture(scope="module")
def child() -> Any:
    c = Child()
    yield c
    c.stop()


class Side:
    """This process's host connected to the child, and the child's control stream."""

    def __init__(self, host: fastp2p.Host, peer: fastp2p.PeerID, ctl: RegionControl) -> None:
        self.host = host
        self.peer = peer
        self.conn = host.connection(peer)
        self.ctl = ctl
        self._n = 0

    async def remote(self, size: int = SIZE, kind: str = "alloc", seed: int | None = 1) -> str:
        self._n += 1
        name = f"r{self._n}"
        cmd: dict[str, Any] = {"op": "alloc", "name": name, "size": size, "kind": kind}
        if seed is not None:
            cmd["seed"] = seed
        await self.ctl(**cmd)
        return name


@pytest.fixture(params=PATHS)
async def side(request: pytest.FixtureRequest, child: Child) -> AsyncIterator[Side]:
    cfg = HostConfig(data_paths=("tcp",)) if request.param == "tcp" else HostConfig()
    async with fastp2p.Host(config=cfg) as host:
        peer = await host.connect(child.addr)
        conn = host.connection(peer)
        assert conn.data_path == request.param, conn.data_path_reason
        if request.param == "shm":
            assert conn.peer_process == child.pid
        else:
            assert conn.peer_process is None
        ctl = await RegionControl.open(host, peer)
        yield Side(host, peer, ctl)


def _local(host: fastp2p.Host, kind: str, size: int, tmp_path: Any, keep: list[Any]) -> Any:
    if kind == "alloc":
        return host.alloc(size)
    if kind == "numpy":
        arr = np.zeros(size, dtype=np.uint8)
        keep.append(arr)
        return host.register(arr)
    path = tmp_path / f"local-{len(keep)}.bin"
    path.write_bytes(bytes(size))
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), size)
    keep.append(mm)
    return host.register(mm)


async def _unchanged(side: Side, name: str, before: int) -> None:
    assert await side.ctl.crc(name) == before, "a rejected put changed the owner's region"


# -- valid operations ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("remote_kind", "local_kind"), [("alloc", "numpy"), ("numpy", "mmap"), ("mmap", "alloc")]
)
async def test_put_get_whole_region(
    side: Side, remote_kind: str, local_kind: str, tmp_path: Any
) -> None:
    keep: list[Any] = []
    name = await side.remote(kind=remote_kind, seed=5)
    rtok = await side.ctl.grant(name)
    wtok = await side.ctl.grant(name, write=True, read=False)
    local = _local(side.host, local_kind, SIZE, tmp_path, keep)
    try:
        assert await side.conn.get(local, rtok) == SIZE
        assert crc(local.view()) == crc(pattern(SIZE, 5))
        local.view()[:] = pattern(SIZE, 6)
        assert await side.conn.put(local, wtok) == SIZE
        assert await side.ctl.crc(name) == crc(pattern(SIZE, 6))
        if local_kind == "numpy":  # the registered array itself holds the bytes
            assert np.array_equal(keep[0], pattern(SIZE, 6))
    finally:
        local.close()
        for k in keep:
            if isinstance(k, mmap.mmap):
                k.close()


async def test_offsets_local_offset_and_length_subsets(side: Side) -> None:
    name = await side.remote(seed=7)
    remote = pattern(SIZE, 7)
    g_off, g_len = 4096, 64 * KiB
    tok = await side.ctl.grant(name, write=True, offset=g_off, length=g_len)
    with side.host.alloc(128 * KiB) as local:
        lv = local.view()
        lv[:] = b"\xee" * len(lv)
        # get 1000 bytes at 100 within the grant into local[5000:6000]
        assert await side.conn.get(local, tok, offset=100, length=1000, local_offset=5000) == 1000
        assert bytes(lv[5000:6000]) == remote[g_off + 100 : g_off + 1100].tobytes()
        assert bytes(lv[:5000]) == b"\xee" * 5000 and bytes(lv[6000:]) == b"\xee" * (len(lv) - 6000)
        # the whole grant (length defaults to the rest of the local region: too long)
        with pytest.raises(RegionBoundsError):
            await side.conn.get(local, tok)
        assert await side.conn.get(local, tok, length=g_len) == g_len
        assert bytes(lv[:g_len]) == remote[g_off : g_off + g_len].tobytes()
        # put local[10:1034] at 2000 within the grant
        lv[:] = pattern(128 * KiB, 9)
        assert await side.conn.put(local, tok, offset=2000, length=1024, local_offset=10) == 1024
        expect = remote.copy()
        expect[g_off + 2000 : g_off + 3024] = pattern(128 * KiB, 9)[10:1034]
        assert await side.ctl.crc(name) == crc(expect)
        # length=None: local[local_offset:] to the end of the local region
        assert await side.conn.put(local, tok, local_offset=128 * KiB - 512) == 512
        expect[g_off : g_off + 512] = pattern(128 * KiB, 9)[-512:]
        assert await side.ctl.crc(name) == crc(expect)
        # zero-length operations are fine and touch nothing
        assert await side.conn.put(local, tok, offset=g_len, length=0) == 0
        assert await side.ctl.crc(name) == crc(expect)


# -- rejected operations -----------------------------------------------------------------------


async def test_revoked_token(side: Side) -> None:
    name = await side.remote(seed=3)
    before = await side.ctl.crc(name)
    tok = await side.ctl.grant(name, write=True)
    other = await side.ctl.grant(name, write=True)
    await side.ctl(op="revoke", name=name, token=tok.hex())
    with side.host.alloc(4 * KiB) as local:
        local.view()[:] = b"\x01" * 4096
        with pytest.raises(AccessDeniedError, match="revoked"):
            await side.conn.put(local, tok)
        await _unchanged(side, name, before)
        with pytest.raises(AccessDeniedError):
            await side.conn.get(local, tok)
        assert await side.conn.get(local, other) == 4096  # other grants live on
        # revoke_all kills every token, later grants work
        third = await side.ctl.grant(name, write=True)
        await side.ctl(op="revoke_all", name=name)
        for t in (other, third):
            with pytest.raises(AccessDeniedError):
                await side.conn.put(local, t)
            with pytest.raises(AccessDeniedError):
                await side.conn.get(local, t)
        await _unchanged(side, name, before)
        fresh = await side.ctl.grant(name, write=True)
        assert await side.conn.put(local, fresh) == 4096


async def test_expired_token(side: Side) -> None:
    name = await side.remote(seed=4)
    before = await side.ctl.crc(name)
    tok = await side.ctl.grant(name, write=True, expires=0.2)
    with side.host.alloc(4 * KiB) as local:
        assert await side.conn.get(local, tok) == 4096
        await asyncio.sleep(0.3)
        local.view()[:] = b"\x02" * 4096
        with pytest.raises(AccessDeniedError, match="expired"):
            await side.conn.put(local, tok)
        with pytest.raises(AccessDeniedError):
            await side.conn.get(local, tok)
        await _unchanged(side, name, before)


async def test_out_of_bounds(side: Side) -> None:
    name = await side.remote(seed=8)
    before = await side.ctl.crc(name)
    tok = await side.ctl.grant(name, write=True, offset=SIZE - 8 * KiB, length=4 * KiB)
    with side.host.alloc(16 * KiB) as local:
        local.view()[:] = b"\x03" * len(local.view())
        cases = [
            {"offset": 4000, "length": 200},  # crosses the end of the grant
            {"offset": 0, "length": 4 * KiB + 1},  # one byte too long
            {"offset": 4 * KiB + 1, "length": 0},  # starts beyond the grant
            {"offset": 1 << 62, "length": 16},  # huge offset
            {"offset": 0},  # length None: the 16 KiB local region > 4 KiB grant
        ]
        for kw in cases:
            with pytest.raises(RegionBoundsError):
                await side.conn.put(local, tok, **kw)
            with pytest.raises(RegionBoundsError):
                await side.conn.get(local, tok, **kw)
        await _unchanged(side, name, before)
        # local bounds are checked locally
        with pytest.raises(RegionBoundsError):
            await side.conn.put(local, tok, local_offset=16 * KiB + 1)
        with pytest.raises(RegionBoundsError):
            await side.conn.get(local, tok, local_offset=15 * KiB, length=2 * KiB)
        # the grant's own range still works
        assert await side.conn.put(local, tok, length=4 * KiB) == 4 * KiB


async def test_missing_right(side: Side) -> None:
    name = await side.remote(seed=9)
    before = await side.ctl.crc(name)
    ro = await side.ctl.grant(name)  # read only
    wo = await side.ctl.grant(name, read=False, write=True)
    with side.host.alloc(4 * KiB) as local:
        local.view()[:] = b"\x04" * 4096
        with pytest.raises(AccessDeniedError, match="writ"):
            await side.conn.put(local, ro)
        await _unchanged(side, name, before)
        local.view()[:] = b"\x05" * 4096
        with pytest.raises(AccessDeniedError, match="read"):
            await side.conn.get(local, wo)
        assert bytes(local.view()) == b"\x05" * 4096  # nothing landed locally
        assert await side.conn.get(local, ro) == 4096


@pytest.mark.parametrize(
    "where", ["version", "rights", "offset", "length", "grantee", "mac", "truncated", "random"]
)
async def test_forged_token(side: Side, where: str) -> None:
    name = await side.remote(seed=10)
    before = await side.ctl.crc(name)
    tok = bytearray(await side.ctl.grant(name, length=4 * KiB))  # read only, 4 KiB
    assert len(tok) == TOKEN_SIZE
    at = {"version": 0, "rights": 1, "offset": 39, "length": 46, "grantee": 60, "mac": 100}
    if where == "truncated":
        forged = bytes(tok[:-1])
    elif where == "random":
        forged = os.urandom(TOKEN_SIZE)
    else:
        tok[at[where]] ^= 0x02 if where == "rights" else 0x01  # rights: read -> read|write
        forged = bytes(tok)
    with side.host.alloc(4 * KiB) as local:
        local.view()[:] = b"\x06" * 4096
        with pytest.raises(AccessDeniedError):
            await side.conn.put(local, forged)
        with pytest.raises(AccessDeniedError):
            await side.conn.get(local, forged)
        await _unchanged(side, name, before)
        assert bytes(local.view()) == b"\x06" * 4096


async def test_token_for_another_peer(side: Side, child: Child) -> None:
    """A token granted to host X is useless to host Y (this side), and works for X."""
    name = await side.remote(seed=11)
    before = await side.ctl.crc(name)
    async with fastp2p.Host() as x:
        tok = await side.ctl.grant(name, write=True, peer=str(x.peer_id))
        with side.host.alloc(4 * KiB) as local:
            local.view()[:] = b"\x07" * 4096
            with pytest.raises(AccessDeniedError, match="another peer"):
                await side.conn.put(local, tok)
            with pytest.raises(AccessDeniedError):
                await side.conn.get(local, tok)
            await _unchanged(side, name, before)
            # X itself may use it
            peer = await x.connect(child.addr)
            with x.alloc(4 * KiB) as xl:
                xl.view()[:] = b"\x08" * 4096
                assert await x.connection(peer).put(xl, tok, length=4096) == 4096
            assert (await side.ctl(op="read", name=name, offset=0, length=4))["hex"] == "08" * 4


async def test_closed_owner_region(side: Side) -> None:
    name = await side.remote(seed=12)
    tok = await side.ctl.grant(name, write=True)
    await side.ctl(op="close", name=name)
    with side.host.alloc(4 * KiB) as local:
        with pytest.raises(AccessDeniedError):
            await side.conn.put(local, tok)
        with pytest.raises(AccessDeniedError):
            await side.conn.get(local, tok)


async def test_errors_leave_the_connection_usable(side: Side) -> None:
    name = await side.remote(seed=13)
    tok = await side.ctl.grant(name, write=True)
    with side.host.alloc(64 * KiB) as local:
        for _ in range(20):
            with pytest.raises(AccessDeniedError):
                await side.conn.put(local, b"\0" * TOKEN_SIZE)
            with pytest.raises(RegionBoundsError):
                await side.conn.get(local, tok, offset=SIZE)
        results = await asyncio.gather(
            *(
                side.conn.get(local, tok, offset=i * 4096, length=4096, local_offset=i * 4096)
                for i in range(16)
            )
        )
        assert results == [4096] * 16
        assert bytes(local.view()) == pattern(SIZE, 13)[: 64 * KiB].tobytes()
    assert not side.conn.is_closed


async def test_put_get_on_a_closed_connection(side: Side) -> None:
    name = await side.remote(seed=14)
    tok = await side.ctl.grant(name)
    conn = side.conn
    await conn.aclose()
    with side.host.alloc(4 * KiB) as local:
        with pytest.raises(ConnectionClosedError):
            await conn.get(local, tok)
        with pytest.raises(ConnectionClosedError):
            await conn.put(local, tok)


async def test_large_put_get_above_the_thread_threshold(side: Side) -> None:
    """16 MiB each way: on shm the owner copies on a worker thread (process_vm_*)."""
    n = 16 * MiB
    name = await side.remote(size=n, seed=15)
    tok = await side.ctl.grant(name, write=True)
    with side.host.alloc(n) as local:
        assert await side.conn.get(local, tok) == n
        assert crc(local.view()) == crc(pattern(n, 15))
        local.view()[:] = pattern(n, 16)
        assert await side.conn.put(local, tok) == n
        assert await side.ctl.crc(name) == crc(pattern(n, 16))


@pytest.mark.parametrize("offset", [-1, 1 << 63], ids=["negative", "2**63"])
async def test_remote_offset_out_of_range_is_a_bounds_error(side: Side, offset: int) -> None:
    name = await side.remote(seed=17)
    tok = await side.ctl.grant(name, write=True)
    with side.host.alloc(4 * KiB) as local:
        with pytest.raises(RegionBoundsError):
            await side.conn.put(local, tok, offset=offset)
        with pytest.raises(RegionBoundsError):
            await side.conn.get(local, tok, offset=offset)
    assert not side.conn.is_closed


async def test_cancelled_get_keeps_the_local_region_leased(side: Side) -> None:
    """DESIGN boundary rule 4: the in-flight operation, not the cancelled caller,
    holds the local region until the owner answers or the connection ends."""
    name = await side.remote(seed=18)
    tok = await side.ctl.grant(name, write=True)
    await side.ctl(op="stall_regions")
    try:
        local = side.host.alloc(64 * KiB)
        tasks = [
            asyncio.create_task(side.conn.get(local, tok, length=4096)),
            asyncio.create_task(side.conn.put(local, tok, length=4096, local_offset=4096)),
        ]
        await asyncio.sleep(0.1)
        for t in tasks:
            t.cancel()
            with pytest.raises(asyncio.CancelledError):
                await t
        local.close()
        assert local.closed and not local.freed
    finally:
        await side.ctl(op="serve_regions")
    await side.conn.aclose()  # ends the stalled operations
    async with asyncio.timeout(2):
        while not local.freed:
            await asyncio.sleep(0.01)
