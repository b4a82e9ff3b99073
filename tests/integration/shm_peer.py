"""A fastp2p Host in a child process, for the shared-memory tests (tests/integration/test_shm.py).

The parent starts :func:`child_main` with a ``multiprocessing`` *spawn* context
and talks to it over a ``Pipe`` (never a Queue: its feeder thread would spoil
the parent's thread-leak checks). The child answers ``("ready", addr, peer_id,
pid)`` and then serves pipe commands:

- ``("dial", addr)`` -> ``("dialed", data_path, reason)`` (the child dials the parent)
- ``("state", peer_id)`` -> ``("state", data_path, reason)`` of its connection to that peer
- ``("stop",)`` -> the child closes its host and exits

and these protocols over fastp2p streams:

- :data:`SINK`: request ``>Q`` nbytes; the child ``readinto``s exactly that many
  bytes into a preallocated numpy array and answers ``>QI`` (bytes, crc32).
- :data:`SOURCE`: request ``>QQQ`` (nbytes, seed, chunk); the child writes
  :func:`pattern` ``(nbytes, seed)`` in ``chunk``-byte writes, then half-closes.
- :data:`STALL`: never reads, never writes (a peer that is busy forever).
- ``/echo/1.0.0`` (``fastp2p.services.serve_echo``).
- :data:`REGIONS`: JSON lines, one command per line, one JSON answer line each
  (see ``_Regions``): allocate/register regions, grant, revoke, read back
  checksums, and make the region protocol stall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import mmap
import os
import struct
import tempfile
import zlib
from typing import Any

import numpy as np

SINK = "/shmtest/sink/1.0.0"
SOURCE = "/shmtest/source/1.0.0"
STALL = "/shmtest/stall/1.0.0"
REGIONS = "/shmtest/regions/1.0.0"

_MIX = np.uint64(0x9E3779B97F4A7C15)


def pattern(nbytes: int, seed: int) -> np.ndarray:
    """``nbytes`` (a multiple of 8) of position-dependent bytes, cheap to make."""
    assert nbytes % 8 == 0
    words = np.arange(nbytes // 8, dtype=np.uint64)
    with np.errstate(over="ignore"):
        words *= _MIX
        words += np.uint64(seed)
    return words.view(np.uint8)


def crc(buf: Any) -> int:
    return zlib.crc32(memoryview(buf).cast("B"))


async def readinto_exactly(stream: Any, view: memoryview) -> int:
    got = 0
    n = len(view)
    while got < n:
        k = await stream.readinto(view[got:])
        if k == 0:
            break
        got += k
    return got


async def wait_readable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(fd, wake)
    try:
        await ready
    finally:
        loop.remove_reader(fd)


def make_config(spec: dict[str, Any]) -> Any:
    from fastp2p.config import HostConfig, ShmConfig

    kw: dict[str, Any] = {}
    if "data_paths" in spec:
        kw["data_paths"] = tuple(spec["data_paths"])
    if "muxers" in spec:
        kw["muxers"] = tuple(spec["muxers"])
    shm = {k: spec[k] for k in ("sealed", "ring_capacity", "upgrade_timeout") if k in spec}
    if shm:
        kw["shm"] = ShmConfig(**shm)
    return HostConfig(**kw)


class _Regions:
    """The child's regions, driven by JSON commands from the parent."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.regions: dict[str, Any] = {}
        self.backing: dict[str, Any] = {}
        self.tmpdir = tempfile.mkdtemp(prefix="shmtest-")

    def close(self) -> None:
        for r in self.regions.values():
            r.close()
        for b in self.backing.values():
            if isinstance(b, mmap.mmap):
                with contextlib.suppress(BufferError):
                    b.close()

    def run(self, cmd: dict[str, Any], requester: Any) -> dict[str, Any]:
        from fastp2p.peer import PeerID

        op = cmd["op"]
        name = cmd.get("name", "")
        if op == "alloc":
            size = cmd["size"]
            kind = cmd.get("kind", "alloc")
            if kind == "alloc":
                region = self.host.alloc(size)
            elif kind == "numpy":
                arr = np.zeros(size, dtype=np.uint8)
                self.backing[name] = arr
                region = self.host.register(arr)
            elif kind == "mmap":
                path = os.path.join(self.tmpdir, name)
                with open(path, "wb") as f:
                    f.truncate(size)
                with open(path, "r+b") as f:
                    mm = mmap.mmap(f.fileno(), size)
                self.backing[name] = mm
                region = self.host.register(mm)
            else:
                raise ValueError(kind)
            if "seed" in cmd:
                region.view()[:] = pattern(size, cmd["seed"])
            self.regions[name] = region
            return {"ok": True, "nbytes": region.nbytes}
        region = self.regions[name]
        if op == "grant":
            peer = PeerID.from_string(cmd["peer"]) if cmd.get("peer") else requester
            token = region.grant(
                peer,
                read=cmd.get("read", True),
                write=cmd.get("write", False),
                offset=cmd.get("offset", 0),
                length=cmd.get("length"),
                expires=cmd.get("expires"),
            )
            return {"token": token.hex()}
        if op == "revoke":
            region.revoke(bytes.fromhex(cmd["token"]))
            return {"ok": True}
        if op == "revoke_all":
            region.revoke_all()
            return {"ok": True}
        if op == "crc":
            off = cmd.get("offset", 0)
            n = cmd.get("length", region.nbytes - off)
            with region.view() as mv:
                return {"crc": crc(mv[off : off + n])}
        if op == "read":
            off, n = cmd["offset"], cmd["length"]
            with region.view() as mv:
                return {"hex": bytes(mv[off : off + n]).hex()}
        if op == "fill":
            off, n = cmd["offset"], cmd["length"]
            with region.view() as mv:
                mv[off : off + n] = pattern(n, cmd["seed"])
            return {"ok": True}
        if op == "close":
            region.close()
            return {"ok": True}
        raise ValueError(f"unknown op {op!r}")


