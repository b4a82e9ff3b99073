"""The one backend interface of the end-to-end harness.

A :class:`Backend` is a descriptor living in the coordinator. It starts a
*session*: a server worker process and a client worker process (``subprocess``;
``python -m fastp2p.benchsuite.worker <backend> <role>``, or another interpreter
for py-libp2p). Inside the workers the backend provides a :class:`BaseServer`
and a :class:`BaseClient`; the coordinator drives the client with operations:

``bulk(addr, total, msg_size, streams, recv_buf)``
    send ``total`` bytes in ``msg_size`` writes over ``streams`` parallel
    streams (connections where the transport has no streams); the header tells
    the server ``recv_buf``, the size of the preallocated buffer every backend's
    receiver reads into (the same for all backends: fastp2p's per-loop TCP
    receive buffer, or the message size if larger); the server acks once all
    bytes are in -> ``{"seconds", "bytes"}``
``rtt(addr, n, size, warmup)``
    ``warmup`` + ``n`` sequential ``size``-byte round trips on ONE stream; the
    first ``warmup`` are discarded -> ``{"samples_us"}`` (``n`` samples)
``connect(addr, n)``
    ``n`` fresh connections; each sample is timed twice from the same start:
    ``connect_ms`` until the connection is usable (TCP: connect returned;
    libp2p: secured and muxed, as the library's connect returns; ``None`` where
    the library connects in the background, e.g. zmq) and ``samples_ms`` until
    a first stream is open and a 1-byte echo came back
    -> ``{"samples_ms", "connect_ms"}``
``rr(addr, k, req, resp)``
    ``k`` concurrent request/response streams on one connection -> ``{"seconds"}``
``idle_open(addr, conns, streams)`` / ``idle_close()``
    hold idle connections, or idle streams on one connection; the coordinator
    reads both processes' RSS around it.

Limit backends (iperf3, memcpy) override :meth:`Backend.open_session` and answer
the same calls directly.
"""

from __future__ import annotations

import asyncio
import functools
import os
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import Any

from ..workerproc import Worker

SCENARIOS = ("bulk1", "bulk8", "rtt", "connect", "streams1k", "streams10k", "idle")


class BaseServer(ABC):
    """Runs in the server worker."""

    @abstractmethod
    def serve(self, ready: Callable[[str], None]) -> None:
        """Listen, call ``ready(dial_address)`` once, then serve forever."""


class BaseClient(ABC):
    """Runs in the client worker; every method is synchronous."""

    @abstractmethod
    def bulk(self, addr: str, total: int, msg_size: int, streams: int,
             recv_buf: int = 0) -> dict[str, Any]: ...

    @abstractmethod
    def rtt(self, addr: str, n: int, size: int = 64, warmup: int = 0) -> dict[str, Any]: ...

    @abstractmethod
    def connect(self, addr: str, n: int) -> dict[str, Any]: ...

    @abstractmethod
    def rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]: ...

    @abstractmethod
    def idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]: ...

    @abstractmethod
    def idle_close(self) -> dict[str, Any]: ...

    def shutdown(self) -> None:  # noqa: B027 - optional hook
        """Release resources at worker exit (optional)."""


class AsyncClient(BaseClient):
    """Adapter: implement ``a_<op>`` coroutines, run on one persistent loop."""

    loop_factory: Callable[[], asyncio.AbstractEventLoop] | None = None

    def __init__(self) -> None:
        self._runner = asyncio.Runner(loop_factory=self.loop_factory)

    def _run(self, coro: Any) -> Any:
        return self._runner.run(coro)

    def bulk(self, addr: str, total: int, msg_size: int, streams: int,
             recv_buf: int = 0) -> dict[str, Any]:
        return self._run(self.a_bulk(addr, total, msg_size, streams, recv_buf or msg_size))

    def rtt(self, addr: str, n: int, size: int = 64, warmup: int = 0) -> dict[str, Any]:
        return self._run(self.a_rtt(addr, n, size, warmup))

    def connect(self, addr: str, n: int) -> dict[str, Any]:
        return self._run(self.a_connect(addr, n))

    def rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        return self._run(self.a_rr(addr, k, req, resp))

    def idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        return self._run(self.a_idle_open(addr, conns, streams))

    def idle_close(self) -> dict[str, Any]:
        return self._run(self.a_idle_close())

    def shutdown(self) -> None:
        try:
            self._runner.close()
        except Exception:  # noqa: BLE001
            pass

    async def a_bulk(self, addr: str, total: int, msg_size: int, streams: int,
                     recv_buf: int) -> dict[str, Any]:
        raise NotImplementedError

    async def a_rtt(self, addr: str, n: int, size: int, warmup: int) -> dict[str, Any]:
        raise NotImplementedError

    async def a_connect(self, addr: str, n: int) -> dict[str, Any]:
        raise NotImplementedError

    async def a_rr(self, addr: str, k: int, req: int, resp: int) -> dict[str, Any]:
        raise NotImplementedError

    async def a_idle_open(self, addr: str, conns: int, streams: int) -> dict[str, Any]:
        raise NotImplementedError

    async def a_idle_close(self) -> dict[str, Any]:
        raise NotImplementedError


