"""fastp2p on one host: the TCP path (loopback, Noise + yamux) and the
shared-memory data path, driven the way the README shows users.

Two Hosts in two processes: ``fastp2p.HostConfig(data_paths=("tcp",))`` or
``("shm", "tcp")``. The sender writes 64 KiB / 1 MiB memoryview slices of a
numpy array with ``await stream.write(...)``; the receiver loops
``await stream.readinto(view[pos:])`` into a preallocated, pre-faulted numpy
array until the total arrived, then acks one byte. RTT: 64-byte echo on one
open stream. Streams: K concurrent streams, each opened, 1 KiB echoed, closed.
Put/get (shm): the server ``host.alloc(64 MiB)``s a region and grants it to the
client peer; the token travels over a stream; the client times
``conn.put(local, token)`` and ``conn.get(local, token)``. Idle: RSS per idle
connection on both sides (N client Hosts in one process, one connection each).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import statistics
import struct
import time
from typing import Any

from ..proc import (
    ACK,
    HDR_LEN,
    OP_BULK,
    OP_ECHO,
    OP_GRANT,
    OP_RR,
    dest_array,
    mem_breakdown,
    pack,
    source_array,
    unpack,
)
from . import Backend, percentiles_us

PROTOCOL = "/fastp2p-samehost-bench/1.0.0"
LISTEN = "/ip4/127.0.0.1/tcp/0"


def _loop_factory() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


def _config(paths: tuple[str, ...]) -> Any:
    import fastp2p

    return fastp2p.HostConfig(data_paths=paths)


def _new_host(paths: tuple[str, ...], listen: bool) -> Any:
    import fastp2p

    return fastp2p.Host(listen=[LISTEN] if listen else [], config=_config(paths))


def token_to_bytes(token: Any) -> bytes:
    """A grant token as bytes for the wire, whatever shape the API gives it."""
    if isinstance(token, (bytes, bytearray, memoryview)):
        return bytes(token)
    for m in ("to_bytes", "encode", "serialize", "__bytes__"):
        f = getattr(token, m, None)
        if callable(f):
            return bytes(f())
    if isinstance(token, str):
        return token.encode()
    raise TypeError(f"cannot serialise grant token of type {type(token).__name__}")


def token_from_bytes(data: bytes) -> Any:
    """Inverse of :func:`token_to_bytes`: the token class's decoder when there is one."""
    import fastp2p

    for holder in (fastp2p, getattr(fastp2p, "memory", None), getattr(fastp2p, "regions", None)):
        if holder is None:
            continue
        for cls_name in ("GrantToken", "RegionToken", "Token", "Grant"):
            cls = getattr(holder, cls_name, None)
            if cls is None:
                continue
            for m in ("from_bytes", "decode", "parse", "deserialize"):
                f = getattr(cls, m, None)
                if callable(f):
                    return f(data)
    return data


async def _read_exact(s: Any, buf: memoryview) -> bool:
    got, n = 0, len(buf)
    while got < n:
        k = await s.readinto(buf[got:])
        if not k:
            return False
        got += k
    return True


class _Server:
    def __init__(self, paths: tuple[str, ...], params: dict[str, Any]) -> None:
        self.paths = paths
        self.dst = memoryview(dest_array(int(params["bulk_total"])))
        self.host: Any = None

    async def _handler(self, stream: Any) -> None:
        hdr = memoryview(bytearray(HDR_LEN))
        try:
            if not await _read_exact(stream, hdr):
                return
            op, a, b = unpack(hdr)
            if op == OP_BULK:
                view, pos = self.dst[:b], 0
                while pos < b:
                    k = await stream.readinto(view[pos:])
                    if not k:
                        return
                    pos += k
                await stream.write(ACK)
            elif op == OP_ECHO:
                buf = memoryview(bytearray(a))
                for _ in range(b):
                    if not await _read_exact(stream, buf):
                        return
                    await stream.write(buf)
            elif op == OP_RR:
                buf = memoryview(bytearray(a))
                if await _read_exact(stream, buf):
                    await stream.write(bytes(b))
                await stream.close_write()
            elif op == OP_GRANT:
                try:
                    region = self.host.alloc(b)
                    token = region.grant(stream.peer, read=True, write=True)
                    data = token_to_bytes(token)
                except Exception as e:  # noqa: BLE001 - reported to the client
                    msg = f"{type(e).__name__}: {e}".encode()[:4000]
                    await stream.write(struct.pack("!bI", 1, len(msg)) + msg)
                    return
                await stream.write(struct.pack("!bI", 0, len(data)) + data)
                await stream.readinto(memoryview(bytearray(1)))  # hold until the client is done
                for m in ("close", "free", "release"):
                    f = getattr(region, m, None)
                    if callable(f):
                        with contextlib.suppress(Exception):
                            r = f()
                            if asyncio.iscoroutine(r):
                                await r
                        break
        except Exception:  # noqa: BLE001 - resets end the stream
            pass
        finally:
            with contextlib.suppress(Exception):
                await stream.aclose()

    def serve(self, ready: Any) -> None:
        async def main() -> None:
            async with _new_host(self.paths, True) as host:
                self.host = host
                host.set_handler(PROTOCOL, self._handler)
                ready(str(host.full_addrs[0]))
                await asyncio.Event().wait()

        with asyncio.Runner(loop_factory=_loop_factory()) as r:
            r.run(main())


