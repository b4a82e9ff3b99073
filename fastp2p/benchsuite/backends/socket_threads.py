"""Blocking sockets, one thread per connection on both sides (``recv_into``).

The bulk receiver ``recv_into``s a buffer as large as fastp2p's TCP receive
buffer (the header's ``a``); writes are ``sendall`` (the kernel's socket buffer
is the only queue, autotuned); TCP_NODELAY on both sides.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import Any

from .. import wire
from .base import Backend, BaseClient, BaseServer, split_total

HOST = "127.0.0.1"
MAX_THREADS = 2000


def _recv_exact(s: socket.socket, buf: memoryview, n: int) -> bool:
    got = 0
    while got < n:
        k = s.recv_into(buf[got:n])
        if not k:
            return False
        got += k
    return True


def _handle(s: socket.socket) -> None:
    hdr = memoryview(bytearray(wire.HDR_LEN))
    try:
        while True:
            if not _recv_exact(s, hdr, wire.HDR_LEN):
                return
            op, a, b = wire.unpack(hdr)
            if op == wire.OP_BULK:
                buf = memoryview(bytearray(a))
                left = b
                while left:
                    k = s.recv_into(buf[: min(a, left)])
                    if not k:
                        return
                    left -= k
                s.sendall(wire.ACK)
            elif op == wire.OP_ECHO:
                buf = memoryview(bytearray(a))
                while _recv_exact(s, buf, a):
                    s.sendall(buf)
                return
            elif op == wire.OP_RR:
                buf = memoryview(bytearray(a))
                if _recv_exact(s, buf, a):
                    s.sendall(bytes(b))
                return
            elif op == wire.OP_IDLE:
                wire.stat_add("idle")
                try:
                    s.recv(1)
                finally:
                    wire.stat_add("idle", -1)
                return
    except OSError:
        pass
    finally:
        s.close()


class Server(BaseServer):
    def serve(self, ready: Any) -> None:
        threading.stack_size(256 * 1024)
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind((HOST, 0))
        ls.listen(4096)
        ready(f"{HOST}:{ls.getsockname()[1]}")
        while True:
            s, _ = ls.accept()
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=_handle, args=(s,), daemon=True).start()


def _dial(addr: str) -> socket.socket:
    h, p = addr.rsplit(":", 1)
    s = socket.create_connection((h, int(p)))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Client(BaseClient):
    def __init__(self) -> None:
        threading.stack_size(256 * 1024)
        self._idle: list[socket.socket] = []

    def bulk(self, addr: str, total: int, msg_size: int, streams: int,
             recv_buf: int = 0) -> dict[str, Any]:
        socks = [_dial(addr) for _ in range(streams)]
        parts = split_total(total, msg_size, streams)
        payload = memoryview(bytes(msg_size))
        go = threading.Barrier(streams + 1)
        errs: list[BaseException] = []

        def one(s: socket.socket, n: int) -> None:
            try:
                go.wait()
                s.sendall(wire.pack(wire.OP_BULK, recv_buf or msg_size, n))
                left = n
                while left:
                    k = min(msg_size, left)
                    s.sendall(payload[:k])
                    left -= k
                if s.recv(1) != wire.ACK:
                    raise ConnectionError("no ack")
            except BaseException as e:  # noqa: BLE001
                errs.append(e)

        ts = [threading.Thread(target=one, args=(s, n)) for s, n in zip(socks, parts, strict=False)]
        for t in ts:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        for s in socks:
            s.close()
        if errs:
            raise errs[0]
        return {"seconds": dt, "bytes": sum(parts)}

    def rtt(self, addr: str, n: int, size: int = 64, warmup: int = 0) -> dict[str, Any]:
        s = _dial(addr)
        s.sendall(wire.pack(wire.OP_ECHO, size))
        msg = bytes(size)
        buf = memoryview(bytearray(size))
        out = []
        pc = time.perf_counter
        for _ in range(warmup + n):  # warm-up on the same connection, discarded below
            t0 = pc()
            s.sendall(msg)
            _recv_exact(s, buf, size)
            out.append((pc() - t0) * 1e6)
        s.close()
        return {"samples_us": out[warmup:]}

    def connect(self, addr: str, n: int) -> dict[str, Any]:
        out, conn = [], []
        buf = memoryview(bytearray(1))
        for _ in range(n):
            t0 = time.perf_counter()
            s = _dial(addr)
            conn.append((time.perf_counter() - t0) * 1e3)
            s.sendall(wire.pack(wire.OP_ECHO, 1) + b"x")
            _recv_exact(s, buf, 1)
            out.append((time.perf_counter() - t0) * 1e3)
            s.close()
        return {"samples_ms": out, "connect_ms": conn}

    def rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        payload = wire.pack(wire.OP_RR, req, resp) + bytes(req)
        go = threading.Barrier(k + 1)
        errs: list[BaseException] = []

        def one() -> None:
            try:
                go.wait()
                s = _dial(addr)
                s.sendall(payload)
                _recv_exact(s, memoryview(bytearray(resp)), resp)
                s.close()
            except BaseException as e:  # noqa: BLE001
                errs.append(e)

        ts = [threading.Thread(target=one) for _ in range(k)]
        for t in ts:
            t.start()
        go.wait()
        t0 = time.perf_counter()
        for t in ts:
            t.join()
        dt = time.perf_counter() - t0
        if errs:
            raise errs[0]
        return {"seconds": dt}

    def idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns + streams):
            s = _dial(addr)
            s.sendall(wire.pack(wire.OP_IDLE))
            self._idle.append(s)
        return {}

    def idle_close(self) -> dict[str, Any]:
        for s in self._idle:
            s.close()
        self._idle.clear()
        return {}


class SocketThreads(Backend):
    name = "socket-threads"
    title = "blocking sockets, thread per connection"
    loop = "threads"
    streams_are_connections = True

    def supports(self, scenario: str) -> str | None:
        if scenario == "streams10k":
            return f"thread per connection: capped at {MAX_THREADS} threads"
        return None

    def make_server(self) -> BaseServer:
        return Server()

    def make_client(self) -> BaseClient:
        return Client()
