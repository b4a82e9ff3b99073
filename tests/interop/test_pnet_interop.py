"""Private networks (pnet) against js-libp2p 3.x with ``@libp2p/pnet`` (pinned in js/package.json).

Both directions over TCP + Noise + yamux, with the same ``/key/swarm/psk/1.0.0/``
key file on both sides: connect, ping and a 1 MiB echo verified by sha256. With
a different key (or none on the js side): the connection fails fast, with
``PnetError`` on the fastp2p side, and nothing is left behind (the leak checks of
tests/resource_guard.py run around every test).

No py-libp2p counterpart: py-libp2p 0.8.1's pnet (libp2p/security/pnet/psk_conn.py)
deviates from the spec: it sends an 8-byte nonce and uses plain Salsa20, where the
spec says a 24-byte nonce and XSalsa20, so it cannot talk to any spec-following
peer (go-libp2p, js-libp2p, fastp2p); js-libp2p is the reference here.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from .peers import missing, spawn

pytestmark = pytest.mark.interop

try:
    import fastp2p
    from fastp2p.config import HostConfig
    from fastp2p.errors import PnetError
    from fastp2p.proto.pnet import encode_psk_file

    from .test_interop import ECHO, PINGS, STEP, EchoServer, _echo_client, _peer_id
except Exception as exc:  # pragma: no cover - only while fastp2p is incomplete
    pytest.skip(f"fastp2p pnet API not importable: {exc!r}", allow_module_level=True)

_MISSING = missing("js", "@libp2p/pnet")
if _MISSING:
    pytest.skip(f"js-libp2p pnet peer unavailable: {_MISSING}", allow_module_level=True)

PSK = bytes(range(32))
OTHER = bytes(range(100, 132))
FAIL_FAST = 8.0  # seconds: well below either side's 10 s upgrade timeouts


def _key_file(tmp_path, psk: bytes, name: str) -> str:
    path = tmp_path / name
    path.write_bytes(encode_psk_file(psk))
    return str(path)


async def test_fastp2p_dials_js_same_psk(tmp_path) -> None:
    key = _key_file(tmp_path, PSK, "swarm.key")
    async with fastp2p.Host(config=HostConfig(psk=key)) as host:
        async with spawn("js", "--listen", "--psk", key) as ref:
            async with asyncio.timeout(STEP):
                peer = await host.connect(ref.addr)
            assert str(peer) == ref.peer_id
            ping = fastp2p.services.Ping(host)
            for _ in range(PINGS):
                async with asyncio.timeout(STEP):
                    assert 0 <= await ping(peer) < STEP
            sha = await _echo_client(host, peer)
            served = await ref.next_event("echo_served", timeout=STEP)
            assert served["bytes"] == 1 << 20 and served["sha256"] == sha, served


async def test_js_dials_fastp2p_same_psk(tmp_path) -> None:
    key = _key_file(tmp_path, PSK, "swarm.key")
    echo = EchoServer()
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=HostConfig(psk=key)) as host:
        host.set_handler(ECHO, echo)
        our_addr = f"{host.addrs[0]}/p2p/{host.peer_id}"
        async with spawn("js", "--dial", our_addr, "--pings", str(PINGS), "--psk", key) as ref:
            rc = await ref.wait_exit(timeout=90)
            assert rc == 0, ref.diagnostics()
            assert ref.find("connected", peer_id=str(host.peer_id)), ref.diagnostics()
            assert len(ref.find("ping")) == PINGS, ref.diagnostics()
            (their_echo,) = ref.find("echo")
            assert their_echo["ok"] is True, their_echo
            async with asyncio.timeout(STEP):
                await echo.done.wait()
            assert echo.served == [(1 << 20, their_echo["sha256"])], echo.served
            assert _peer_id(host, ref.peer_id) is not None


@pytest.mark.parametrize("js_psk", [OTHER, None], ids=["different-psk", "js-public"])
async def test_fastp2p_dials_js_mismatch_fails_fast(tmp_path, js_psk: bytes | None) -> None:
    ours = _key_file(tmp_path, PSK, "ours.key")
    js_args = ["--psk", _key_file(tmp_path, js_psk, "theirs.key")] if js_psk else []
    async with fastp2p.Host(config=HostConfig(psk=ours)) as host:
        async with spawn("js", "--listen", *js_args) as ref:
            t0 = time.monotonic()
            with pytest.raises(PnetError, match="private network handshake failed"):
                await host.connect(ref.addr)
            elapsed = time.monotonic() - t0
            assert elapsed < FAIL_FAST, f"{elapsed:.1f} s"
            assert not host.connections


@pytest.mark.parametrize("js_psk", [OTHER, None], ids=["different-psk", "js-public"])
async def test_js_dials_fastp2p_mismatch_fails_fast(tmp_path, caplog, js_psk: bytes | None) -> None:
    ours = _key_file(tmp_path, PSK, "ours.key")
    js_args = ["--psk", _key_file(tmp_path, js_psk, "theirs.key")] if js_psk else []
    caplog.set_level(logging.INFO, logger="fastp2p.host")
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=HostConfig(psk=ours)) as host:
        our_addr = f"{host.addrs[0]}/p2p/{host.peer_id}"
        t0 = time.monotonic()
        async with spawn("js", "--dial", our_addr, "--pings", "1", "--timeout", "30", *js_args) as ref:
            # our side refuses the connection, typed and fast; js then fails its dial
            async with asyncio.timeout(FAIL_FAST):
                while not any("private network handshake failed" in r.getMessage() for r in caplog.records):
                    await asyncio.sleep(0.02)
            assert time.monotonic() - t0 < FAIL_FAST + 5  # incl. node's start-up
            rc = await ref.wait_exit(timeout=60)
            assert rc != 0 and ref.find("error"), ref.diagnostics()
            assert not ref.find("connected"), ref.diagnostics()
        assert not host.connections and not host._pending_inbound
