"""py-libp2p worker (TCP + Noise + yamux|mplex, trio).

Runs under the py-libp2p venv's interpreter, not ours:
``<venv>/bin/python pylibp2p_worker.py yamux|mplex server|client [tuned|default]``.
It only imports the sibling ``wire.py`` (stdlib) plus libp2p/trio.

``tuned`` (the default) creates hosts with
``ConnectionConfig(max_connections_per_peer=1)``: py-libp2p's dialer otherwise
waits 250 ms (happy eyeballs) for a second connection to the same peer on
every dial. ``default`` keeps the library's defaults (3 per peer).
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import wire  # noqa: E402  (fastp2p/benchsuite/wire.py)

LISTEN = "/ip4/127.0.0.1/tcp/0"


CONFIG = "tuned"  # or "default"; set from argv


def _new_host(muxer: str, listen: bool) -> Any:
    import multiaddr
    from libp2p import new_host
    from libp2p.crypto.ed25519 import create_new_key_pair
    from libp2p.security.noise.transport import PROTOCOL_ID as NOISE_ID
    from libp2p.security.noise.transport import Transport as Noise

    kp = create_new_key_pair()
    noise_kp = None
    try:
        from libp2p.crypto.x25519 import create_new_key_pair as x25519_kp

        noise_kp = x25519_kp()
    except ImportError:
        pass
    noise = Noise(kp, noise_privkey=noise_kp.private_key) if noise_kp else Noise(kp)
    extra: dict[str, Any] = {}
    if CONFIG == "tuned":
        from libp2p.network.config import ConnectionConfig

        extra["connection_config"] = ConnectionConfig(max_connections_per_peer=1)
    return new_host(
        key_pair=kp, sec_opt={NOISE_ID: noise}, muxer_preference=muxer.upper(),
        listen_addrs=[multiaddr.Multiaddr(LISTEN)] if listen else None, **extra,
    )


async def _read_exact(s: Any, n: int) -> bytes | None:
    from libp2p.network.stream.exceptions import StreamEOF

    parts, got = [], 0
    while got < n:
        try:
            chunk = await s.read(n - got)
        except StreamEOF:
            return None
        if not chunk:
            return None
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


async def _handler(s: Any) -> None:
    from libp2p.network.stream.exceptions import StreamEOF

    try:
        while True:
            hdr = await _read_exact(s, wire.HDR_LEN)
            if hdr is None:
                return
            op, a, b = wire.unpack(hdr)
            if op == wire.OP_BULK:
                # preallocated, as large as the other backends' (a); py-libp2p has no
                # readinto, so each read(a) returns bytes that are copied in
                buf = memoryview(bytearray(a))
                left = b
                while left:
                    chunk = await s.read(min(a, left))
                    if not chunk:
                        return
                    buf[: len(chunk)] = chunk
                    left -= len(chunk)
                await s.write(wire.ACK)
            elif op == wire.OP_ECHO:
                while True:
                    m = await _read_exact(s, a)
                    if m is None:
                        return
                    await s.write(m)
            elif op == wire.OP_RR:
                if await _read_exact(s, a) is not None:
                    await s.write(bytes(b))
                await s.close()
                return
            elif op == wire.OP_IDLE:
                wire.stat_add("idle")
                try:
                    await s.read(1)
                except StreamEOF:
                    pass
                finally:
                    wire.stat_add("idle", -1)
                return
    except Exception:  # noqa: BLE001
        pass


class Server:
    def __init__(self, muxer: str) -> None:
        self.muxer = muxer

    def serve(self, ready: Any) -> None:
        import multiaddr
        import trio

        async def main() -> None:
            host = _new_host(self.muxer, True)
            async with host.run(listen_addrs=[multiaddr.Multiaddr(LISTEN)]):
                host.set_stream_handler(wire.PROTOCOL_ID, _handler)
                addrs = [a for a in host.get_transport_addrs() if "/tcp/" in str(a)]
                ready(f"{addrs[0]}/p2p/{host.get_id()}")
                await trio.sleep_forever()

        trio.run(main)


class Client:
    """trio runs in a background thread; ops are submitted with from_thread."""

    def __init__(self, muxer: str) -> None:
        import trio

        self.muxer = muxer
        self.host: Any = None
        self.peer: Any = None
        self._idle: list[Any] = []
        self._token: Any = None
        started = threading.Event()

        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as n:
                self._nursery = n
                started.set()
                await trio.sleep_forever()

        threading.Thread(target=trio.run, args=(main,), daemon=True).start()
        started.wait()

    def _call(self, fn: Any, *args: Any) -> Any:
        import trio

        return trio.from_thread.run(fn, *args, trio_token=self._token)

    async def _start_host(self) -> Any:
        import trio

        host = _new_host(self.muxer, False)
        ready = trio.Event()
        stop = trio.Event()

        async def run_host() -> None:
            async with host.run(listen_addrs=[]):
                ready.set()
                await stop.wait()

        self._nursery.start_soon(run_host)
        await ready.wait()
        host._bench_stop = stop
        return host

    async def _connect(self, host: Any, addr: str) -> Any:
        import multiaddr
        from libp2p.peer.peerinfo import info_from_p2p_addr

        info = info_from_p2p_addr(multiaddr.Multiaddr(addr))
        await host.connect(info)
        return info.peer_id

    async def _ensure(self, addr: str) -> tuple[Any, Any]:
        if self.host is None:
            self.host = await self._start_host()
        if self.peer is None:
            self.peer = await self._connect(self.host, addr)
        return self.host, self.peer

    async def _stream(self, addr: str) -> Any:
        host, peer = await self._ensure(addr)
        return await host.new_stream(peer, [wire.PROTOCOL_ID])

    # ---- ops
    def bulk(self, addr: str, total: int, msg_size: int, streams: int,
             recv_buf: int = 0) -> dict[str, Any]:
        return self._call(self._bulk, addr, total, msg_size, streams, recv_buf or msg_size)

    async def _bulk(self, addr: str, total: int, msg_size: int, streams: int,
                    recv_buf: int) -> dict[str, Any]:
        import trio

        ss = [await self._stream(addr) for _ in range(streams)]
        per = max(msg_size, (total // streams) // msg_size * msg_size)
        parts = [per] * streams
        parts[-1] = max(0, total - per * (streams - 1)) or per
        payload = bytes(msg_size)

        async def one(s: Any, n: int) -> None:
            await s.write(wire.pack(wire.OP_BULK, recv_buf, n))
            left = n
            while left:
                k = min(msg_size, left)
                await s.write(payload if k == msg_size else payload[:k])
                left -= k
            await _read_exact(s, 1)

        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for s, k in zip(ss, parts, strict=False):
                n.start_soon(one, s, k)
        dt = time.perf_counter() - t0
        for s in ss:
            await s.close()
        return {"seconds": dt, "bytes": sum(parts), "cipher": "ChaChaPoly"}  # py-libp2p has no other

    def rtt(self, addr: str, n: int, size: int = 64, warmup: int = 0) -> dict[str, Any]:
        return self._call(self._rtt, addr, n, size, warmup)

    async def _rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        s = await self._stream(addr)
        await s.write(wire.pack(wire.OP_ECHO, size))
        msg = bytes(size)
        out = []
        for _ in range(warmup + n):  # warm-up on the same stream, discarded below
            t0 = time.perf_counter()
            await s.write(msg)
            await _read_exact(s, size)
            out.append((time.perf_counter() - t0) * 1e6)
        await s.close()
        return {"samples_us": out[warmup:]}

    def connect(self, addr: str, n: int) -> dict[str, Any]:
        return self._call(self._connect_n, addr, n)

    async def _connect_n(self, addr: str, n: int) -> dict[str, Any]:
        out, conn = [], []
        for _ in range(n):
            h = await self._start_host()
            t0 = time.perf_counter()
            peer = await self._connect(h, addr)  # TCP + multistream + Noise + muxer
            conn.append((time.perf_counter() - t0) * 1e3)
            s = await h.new_stream(peer, [wire.PROTOCOL_ID])
            await s.write(wire.pack(wire.OP_ECHO, 1) + b"x")
            await _read_exact(s, 1)
            out.append((time.perf_counter() - t0) * 1e3)
            await s.close()
            h._bench_stop.set()
        return {"samples_ms": out, "connect_ms": conn}

    def rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        return self._call(self._rr, addr, k, req, resp)

    async def _rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        import trio

        host, peer = await self._ensure(addr)
        payload = wire.pack(wire.OP_RR, req, resp) + bytes(req)

        async def one() -> None:
            s = await host.new_stream(peer, [wire.PROTOCOL_ID])
            await s.write(payload)
            await _read_exact(s, resp)
            await s.close()

        t0 = time.perf_counter()
        async with trio.open_nursery() as n:
            for _ in range(k):
                n.start_soon(one)
        return {"seconds": time.perf_counter() - t0}

    def idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        return self._call(self._idle_open, addr, conns, streams)

    async def _idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns):
            h = await self._start_host()
            peer = await self._connect(h, addr)
            s = await h.new_stream(peer, [wire.PROTOCOL_ID])
            await s.write(wire.pack(wire.OP_IDLE))
            self._idle.append(h)
        for _ in range(streams):
            s = await self._stream(addr)
            await s.write(wire.pack(wire.OP_IDLE))
            self._idle.append(s)
        return {}

    def idle_close(self) -> dict[str, Any]:
        return self._call(self._idle_close)

    async def _idle_close(self) -> dict[str, Any]:
        for x in self._idle:
            if hasattr(x, "_bench_stop"):
                x._bench_stop.set()
            else:
                try:
                    await x.close()
                except Exception:  # noqa: BLE001
                    pass
        self._idle.clear()
        return {}

    def shutdown(self) -> None:
        pass


def main() -> int:
    global CONFIG
    muxer, role = sys.argv[1], sys.argv[2]
    CONFIG = sys.argv[3] if len(sys.argv) > 3 else "tuned"
    return wire.run_worker(role, lambda: Server(muxer), lambda: Client(muxer))


if __name__ == "__main__":
    sys.exit(main())
