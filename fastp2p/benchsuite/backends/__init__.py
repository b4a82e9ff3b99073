"""Backend registry (order = interleaving order within a round)."""

from __future__ import annotations

from .base import Backend

BASELINE = "tcp-uvloop-proto"


def all_backends() -> list[Backend]:
    from .asyncio_tcp import AsyncioTCP
    from .fastp2p_tcp import Fastp2pTCP
    from .limits import Iperf3, Memcpy
    from .pylibp2p import PyLibp2p
    from .socket_threads import SocketThreads
    from .zmq_backend import Zmq

    return [
        AsyncioTCP("proto", "uvloop"),
        AsyncioTCP("streams", "uvloop"),
        AsyncioTCP("proto", "asyncio"),
        AsyncioTCP("streams", "asyncio"),
        SocketThreads(),
        Zmq("tcp"),
        Zmq("ipc"),
        PyLibp2p("yamux"),
        PyLibp2p("mplex"),
        Fastp2pTCP("yamux"),
        Fastp2pTCP("mplex"),
        Iperf3(),
        Memcpy(),
    ]


def get_backend(name: str) -> Backend:
    for b in all_backends():
        if b.name == name:
            return b
    raise KeyError(f"unknown backend {name!r}; known: {', '.join(b.name for b in all_backends())}")


__all__ = ["BASELINE", "Backend", "all_backends", "get_backend"]
