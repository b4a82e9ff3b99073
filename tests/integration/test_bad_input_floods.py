"""More hostile peers against a Host with its limits at their defaults (issue 8, section 5).

Same test bed as ``test_bad_input.py`` (a listening Host with echo/hold handlers and a
well-behaved client whose echo round trips are checked throughout). Memory bounds are
asserted on the process RSS, not only on the host's private counters.

- 1200 sockets stalled in multistream and in the Noise handshake at once: a newcomer
  still connects (pending handshakes have their own bound with oldest-first eviction,
  ``HostConfig.max_pending_inbound``).
- a GoAway storm (normal and error codes), a ping flood from a peer that never reads,
  connect/disconnect cycles (2 000 by default, 10 000 under ``--runslow``),
  identify(-push) messages with huge or deeply nested fields, stream-id reuse and
  window-update overflow.
- the framing and Noise cases once more with bytes that fastp2p's encoders did not
  produce: yamux headers and mplex varints built with ``struct``, Noise transport
  frames sealed with ``cryptography``'s ChaCha20-Poly1305 directly (nonce layout of
  the Noise spec 12.3), so a bug shared by fastp2p's encoder and decoder cannot hide.
"""

from __future__ import annotations

import asyncio
import os
import resource
import struct
import time

import pytest
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

import fastp2p
from fastp2p import _accel
from fastp2p.config import HostConfig
from fastp2p.errors import ConnectionClosedError, GoAwayCode, P2PError
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.multistream import MultistreamDialer
from fastp2p.proto.noise.handshake import NoiseHandshake
from fastp2p.transport.tcp import WRITE_HIGH_WATER

from .hostile import (
    MPLEX,
    MPLEX_CLOSE_INITIATOR,
    MPLEX_MESSAGE_INITIATOR,
    MPLEX_NEW_STREAM,
    YAMUX,
    HostileDialer,
    _read_some,
    multistream_proposal,
)
from .test_bad_input import Bed, bed

MiB = 1 << 20