def _warm_up_imports() -> None:
    """Run the crypto the host needs once, so every lazy import happens now."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

    a, b = X25519PrivateKey.generate(), X25519PrivateKey.generate()
    a.exchange(b.public_key())
    k = Ed25519PrivateKey.generate()
    k.public_key().verify(k.sign(b"x"), b"x")
    ChaCha20Poly1305(bytes(32)).encrypt(bytes(12), b"x", b"")
    import fastp2p.proto.noise.handshake  # noqa: F401
    import fastp2p.services.identify  # noqa: F401
    import fastp2p.services.ping  # noqa: F401


async def _main(pipe: Any, spec: dict[str, Any]) -> None:
    import fastp2p
    from fastp2p.services import serve_echo
    from fastp2p.transport import regions as regions_mod

    if spec.get("setuid") is not None:
        _warm_up_imports()  # the other user may not read this interpreter's packages
        os.setgid(spec["setuid"])
        os.setuid(spec["setuid"])
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    forever = asyncio.Event()

    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=make_config(spec)) as host:
        serve_echo(host)
        regions = _Regions(host)

        async def sink(s: Any) -> None:
            (n,) = struct.unpack(">Q", await s.readexactly(8))
            arr = np.empty(n, dtype=np.uint8)
            got = await readinto_exactly(s, memoryview(arr))
            await s.write(struct.pack(">QI", got, crc(arr[:got])))
            await s.close_write()
            await s.read()  # until EOF

        async def source(s: Any) -> None:
            n, seed, chunk = struct.unpack(">QQQ", await s.readexactly(24))
            data = memoryview(pattern(n, seed))
            for i in range(0, n, chunk):
                await s.write(data[i : i + chunk])
            await s.close_write()
            await s.read()

        async def stall(s: Any) -> None:
            await forever.wait()

        async def control(s: Any) -> None:
            buf = b""
            while True:
                chunk = await s.read(65536)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cmd = json.loads(line)
                    if cmd["op"] == "stall_regions":
                        host.set_handler(regions_mod.PROTOCOL_ID, stall)
                        out: dict[str, Any] = {"ok": True}
                    elif cmd["op"] == "serve_regions":
                        host.set_handler(regions_mod.PROTOCOL_ID, host._serve_region)
                        out = {"ok": True}
                    else:
                        try:
                            out = regions.run(cmd, s.conn.remote_peer)
                        except Exception as exc:  # reported to the parent
                            out = {"error": f"{type(exc).__name__}: {exc}"}
                    await s.write(json.dumps(out).encode() + b"\n")

        host.set_handler(SINK, sink)
        host.set_handler(SOURCE, source)
        host.set_handler(STALL, stall)
        host.set_handler(REGIONS, control)

        async def commands() -> None:
            from fastp2p.peer import PeerID

            while True:
                await wait_readable(pipe.fileno())
                try:
                    msg = pipe.recv()
                except EOFError:
                    stop.set()
                    return
                if msg[0] == "stop":
                    stop.set()
                    return
                if msg[0] == "dial":
                    peer = await host.connect(msg[1])
                    conn = host.connection(peer)
                    pipe.send(("dialed", conn.data_path, conn.data_path_reason))
                elif msg[0] == "state":
                    conn = host.connection(PeerID.from_string(msg[1]))
                    if conn is None:
                        pipe.send(("state", None, None))
                    else:
                        pipe.send(("state", conn.data_path, conn.data_path_reason))

        task = loop.create_task(commands())
        pipe.send(("ready", str(host.full_addrs[0]), str(host.peer_id), os.getpid()))
        await stop.wait()
        task.cancel()
        with contextlib.suppress(BaseException):
            await task
        regions.close()
    pipe.send(("stopped",))


def child_main(pipe: Any, spec: dict[str, Any]) -> None:
    """Entry point of the spawned child."""
    asyncio.run(_main(pipe, spec))


# -- the parent's side ------------------------------------------------------------------


class Child:
    """A spawned :func:`child_main` process and its control pipe (parent side)."""

    def __init__(self, spec: dict[str, Any] | None = None, *, timeout: float = 60.0) -> None:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        self.pipe, child_end = ctx.Pipe()
        self.proc = ctx.Process(target=child_main, args=(child_end, spec or {}), daemon=True)
        self.proc.start()
        child_end.close()
        if not self.pipe.poll(timeout):
            self.proc.kill()
            raise TimeoutError("child host did not start")
        tag, self.addr, peer, self.pid = self.pipe.recv()
        assert tag == "ready"
        from fastp2p.peer import PeerID

        self.peer_id = PeerID.from_string(peer)

    async def call(self, *msg: Any, timeout: float = 30.0) -> Any:
        """Send a pipe command and await its answer without blocking the loop."""
        self.pipe.send(msg)
        return await self.recv(timeout)

    async def recv(self, timeout: float = 30.0) -> Any:
        async with asyncio.timeout(timeout):
            while not self.pipe.poll():
                await wait_readable(self.pipe.fileno())
        return self.pipe.recv()

    async def wait_state(self, peer: Any, want: str, timeout: float = 5.0) -> tuple[Any, Any]:
        """Poll the child's connection to ``peer`` until its data path is ``want``."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            _tag, path, reason = await self.call("state", str(peer))
            if path == want or asyncio.get_running_loop().time() > deadline:
                return path, reason
            await asyncio.sleep(0.02)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc.is_alive():
            with contextlib.suppress(OSError, BrokenPipeError):
                self.pipe.send(("stop",))
            self.proc.join(timeout)
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(5)
        self.pipe.close()
        self.proc.close()

    def kill(self) -> None:
        os.kill(self.pid, 9)


class RegionControl:
    """The parent's end of a :data:`REGIONS` stream."""

    def __init__(self, stream: Any) -> None:
        self.stream = stream
        self.buf = b""

    @classmethod
    async def open(cls, host: Any, peer: Any) -> RegionControl:
        return cls(await host.open_stream(peer, REGIONS))

    async def __call__(self, **cmd: Any) -> dict[str, Any]:
        await self.stream.write(json.dumps(cmd).encode() + b"\n")
        while b"\n" not in self.buf:
            chunk = await self.stream.read(65536)
            if not chunk:
                raise EOFError("region control stream ended")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        out: dict[str, Any] = json.loads(line)
        if "error" in out:
            raise RuntimeError(f"child: {out['error']}")
        return out

    async def grant(self, name: str, **kw: Any) -> bytes:
        out = await self(op="grant", name=name, **kw)
        return bytes.fromhex(out["token"])

    async def crc(self, name: str, **kw: Any) -> int:
        return int((await self(op="crc", name=name, **kw))["crc"])
