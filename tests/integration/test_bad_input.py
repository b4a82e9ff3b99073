"""Hostile peers over real TCP loopback sockets against a real Host.

Requirement: malformed and oversized frames, invalid varints, a bad Noise
signature, a truncated or stalled handshake, floods: each gets a typed error,
only that stream or connection closes, the host keeps serving others, memory
stays bounded.

The hostile peers (``tests/integration/hostile.py``) complete multistream and
Noise XX correctly from fastp2p's sans-IO pieces and then misbehave. Every test
keeps a second, well-behaved Host connected to the same listener and checks its
echo round trips before, during and after the attack. Cases already covered by
``test_host.py`` (PeerId mismatch, unknown protocol via the API, garbage and
stalled multistream, slow readers) are not repeated here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

import fastp2p
from fastp2p.config import HostConfig, MplexConfig, YamuxConfig
from fastp2p.errors import (
    ConnectionClosedError,
    DecryptError,
    FlowControlError,
    FrameError,
    FrameTooLargeError,
    FrameTypeError,
    FrameVersionError,
    GoAwayCode,
    HandshakeError,
    IdentityProofError,
    P2PError,
    RemoteProtocolError,
    StreamErrorCode,
    VarintError,
)
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.multistream import MultistreamDialer
from fastp2p.proto.noise.handshake import NoiseHandshake
from fastp2p.proto.yamux.frame import (
    FLAG_ACK,
    FLAG_FIN,
    FLAG_RST,
    FLAG_SYN,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
)
from fastp2p.services import serve_echo
from fastp2p.transport.conn import Connection

from . import hostile
from .hostile import (
    MPLEX,
    MPLEX_MESSAGE_INITIATOR,
    MPLEX_NEW_STREAM,
    MPLEX_RESET_INITIATOR,
    MPLEX_RESET_RECEIVER,
    YAMUX,
    BadSignatureListener,
    HostileDialer,
    WrongKeySigner,
    raw_yamux_header,
    yamux_data,
    yamux_frame,
)

LISTEN = "/ip4/127.0.0.1/tcp/0"
MAX_ECHO_LATENCY = 1.0  # seconds, for the well-behaved client while under attack


# -- test bed ------------------------------------------------------------------------


@dataclass
class Bed:
    """A listening Host (echo, hold, drain handlers) and a well-behaved client."""

    server: fastp2p.Host
    good: fastp2p.Host
    peer: PeerID
    conns: dict[PeerID, Connection] = field(default_factory=dict)
    # what a stream held by /hold/1 saw when its connection died (exception or None)
    hold_outcomes: asyncio.Queue[BaseException | None] = field(default_factory=asyncio.Queue)
    held: list[fastp2p.Stream] = field(default_factory=list)
    drained: asyncio.Queue[int] = field(default_factory=asyncio.Queue)

    @property
    def addr(self) -> tuple[str, int]:
        return self.server.addrs[0].tcp_host_port()

    async def server_conn(self, peer: PeerID, timeout: float = 5.0) -> Connection:
        async with asyncio.timeout(timeout):
            while peer not in self.conns:
                await asyncio.sleep(0.01)
        return self.conns[peer]

    async def echo(self, payload: bytes = b"are you still there?") -> float:
        t0 = time.perf_counter()
        async with asyncio.timeout(5):
            s = await self.good.open_stream(self.peer, "/echo/1.0.0")
            try:
                await s.write(payload)
                await s.close_write()
                assert await s.read() == payload
            finally:
                await s.aclose()
        return time.perf_counter() - t0

    def assert_good_connection_intact(self) -> None:
        conn = self.good.connection(self.peer)
        assert conn is not None and not conn.is_closed
        srv = self.server.connection(self.good.peer_id)
        assert srv is not None and not srv.is_closed

    @contextlib.asynccontextmanager
    async def echo_probe(self) -> AsyncIterator[list[float]]:
        """Echo round trips in a loop while the block runs; each must be < 1 s."""
        latencies: list[float] = []
        stop = asyncio.Event()

        async def loop() -> None:
            while not stop.is_set():
                latencies.append(await self.echo())
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.02):
                        await stop.wait()

        task = asyncio.create_task(loop())
        try:
            yield latencies
        finally:
            stop.set()
            async with asyncio.timeout(10):
                await task  # re-raises the probe's failure, if any
        assert latencies, "no echo round trip completed during the attack"
        assert max(latencies) < MAX_ECHO_LATENCY, f"echo latencies {sorted(latencies)[-5:]}"


@contextlib.asynccontextmanager
async def bed(config: HostConfig | None = None) -> AsyncIterator[Bed]:
    async with fastp2p.Host(listen=[LISTEN], config=config) as server, fastp2p.Host() as good:
        peer = await good.connect(server.full_addrs[0])
        b = Bed(server, good, peer)
        server.on_connection(lambda c: b.conns.__setitem__(c.remote_peer, c))
        serve_echo(server)

        async def hold(stream: fastp2p.Stream) -> None:
            """Never reads until the connection dies, then reports what reading raises."""
            b.held.append(stream)
            async with asyncio.timeout(30):
                await asyncio.shield(stream.conn.closed)
            outcome: BaseException | None = None
            try:
                while await stream.read(1 << 20):
                    pass
            except P2PError as exc:
                outcome = exc
            b.hold_outcomes.put_nowait(outcome)

        async def drain(stream: fastp2p.Stream) -> None:
            total = 0
            buf = bytearray(1 << 16)
            while n := await stream.readinto(buf):
                total += n
            b.drained.put_nowait(total)
            await stream.close_write()

        server.set_handler("/hold/1", hold)
        server.set_handler("/drain/1", drain)
        await b.echo()
        yield b
        # The well-behaved client never noticed anything.
        await b.echo()
        b.assert_good_connection_intact()


def _cause_chain(exc: BaseException | None) -> list[type[BaseException]]:
    out = []
    while exc is not None:
        out.append(type(exc))
        exc = exc.__cause__
    return out


# -- 1. malformed frames after a correct handshake ------------------------------------------


@dataclass(frozen=True)
class Attack:
    muxer: str
    send: Callable[[HostileDialer, int], None]  # (peer, receive window of the held stream)
    error: type[P2PError]  # the typed error the host detects
    goaway: bool  # the host must first send yamux GoAway(PROTOCOL_ERROR)


def _yamux_version_1(h: HostileDialer, window: int) -> None:
    # A well-formed PING, but with version byte 1 (yamux spec: version is 0).
    h.send_plain(raw_yamux_header(1, TYPE_PING, FLAG_SYN, 0, 7))


def _yamux_unknown_type(h: HostileDialer, window: int) -> None:
    h.send_plain(raw_yamux_header(0, 4, 0, 1, 0))


def _yamux_window_overflow(h: HostileDialer, window: int) -> None:
    # One DATA frame on the held stream, one byte more than the granted window.
    h.send_plain(yamux_data(1, bytes(window + 1)))


def _yamux_syn_wrong_parity(h: HostileDialer, window: int) -> None:
    # The dialer (yamux client) must use odd ids; 2 is the listener's.
    h.send_plain(yamux_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 2, 0))


def _mplex_oversized(h: HostileDialer, window: int) -> None:
    # libp2p mplex spec: messages are at most 1 MiB; announce 1 MiB + 1.
    from fastp2p import _accel

    h.send_plain(bytes(_accel.mplex_encode_header(0, MPLEX_MESSAGE_INITIATOR, (1 << 20) + 1)))
    h.send_plain(bytes(4096))


def _mplex_overlong_varint(h: HostileDialer, window: int) -> None:
    # A 10-byte header varint (2**63); multiformats unsigned-varint allows 9 bytes.
    h.send_plain(b"\x80" * 9 + b"\x01" + b"\x00")


def _noise_bad_tag(h: HostileDialer, window: int) -> None:
    frame = bytearray(memoryview(h.send.seal_frames([yamux_frame(TYPE_PING, FLAG_SYN, 0, 9)])))
    frame[-1] ^= 0x01  # flip one bit of the Poly1305 tag
    h.send_raw(bytes(frame))


def _noise_short_frame(h: HostileDialer, window: int) -> None:
    h.send_raw(b"\x00\x0f" + bytes(15))  # a 15-byte Noise frame cannot hold a 16-byte tag


ATTACKS = {
    "a-yamux-version-1": Attack(YAMUX, _yamux_version_1, FrameVersionError, True),
    "b-yamux-unknown-type": Attack(YAMUX, _yamux_unknown_type, FrameTypeError, True),
    "c-yamux-data-beyond-window": Attack(YAMUX, _yamux_window_overflow, FlowControlError, True),
    "yamux-syn-wrong-parity": Attack(YAMUX, _yamux_syn_wrong_parity, RemoteProtocolError, True),
    "d-mplex-message-over-1MiB": Attack(MPLEX, _mplex_oversized, FrameTooLargeError, False),
    "e-mplex-10-byte-varint": Attack(MPLEX, _mplex_overlong_varint, VarintError, False),
    "f-noise-bad-tag-yamux": Attack(YAMUX, _noise_bad_tag, DecryptError, False),
    "f-noise-bad-tag-mplex": Attack(MPLEX, _noise_bad_tag, DecryptError, False),
    "g-noise-short-frame-yamux": Attack(YAMUX, _noise_short_frame, FrameError, False),
    "g-noise-short-frame-mplex": Attack(MPLEX, _noise_short_frame, FrameError, False),
}


async def _attack(b: Bed, attack: Attack) -> tuple[HostileDialer, Connection, BaseException | None]:
    """Connect a hostile peer, hold one stream, attack, return after the host hung up."""
    h = await HostileDialer.connect(*b.addr, muxer=attack.muxer)
    try:
        conn = await b.server_conn(h.peer_id)
        assert conn.muxer == attack.muxer
        if attack.muxer == YAMUX:
            window = await h.open_yamux_stream(1, "/hold/1")
        else:
            await h.open_mplex_stream(0, "/hold/1")
            window = 0
        async with asyncio.timeout(5):
            while not b.held or b.held[-1].conn is not conn:
                await asyncio.sleep(0.01)
        held = b.held[-1]
        async with b.echo_probe():
            attack.send(h, window)
            await h.drain()
            await h.wait_eof(timeout=5)  # the host closes the connection
            async with asyncio.timeout(5):
                outcome = await b.hold_outcomes.get()
        assert conn.is_closed
        # Nothing the host sent before closing was undecodable.
        assert h.decode_error is None, h.decode_error
        # Memory: the host never buffered more than it granted (yamux window; mplex
        # per-stream limit).
        assert held._buffered <= (window if attack.muxer == YAMUX else 1 << 20)
        return h, conn, outcome
    finally:
        await h.aclose()


@pytest.mark.parametrize("name", list(ATTACKS))
async def test_malformed_frame_closes_only_that_connection(name: str, no_fd_leak: None) -> None:
    attack = ATTACKS[name]
    async with bed() as b:
        h, conn, outcome = await _attack(b, attack)
        # The held stream fails with the typed connection error, protocol-error code.
        assert isinstance(outcome, ConnectionClosedError), outcome
        assert outcome.code == GoAwayCode.PROTOCOL_ERROR
        if attack.goaway:
            # yamux: the peer first receives GoAway(1), and nothing after it.
            assert h.goaway_codes() == [GoAwayCode.PROTOCOL_ERROR], h.frames[-5:]
            assert h.frames[-1][0] == TYPE_GO_AWAY
        # The host forgot the connection; the good client's connection is untouched.
        assert b.server.connection(h.peer_id) is None
        assert all(c.remote_peer != h.peer_id for c in b.server.connections)
        b.assert_good_connection_intact()


@pytest.mark.parametrize(
    "name", list(ATTACKS)
)
async def test_connection_error_carries_the_typed_cause(name: str) -> None:
    attack = ATTACKS[name]
    async with bed() as b:
        _, _, outcome = await _attack(b, attack)
        chain = _cause_chain(outcome)
        assert any(issubclass(t, attack.error) for t in chain), chain


# -- 1b. bad input on one stream: only that stream closes ----------------------------------


def _ms_overlong_varint() -> bytes:
    return b"\x80" * 10 + b"\x01"


def _ms_oversized_message() -> bytes:
    return b"\xa0\x1f" + bytes(4000)  # varint 4000 > multistream's 1024-byte limit


def _ms_na_flood() -> bytes:
    # 100 unsupported proposals (the listener gives up after 64 'na').
    return b"".join(
        MultistreamDialer([f"/nope/{i}"]).data_to_send()[20:] for i in range(100)
    )


STREAM_ATTACKS = {
    "multistream-overlong-varint": _ms_overlong_varint,
    "multistream-message-over-1024": _ms_oversized_message,
    "multistream-100-unsupported-proposals": _ms_na_flood,
}


async def _bad_negotiation(b: Bed, h: HostileDialer, name: str) -> tuple[int, int]:
    """Open stream 1 with a bad multistream payload; returns the host's (flags, length)
    of the frame that ended the stream. Checks the connection and the host survive."""
    conn = await b.server_conn(h.peer_id)
    header = hostile.multistream_proposal("/x")[:20]  # "/multistream/1.0.0\n"
    payload = header + STREAM_ATTACKS[name]()
    async with b.echo_probe():
        h.send_plain(
            yamux_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, 1, 0) + yamux_data(1, payload)
        )
        # The host ends that stream (RST, or FIN) ...
        await h.wait_for(
            lambda: any(f[2] == 1 and f[1] & (FLAG_RST | FLAG_FIN) for f in h.frames)
        )
        end = next(f for f in h.frames if f[2] == 1 and f[1] & (FLAG_RST | FLAG_FIN))
        # ... keeps the connection (a yamux ping is answered) ...
        h.send_plain(yamux_frame(TYPE_PING, FLAG_SYN, 0, 0xBAD))
        await h.wait_for(
            lambda: any(
                f[0] == TYPE_PING and f[1] & FLAG_ACK and f[3] == 0xBAD for f in h.frames
            )
        )
        assert not conn.is_closed and not h.eof.is_set()
        # ... and still serves new streams on it.
        await h.open_yamux_stream(3, "/echo/1.0.0")
        h.send_plain(yamux_data(3, b"ok", FLAG_FIN))
        await h.wait_for(lambda: bytes(h.data.get(3, b"")) == b"ok")
    async with asyncio.timeout(5):
        while 1 in conn.streams:
            await asyncio.sleep(0.01)
    assert h.decode_error is None and h.goaway_codes() == []
    return end[1], end[3]


@pytest.mark.parametrize("name", list(STREAM_ATTACKS))
async def test_bad_negotiation_closes_only_that_stream(name: str) -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            await _bad_negotiation(b, h, name)
        finally:
            await h.aclose()


@pytest.mark.parametrize(
    "name",
    list(STREAM_ATTACKS),
)
async def test_bad_negotiation_is_answered_with_protocol_reset(name: str) -> None:
    """go-libp2p resets a stream whose negotiation failed; so must we, and forget it."""
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            flags, code = await _bad_negotiation(b, h, name)
            assert flags & FLAG_RST, f"stream ended with flags {flags:#x}, not RST"
            assert code == StreamErrorCode.PROTOCOL
            conn = await b.server_conn(h.peer_id)
            assert not conn._session.is_stream_open(1)
        finally:
            await h.aclose()


# -- 2. bad Noise signature ------------------------------------------------------------------


async def test_bad_noise_signature_from_listener_raises_handshake_error(no_fd_leak: None) -> None:
    async with BadSignatureListener() as bad, fastp2p.Host() as a:
        with pytest.raises(HandshakeError) as ei:
            await a.connect(bad.addr)
        # Precisely IdentityProofError (a HandshakeError; not DialError, not
        # PeerIDMismatchError): a forged identity is never retried on other addresses
        # (Host._dial_addrs).
        assert type(ei.value) is IdentityProofError
        assert "signature" in str(ei.value)
        assert a.connections == [] and bad.peer_id not in a.peerstore.peers()
        async with asyncio.timeout(5):
            while bad.dialer_closed < 1:
                await asyncio.sleep(0.01)
        assert bad.sent_message2 == 1
        # Same through a plain multiaddr (no /p2p/ to compare with).
        with pytest.raises(HandshakeError):
            await a.connect(f"/ip4/127.0.0.1/tcp/{bad.port}")
        async with asyncio.timeout(5):
            while bad.dialer_closed < 2:
                await asyncio.sleep(0.01)


async def test_bad_noise_signature_from_dialer_is_dropped(no_fd_leak: None) -> None:
    """An inbound peer whose message 3 signs the wrong key never becomes a connection."""
    async with bed() as b:
        host, port = b.addr
        reader, writer = await asyncio.open_connection(host, port)
        try:
            signer = WrongKeySigner()
            hs = NoiseHandshake(initiator=True, identity=signer, muxers=(YAMUX,))
            ms = MultistreamDialer(["/noise"])
            async with b.echo_probe(), asyncio.timeout(5):
                writer.write(ms.data_to_send() + hs.data_to_send())
                while not hs.done:
                    data = await reader.read(65536)
                    assert data, "host closed before message 2"
                    if not ms.done:
                        ms.receive_data(data)
                        data = ms.unused_data()
                    if data:
                        hs.receive_data(data)  # message 2: we do verify the host
                writer.write(hs.data_to_send())  # message 3 with the bad signature
                while await reader.read(65536):  # the host hangs up
                    pass
            assert PeerID.from_public_key(signer.public_key()) not in b.conns
            assert len(b.server.connections) == 1  # only the good client
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


async def test_handshake_stalled_after_message_2_times_out() -> None:
    """Multistream and Noise message 1 done, message 2 received, message 3 never sent."""
    async with bed(HostConfig(negotiation_timeout=0.5)) as b:
        host, port = b.addr
        reader, writer = await asyncio.open_connection(host, port)
        try:
            hs = NoiseHandshake(initiator=True, identity=Ed25519PrivateKey.generate())
            ms = MultistreamDialer(["/noise"])
            writer.write(ms.data_to_send() + hs.data_to_send())
            t0 = time.monotonic()
            got = 0
            async with b.echo_probe(), asyncio.timeout(5):
                while data := await reader.read(65536):
                    got += len(data)
            # The host gave up after its negotiation timeout, not at once nor never.
            assert 0.4 <= time.monotonic() - t0 < 4
            assert got, "host sent nothing (no multistream answer, no message 2)"
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# -- 3. SYN flood beyond max_streams -----------------------------------------------------------

FLOOD = 400
MAX_STREAMS = 8


def _count(frames: list[tuple[int, ...]], pred: Callable[[tuple[int, ...]], bool]) -> int:
    return sum(1 for f in frames if pred(f))


async def test_yamux_syn_flood_is_refused_and_bounded() -> None:
    cfg = HostConfig(yamux=YamuxConfig(max_streams=MAX_STREAMS))
    async with bed(cfg) as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            tasks_before = len(asyncio.all_tasks())
            ids = list(range(1, 2 * FLOOD, 2))
            async with b.echo_probe():
                # As fast as we can: every SYN in one write.
                h.send_plain(b"".join(yamux_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, i, 0) for i in ids))
                idset = set(ids)

                def answered() -> int:
                    return _count(h.frames, lambda f: f[2] in idset and f[1] & (FLAG_ACK | FLAG_RST))

                await h.wait_for(lambda: answered() >= FLOOD, timeout=20)
                acked = _count(h.frames, lambda f: f[2] in idset and f[1] & FLAG_ACK)
                rst = _count(h.frames, lambda f: f[2] in idset and f[1] & FLAG_RST)
                assert acked <= MAX_STREAMS and acked + rst == FLOOD
                # The tables hold at most max_streams inbound streams (+ the host's own).
                assert len(conn.streams) <= MAX_STREAMS + 4
                assert conn._session.stream_count() <= MAX_STREAMS + 4
                stats = conn.statistics()["muxer_stats"]
                assert stats["streams_rejected"] >= FLOOD - MAX_STREAMS

                # Churn: open and reset thousands more; nothing accumulates.
                next_id = 2 * FLOOD + 1
                h.send_plain(b"".join(yamux_frame(TYPE_WINDOW_UPDATE, FLAG_RST, i, 0) for i in ids))
                for _ in range(20):
                    batch = list(range(next_id, next_id + 2 * 100, 2))
                    next_id += 2 * 100
                    h.send_plain(
                        b"".join(
                            yamux_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, i, 0)
                            + yamux_frame(TYPE_WINDOW_UPDATE, FLAG_RST, i, 0)
                            for i in batch
                        )
                    )
                    await h.drain()
                    await asyncio.sleep(0.01)
                    assert len(conn.streams) <= MAX_STREAMS + 4
                # The connection is alive: a yamux ping is answered.
                h.send_plain(yamux_frame(TYPE_PING, FLAG_SYN, 0, 0xF100D))
                await h.wait_for(
                    lambda: any(f[0] == TYPE_PING and f[1] & FLAG_ACK and f[3] == 0xF100D for f in h.frames),
                    timeout=10,
                )
            async with asyncio.timeout(10):
                while len(conn.streams) > 2 or len(asyncio.all_tasks()) > tasks_before + 4:
                    await asyncio.sleep(0.02)
            assert not conn.is_closed and not h.eof.is_set()
            assert h.goaway_codes() == []
            assert h.decode_error is None
            # Bounded history of dead ids (yamux session keeps at most 4096).
            assert len(conn._session._history) <= 4096
        finally:
            await h.aclose()


async def test_mplex_new_stream_flood_is_refused_and_bounded() -> None:
    cfg = HostConfig(muxers=(MPLEX,), mplex=MplexConfig(max_streams=MAX_STREAMS))
    async with bed(cfg) as b:
        h = await HostileDialer.connect(*b.addr, muxer=MPLEX)
        try:
            conn = await b.server_conn(h.peer_id)
            async with b.echo_probe():
                h.send_plain(b"".join(hostile.mplex_frame(i, MPLEX_NEW_STREAM) for i in range(FLOOD)))
                await h.wait_for(
                    lambda: _count(h.frames, lambda f: f[0] == MPLEX_RESET_RECEIVER) >= FLOOD - MAX_STREAMS,
                    timeout=20,
                )
                assert len(conn.streams) <= MAX_STREAMS + 4
                assert conn._session.stream_count() <= MAX_STREAMS + 4
                # Churn: reset them all, then open and reset 2000 more.
                h.send_plain(b"".join(hostile.mplex_frame(i, MPLEX_RESET_INITIATOR) for i in range(FLOOD)))
                for r in range(20):
                    base = FLOOD + r * 100
                    h.send_plain(
                        b"".join(
                            hostile.mplex_frame(i, MPLEX_NEW_STREAM)
                            + hostile.mplex_frame(i, MPLEX_RESET_INITIATOR)
                            for i in range(base, base + 100)
                        )
                    )
                    await h.drain()
                    await asyncio.sleep(0.01)
                    assert len(conn.streams) <= MAX_STREAMS + 4
                await h.open_mplex_stream(10_000, "/echo/1.0.0")  # the connection still works
            async with asyncio.timeout(10):
                while len(conn.streams) > 3:
                    await asyncio.sleep(0.02)
            assert not conn.is_closed and not h.eof.is_set()
            assert h.decode_error is None
        finally:
            await h.aclose()


# -- 4. many tiny frames and pings ------------------------------------------------------------

TINY_FRAMES = 50_000
BATCH = 1_000
PING_EVERY = 10


async def test_tiny_frames_and_ping_storm_host_stays_responsive() -> None:
    async with bed() as b:
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            await h.open_yamux_stream(1, "/drain/1")
            one = yamux_data(1, b"x")
            opaques: list[int] = []
            async with asyncio.timeout(120):
                async with b.echo_probe() as latencies:
                    sent = 0
                    while sent < TINY_FRAMES:
                        parts = []
                        for _ in range(BATCH):
                            parts.append(one)
                            sent += 1
                            if sent % PING_EVERY == 0:
                                opaques.append(sent)
                                parts.append(yamux_frame(TYPE_PING, FLAG_SYN, 0, sent))
                        h.send_plain(b"".join(parts))
                        await h.drain()
                        await asyncio.sleep(0)  # let the loop breathe, like a real peer would
                    h.send_plain(yamux_data(1, b"", FLAG_FIN))
                    total = await b.drained.get()
                    want = set(opaques)

                    def acked() -> set[int]:
                        return {
                            f[3] for f in h.frames if f[0] == TYPE_PING and f[1] & FLAG_ACK
                        } & want

                    await h.wait_for(lambda: acked() == want, timeout=30)
            assert total == TINY_FRAMES
            assert len(latencies) >= 2
            assert not conn.is_closed and not h.eof.is_set()
            assert h.goaway_codes() == [] and h.decode_error is None
            # Flow control kept working: the stream is gone from the tables.
            async with asyncio.timeout(5):
                while 1 in conn.streams:
                    await asyncio.sleep(0.01)
        finally:
            await h.aclose()


# -- 5. a peer that stops reading its socket ---------------------------------------------------

SOURCE_TOTAL = 64 << 20
SOURCE_CHUNK = 256 << 10


async def test_peer_that_stops_reading_socket_backpressures_the_writer() -> None:
    """The peer grants a 64 MiB window, then never reads its socket again: the host's
    writer must block on transport backpressure, not buffer 64 MiB of ciphertext."""
    from fastp2p.transport.tcp import QUEUE_MAX, WRITE_HIGH_WATER

    async with bed() as b:
        written = 0
        outcome: list[BaseException | None] = []

        async def source(stream: fastp2p.Stream) -> None:
            nonlocal written
            chunk = bytes(SOURCE_CHUNK)
            try:
                while written < SOURCE_TOTAL:
                    await stream.write(chunk)
                    written += len(chunk)
                outcome.append(None)
            except P2PError as exc:
                outcome.append(exc)
                raise

        b.server.set_handler("/source/1", source)
        h = await HostileDialer.connect(*b.addr)
        try:
            conn = await b.server_conn(h.peer_id)
            await h.open_yamux_stream(1, "/source/1")
            h.stop_reading()
            h.send_plain(yamux_frame(TYPE_WINDOW_UPDATE, 0, 1, SOURCE_TOTAL))
            transport = conn._raw._transport  # type: ignore[attr-defined]
            peak = 0
            async with b.echo_probe():
                for _ in range(50):  # 1 s
                    await asyncio.sleep(0.02)
                    peak = max(peak, transport.get_write_buffer_size())
            # Stalled well short of 64 MiB; user-space buffering bounded by the
            # high-water mark, plus the pass's write queue handed over in one
            # writev (up to QUEUE_MAX) and one sealed chunk (kernel buffers hold
            # the rest).
            assert written < SOURCE_TOTAL // 2, written
            assert peak <= WRITE_HIGH_WATER + QUEUE_MAX + 2 * SOURCE_CHUNK, peak
            assert not outcome and not conn.is_closed
        finally:
            await h.aclose()
        # The peer goes away: the blocked writer gets a typed error, the host cleans up.
        async with asyncio.timeout(5):
            await asyncio.shield(conn.closed)
            while not outcome:
                await asyncio.sleep(0.01)
        assert isinstance(outcome[0], ConnectionClosedError), outcome
        assert b.server.connection(h.peer_id) is None