# yamux (spec): version 0; types; flags
T_DATA, T_WINDOW, T_PING, T_GOAWAY = 0, 1, 2, 3
F_SYN, F_ACK, F_FIN, F_RST = 1, 2, 4, 8


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def nfds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- independent codecs (nothing from fastp2p's encoders) ---------------------------------


def yx(
    ftype: int, flags: int, sid: int, length: int, payload: bytes = b"", version: int = 0
) -> bytes:
    """A yamux frame: ">BBHII" (version, type, flags, stream id, length) + payload."""
    return struct.pack(">BBHII", version, ftype, flags, sid, length) + payload


def uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def mx(sid: int, flag: int, payload: bytes = b"") -> bytes:
    """An mplex frame: uvarint(id << 3 | flag), uvarint(len), payload."""
    return uvarint(sid << 3 | flag) + uvarint(len(payload)) + payload


def ms_msg(s: str) -> bytes:
    body = s.encode() + b"\n"
    return uvarint(len(body)) + body


class IndependentSealer:
    """Noise transport frames with ``cryptography``: 2-byte big-endian length, then
    ChaCha20-Poly1305 with nonce = 4 zero bytes + 64-bit little-endian counter, no AD."""

    def __init__(self, key: bytes) -> None:
        self.aead = ChaCha20Poly1305(key)
        self.n = 0

    def seal(self, plain: bytes) -> bytes:
        out = bytearray()
        for i in range(0, max(len(plain), 1), 65535 - 16):
            chunk = plain[i : i + 65535 - 16]
            ct = self.aead.encrypt(b"\0\0\0\0" + self.n.to_bytes(8, "little"), chunk, None)
            self.n += 1
            out += struct.pack(">H", len(ct)) + ct
        return bytes(out)

    def seal_frames(self, parts: list[bytes]) -> bytes:  # HostileDialer.send_plain's API
        return self.seal(b"".join(bytes(p) for p in parts))


async def connect_independent(host: str, port: int, muxer: str = YAMUX) -> HostileDialer:
    """Like ``HostileDialer.connect``, but what it sends after the handshake is sealed
    by ``IndependentSealer`` (the host's replies are still read with fastp2p's kernel)."""
    identity = Ed25519PrivateKey.generate()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        async with asyncio.timeout(5):
            hs = NoiseHandshake(initiator=True, identity=identity, muxers=(muxer,))
            writer.write(ms_msg("/multistream/1.0.0") + ms_msg("/noise") + hs.data_to_send())
            want = ms_msg("/multistream/1.0.0") + ms_msg("/noise")
            got = b""
            while len(got) < len(want):
                got += await _read_some(reader)
            assert got[: len(want)] == want, got
            pending = got[len(want) :]
            while not hs.done:
                if not pending:
                    pending = await _read_some(reader)
                hs.receive_data(pending)
                pending = b""
                out = hs.data_to_send()
                if out:
                    writer.write(out)
            k1, k2 = hs.split()
            assert hs.remote_peer is not None
            peer = HostileDialer(
                reader,
                writer,
                IndependentSealer(bytes(k1)),
                _accel.NoiseCipher(k2),
                muxer,
                PeerID.from_public_key(identity.public_key()),
                hs.remote_peer,
                answer_pings=True,
            )
            peer._task = asyncio.get_running_loop().create_task(peer._read_loop())
            if hs.unused_data():
                peer._on_cipher(hs.unused_data())
            return peer
    except BaseException:
        writer.close()
        raise


async def _echo_over(h: HostileDialer, sid: int, payload: bytes) -> None:
    """Open stream ``sid`` for /echo/1.0.0 with hand-built frames and check the echo."""
    if h.muxer == YAMUX:
        h.send_plain(yx(T_WINDOW, F_SYN, sid, 0))
        proposal = ms_msg("/multistream/1.0.0") + ms_msg("/echo/1.0.0")
        h.send_plain(yx(T_DATA, 0, sid, len(proposal), proposal))
        h.send_plain(yx(T_DATA, F_FIN, sid, len(payload), payload))
    else:
        proposal = ms_msg("/multistream/1.0.0") + ms_msg("/echo/1.0.0")
        h.send_plain(
            mx(sid, MPLEX_NEW_STREAM, str(sid).encode())
            + mx(sid, MPLEX_MESSAGE_INITIATOR, proposal)
            + mx(sid, MPLEX_MESSAGE_INITIATOR, payload)
            + mx(sid, MPLEX_CLOSE_INITIATOR)
        )
    answer = multistream_proposal("/echo/1.0.0") + payload
    await h.wait_for(lambda: bytes(h.data.get(sid, b"")) == answer, timeout=5)


# -- 1. stalled handshakes ---------------------------------------------------------------

STALLED = 1200  # more than max_inbound_connections (1024) and max_pending_inbound (256)


def _raise_fd_limit(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        target = need if hard == resource.RLIM_INFINITY else min(need, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        pytest.fail(f"needs {need} file descriptors (RLIMIT_NOFILE hard limit {hard})")


async def test_stalled_handshakes_do_not_lock_out_a_newcomer() -> None:
    """1200 sockets at once, half stalled in multistream (a header without its newline),
    half in Noise (message 1 sent, message 3 never): a newcomer connects at once."""
    _raise_fd_limit(4 * STALLED + 512)
    cfg = HostConfig()
    assert cfg.max_inbound_connections < STALLED and cfg.max_pending_inbound < STALLED
    async with bed() as b:
        host, port = b.addr
        ident = Ed25519PrivateKey.generate()
        writers: list[asyncio.StreamWriter] = []
        rss0, fds0 = rss(), nfds()
        try:
            for i in range(STALLED):
                _, w = await asyncio.open_connection(host, port)
                if i % 2:
                    w.write(b"\x13/multistream/1.0.0")  # 19 announced, 18 sent: stalls
                else:
                    hs = NoiseHandshake(initiator=True, identity=ident)
                    w.write(MultistreamDialer(["/noise"]).data_to_send() + hs.data_to_send())
                writers.append(w)
            await asyncio.sleep(0.3)  # the host accepts them all
            pending = b.server._pending_inbound
            assert 0 < len(pending) <= cfg.max_pending_inbound
            async with b.echo_probe(), fastp2p.Host() as newcomer:
                t0 = time.perf_counter()
                async with asyncio.timeout(5):
                    assert await newcomer.connect(b.server.full_addrs[0]) == b.peer
                    s = await newcomer.open_stream(b.peer, "/echo/1.0.0")
                    await s.write(b"hello")
                    await s.close_write()
                    assert await s.read() == b"hello"
                    await s.aclose()
                took = time.perf_counter() - t0
            assert took < 2.0, took
            assert len(b.server._pending_inbound) <= cfg.max_pending_inbound
            grown = rss() - rss0
            assert grown < 64 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
            # The host holds at most max_pending_inbound of the stalled sockets: the rest
            # were evicted (their fds closed), so the process holds about one fd per
            # stalled client socket plus the bound.
            assert nfds() - fds0 <= STALLED + cfg.max_pending_inbound + 64
        finally:
            for w in writers:
                w.transport.abort()
            await asyncio.sleep(0)


# -- 2. GoAway storm -------------------------------------------------------------------------


async def test_goaway_storm_normal_code_keeps_existing_streams() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            await h.open_yamux_stream(1, "/echo/1.0.0")
            rss0 = rss()
            async with b.echo_probe():
                for r in range(20):  # 100 000 GoAway(normal) frames
                    h.send_plain(yx(T_GOAWAY, 0, 0, 0) * 4999 + yx(T_PING, F_SYN, 0, r))
                    await h.drain()
                    await asyncio.sleep(0)
                await h.wait_for(
                    lambda: any(f[0] == T_PING and f[1] & F_ACK and f[3] == 19 for f in h.frames),
                    timeout=20,
                )
                # The stream opened before the storm still works.
                h.send_plain(yx(T_DATA, F_FIN, 1, 5, b"still"))
                await h.wait_for(lambda: bytes(h.data.get(1, b"")) == b"still")
            assert conn.goaway_received and not conn.is_closed
            assert h.goaway_codes() == [] and h.decode_error is None
            # The host opens no new stream towards a peer that said GoAway: a typed error.
            with pytest.raises(P2PError):
                async with asyncio.timeout(5):
                    await b.server.open_stream(h.peer_id, "/echo/1.0.0")
            assert rss() - rss0 < 32 * MiB
        finally:
            await h.aclose()


@pytest.mark.parametrize("code", [GoAwayCode.PROTOCOL_ERROR, GoAwayCode.INTERNAL_ERROR, 0xFFFFFFFF])
async def test_goaway_storm_error_code_ends_the_connection_once(code: int) -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            await h.open_yamux_stream(1, "/hold/1")
            async with b.echo_probe():
                h.send_plain(yx(T_GOAWAY, 0, 0, code) * 10_000)
                await h.wait_eof()
                async with asyncio.timeout(5):
                    outcome = await b.hold_outcomes.get()
            assert conn.is_closed
            assert isinstance(outcome, ConnectionClosedError) and outcome.remote
            assert h.goaway_codes() == []  # the host does not answer a GoAway with one
            assert b.server.connection(h.peer_id) is None
        finally:
            await h.aclose()


async def test_goaway_storm_from_many_peers_at_once() -> None:
    async with bed() as b:
        peers = await asyncio.gather(*(HostileDialer.connect(*b.addr) for _ in range(50)))
        try:
            async with b.echo_probe():
                for i, h in enumerate(peers):
                    code = GoAwayCode.NORMAL if i % 2 else GoAwayCode.PROTOCOL_ERROR
                    h.send_plain(yx(T_GOAWAY, 0, 0, code) * 2000)
                await asyncio.gather(*(h.wait_eof() for h in peers[::2]))
            assert len(b.server.connections) == 1 + 25  # the good client + the NORMAL ones
        finally:
            await asyncio.gather(*(h.aclose() for h in peers))


# -- 3. ping flood from a peer that does not read -----------------------------------------

PINGS = 1_000_000


async def test_ping_flood_from_a_peer_that_does_not_read() -> None:
    """The host must not buffer a PING|ACK for every PING of a peer that never reads."""
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            h.stop_reading()
            transport = conn._raw._transport  # type: ignore[attr-defined]
            rss0 = rss()
            peak = 0
            batch = yx(T_PING, F_SYN, 0, 7) * 5000
            async with b.echo_probe():
                for _ in range(PINGS // 5000):
                    h.send_plain(batch)
                    await h.drain()
                    await asyncio.sleep(0)
                    peak = max(peak, transport.get_write_buffer_size())
                for _ in range(20):
                    await asyncio.sleep(0.02)
                    peak = max(peak, transport.get_write_buffer_size())
            grown = rss() - rss0
            # 1 M pings = 12 MB of PING|ACK plaintext (+ Noise overhead): not kept.
            assert peak <= WRITE_HIGH_WATER + 2 * MiB, f"write buffer peaked at {peak} bytes"
            assert grown < 24 * MiB, f"RSS grew by {grown / MiB:.1f} MiB"
        finally:
            await h.aclose()


# -- 4. connect/disconnect cycles -----------------------------------------------------------


async def _cycles(b: Bed, n: int) -> tuple[int, int, float]:
    addr = b.server.full_addrs[0]
    async with fastp2p.Host() as c:
        for _ in range(50):  # warm-up: caches, pools, lazily created state
            await c.connect(addr)
            await c.disconnect(b.peer)
        await asyncio.sleep(0.2)
        rss0, fds0 = rss(), nfds()
        t0 = time.perf_counter()
        for _ in range(n):
            await c.connect(addr)
            await c.disconnect(b.peer)
        took = time.perf_counter() - t0
        async with asyncio.timeout(5):
            while len(b.server.connections) > 1 or c.connections:
                await asyncio.sleep(0.01)
        await asyncio.sleep(0.2)
        return rss() - rss0, nfds() - fds0, took


@pytest.mark.parametrize(
    "n", [2_000, pytest.param(10_000, marks=pytest.mark.slow)], ids=["2000", "10000"]
)
async def test_connect_disconnect_cycles_bounded(n: int) -> None:
    async with bed() as b:
        grown, fds, took = await _cycles(b, n)
        print(
            f"{n} cycles in {took:.1f} s ({took / n * 1e3:.2f} ms each), RSS +{grown / MiB:.1f} MiB"
        )
        assert fds <= 2, f"{fds} fds more after {n} cycles"
        assert grown < 16 * MiB + n * 1024, f"RSS grew by {grown / MiB:.1f} MiB over {n} cycles"
        assert len(b.server.connections) == 1
        assert len(b.server._pending_inbound) == 0
        # peerstore entries of the one client peer, not one per cycle
        assert len(b.server.peerstore.peers()) <= 3


# -- 5. identify with huge or deeply nested fields ------------------------------------------


def _field(number: int, value: bytes) -> bytes:
    return uvarint(number << 3 | 2) + uvarint(len(value)) + value


def _nested(depth: int) -> bytes:
    inner = b""
    for _ in range(depth):
        inner = _field(99, inner)
    return inner


IDENTIFY_ATTACKS = {
    # 64 KiB + 1 of agentVersion: over the 64 KiB limit
    "oversized-message": _field(6, b"A" * (64 * 1024 + 1)),
    # a length prefix of 2**62: must not allocate it
    "absurd-length-prefix": None,
    "1025-listen-addrs": b"".join(_field(2, b"\x04\x7f\x00\x00\x01") for _ in range(1025)),
    "1025-protocols": b"".join(_field(3, b"/p") for _ in range(1025)),
    # an unknown field nested 5000 deep: skipped, never recursed into
    "nested-5000-deep-unknown-field": _nested(5000) + _field(6, b"nested/1"),
    "field-length-beyond-message": uvarint(6 << 3 | 2) + uvarint(1 << 40) + b"x",
    "agent-60KiB": _field(6, b"B" * 60_000),
    "bad-utf8-agent": _field(6, b"\xff\xfe"),
    "garbage-listen-addrs": b"".join(_field(2, bytes([i, 255, 255])) for i in range(200)),
}


@pytest.mark.parametrize("name", list(IDENTIFY_ATTACKS))
async def test_identify_push_with_hostile_fields(name: str) -> None:
    body = IDENTIFY_ATTACKS[name]
    msg = uvarint(1 << 62) + b"x" * 100 if body is None else uvarint(len(body)) + body
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            rss0 = rss()
            async with b.echo_probe():
                await h.open_yamux_stream(1, "/ipfs/id/push/1.0.0")
                for i in range(0, len(msg), 16384):
                    h.send_plain(yx(T_DATA, 0, 1, len(msg[i : i + 16384]), msg[i : i + 16384]))
                h.send_plain(yx(T_DATA, F_FIN, 1, 0))
                # the host ends the stream (RST on a rejected message, FIN otherwise) ...
                await h.wait_for(
                    lambda: any(f[2] == 1 and f[1] & (F_RST | F_FIN) for f in h.frames)
                )
                # ... and keeps the connection
                h.send_plain(yx(T_PING, F_SYN, 0, 0xAB))
                await h.wait_for(
                    lambda: any(f[0] == T_PING and f[1] & F_ACK and f[3] == 0xAB for f in h.frames)
                )
            assert not conn.is_closed and h.decode_error is None and h.goaway_codes() == []
            rec = b.server.peerstore.record(h.peer_id)
            if name == "nested-5000-deep-unknown-field":
                assert rec.agent_version == "nested/1"
            elif name == "agent-60KiB":
                assert rec.agent_version == "B" * 60_000
            else:
                assert rec.agent_version != "A" * (64 * 1024 + 1)
                assert len(b.server.peerstore.addrs(h.peer_id)) <= 64
                assert len(rec.protocols or []) <= 512
            assert rss() - rss0 < 16 * MiB
        finally:
            await h.aclose()


async def test_identify_answer_with_hostile_fields_to_the_hosts_request() -> None:
    """The host identifies every new peer: answer its request with an oversized message."""
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            # The host opened an identify stream (even id) and proposed /ipfs/id/1.0.0.
            proposal = multistream_proposal("/ipfs/id/1.0.0")

            def asked() -> int | None:
                for sid, data in h.data.items():
                    if sid % 2 == 0 and bytes(data).startswith(proposal):
                        return sid
                return None

            await h.wait_for(lambda: asked() is not None)
            sid = asked()
            assert sid is not None
            body = _nested(3000) + _field(6, b"C" * (64 * 1024))
            msg = proposal + uvarint(len(body)) + body
            async with b.echo_probe():
                for i in range(0, len(msg), 16384):
                    part = msg[i : i + 16384]
                    h.send_plain(yx(T_DATA, 0, sid, len(part), part))
                h.send_plain(yx(T_DATA, F_FIN, sid, 0))
                await h.wait_for(
                    lambda: any(f[2] == sid and f[1] & (F_RST | F_FIN) for f in h.frames)
                )
            assert not conn.is_closed
            assert b.server.peerstore.record(h.peer_id).agent_version is None
        finally:
            await h.aclose()


# -- 6. stream-id reuse and window-update overflow --------------------------------------------


async def _expect_protocol_error(b: Bed, h: HostileDialer, frames: bytes) -> None:
    conn = await b.server_conn(h.peer_id)
    async with b.echo_probe():
        h.send_plain(frames)
        await h.wait_eof()
    assert conn.is_closed
    assert h.goaway_codes() == [GoAwayCode.PROTOCOL_ERROR], h.frames[-5:]
    assert b.server.connection(h.peer_id) is None


async def test_syn_reusing_an_open_stream_id() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            await h.open_yamux_stream(1, "/hold/1")
            await _expect_protocol_error(b, h, yx(T_WINDOW, F_SYN, 1, 0))
        finally:
            await h.aclose()


async def test_syn_reusing_a_closed_stream_id() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            await _echo_over(h, 1, b"first")  # stream 1 opens, echoes, both sides FIN
            conn = await b.server_conn(h.peer_id)
            async with asyncio.timeout(5):
                while 1 in conn.streams:
                    await asyncio.sleep(0.01)
            await _expect_protocol_error(b, h, yx(T_WINDOW, F_SYN, 1, 0))
        finally:
            await h.aclose()


async def test_syn_reusing_a_reset_stream_id() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            await h.open_yamux_stream(3, "/hold/1")
            h.send_plain(yx(T_WINDOW, F_RST, 3, 0))
            await asyncio.sleep(0.1)
            await _expect_protocol_error(b, h, yx(T_WINDOW, F_SYN, 3, 0))
        finally:
            await h.aclose()


@pytest.mark.parametrize(
    "deltas",
    [(0xFFFFFFFF,), (0xFFFFFFFF - 256 * 1024, 1 << 20)],
    ids=["one-max-delta", "two-summing-over"],
)
async def test_window_update_overflow(deltas: tuple[int, ...]) -> None:
    """The host's send window would pass 2**32 - 1: a flow-control protocol error."""
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            await h.open_yamux_stream(1, "/hold/1")
            await _expect_protocol_error(b, h, b"".join(yx(T_WINDOW, 0, 1, d) for d in deltas))
        finally:
            await h.aclose()


async def test_window_update_up_to_the_limit_is_fine() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            await h.open_yamux_stream(1, "/hold/1")
            h.send_plain(yx(T_WINDOW, 0, 1, 0xFFFFFFFF - 256 * 1024))  # exactly 2**32 - 1
            h.send_plain(yx(T_PING, F_SYN, 0, 0x77))
            await h.wait_for(
                lambda: any(f[0] == T_PING and f[1] & F_ACK and f[3] == 0x77 for f in h.frames)
            )
            assert not conn.is_closed and h.goaway_codes() == []
        finally:
            await h.aclose()


# -- 7. framing and Noise from an independent encoder -----------------------------------------


@pytest.mark.parametrize("muxer", [YAMUX, MPLEX])
async def test_independent_encoder_is_understood(muxer: str) -> None:
    """Sanity: hand-built frames sealed by ``cryptography`` make a working echo, so the
    malformed variants below are malformed in exactly one respect."""
    async with bed(HostConfig(muxers=(muxer,))) as b:
        h = await connect_independent(*b.addr, muxer=muxer)
        try:
            for sid in (1, 3, 5) if muxer == YAMUX else (0, 1, 2):
                await _echo_over(h, sid, os.urandom(3000))
            conn = await b.server_conn(h.peer_id)
            assert not conn.is_closed and h.decode_error is None
        finally:
            await h.aclose()


def _bad_tag(h: HostileDialer) -> None:
    frame = bytearray(h.send.seal(yx(T_PING, F_SYN, 0, 1)))
    frame[-1] ^= 0x80
    h.send_raw(bytes(frame))


def _skipped_nonce(h: HostileDialer) -> None:
    h.send.n += 1  # a frame sealed under nonce n+1: the host expects n
    h.send_raw(h.send.seal(yx(T_PING, F_SYN, 0, 1)))


def _replayed_frame(h: HostileDialer) -> None:
    frame = h.send.seal(yx(T_PING, F_SYN, 0, 1))
    h.send_raw(frame + frame)


INDEPENDENT_ATTACKS = {
    "yamux-version-1": (YAMUX, lambda h: h.send_plain(yx(T_PING, F_SYN, 0, 1, version=1)), True),
    "yamux-type-4": (YAMUX, lambda h: h.send_plain(yx(4, 0, 1, 0)), True),
    "yamux-data-beyond-window": (
        YAMUX,
        lambda h: h.send_plain(yx(T_DATA, 0, 1, 256 * 1024 + 1, bytes(256 * 1024 + 1))),
        True,
    ),
    "yamux-data-on-never-opened-id": (
        YAMUX,
        lambda h: h.send_plain(yx(T_DATA, 0, 101, 1, b"x")),
        True,
    ),
    "yamux-syn-even-id": (YAMUX, lambda h: h.send_plain(yx(T_WINDOW, F_SYN, 2, 0)), True),
    "yamux-syn-id-0": (YAMUX, lambda h: h.send_plain(yx(T_WINDOW, F_SYN, 0, 0)), True),
    "mplex-over-1MiB": (
        MPLEX,
        lambda h: h.send_plain(uvarint(0 << 3 | 2) + uvarint(MiB + 1) + bytes(4096)),
        False,
    ),
    "mplex-10-byte-varint": (MPLEX, lambda h: h.send_plain(b"\x80" * 9 + b"\x01\x00"), False),
    "mplex-flag-7": (MPLEX, lambda h: h.send_plain(uvarint(0 << 3 | 7) + b"\x00"), False),
    "noise-bad-tag": (YAMUX, _bad_tag, False),
    "noise-skipped-nonce": (YAMUX, _skipped_nonce, False),
    "noise-replayed-frame": (YAMUX, _replayed_frame, False),
    "noise-15-byte-frame": (YAMUX, lambda h: h.send_raw(b"\x00\x0f" + bytes(15)), False),
    "noise-empty-frame": (MPLEX, lambda h: h.send_raw(b"\x00\x00"), False),
}


@pytest.mark.parametrize("name", list(INDEPENDENT_ATTACKS))
async def test_independently_encoded_attack(name: str) -> None:
    muxer, send, goaway = INDEPENDENT_ATTACKS[name]
    async with bed(HostConfig(muxers=(muxer,))) as b:
        h = await connect_independent(*b.addr, muxer=muxer)
        try:
            conn = await b.server_conn(h.peer_id)
            if muxer == YAMUX:
                await _echo_over(h, 1, b"warm")  # the independent codec works up to here
            else:
                await _echo_over(h, 0, b"warm")
            async with b.echo_probe():
                send(h)
                await h.drain()
                await h.wait_eof()
            assert conn.is_closed
            assert isinstance(conn.close_error, ConnectionClosedError)
            if goaway:
                assert h.goaway_codes() == [GoAwayCode.PROTOCOL_ERROR], h.frames[-5:]
            assert h.decode_error is None
            assert b.server.connection(h.peer_id) is None
        finally:
            await h.aclose()