class _Client:
    def __init__(self, paths: tuple[str, ...], params: dict[str, Any]) -> None:
        self.paths = paths
        self.src = memoryview(source_array())
        self.runner = asyncio.Runner(loop_factory=_loop_factory())
        self.host: Any = None
        self.peer: Any = None
        self.data_path: str | None = None
        self.reason: Any = None
        self.idle_hosts: list[Any] = []

    def _run(self, coro: Any) -> Any:
        return self.runner.run(coro)

    async def _wait_path(self, host: Any, peer: Any) -> tuple[str, Any]:
        conn = host.connection(peer)
        if conn is None:
            return "?", "no connection"
        deadline = time.monotonic() + 3.0
        while "shm" in self.paths and conn.data_path != "shm" and time.monotonic() < deadline:
            st = conn.statistics()
            if st.get("data_path_reason"):
                break
            await asyncio.sleep(0.01)
        return conn.data_path, conn.statistics().get("data_path_reason")

    async def _ensure(self, addr: str) -> tuple[Any, Any]:
        if self.host is None:
            self.host = _new_host(self.paths, False)
            await self.host.__aenter__()
        if self.peer is None:
            self.peer = await self.host.connect(addr)
            self.data_path, self.reason = await self._wait_path(self.host, self.peer)
        return self.host, self.peer

    def _tag(self, out: dict[str, Any]) -> dict[str, Any]:
        out["data_path"] = self.data_path
        if self.data_path != self.paths[0]:
            out["note"] = f"data_path={self.data_path}: {self.reason}"
        return out

    async def _stream(self, addr: str) -> Any:
        host, peer = await self._ensure(addr)
        return await host.open_stream(peer, PROTOCOL)

    # ---- ops
    def bulk(self, addr: str, total: int, msg_size: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            s = await self._stream(addr)
            src, ns = self.src, len(self.src)
            ack = memoryview(bytearray(1))
            t0 = time.perf_counter()
            await s.write(pack(OP_BULK, msg_size, total))
            for off in range(0, total, msg_size):
                o = off % ns
                await s.write(src[o:o + min(msg_size, total - off)])
            if not await _read_exact(s, ack):
                raise RuntimeError("no ack")
            dt = time.perf_counter() - t0
            await s.aclose()
            return self._tag({"seconds": dt, "bytes": total})

        return self._run(go())

    def rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            s = await self._stream(addr)
            await s.write(pack(OP_ECHO, size, n + warmup))
            msg, buf = memoryview(bytes(size)), memoryview(bytearray(size))
            ns = time.perf_counter_ns
            out: list[int] = []
            for i in range(n + warmup):
                t0 = ns()
                await s.write(msg)
                if not await _read_exact(s, buf):
                    raise RuntimeError("echo ended early")
                if i >= warmup:
                    out.append(ns() - t0)
            await s.aclose()
            return self._tag(percentiles_us(out))

        return self._run(go())

    def streams(self, addr: str, k: int, size: int) -> dict[str, Any]:
        async def one() -> None:
            s = await self.host.open_stream(self.peer, PROTOCOL)
            await s.write(pack(OP_RR, size, size) + bytes(size))
            await s.close_write()
            if not await _read_exact(s, memoryview(bytearray(size))):
                raise RuntimeError("short response")
            await s.aclose()

        async def go() -> dict[str, Any]:
            await self._ensure(addr)
            t0 = time.perf_counter()
            await asyncio.gather(*(one() for _ in range(k)))
            return self._tag({"seconds": time.perf_counter() - t0})

        return self._run(go())

    def putget(self, addr: str, size: int, reps: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            host, peer = await self._ensure(addr)
            conn = host.connection(peer)
            missing = [n for n, o in (("Host.alloc", host), ("Connection.put", conn),
                                      ("Connection.get", conn)) if not hasattr(o, n.split(".")[1])]
            if missing:
                raise RuntimeError("missing: shm data path not in this build "
                                   f"(AttributeError: no {', '.join(missing)})")
            s = await host.open_stream(peer, PROTOCOL)
            await s.write(pack(OP_GRANT, 0, size))
            hdr = memoryview(bytearray(5))
            if not await _read_exact(s, hdr):
                raise RuntimeError("grant: stream ended")
            err, ln = struct.unpack("!bI", hdr)
            body = memoryview(bytearray(ln))
            await _read_exact(s, body)
            if err:
                raise RuntimeError(f"server grant failed: {bytes(body).decode(errors='replace')}")
            token = token_from_bytes(bytes(body))
            local = host.alloc(size)
            with contextlib.suppress(Exception):  # touch the local pages before timing
                memoryview(local).cast("B")[:] = b"\x01" * size
            await conn.put(local, token)
            await conn.get(local, token)
            tp, tg = [], []
            for _ in range(reps):
                t0 = time.perf_counter()
                await conn.put(local, token)
                t1 = time.perf_counter()
                await conn.get(local, token)
                t2 = time.perf_counter()
                tp.append(t1 - t0)
                tg.append(t2 - t1)
            await s.close_write()
            await s.aclose()
            return self._tag({"put_gbps": size / statistics.median(tp) / 1e9,
                              "get_gbps": size / statistics.median(tg) / 1e9})

        return self._run(go())

    def idle_open(self, addr: str, n: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            hosts = [_new_host(self.paths, False) for _ in range(n)]
            for h in hosts:
                await h.start()
            self.idle_hosts = hosts
            await asyncio.sleep(0.2)
            gc.collect()
            m0 = mem_breakdown()
            peers = [await h.connect(addr) for h in hosts]
            paths = [await self._wait_path(h, p) for h, p in zip(hosts, peers, strict=True)]
            await asyncio.sleep(0.5)
            gc.collect()
            m1 = mem_breakdown()
            on = sum(1 for p, _ in paths if p == self.paths[0])
            out = {"conns": n, "on_path": on, "data_path": self.paths[0] if on == n else "mixed",
                   "cli_bytes_per_conn": (m1["rss"] - m0["rss"]) / n,
                   "cli_shm_bytes_per_conn": (m1.get("shmem", 0) - m0.get("shmem", 0)) / n}
            if on != n:
                reasons = {str(r) for p, r in paths if p != self.paths[0]}
                out["note"] = f"{n - on}/{n} not on {self.paths[0]}: {'; '.join(sorted(reasons))}"
            return out

        return self._run(go())

    def idle_close(self, addr: str = "") -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            for h in self.idle_hosts:
                with contextlib.suppress(Exception):
                    await h.aclose()
            self.idle_hosts = []
            return {}

        return self._run(go())

    def shutdown(self) -> None:
        async def go() -> None:
            if self.host is not None:
                with contextlib.suppress(Exception):
                    await self.host.aclose()

        with contextlib.suppress(Exception):
            self._run(go())
            self.runner.close()


class Fastp2pTcp(Backend):
    name = "fastp2p-tcp"
    title = "fastp2p TCP loopback (Noise + yamux)"
    paths: tuple[str, ...] = ("tcp",)
    how = ("two fastp2p Hosts in two processes, HostConfig(data_paths=('tcp',)), "
           "stream.write(memoryview slices) / stream.readinto(view[pos:])")
    install = "pip install fastp2p"

    def available(self) -> str | None:
        try:
            import fastp2p

            fastp2p.HostConfig(data_paths=self.paths)
        except Exception as e:  # noqa: BLE001
            return f"missing: fastp2p data paths not in this build ({type(e).__name__}: {e})"
        return None

    def supports(self, scenario: str) -> bool:
        return scenario in ("bulk", "rtt", "streams", "idle")

    def versions(self) -> dict[str, str]:
        import fastp2p

        return {"fastp2p": fastp2p.__version__, "fastp2p_native": str(fastp2p.HAVE_NATIVE)}

    def make_server(self, params: dict[str, Any]) -> Any:
        return _Server(self.paths, params)

    def make_client(self, params: dict[str, Any]) -> Any:
        return _Client(self.paths, params)


class Fastp2pShm(Fastp2pTcp):
    name = "fastp2p-shm"
    title = "fastp2p shared-memory data path"
    paths = ("shm", "tcp")
    how = ("as fastp2p-tcp with HostConfig(data_paths=('shm', 'tcp')); conn.data_path checked "
           "per connection; put/get via host.alloc + region.grant + conn.put/get")

    def available(self) -> str | None:
        try:
            import fastp2p

            fastp2p.HostConfig(data_paths=self.paths)
            if "shm" not in getattr(fastp2p.HostConfig(), "data_paths", ()):
                pass
        except Exception as e:  # noqa: BLE001
            return f"missing: shm data path not in this build ({type(e).__name__}: {e})"
        return None

    def supports(self, scenario: str) -> bool:
        return scenario in ("bulk", "rtt", "putget", "streams", "idle")