def split_total(total: int, msg_size: int, streams: int) -> list[int]:
    """Split ``total`` over ``streams`` in whole messages (last one may be short)."""
    per = max(msg_size, (total // streams) // msg_size * msg_size)
    out = [per] * streams
    out[-1] = max(0, total - per * (streams - 1)) or per
    return out


# fastp2p's own I/O settings (fastp2p/transport/tcp.py), applied to the raw
# baselines too so that both sides read into equally large buffers and queue
# equally much before write flow control. Fallbacks are used only when fastp2p's
# transport cannot be imported.
_IO_FALLBACK = (256 * 1024, 4 * 1024 * 1024, 1024 * 1024)


@functools.lru_cache(maxsize=1)
def fastp2p_io_limits() -> tuple[int, int, int]:
    """(receive buffer, write high-water, write low-water) of fastp2p's TCP transport."""
    try:
        from fastp2p.transport import tcp

        return (int(tcp.RECV_BUFFER_SIZE), int(tcp.WRITE_HIGH_WATER), int(tcp.WRITE_LOW_WATER))
    except Exception:  # noqa: BLE001
        return _IO_FALLBACK


def set_write_limits(transport: Any) -> None:
    """Give an asyncio transport fastp2p's write high/low-water marks."""
    _rx, high, low = fastp2p_io_limits()
    try:
        transport.set_write_buffer_limits(high=high, low=low)
    except (AttributeError, NotImplementedError, ValueError):
        pass


def uvloop_factory() -> Callable[[], asyncio.AbstractEventLoop]:
    import uvloop

    return uvloop.new_event_loop


# --------------------------------------------------------------------------- coordinator side


class Session:
    """What the coordinator drives; one per (round, backend)."""

    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        raise NotImplementedError

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class WorkerSession(Session):
    def __init__(self, backend: Backend, start_timeout: float = 60.0) -> None:
        env = dict(os.environ)
        env.update(backend.worker_env())
        self.server = Worker(backend.worker_cmd("server"), env, f"{backend.name}/server")
        self.client: Worker | None = None
        try:
            ready = self.server.recv(start_timeout)
            self.addr = ready["addr"]
            self.client = Worker(backend.worker_cmd("client"), env, f"{backend.name}/client")
            self.client.recv(start_timeout)
        except BaseException:
            self.close()
            raise

    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        assert self.client is not None
        if op != "idle_close":
            args.setdefault("addr", self.addr)
        self.client.send({"cmd": "run", "op": op, "args": args})
        return self.client.recv(timeout)

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        self.server.send({"cmd": "usage"})
        return self.server.recv(timeout)

    def close(self) -> None:
        if self.client is not None:
            self.client.kill()
        self.server.kill()


class Backend:
    """Descriptor of one backend (coordinator side)."""

    name = "?"
    title = "?"
    kind = "transport"  # or "limit"
    loop = "-"  # event loop the backend runs on
    streams_are_connections = False  # no muxer: a "stream" is a connection/socket
    idle_conns_cap: int | None = None  # slow dialers: fewer idle connections (noted)
    idle_streams_cap: int | None = None  # stream limits: fewer idle streams (noted)

    def available(self) -> str | None:
        """None when runnable, else what is missing and how to get it.

        Shown in the table's cells (``missing: ...``), so keep it short and
        actionable, e.g. ``pip install "fastp2p[bench]"``."""
        return None

    def supports(self, scenario: str) -> str | None:
        return None

    def python(self) -> str:
        return sys.executable

    def worker_cmd(self, role: str) -> list[str]:
        return [self.python(), "-m", "fastp2p.benchsuite.worker", self.name, role]

    def worker_env(self) -> dict[str, str]:
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
        pp = os.environ.get("PYTHONPATH", "")
        return {"PYTHONPATH": root + (os.pathsep + pp if pp else ""), "PYTHONUNBUFFERED": "1"}

    def open_session(self, start_timeout: float = 60.0) -> Session:
        return WorkerSession(self, start_timeout)

    def versions(self) -> dict[str, str]:
        return {}

    # in-worker factories
    def make_server(self) -> BaseServer:
        raise NotImplementedError

    def make_client(self) -> BaseClient:
        raise NotImplementedError
