"""Sanity check of the interop harness: the reference peers against each other.

py-libp2p 0.8.1 and js-libp2p 3.x, every listener x dialer x muxer pair (py<->py and
js<->js included), over TCP + Noise: connect, ping, identify on both sides, 1 MiB echo.
If one of these fails, a failure of test_interop.py against the same peer is not
evidence about fastp2p.
"""

from __future__ import annotations

import pytest

from .peers import AGENT_PREFIX, KINDS, MUXERS, missing, spawn

pytestmark = pytest.mark.interop

ECHO_SIZE = 1024 * 1024
PINGS = 3


def _skip_unless_available(*kinds: str) -> None:
    for kind in kinds:
        reason = missing(kind)
        if reason:
            pytest.skip(reason)


def _check_identify(ev: dict, remote_kind: str) -> None:
    assert ev["agent_version"].startswith(AGENT_PREFIX[remote_kind]), ev
    assert "/echo/1.0.0" in ev["protocols"], ev
    assert "/ipfs/ping/1.0.0" in ev["protocols"], ev
    assert "/ipfs/id/1.0.0" in ev["protocols"], ev
    assert any(a.startswith("/ip4/127.0.0.1/tcp/") for a in ev["listen_addrs"]), ev


@pytest.mark.parametrize("muxer", MUXERS)
@pytest.mark.parametrize("dialer", KINDS)
@pytest.mark.parametrize("listener", KINDS)
async def test_reference_pair(listener: str, dialer: str, muxer: str) -> None:
    _skip_unless_available(listener, dialer)
    async with spawn(listener, "--listen", "--muxer", muxer) as srv:
        async with spawn(
            dialer, "--dial", srv.addr, "--muxer", muxer, "--pings", str(PINGS)
        ) as cli:
            rc = await cli.wait_exit(timeout=90)
            assert rc == 0, cli.diagnostics() + "\n" + srv.diagnostics()
            assert cli.find("done"), cli.diagnostics()
            assert cli.find("connected", peer_id=srv.peer_id), cli.diagnostics()
            pings = cli.find("ping")
            assert len(pings) == PINGS and all(p["rtt_ms"] >= 0 for p in pings), pings
            (ident,) = cli.find("identify")
            assert ident["peer_id"] == srv.peer_id
            _check_identify(ident, listener)
            (echo,) = cli.find("echo")
            assert echo["ok"] is True and echo["bytes"] == ECHO_SIZE, echo

            # The listener saw the dialer too: identify about it, and served the echo.
            ident = await srv.next_event("identify", timeout=15)
            assert ident["peer_id"] == cli.peer_id, srv.diagnostics()
            _check_identify(ident, dialer)
            served = await srv.next_event("echo_served", timeout=15)
            assert served["bytes"] == ECHO_SIZE and served["sha256"] == echo["sha256"], served
