"""Backend registry (order = interleaving order within a round, and table order).

To add backends: write a module with a :class:`~.base.Backend` subclass, then
add a group function below that imports it lazily and returns its instances
(lazily, so a backend whose module needs an optional package cannot break the
others), and list the function in ``_GROUPS``. Limits (kind ``"limit"``) go last.
"""

from __future__ import annotations

from collections.abc import Callable

from .base import Backend

BASELINE = "tcp-uvloop-proto"


def _raw_tcp() -> list[Backend]:
    from .asyncio_tcp import AsyncioTCP
    from .socket_threads import SocketThreads

    return [AsyncioTCP("proto", "uvloop"), AsyncioTCP("proto", "uvloop", busy_poll=True),
            AsyncioTCP("streams", "uvloop"),
            AsyncioTCP("proto", "asyncio"), AsyncioTCP("streams", "asyncio"), SocketThreads()]


def _zmq() -> list[Backend]:
    from .zmq_backend import Zmq

    return [Zmq("tcp"), Zmq("ipc")]


def _pylibp2p() -> list[Backend]:
    from .pylibp2p import PyLibp2p

    return [PyLibp2p("yamux"), PyLibp2p("mplex"), PyLibp2p("yamux", config="default")]


def _fastp2p() -> list[Backend]:
    from .fastp2p_tcp import Fastp2pTCP

    return [Fastp2pTCP("yamux"), Fastp2pTCP("mplex"), Fastp2pTCP("yamux", "chacha"),
            Fastp2pTCP("yamux", "aesgcm"), Fastp2pTCP("yamux", serial=True),
            Fastp2pTCP("yamux", "chacha", serial=True), Fastp2pTCP("yamux", busy_poll=True),
            Fastp2pTCP("yamux", proto=True)]


def _limits() -> list[Backend]:
    from .limits import Iperf3, Memcpy

    return [Iperf3(), Memcpy()]


_GROUPS: list[Callable[[], list[Backend]]] = [_raw_tcp, _zmq, _pylibp2p, _fastp2p, _limits]


def all_backends() -> list[Backend]:
    out: list[Backend] = []
    for group in _GROUPS:
        out.extend(group())
    return out


def get_backend(name: str) -> Backend:
    for b in all_backends():
        if b.name == name:
            return b
    raise KeyError(f"unknown backend {name!r}; known: {', '.join(b.name for b in all_backends())}")


__all__ = ["BASELINE", "Backend", "all_backends", "get_backend"]
