"""fastp2p against js-libp2p's *stock* mplex (``disconnectThreshold`` 5: a remote that
opens more than 5 new streams per second is disconnected) — issue 8, section 6.

fastp2p opens few streams on its own: one identify stream per connection, one ping
stream per peer reused for every ping (``fastp2p.services.Ping``), identify-push only
when its protocols change. A session of connect + identify + 10 pings + one echo
therefore opens 3 streams, well under the threshold, in both directions. An
application that opens more than 5 streams a second to a js-libp2p mplex peer still
gets disconnected by it; that is js-libp2p's policy (yamux has no such limit, and
fastp2p prefers yamux), documented in tests/interop/README.md.
"""

from __future__ import annotations

import asyncio

import pytest

from .peers import missing, spawn

pytestmark = pytest.mark.interop

if missing("js"):
    pytest.skip(f"js reference peer missing: {missing('js')}", allow_module_level=True)

import fastp2p  # noqa: E402
from fastp2p.config import HostConfig  # noqa: E402

MPLEX = "/mplex/6.7.0"


async def test_fastp2p_dials_stock_js_mplex_and_stays_connected() -> None:
    async with spawn(
        "js", "--listen", "--muxer", "mplex", "--mplex-disconnect-threshold", "5"
    ) as js:
        async with fastp2p.Host(config=HostConfig(muxers=(MPLEX,))) as h:
            peer = await h.connect(js.addr)
            for _ in range(10):
                await h.ping(peer)
            s = await h.open_stream(peer, "/echo/1.0.0")
            await s.write(b"x" * 1000)
            await s.close_write()
            got = b""
            async with asyncio.timeout(10):
                while chunk := await s.read(65536):
                    got += chunk
            assert got == b"x" * 1000
            await asyncio.sleep(1.5)  # js would have hung up by now
            conn = h.connection(peer)
            assert conn is not None and not conn.is_closed
            assert conn.muxer == MPLEX
            await h.ping(peer)


async def test_stock_js_mplex_dials_fastp2p_and_completes() -> None:
    from fastp2p.services import serve_echo

    async with fastp2p.Host(
        listen=["/ip4/127.0.0.1/tcp/0"], config=HostConfig(muxers=(MPLEX,))
    ) as h:
        serve_echo(h)
        addr = str(h.full_addrs[0])
        async with spawn(
            "js",
            "--dial",
            addr,
            "--muxer",
            "mplex",
            "--pings",
            "3",
            "--mplex-disconnect-threshold",
            "5",
        ) as js:
            await js.next_event("echo", timeout=30)  # raises on an "error" event
            await js.next_event("done", timeout=30)
            assert not js.find("error"), js.diagnostics()
