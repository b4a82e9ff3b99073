"""iceoryx2 (Python binding) publish-subscribe with loaned samples.

As its users do zero-copy IPC: an ``Ipc`` node, ``Slice[c_uint8]``
publish-subscribe services; the publisher ``loan_slice_uninit(n)``s a sample
in shared memory, writes the payload into it (one ``memmove`` from the
sender's numpy array: the "write payload" step), ``assume_init()`` and
``send()``. The subscriber ``receive()``s the sample and copies its payload
into the preallocated destination (same destination semantics as the other
backends), then drops the sample, returning it to the publisher's pool.

Bulk needs lossless delivery: ``enable_safe_overflow(False)`` on the service and
``BackpressureStrategy.RetryUntilDelivered`` on the publisher (the documented
way to block instead of overwriting), subscriber buffer of 8 samples.

Waiting: busy polling ``receive()`` on both sides (what iceoryx2's own
publish-subscribe latency benchmark does); the WaitSet/event path adds a
syscall wake-up per message and is slower. RTT uses two services (ping, pong).
Control messages (16-byte headers, acks) travel on two more Slice services.

The workers leave with ``os._exit`` (the server's loop never returns), so
their nodes die without removing their shared memory (the data segment alone
is ~86 MB of ``/dev/shm``). After each session the coordinator has iceoryx2
remove the stale resources of dead nodes (``_Session.close``).
"""

from __future__ import annotations

import ctypes
import struct
import time
import uuid
from typing import Any

from ..proc import OP_BULK, OP_ECHO, MiB, Session, dest_array, pin_cpu, source_array
from . import Backend, percentiles_us

MAX_MSG = 1 * MiB
OP_HELLO = 6
CTL = struct.Struct("!BIQQ")  # op, a, b, seq; acks carry the seq (stale acks are dropped)
ACK_DEADLINE = 120.0
BUFFER = 8


def _iox() -> Any:
    import iceoryx2 as iox2

    try:
        iox2.set_log_level_from_env_or(iox2.LogLevel.Error)
    except Exception:  # noqa: BLE001
        pass
    return iox2


class _Ports:
    """Node plus the four services of one session (``tag`` keeps sessions apart)."""

    def __init__(self, tag: str) -> None:
        iox2 = self.iox2 = _iox()
        self.node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
        self.tag = tag

    def service(self, what: str) -> Any:
        iox2 = self.iox2
        return (self.node.service_builder(iox2.ServiceName.new(f"fastp2p-samehost/{self.tag}/{what}"))
                .publish_subscribe(iox2.Slice[ctypes.c_uint8])
                .enable_safe_overflow(False)
                .subscriber_max_buffer_size(BUFFER)
                .history_size(0)
                .open_or_create())

    def publisher(self, what: str, max_len: int) -> Any:
        return (self.service(what).publisher_builder()
                .initial_max_slice_len(max_len)
                .backpressure_strategy(self.iox2.BackpressureStrategy.RetryUntilDelivered)
                .create())

    def subscriber(self, what: str) -> Any:
        return self.service(what).subscriber_builder().create()


def cleanup_dead_nodes() -> Any:
    """Remove the shared memory of every dead iceoryx2 node (ours: workers that
    left with ``os._exit``); returns iceoryx2's ``CleanupState``."""
    iox2 = _iox()
    node = iox2.NodeBuilder.new().create(iox2.ServiceType.Ipc)
    try:
        return node.try_cleanup_dead_nodes()
    finally:
        del node  # (its own resources go with it)


class _Session(Session):
    def close(self) -> None:
        super().close()  # the workers are gone after this
        try:
            cleanup_dead_nodes()
        except Exception:  # noqa: BLE001 - a cleanup failure must not fail the run
            pass


def _send(pub: Any, data: Any, n: int) -> None:
    """loan, write payload (one memmove from ``data``: an address or bytes), send."""
    s = pub.loan_slice_uninit(n)
    ctypes.memmove(s.payload_ptr, data, n)
    s.assume_init().send()


def _recv_spin(sub: Any) -> Any:
    r = sub.receive
    while True:
        s = r()
        if s is not None:
            return s


def _payload(sample: Any) -> tuple[int, int]:
    p = sample.payload()
    return p.data_ptr, p.number_of_elements


class Iceoryx2(Backend):
    name = "iceoryx2"
    title = "iceoryx2 publish-subscribe (loaned samples)"
    how = ("iceoryx2 Python binding, Ipc node, Slice[u8] pub-sub, loan_slice_uninit/memmove/send,"
           " subscriber busy-polls receive() and copies into the buffer")
    install = "pip install iceoryx2"

    def available(self) -> str | None:
        try:
            import iceoryx2  # noqa: F401
        except ImportError:
            return f"missing: {self.install}"
        except Exception as e:  # noqa: BLE001
            return f"cannot run: import iceoryx2: {type(e).__name__}: {e}"
        return None

    def versions(self) -> dict[str, str]:
        try:
            from importlib.metadata import version

            return {"iceoryx2": version("iceoryx2")}
        except Exception:  # noqa: BLE001
            return {}

    def open(self, P: Any) -> Any:
        return _Session(self.name, self.worker_params(P), server=self.uses_server,
                        start_timeout=P.start_timeout)

    def make_server(self, params: dict[str, Any]) -> Any:
        return _Server(params)

    def make_client(self, params: dict[str, Any]) -> Any:
        return _Client(params)


