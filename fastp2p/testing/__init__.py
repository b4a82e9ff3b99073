"""Public test kit: connected host pairs and conformance suites for code built on fastp2p.

- :func:`host_pair`: two running Hosts connected over TCP loopback.
- :func:`stream_pair`: two connected Streams over a fresh host pair.
- :func:`check_stream`: the two-way byte-stream contract (trio's
  ``check_two_way_stream``), for any factory of connected stream pairs.
- :func:`check_muxer`: go-libp2p's muxer test suite (``SubtestAll``) on Hosts.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping

from fastp2p._typing import Handler
from fastp2p.config import HostConfig
from fastp2p.host import Host
from fastp2p.peer import PeerID
from fastp2p.testing._helpers import CONFORMANCE_PROTOCOL, MakeHostPair, MakeStreamPair
from fastp2p.testing.muxer_checks import MUXER_SUBTESTS, assert_stream_tables_empty, check_muxer
from fastp2p.testing.stream_checks import STREAM_CHECKS, check_stream, stream_pair

__all__ = [
    "CONFORMANCE_PROTOCOL",
    "MUXER_SUBTESTS",
    "MakeHostPair",
    "MakeStreamPair",
    "STREAM_CHECKS",
    "assert_stream_tables_empty",
    "check_muxer",
    "check_stream",
    "host_pair",
    "stream_pair",
]


@contextlib.asynccontextmanager
async def host_pair(
    config: HostConfig | None = None,
    *,
    listen: str = "/ip4/127.0.0.1/tcp/0",
    handlers: Mapping[str, Handler] | None = None,
    listener_config: HostConfig | None = None,
) -> AsyncIterator[tuple[Host, Host, PeerID]]:
    """Two running Hosts, the first connected to the second over TCP loopback.

    ``handlers`` (protocol id -> handler) are set on the listener before the
    dial, so identify already lists them to the dialer. ``listener_config``:
    the listener's own config (default: ``config``, as the dialer's).
    Yields ``(dialer, listener, listener_peer_id)``.
    """
    lconfig = config if listener_config is None else listener_config
    async with Host(listen=[listen], config=lconfig) as b, Host(config=config) as a:
        for proto, handler in (handlers or {}).items():
            b.set_handler(proto, handler)
        peer = await a.connect(b.full_addrs[0])
        yield a, b, peer
