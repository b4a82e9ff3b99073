"""pyzmq over ``ipc://`` (Unix domain socket), PAIR sockets, as pyzmq users do
same-host messaging.

Sender: ``send(memoryview_slice, copy=False)`` of slices of a 64 MiB numpy
array (zero-copy hand-off to libzmq's I/O thread). Receiver:
``recv_into(dest[pos:pos+msg])`` into the preallocated destination when the
pyzmq version has it (>= 26.4), else ``recv(copy=False)`` and one copy into
the destination. The first message of each operation is a 16-byte header;
bulk ends with a one-byte ack. RTT: 64-byte PAIR ping-pong, blocking recv.
"""

from __future__ import annotations

import os
import tempfile
import time
import uuid
from typing import Any

from ...wire import unlink_at_exit
from ..proc import ACK, OP_BULK, OP_ECHO, dest_array, pack, source_array, unpack
from . import Backend, percentiles_us


class ZmqIpc(Backend):
    name = "zmq-ipc"
    title = "pyzmq ipc:// PAIR"
    how = "pyzmq PAIR over ipc://, send(copy=False) of memoryviews, recv_into the buffer"
    install = "pip install pyzmq"

    def available(self) -> str | None:
        try:
            import zmq  # noqa: F401
        except ImportError:
            return f"missing: {self.install}"
        return None

    def versions(self) -> dict[str, str]:
        import zmq

        return {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}

    def make_server(self, params: dict[str, Any]) -> Any:
        return _Server(params)

    def make_client(self, params: dict[str, Any]) -> Any:
        return _Client(params)


class _Server:
    def __init__(self, params: dict[str, Any]) -> None:
        self.dst = dest_array(int(params["bulk_total"]))

    def serve(self, ready: Any) -> None:
        import zmq

        ctx = zmq.Context()
        s = ctx.socket(zmq.PAIR)
        path = os.path.join(tempfile.gettempdir(), f"fp-samehost-{uuid.uuid4().hex[:12]}.ipc")
        addr = f"ipc://{path}"
        # the worker leaves by os._exit (no finally runs): it unlinks the file then
        unlink_at_exit(path)
        s.bind(addr)
        ready(addr)
        dst = memoryview(self.dst)
        has_into = hasattr(s, "recv_into")
        while True:
            op, a, b = unpack(s.recv())
            if op == OP_BULK:
                pos = 0
                while pos < b:
                    n = min(a, b - pos)
                    if has_into:
                        pos += s.recv_into(dst[pos:pos + n])
                    else:
                        f = s.recv(copy=False)
                        m = len(f.buffer)
                        dst[pos:pos + m] = f.buffer
                        pos += m
                s.send(ACK)
            elif op == OP_ECHO:
                buf = bytearray(a)
                for _ in range(b):
                    if has_into:
                        s.send(memoryview(buf)[:s.recv_into(buf)])
                    else:
                        s.send(s.recv())


class _Client:
    def __init__(self, params: dict[str, Any]) -> None:
        import zmq

        self.zmq = zmq
        self.ctx = zmq.Context()
        self.s: Any = None
        self.src = memoryview(source_array())

    def _sock(self, addr: str) -> Any:
        if self.s is None:
            self.s = self.ctx.socket(self.zmq.PAIR)
            self.s.connect(addr)
        return self.s

    def bulk(self, addr: str, total: int, msg_size: int) -> dict[str, Any]:
        s = self._sock(addr)
        src, ns = self.src, len(self.src)
        t0 = time.perf_counter()
        s.send(pack(OP_BULK, msg_size, total))
        for off in range(0, total, msg_size):
            o = off % ns
            s.send(src[o:o + min(msg_size, total - off)], copy=False)
        if s.recv() != ACK:
            raise RuntimeError("bad ack")
        return {"seconds": time.perf_counter() - t0, "bytes": total}

    def rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        s = self._sock(addr)
        msg = bytes(size)
        buf = bytearray(size)
        s.send(pack(OP_ECHO, size, n + warmup))
        ns = time.perf_counter_ns
        out: list[int] = []
        for i in range(n + warmup):
            t0 = ns()
            s.send(msg)
            s.recv_into(buf) if hasattr(s, "recv_into") else s.recv()
            if i >= warmup:
                out.append(ns() - t0)
        return percentiles_us(out)

    def shutdown(self) -> None:
        if self.s is not None:
            self.s.close(linger=0)
        self.ctx.term()
