"""Two fastp2p peers in separate processes over RDMA: a 256 MiB stream checked by
hash, 64 MiB put/get, atomics, and a peer killed mid-transfer."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import pathlib
import signal
import sys
import time

import pytest

import fastp2p
from fastp2p.errors import P2PError

from .test_path import CFG

pytestmark = pytest.mark.rdma

MiB = 1 << 20
PEER = pathlib.Path(__file__).with_name("rdma_peer.py")


@contextlib.asynccontextmanager
async def child_peer():
    root = str(pathlib.Path(__file__).resolve().parents[2])
    env = dict(os.environ, PYTHONPATH=root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(PEER), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE, env=env,
    )
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 120)
        if not line:
            err = await proc.stderr.read()
            raise AssertionError(f"child peer died before listening: {err.decode()[-3000:]}")
        info = json.loads(line)
        async with fastp2p.Host(config=CFG) as host:
            peer = await host.connect(info["addr"])
            conn = host.connection(peer)
            deadline = time.monotonic() + 30
            while conn.data_path != "rdma" and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert conn.data_path == "rdma", conn.data_path_reason
            yield host, peer, conn, proc
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.stdin.close()
            try:
                await asyncio.wait_for(proc.wait(), 20)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class _Ctl:
    def __init__(self, stream) -> None:
        self.s = stream
        self.buf = b""

    async def ask(self, line: str) -> str:
        await self.s.write(line.encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = await self.s.read(4096)
            assert chunk, "control stream closed"
            self.buf += chunk
        out, self.buf = self.buf.split(b"\n", 1)
        return out.decode()


async def test_stream_256mib_hash_verified() -> None:
    async with child_peer() as (host, peer, conn, _proc):
        s = await host.open_stream(peer, "/t/sink/1")
        h = hashlib.sha256()
        base = os.urandom(MiB)
        t0 = time.perf_counter()
        for i in range(256):
            block = i.to_bytes(8, "little") + base[8:]
            h.update(block)
            await s.write(block)
        await s.close_write()
        got = await asyncio.wait_for(s.read(), 300)
        dt = time.perf_counter() - t0
        assert got.decode() == h.hexdigest()
        assert conn.data_path == "rdma"
        print(f"256 MiB over RDMA in {dt:.1f} s ({256 / dt:.1f} MiB/s, incl. hashing)")


async def test_put_get_64mib_and_atomics() -> None:
    async with child_peer() as (host, peer, conn, _proc):
        ctl = _Ctl(await host.open_stream(peer, "/t/region/1"))
        tok_hex, sha = (await ctl.ask(f"alloc {64 * MiB}")).split()
        tok = bytes.fromhex(tok_hex)
        local = host.alloc(64 * MiB)
        assert await conn.get(local, tok) == 64 * MiB
        assert hashlib.sha256(local.view()).hexdigest() == sha
        data = os.urandom(64 * MiB)
        local.view()[:] = data
        assert await conn.put(local, tok) == 64 * MiB
        assert await ctl.ask("hash") == hashlib.sha256(data).hexdigest()
        # atomics on slot 8 of the same region
        start = int(await ctl.ask("u64 8"))
        olds = await asyncio.gather(*(conn.atomic_fetch_add(tok, 8, 1) for _ in range(50)))
        assert sorted(olds) == [(start + i) % (1 << 64) for i in range(50)]
        assert int(await ctl.ask("u64 8")) == start + 50
        assert await conn.atomic_cas(tok, 8, start + 50, 12345) == start + 50
        assert int(await ctl.ask("u64 8")) == 12345


async def test_peer_killed_mid_transfer() -> None:
    async with child_peer() as (host, peer, conn, proc):
        s = await host.open_stream(peer, "/t/sink/1")
        block = os.urandom(MiB)

        async def pump() -> None:
            while True:
                await s.write(block)

        task = asyncio.create_task(pump())
        await asyncio.sleep(1.0)
        assert not task.done()
        proc.send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        with pytest.raises(P2PError):
            await asyncio.wait_for(task, 30)
        assert time.monotonic() - t0 < 30
        await asyncio.wait_for(conn.closed, 30)
        assert conn.is_closed
        # the RDMA resources went with the connection
        assert conn.tx_path.ep.closed
