"""fastp2p against real libp2p implementations: py-libp2p 0.8.1 and js-libp2p 3.x.

For each reference peer x muxer x direction (fastp2p dials / fastp2p listens), over
TCP + Noise: connect, ping, identify seen on both sides, and a 1 MiB echo verified by
sha256. The reference peers are child processes (see peers.py); install them with
``ci/setup_interop.sh``. test_reference_peers.py checks the same peers against each
other, so a failure here that does not show there is about fastp2p.
"""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

from .peers import AGENT_PREFIX, KINDS, MUXER_IDS, MUXERS, missing, spawn

pytestmark = pytest.mark.interop

try:
    import fastp2p
    from fastp2p.config import HostConfig

    fastp2p.Host  # noqa: B018
    fastp2p.services.Ping  # noqa: B018
except Exception as exc:  # pragma: no cover - only while fastp2p is incomplete
    pytest.skip(f"fastp2p Host API not importable yet: {exc!r}", allow_module_level=True)

_MISSING = {kind: missing(kind) for kind in KINDS}
if all(_MISSING.values()):
    pytest.skip(
        "no reference libp2p peer installed (run ci/setup_interop.sh): "
        + "; ".join(f"{k}: {v}" for k, v in _MISSING.items()),
        allow_module_level=True,
    )

ECHO = "/echo/1.0.0"
PING = "/ipfs/ping/1.0.0"
ECHO_SIZE = 1024 * 1024
CHUNK = 64 * 1024
PINGS = 3
STEP = 30.0  # bound on any single step; the whole test is bounded by pytest-timeout too

# (kind, muxer, direction) -> reason, for combinations a reference peer cannot do.
# Every entry must name the concrete failure observed with the reference peers alone.
# Currently none: py-libp2p 0.8.1 mplex streams are half-duplex (one ReadWriteLock for
# read() and write()), which py_peer.py works around as a dialer with a lock-step echo;
# as an echo server it reads then writes, so it never needs both at once. js-libp2p's
# @libp2p/mplex drops connections whose remote opens > 5 streams/s; js/peer.mjs raises
# that threshold (--mplex-disconnect-threshold) so a test session does not trip it.
KNOWN_BROKEN: dict[tuple[str, str, str], str] = {}


def _params() -> list[object]:
    out: list[object] = []
    for kind in KINDS:
        for muxer in MUXERS:
            for direction in ("dial", "listen"):
                marks = []
                if _MISSING[kind]:
                    marks.append(pytest.mark.skip(reason=_MISSING[kind]))
                reason = KNOWN_BROKEN.get((kind, muxer, direction))
                if reason:
                    marks.append(pytest.mark.xfail(reason=reason, strict=False))
                out.append(
                    pytest.param(
                        kind,
                        muxer,
                        direction,
                        marks=marks,
                        id=f"{kind}-{muxer}-fastp2p_{direction}s",
                    )
                )
    return out


class EchoServer:
    """Our /echo/1.0.0 handler; remembers (bytes, sha256) of everything it served."""

    def __init__(self) -> None:
        self.served: list[tuple[int, str]] = []
        self.errors: list[BaseException] = []
        self.done = asyncio.Event()

    async def __call__(self, stream) -> None:
        h = hashlib.sha256()
        total = 0
        buf = bytearray(CHUNK)
        try:
            while True:
                n = await stream.readinto(buf)
                if n == 0:
                    break
                chunk = bytes(buf[:n])
                h.update(chunk)
                total += n
                await stream.write(chunk)
            await stream.close_write()
            self.served.append((total, h.hexdigest()))
        except BaseException as exc:
            self.errors.append(exc)
            raise
        finally:
            self.done.set()
            await stream.aclose()


async def _echo_client(host, peer) -> str:
    """Send ECHO_SIZE random bytes while reading the echo back; return the sha256."""
    payload = os.urandom(ECHO_SIZE)
    want = hashlib.sha256(payload).hexdigest()
    async with asyncio.timeout(STEP):
        stream = await host.open_stream(peer, ECHO)
    try:
        view = memoryview(payload)

        async def writer() -> None:
            for off in range(0, ECHO_SIZE, CHUNK):
                await stream.write(view[off : off + CHUNK])
            await stream.close_write()

        async with asyncio.timeout(60):
            async with asyncio.TaskGroup() as tg:
                tg.create_task(writer())
                reader = tg.create_task(stream.read())
        data = reader.result()
    finally:
        await stream.aclose()
    got = hashlib.sha256(data).hexdigest()
    assert len(data) == ECHO_SIZE and got == want, (
        f"echo mismatch: {len(data)} bytes back, sha256 {got} != {want}"
    )
    return got


async def _identified(host, peer, timeout: float = STEP):
    """Wait until identify has filled the peerstore record for ``peer``."""
    async with asyncio.timeout(timeout):
        while True:
            rec = host.peerstore.get(peer)
            if rec is not None and rec.agent_version and rec.protocols:
                return rec
            await asyncio.sleep(0.02)


