"""pyzmq over tcp or ipc: PAIR for round trips, DEALER/ROUTER for the rest.

Round trips use a PAIR socket on each side, as pyzmq's and libzmq's latency
tools do: one ``send`` and one ``recv`` per message on each side, no routing
frame. The client keeps its PAIR for the session (warm-up and measured round
trips on the same connection).

Everything else goes to one ROUTER socket; every client "stream" is a DEALER
socket (zmq has no streams inside a connection, so bulk over S streams uses S
DEALERs and idle streams are idle DEALERs). Messages of ``wire.ZERO_COPY_MIN``
bytes and more are sent with ``copy=False``; the server receives payloads with
``recv_into`` into a preallocated buffer as large as the other backends' (the
header's ``a``, at least the message size). K concurrent request/responses are
K pipelined requests on one DEALER (zmq's own multiplexing). High-water marks:
0 (unlimited) on the ROUTER and for ``rr``; libzmq's default (1000 messages)
on the bulk DEALERs.

The server's ready address is ``"<router endpoint> <pair endpoint>"``.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from typing import Any

from .. import wire
from .base import Backend, BaseClient, BaseServer, split_total

MAX_SOCKETS = 20000


def _ctx() -> Any:
    import zmq

    ctx = zmq.Context(io_threads=1)
    ctx.set(zmq.MAX_SOCKETS, MAX_SOCKETS)
    return ctx


def _pair_echo(pair: Any) -> None:
    """Echo every message on the PAIR socket (its own thread; the socket is used only here)."""
    while True:
        msg = pair.recv(copy=False)
        pair.send(msg, copy=False)


def _router(addr: str) -> str:
    return addr.split()[0]


class Server(BaseServer):
    def __init__(self, transport: str) -> None:
        self.transport = transport

    def serve(self, ready: Any) -> None:
        import zmq

        ctx = _ctx()
        sock = ctx.socket(zmq.ROUTER)
        sock.setsockopt(zmq.RCVHWM, 0)
        sock.setsockopt(zmq.SNDHWM, 0)
        pair = ctx.socket(zmq.PAIR)
        if self.transport == "tcp":
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            addr = f"tcp://127.0.0.1:{port}"
            pport = pair.bind_to_random_port("tcp://127.0.0.1")
            paddr = f"tcp://127.0.0.1:{pport}"
        else:
            path = f"{tempfile.gettempdir()}/fastp2p-bench-{os.getpid()}.sock"
            ppath = f"{tempfile.gettempdir()}/fastp2p-bench-{os.getpid()}-pair.sock"
            wire.unlink_at_exit(path)
            wire.unlink_at_exit(ppath)
            addr, paddr = f"ipc://{path}", f"ipc://{ppath}"
            sock.bind(addr)
            pair.bind(paddr)
        threading.Thread(target=_pair_echo, args=(pair,), daemon=True, name="pair-echo").start()
        ready(f"{addr} {paddr}")
        state: dict[bytes, list[Any]] = {}  # identity -> [op, a, b, left, buf]
        hdr = memoryview(bytearray(wire.HDR_LEN))
        scratch = memoryview(bytearray(64 * 1024))
        while True:
            ident = sock.recv()
            st = state.get(ident)
            if st is None:
                n = sock.recv_into(hdr)
                op, a, b = wire.unpack(hdr)
                if op == wire.OP_BULK:
                    state[ident] = [op, a, b, b, memoryview(bytearray(a))]
                    if not b:
                        del state[ident]
                        sock.send_multipart([ident, wire.ACK])
                elif op == wire.OP_IDLE:
                    state[ident] = [op, a, b, 0, None]
                    wire.stat_add("idle")
                else:
                    state[ident] = [op, a, b, 0, None]
                continue
            op = st[0]
            if op == wire.OP_BULK:
                n = sock.recv_into(st[4])
                st[3] -= n
                if st[3] <= 0:
                    del state[ident]
                    sock.send_multipart([ident, wire.ACK])
            elif op == wire.OP_ECHO:
                msg = sock.recv(copy=False)
                sock.send_multipart([ident, msg], copy=False)
            elif op == wire.OP_RR:
                sock.recv_into(scratch)
                del state[ident]
                sock.send_multipart([ident, bytes(st[2])])
            else:
                sock.recv_into(scratch)


class Client(BaseClient):
    def __init__(self, transport: str) -> None:
        self.ctx = _ctx()
        self._idle: list[Any] = []
        self._pair: Any = None

    def _dealer(self, addr: str) -> Any:
        import zmq

        s = self.ctx.socket(zmq.DEALER)
        s.setsockopt(zmq.LINGER, 0)
        s.connect(_router(addr))
        return s

    def bulk(self, addr: str, total: int, msg_size: int, streams: int,
             recv_buf: int = 0) -> dict[str, Any]:
        socks = [self._dealer(addr) for _ in range(streams)]
        for s in socks:  # one request/response each: every pipe is up before the clock starts
            s.send(wire.pack(wire.OP_RR, 1, 1))
            s.send(b"x")
            s.recv()
        parts = split_total(total, msg_size, streams)
        payload = memoryview(bytes(msg_size))
        copy = msg_size < wire.ZERO_COPY_MIN
        t0 = time.perf_counter()
        lefts = list(parts)
        for s, n in zip(socks, parts, strict=False):
            s.send(wire.pack(wire.OP_BULK, max(recv_buf, msg_size), n))
        active = True
        while active:  # round robin over the DEALERs
            active = False
            for i, s in enumerate(socks):
                left = lefts[i]
                if left:
                    k = min(msg_size, left)
                    s.send(payload[:k], copy=copy)
                    lefts[i] = left - k
                    active = True
        for s in socks:
            s.recv()
        dt = time.perf_counter() - t0
        for s in socks:
            s.close()
        return {"seconds": dt, "bytes": sum(parts)}

    def rtt(self, addr: str, n: int, size: int = 64, warmup: int = 0) -> dict[str, Any]:
        import zmq

        if self._pair is None:  # one PAIR connection for the session (a PAIR takes one peer)
            self._pair = self.ctx.socket(zmq.PAIR)
            self._pair.setsockopt(zmq.LINGER, 0)
            self._pair.connect(addr.split()[1])
        s = self._pair
        msg = bytes(size)
        buf = bytearray(size)
        out = []
        pc = time.perf_counter
        for _ in range(warmup + n):  # warm-up on the same connection, discarded below
            t0 = pc()
            s.send(msg)
            s.recv_into(buf)
            out.append((pc() - t0) * 1e6)
        return {"samples_us": out[warmup:]}

    def connect(self, addr: str, n: int) -> dict[str, Any]:
        # zmq connects in the background: there is no "connected" moment to
        # time, so only connect + first echo is reported (connect_ms: None)
        out = []
        for _ in range(n):
            t0 = time.perf_counter()
            s = self._dealer(addr)
            s.send(wire.pack(wire.OP_ECHO, 1))
            s.send(b"x")
            s.recv()
            out.append((time.perf_counter() - t0) * 1e3)
            s.close()
        return {"samples_ms": out, "connect_ms": None}

    def rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        import zmq

        s = self._dealer(addr)
        s.setsockopt(zmq.SNDHWM, 0)
        s.setsockopt(zmq.RCVHWM, 0)
        hdr = wire.pack(wire.OP_RR, req, resp)
        body = bytes(req)
        t0 = time.perf_counter()
        for _ in range(k):
            s.send(hdr)
            s.send(body)
        for _ in range(k):
            s.recv()
        dt = time.perf_counter() - t0
        s.close()
        return {"seconds": dt}

    def idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        for _ in range(conns + streams):
            s = self._dealer(addr)
            s.send(wire.pack(wire.OP_IDLE))
            self._idle.append(s)
        return {}

    def idle_close(self) -> dict[str, Any]:
        for s in self._idle:
            s.close()
        self._idle.clear()
        return {}

    def shutdown(self) -> None:
        self.ctx.destroy(linger=0)


class Zmq(Backend):
    streams_are_connections = True
    loop = "zmq io thread"

    def __init__(self, transport: str) -> None:
        self.transport = transport
        self.name = f"zmq-{transport}"
        self.title = f"pyzmq over {transport}: PAIR round trips, DEALER/ROUTER otherwise"
        self.config_note = ("rtt over PAIR sockets; connect: zmq connects in the background, "
                            "so only connect + first echo (DEALER/ROUTER) is timed")

    def available(self) -> str | None:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return 'pyzmq not installed: pip install "fastp2p[bench]"'
        return None

    def versions(self) -> dict[str, str]:
        import zmq

        return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}

    def make_server(self) -> BaseServer:
        return Server(self.transport)

    def make_client(self) -> BaseClient:
        return Client(self.transport)