class _Server:
    def __init__(self, params: dict[str, Any]) -> None:
        pin_cpu(0)
        self.dst = dest_array(int(params["bulk_total"]))
        self.tag = uuid.uuid4().hex[:12]

    def serve(self, ready: Any) -> None:
        ports = _Ports(self.tag)
        ctl = ports.subscriber("ctl")
        data = ports.subscriber("data")
        ping = ports.subscriber("ping")
        back = ports.publisher("back", 8)
        pong = ports.publisher("pong", 4096)
        ready(self.tag)
        dst_addr = self.dst.ctypes.data
        idle = 0
        while True:
            c = ctl.receive()
            if c is None:
                idle += 1
                if idle > 20000:  # between operations: don't burn a core
                    time.sleep(0.001)
                continue
            idle = 0
            p, n = _payload(c)
            op, a, b, seq = CTL.unpack(ctypes.string_at(p, CTL.size))
            ack = struct.pack("!Q", seq)
            del c
            back.update_connections()
            pong.update_connections()
            if op == OP_BULK:
                pos = 0
                while pos < b:
                    s = _recv_spin(data)
                    p, n = _payload(s)
                    ctypes.memmove(dst_addr + pos, p, n)
                    pos += n
                    del s
                _send(back, ack, 8)
            elif op == OP_ECHO:
                for _ in range(b):
                    s = _recv_spin(ping)
                    p, n = _payload(s)
                    _send(pong, p, n)
                    del s
            elif op == OP_HELLO:
                _send(back, ack, 8)


class _Client:
    def __init__(self, params: dict[str, Any]) -> None:
        pin_cpu(1)
        self.src = source_array()
        self.ports: _Ports | None = None

    def _open(self, tag: str) -> _Ports:
        if self.ports is None:
            self.ports = ports = _Ports(tag)
            self.back = ports.subscriber("back")
            self.pong = ports.subscriber("pong")
            self.ctl = ports.publisher("ctl", CTL.size)
            self.seq = 0
            self.data = ports.publisher("data", MAX_MSG)
            self.ping = ports.publisher("ping", 4096)
            self._hello()
        return self.ports

    def _hello(self) -> None:
        """Connection set-up: a first sample can miss a just-created port; retry a
        hello until the server's ack arrives, then drain duplicates."""
        for pub in (self.ctl, self.data, self.ping):
            pub.update_connections()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            seq = self._ctl(OP_HELLO)
            try:
                self._wait_ack(seq, 0.5)
                return
            except TimeoutError:
                pass
        raise RuntimeError("iceoryx2: no answer from the server's services within 10 s")

    def _ctl(self, op: int, a: int = 0, b: int = 0) -> int:
        self.seq += 1
        _send(self.ctl, CTL.pack(op, a, b, self.seq), CTL.size)
        return self.seq

    def _wait_ack(self, seq: int, timeout: float) -> None:
        r = self.back.receive
        deadline = time.monotonic() + timeout
        while True:
            s = r()
            if s is not None:
                p, n = _payload(s)
                got = struct.unpack("!Q", ctypes.string_at(p, 8))[0]
                del s
                if got == seq:
                    return
            elif time.monotonic() > deadline:
                raise TimeoutError(f"iceoryx2: no ack for op {seq} within {timeout:.1f}s")

    def bulk(self, addr: str, total: int, msg_size: int) -> dict[str, Any]:
        self._open(addr)
        src_addr, ns = self.src.ctypes.data, len(self.src)
        data = self.data
        t0 = time.perf_counter()
        seq = self._ctl(OP_BULK, msg_size, total)
        for off in range(0, total, msg_size):
            _send(data, src_addr + off % ns, min(msg_size, total - off))
        self._wait_ack(seq, ACK_DEADLINE)
        dt = time.perf_counter() - t0
        return {"seconds": dt, "bytes": total}

    def rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        self._open(addr)
        msg = bytes(size)
        self._ctl(OP_ECHO, size, n + warmup)
        ping, pong = self.ping, self.pong
        ns = time.perf_counter_ns
        out: list[int] = []
        for i in range(n + warmup):
            t0 = ns()
            _send(ping, msg, size)
            s = _recv_spin(pong)
            t1 = ns()
            del s
            if i >= warmup:
                out.append(t1 - t0)
        r: dict[str, Any] = dict(percentiles_us(out))
        r["note"] = "busy-poll receive()"
        return r
