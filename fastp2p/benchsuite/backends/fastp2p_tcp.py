"""fastp2p: TCP + Noise + yamux or mplex, on uvloop when installed."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any

from .. import wire
from . import asyncio_tcp as raw
from .base import AsyncClient, Backend, BaseServer, split_total

LISTEN = "/ip4/127.0.0.1/tcp/0"
MUXERS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}


def _loop_factory() -> Any:
    try:
        import uvloop

        return uvloop.new_event_loop
    except ImportError:
        return None


# Bench overrides of the defaults, recorded in the results: the 10 000-stream
# scenario needs max_streams above 10 000.
CONFIG_NOTE = ("HostConfig overrides: max_streams=20000 (yamux, mplex); data_paths=('tcp',) "
               "(this bench measures the TCP path; the same-host suite measures shm)")


#: HostConfig.busy_poll_us of the ``-busypoll`` variants (and of the raw baseline's)
BENCH_BUSY_POLL_US = 200


def _config(muxer: str, cipher: str | None = None, serial: bool = False, busy_poll_us: int = 0) -> Any:
    import dataclasses

    from fastp2p.config import HostConfig

    d = HostConfig()
    # no fallback: the results say these overrides were applied, so they must be
    noise = d.noise if cipher is None else dataclasses.replace(d.noise, ciphers=(cipher,))
    if serial:
        noise = dataclasses.replace(noise, parallel_seal=False)
    return HostConfig(muxers=(MUXERS[muxer],), data_paths=("tcp",), noise=noise, busy_poll_us=busy_poll_us,
                      yamux=dataclasses.replace(d.yamux, max_streams=20_000),
                      mplex=dataclasses.replace(d.mplex, max_streams=20_000))


def _new_host(muxer: str, listen: bool, cipher: str | None = None, serial: bool = False,
              busy_poll_us: int = 0) -> Any:
    import fastp2p

    key = fastp2p.Ed25519PrivateKey.generate()
    return fastp2p.Host(key, listen=[LISTEN] if listen else [],
                        config=_config(muxer, cipher, serial, busy_poll_us))


async def _readexactly_into(s: Any, buf: memoryview, n: int) -> bool:
    got = 0
    while got < n:
        k = await s.readinto(buf[got:n])
        if not k:
            return False
        got += k
    return True


async def _handler(stream: Any) -> None:
    hdr = memoryview(bytearray(wire.HDR_LEN))
    try:
        while True:
            if not await _readexactly_into(stream, hdr, wire.HDR_LEN):
                return
            op, a, b = wire.unpack(hdr)
            if op == wire.OP_BULK:
                buf = memoryview(bytearray(a))  # preallocated receive buffer
                left = b
                while left:
                    k = await stream.readinto(buf[: min(a, left)])
                    if not k:
                        return
                    left -= k
                await stream.write(wire.ACK)
            elif op == wire.OP_ECHO:
                buf = memoryview(bytearray(a))
                while await _readexactly_into(stream, buf, a):
                    await stream.write(bytes(buf))
                return
            elif op == wire.OP_RR:
                buf = memoryview(bytearray(a))
                if await _readexactly_into(stream, buf, a):
                    await stream.write(bytes(b))
                await stream.close_write()
                return
            elif op == wire.OP_IDLE:
                wire.stat_add("idle")
                try:
                    await stream.readinto(memoryview(bytearray(1)))
                finally:
                    wire.stat_add("idle", -1)
                return
    except Exception:  # noqa: BLE001 - resets/EOF end the stream
        pass
    finally:
        with contextlib.suppress(Exception):
            await stream.aclose()


class Server(BaseServer):
    def __init__(self, muxer: str, cipher: str | None = None, serial: bool = False,
                 busy_poll_us: int = 0, proto: bool = False) -> None:
        self.muxer = muxer
        self.cipher = cipher
        self.serial = serial
        self.busy_poll_us = busy_poll_us
        self.proto = proto

    def serve(self, ready: Any) -> None:
        async def main() -> None:
            async with _new_host(self.muxer, True, self.cipher, self.serial, self.busy_poll_us) as host:
                if self.proto:  # the raw baseline's own server
                    host.set_protocol_handler(wire.PROTOCOL_ID, raw._ServerProto)
                else:
                    host.set_handler(wire.PROTOCOL_ID, _handler)
                addr = next((a for a in host.addrs if "/tcp/" in str(a)), host.addrs[0])
                ready(f"{addr}/p2p/{host.peer_id}")
                await asyncio.Event().wait()

        with asyncio.Runner(loop_factory=_loop_factory()) as r:
            r.run(main())


class Client(AsyncClient):
    def __init__(self, muxer: str, cipher: str | None = None, serial: bool = False,
                 busy_poll_us: int = 0) -> None:
        self.loop_factory = _loop_factory()
        super().__init__()
        self.muxer = muxer
        self.cipher = cipher
        self.serial = serial
        self.busy_poll_us = busy_poll_us
        self.host: Any = None
        self.peer: Any = None
        self._idle_hosts: list[Any] = []
        self._idle_streams: list[Any] = []

    async def _ensure(self, addr: str) -> tuple[Any, Any]:
        if self.host is None:
            self.host = _new_host(self.muxer, False, self.cipher, self.serial, self.busy_poll_us)
            await self.host.__aenter__()
        if self.peer is None:
            self.peer = await self.host.connect(addr)
        return self.host, self.peer

    async def _stream(self, addr: str) -> Any:
        host, peer = await self._ensure(addr)
        return await host.open_stream(peer, wire.PROTOCOL_ID)

    async def a_bulk(self, addr: str, total: int, msg_size: int, streams: int,
                     recv_buf: int) -> dict[str, Any]:
        ss = [await self._stream(addr) for _ in range(streams)]
        parts = split_total(total, msg_size, streams)
        payload = memoryview(bytes(msg_size))

        async def one(s: Any, n: int) -> None:
            await s.write(wire.pack(wire.OP_BULK, recv_buf, n))
            left = n
            while left:
                k = min(msg_size, left)
                await s.write(payload[:k])
                left -= k
            if await s.readexactly(1) != wire.ACK:
                raise ConnectionError("no ack")

        t0 = time.perf_counter()
        await asyncio.gather(*(one(s, n) for s, n in zip(ss, parts, strict=False)))
        dt = time.perf_counter() - t0
        cipher = ss[0].conn.statistics()["cipher"]  # the ceiling to compare with
        for s in ss:
            with contextlib.suppress(Exception):
                await s.aclose()
        return {"seconds": dt, "bytes": sum(parts), "cipher": cipher}

    async def a_rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        s = await self._stream(addr)
        await s.write(wire.pack(wire.OP_ECHO, size))
        msg = bytes(size)
        buf = memoryview(bytearray(size))
        out = []
        pc = time.perf_counter
        for _ in range(warmup + n):  # warm-up on the same stream, discarded below
            t0 = pc()
            await s.write(msg)
            await _readexactly_into(s, buf, size)
            out.append((pc() - t0) * 1e6)
        await s.aclose()
        return {"samples_us": out[warmup:]}

    async def a_connect(self, addr: str, n: int) -> dict[str, Any]:
        # a fresh client host per sample (created outside the timed part), so
        # every sample pays TCP + multistream + Noise + muxer negotiation
        out = []
        handshake = []
        for _ in range(n):
            async with _new_host(self.muxer, False, self.cipher, self.serial, self.busy_poll_us) as h:
                t0 = time.perf_counter()
                peer = await h.connect(addr)  # TCP + Noise + muxer, identify done
                handshake.append((time.perf_counter() - t0) * 1e3)
                s = await h.open_stream(peer, wire.PROTOCOL_ID)
                await s.write(wire.pack(wire.OP_ECHO, 1) + b"x")
                await s.readexactly(1)
                out.append((time.perf_counter() - t0) * 1e3)
                await s.aclose()
        return {"samples_ms": out, "connect_ms": handshake}

    async def a_rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        host, peer = await self._ensure(addr)
        payload = wire.pack(wire.OP_RR, req, resp) + bytes(req)

        async def one() -> None:
            s = await host.open_stream(peer, wire.PROTOCOL_ID)
            await s.write(payload)
            await s.close_write()
            await s.readexactly(resp)
            await s.aclose()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(k)))
        return {"seconds": time.perf_counter() - t0}

    async def a_idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns):  # a connection needs its own client host
            h = _new_host(self.muxer, False, self.cipher, self.serial, self.busy_poll_us)
            await h.__aenter__()
            peer = await h.connect(addr)
            s = await h.open_stream(peer, wire.PROTOCOL_ID)
            await s.write(wire.pack(wire.OP_IDLE))
            self._idle_hosts.append(h)
        for _ in range(streams):
            s = await self._stream(addr)
            await s.write(wire.pack(wire.OP_IDLE))
            self._idle_streams.append(s)
        return {}

    async def a_idle_close(self) -> dict[str, Any]:
        for s in self._idle_streams:
            with contextlib.suppress(Exception):
                await s.aclose()
        for h in self._idle_hosts:
            with contextlib.suppress(Exception):
                await h.__aexit__(None, None, None)
        self._idle_streams.clear()
        self._idle_hosts.clear()
        return {}


class ProtoClient(Client):
    """The ``-proto`` variant's client: the raw ``tcp-*-proto`` baseline's own
    asyncio protocol classes (``asyncio_tcp._ClientProto`` here, ``_ServerProto``
    on the server) on fastp2p streams (``Host.open_stream_protocol``,
    ``Host.set_protocol_handler``), for bulk, rtt and the request/response
    streams: the same application code as the baseline, over libp2p. Connect
    and idle scenarios are the streams API's (a connection is a host's)."""

    async def _open(self, addr: str) -> Any:
        host, peer = await self._ensure(addr)
        _t, proto = await host.open_stream_protocol(peer, raw._ClientProto, wire.PROTOCOL_ID)
        return proto

    async def a_bulk(self, addr: str, total: int, msg_size: int, streams: int,
                     recv_buf: int) -> dict[str, Any]:
        out = await raw.ProtoClient.a_bulk(self, addr, total, msg_size, streams, recv_buf)  # type: ignore[arg-type]
        conn = self.host.connection(self.peer)
        out["cipher"] = conn.statistics()["cipher"]  # the ceiling to compare with
        return out

    # the baseline's own scenario code, with _open above
    a_rtt = raw.ProtoClient.a_rtt
    a_rr = raw.ProtoClient.a_rr


#: transport ciphers a backend can pin (name suffix -> NoiseConfig.ciphers entry)
PINNED_CIPHERS = {"chacha": "ChaChaPoly", "aesgcm": "AESGCM"}
#: name suffix of a variant that seals serially on any machine (NoiseConfig.parallel_seal=False)
SERIAL = "serial"
#: name suffix of a variant that busy-polls (HostConfig.busy_poll_us=BENCH_BUSY_POLL_US)
BUSYPOLL = "busypoll"
#: name suffix of the variant that runs asyncio protocols on its streams (ProtoClient)
PROTO = "proto"


def parse_name(name: str) -> tuple[str, str | None, bool]:
    """``fastp2p-MUXER[-CIPHER][-serial]`` -> (muxer, pinned NoiseConfig cipher or None, serial)."""
    _, muxer, *rest = name.split("-")
    serial = SERIAL in rest
    pinned = [PINNED_CIPHERS[t] for t in rest if t in PINNED_CIPHERS]
    return muxer, (pinned[0] if pinned else None), serial


class Fastp2pTCP(Backend):
    """``cipher``: pin the Noise transport cipher (a key of PINNED_CIPHERS); None
    keeps the default order (AES-256-GCM between fastp2p peers where the CPU has AES).
    ``serial``: seal large writes on the writer's thread alone, also where the
    default seals them in parallel (4 or more CPUs): the same run then shows what
    the parallel seal gives."""

    def __init__(self, muxer: str, cipher: str | None = None, serial: bool = False,
                 busy_poll: bool = False, proto: bool = False) -> None:
        self.proto = proto
        self.muxer = muxer
        self.cipher = PINNED_CIPHERS[cipher] if cipher else None
        self.serial = serial
        self.busy_poll_us = BENCH_BUSY_POLL_US if busy_poll else 0
        self.name = (f"fastp2p-{muxer}" + (f"-{cipher}" if cipher else "") + (f"-{SERIAL}" if serial else "")
                     + (f"-{BUSYPOLL}" if busy_poll else "") + (f"-{PROTO}" if proto else ""))
        self.title = (f"fastp2p TCP + Noise + {muxer}" + (f", {self.cipher} only" if cipher else "")
                      + (", serial seal" if serial else "")
                      + (f", busy polling {BENCH_BUSY_POLL_US} us" if busy_poll else "")
                      + (", asyncio protocols (StreamTransport)" if proto else ""))
        self.loop = "uvloop" if _loop_factory() else "asyncio"
        self.config_note = (CONFIG_NOTE + (f"; NoiseConfig.ciphers=({self.cipher!r},)" if cipher else "")
                            + ("; NoiseConfig.parallel_seal=False" if serial else "")
                            + (f"; HostConfig.busy_poll_us={BENCH_BUSY_POLL_US} (a polling loop "
                               "thread while a read waits: latency for a busy core)" if busy_poll else "")
                            + ("; the tcp-*-proto baseline's BufferedProtocol classes on fastp2p streams "
                               "(Host.set_protocol_handler / open_stream_protocol) for bulk, rtt and "
                               "streams; connect and idle use the streams API" if proto else ""))

    def available(self) -> str | None:
        try:
            import fastp2p
            from fastp2p.config import HostConfig  # noqa: F401

            fastp2p.Host  # noqa: B018
            fastp2p.Ed25519PrivateKey  # noqa: B018
        except Exception as e:  # noqa: BLE001
            return f"fastp2p.Host not importable ({type(e).__name__}: {e})"
        return None

    def versions(self) -> dict[str, str]:
        import fastp2p

        v = {"fastp2p": fastp2p.__version__}
        try:
            from fastp2p import _accel

            v["fastp2p_native"] = str(getattr(_accel, "HAVE_NATIVE", "?"))
        except Exception:  # noqa: BLE001
            pass
        return v

    def make_server(self) -> BaseServer:
        return Server(self.muxer, self.cipher, self.serial, self.busy_poll_us, self.proto)

    def make_client(self) -> AsyncClient:
        return (ProtoClient if self.proto else Client)(self.muxer, self.cipher, self.serial, self.busy_poll_us)