def _check_their_view_of_us(ev: dict, host) -> None:
    """A reference peer's identify event about fastp2p."""
    assert ev["peer_id"] == str(host.peer_id), ev
    assert ev["agent_version"].startswith("fastp2p/"), ev
    assert ECHO in ev["protocols"] and PING in ev["protocols"], ev
    ours = {str(a) for a in host.addrs}
    theirs = {a.split("/p2p/")[0] for a in ev["listen_addrs"]}
    assert ours & theirs, f"our listen addrs {ours} not in their identify {theirs}"


def _check_our_view_of_them(rec, kind: str, their_addr: str) -> None:
    assert rec.agent_version.startswith(AGENT_PREFIX[kind]), rec.agent_version
    protos = list(rec.protocols)
    assert ECHO in protos and PING in protos, protos
    addrs = {str(a).split("/p2p/")[0] for a in rec.listen_addrs}
    assert their_addr.split("/p2p/")[0] in addrs, (their_addr, addrs)


def _peer_id(host, text: str):
    """The fastp2p PeerID for a base58 string (from_string, else a peerstore scan)."""
    from_string = getattr(fastp2p.PeerID, "from_string", None)
    if from_string is not None:
        return from_string(text)
    for p in host.peerstore.peers():
        if str(p) == text:
            return p
    raise LookupError(text)


@pytest.mark.parametrize(("kind", "muxer", "direction"), _params())
async def test_interop(kind: str, muxer: str, direction: str) -> None:
    config = HostConfig(muxers=(MUXER_IDS[muxer],))
    echo = EchoServer()
    async with fastp2p.Host(
        fastp2p.Ed25519PrivateKey.generate(), listen=["/ip4/127.0.0.1/tcp/0"], config=config
    ) as host:
        host.set_handler(ECHO, echo)
        ping = fastp2p.services.Ping(host)
        if direction == "dial":
            await _fastp2p_dials(host, ping, kind, muxer)
        else:
            await _fastp2p_listens(host, echo, kind, muxer)


async def _fastp2p_dials(host, ping, kind: str, muxer: str) -> None:
    async with spawn(kind, "--listen", "--muxer", muxer) as ref:
        async with asyncio.timeout(STEP):
            peer = await host.connect(ref.addr)
        assert str(peer) == ref.peer_id

        for _ in range(PINGS):
            async with asyncio.timeout(STEP):
                rtt = await ping(peer)
            assert 0 <= rtt < STEP

        rec = await _identified(host, peer)
        _check_our_view_of_them(rec, kind, ref.addr)

        sha = await _echo_client(host, peer)
        _check_stays_on_tcp(host, peer)

        # Their side: they identified us and served exactly our bytes.
        ev = await ref.next_event("identify", timeout=STEP)
        _check_their_view_of_us(ev, host)
        served = await ref.next_event("echo_served", timeout=STEP)
        assert served["bytes"] == ECHO_SIZE and served["sha256"] == sha, served
        assert served["peer_id"] == str(host.peer_id)


async def _fastp2p_listens(host, echo: EchoServer, kind: str, muxer: str) -> None:
    our_addr = f"{host.addrs[0]}/p2p/{host.peer_id}"
    async with spawn(kind, "--dial", our_addr, "--muxer", muxer, "--pings", str(PINGS)) as ref:
        rc = await ref.wait_exit(timeout=90)
        assert rc == 0, ref.diagnostics()
        assert ref.find("done"), ref.diagnostics()
        assert ref.find("connected", peer_id=str(host.peer_id)), ref.diagnostics()
        pings = ref.find("ping")
        assert len(pings) == PINGS, ref.diagnostics()
        (ident,) = ref.find("identify")
        _check_their_view_of_us(ident, host)
        (their_echo,) = ref.find("echo")
        assert their_echo["ok"] is True and their_echo["bytes"] == ECHO_SIZE, their_echo

        # Our side: the echo handler saw the same bytes, and identify filled the peerstore.
        async with asyncio.timeout(STEP):
            await echo.done.wait()
        assert not echo.errors, echo.errors
        assert echo.served == [(ECHO_SIZE, their_echo["sha256"])], echo.served
        peer = _peer_id(host, ref.peer_id)
        rec = await _identified(host, peer)
        _check_our_view_of_them(rec, kind, ref.addr)
        _check_stays_on_tcp(host, peer)


def _check_stays_on_tcp(host: fastp2p.Host, peer: fastp2p.PeerID) -> None:
    """Other implementations never see fastp2p's data-path upgrade: the
    connection stays on Noise over TCP, and says why."""
    conn = host.connection(peer)
    if conn is None:  # the reference peer already hung up (it exits when done)
        return
    assert conn.data_path == "tcp"
    if conn.outbound and fastp2p.HAVE_NATIVE:
        # (the pure build never tries: its reason is that shm needs the native core)
        assert conn.data_path_reason and "does not offer" in conn.data_path_reason, (
            conn.data_path_reason
        )
