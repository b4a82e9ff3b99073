"""Hostile libp2p peers on raw asyncio sockets, built from fastp2p's sans-IO pieces.

``HostileDialer`` speaks multistream-select ``/noise``, Noise XX and the early
(in-handshake) muxer negotiation exactly like a correct peer, so a Host accepts
it as a connection; from then on the test decides what goes on the wire:
well-formed muxer frames (``send_plain``), raw bytes that bypass the Noise
cipher (``send_raw``), or anything else. Everything the Host sends back is
decrypted and decoded by a background reader (``frames``), which also answers
yamux pings so the Host's keepalive stays happy.

``serve_bad_signature`` is a hostile *listener* whose Noise handshake payload
signs the wrong static key.

Nothing here uses fastp2p's asyncio driver (``transport/``): only the sans-IO
state machines and the kernels of ``fastp2p._accel``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from fastp2p import _accel
from fastp2p.errors import P2PError
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.multistream import MultistreamDialer, MultistreamListener
from fastp2p.proto.noise.handshake import SIGNATURE_PREFIX, NoiseHandshake
from fastp2p.proto.yamux.frame import (
    FLAG_ACK,
    FLAG_SYN,
    TYPE_DATA,
    TYPE_GO_AWAY,
    TYPE_PING,
    TYPE_WINDOW_UPDATE,
)

YAMUX = "/yamux/1.0.0"
MPLEX = "/mplex/6.7.0"

# mplex flags (libp2p mplex spec)
MPLEX_NEW_STREAM = 0
MPLEX_MESSAGE_RECEIVER = 1
MPLEX_MESSAGE_INITIATOR = 2
MPLEX_CLOSE_INITIATOR = 4
MPLEX_RESET_RECEIVER = 5
MPLEX_RESET_INITIATOR = 6

_READ = 256 * 1024


def yamux_frame(ftype: int, flags: int, sid: int, length: int, payload: bytes = b"") -> bytes:
    """One yamux frame (header from the kernel's encoder, version 0)."""
    return bytes(_accel.encode_header(ftype, flags, sid, length)) + payload


def yamux_data(sid: int, payload: bytes, flags: int = 0) -> bytes:
    return yamux_frame(TYPE_DATA, flags, sid, len(payload), payload)


def raw_yamux_header(version: int, ftype: int, flags: int, sid: int, length: int) -> bytes:
    """A yamux header with any version/type byte (the encoder refuses bad ones)."""
    return (
        bytes([version, ftype])
        + flags.to_bytes(2, "big")
        + sid.to_bytes(4, "big")
        + length.to_bytes(4, "big")
    )


def mplex_frame(sid: int, flag: int, payload: bytes = b"") -> bytes:
    return bytes(_accel.mplex_encode_header(sid, flag, len(payload))) + payload


def multistream_proposal(protocol: str) -> bytes:
    """What a dialer sends on a fresh stream: header + one proposal."""
    return MultistreamDialer([protocol]).data_to_send()


class HostileDialer:
    """A correct libp2p dialer up to the muxer, then whatever the test sends.

    Use ``await HostileDialer.connect(host, port, muxer=...)`` and ``aclose()``
    (in a ``finally``).
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        send: Any,
        recv: Any,
        muxer: str,
        peer_id: PeerID,
        remote_peer: PeerID,
        *,
        answer_pings: bool,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.send = send
        self.recv = recv
        self.muxer = muxer
        self.peer_id = peer_id
        self.remote_peer = remote_peer
        self.answer_pings = answer_pings
        # yamux: (type, flags, sid, length); mplex: (flag, sid, len(payload))
        self.frames: list[tuple[int, ...]] = []
        self.data: dict[int, bytearray] = {}  # yamux sid / mplex id -> payload received
        self.eof = asyncio.Event()
        self.changed = asyncio.Event()
        self.decode_error: BaseException | None = None
        self.bytes_received = 0
        if muxer == YAMUX:
            self._decoder: Any = _accel.YamuxDecoder()
        else:
            self._decoder = _accel.MplexDecoder(1 << 24)
        self._task: asyncio.Task[None] | None = None

    # -- setup -------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        host: str,
        port: int,
        *,
        muxer: str = YAMUX,
        identity: Ed25519PrivateKey | None = None,
        answer_pings: bool = True,
        timeout: float = 5.0,
    ) -> HostileDialer:
        identity = identity or Ed25519PrivateKey.generate()
        reader, writer = await asyncio.open_connection(host, port)
        try:
            async with asyncio.timeout(timeout):
                hs = NoiseHandshake(initiator=True, identity=identity, muxers=(muxer,))
                ms = MultistreamDialer(["/noise"])
                # lazy multistream: Noise message 1 rides behind the proposal
                writer.write(ms.data_to_send() + hs.data_to_send())
                while not ms.done:
                    ms.receive_data(await _read_some(reader))
                    out = ms.data_to_send()
                    if out:
                        writer.write(out)
                pending = ms.unused_data()
                while not hs.done:
                    if not pending:
                        pending = await _read_some(reader)
                    hs.receive_data(pending)
                    pending = b""
                    out = hs.data_to_send()
                    if out:
                        writer.write(out)
                assert muxer in hs.remote_muxers, (muxer, hs.remote_muxers)
                k1, k2 = hs.split()
                assert hs.remote_peer is not None
                peer = cls(
                    reader,
                    writer,
                    _accel.NoiseCipher(k1),
                    _accel.NoiseCipher(k2),
                    muxer,
                    PeerID.from_public_key(identity.public_key()),
                    hs.remote_peer,
                    answer_pings=answer_pings,
                )
                peer._task = asyncio.get_running_loop().create_task(peer._read_loop())
                left = hs.unused_data()
                if left:
                    peer._on_cipher(left)
                return peer
        except BaseException:
            writer.close()
            raise

    async def aclose(self) -> None:
        """Close the socket and stop the reader. Idempotent."""
        self.writer.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.writer.wait_closed(), 2)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task

    # -- receiving -----------------------------------------------------------------

    async def _read_loop(self) -> None:
        try:
            while True:
                try:
                    data = await self.reader.read(_READ)
                except OSError:
                    data = b""
                if not data:
                    break
                self._on_cipher(data)
        finally:
            self.eof.set()
            self.changed.set()

    def _on_cipher(self, data: bytes) -> None:
        self.bytes_received += len(data)
        if self.decode_error is not None:
            return
        try:
            plain = self.recv.open_frames(data)
            if plain:
                self._on_plain(bytes(plain))
        except P2PError as exc:  # the host sent something we cannot decode: a finding
            self.decode_error = exc
        self.changed.set()

    def _on_plain(self, plain: bytes) -> None:
        if self.muxer == YAMUX:
            for ftype, flags, sid, length, payload in self._decoder.feed(plain):
                self.frames.append((ftype, flags, sid, length))
                if payload is not None and len(payload):
                    self.data.setdefault(sid, bytearray()).extend(payload)
                if ftype == TYPE_PING and flags & FLAG_SYN and self.answer_pings:
                    self.send_plain(yamux_frame(TYPE_PING, FLAG_ACK, 0, length))
        else:
            for flag, sid, payload in self._decoder.feed(plain):
                self.frames.append((flag, sid, len(payload)))
                if flag == MPLEX_MESSAGE_RECEIVER and len(payload):
                    self.data.setdefault(sid, bytearray()).extend(payload)

    async def wait_for(self, predicate: Callable[[], bool], timeout: float = 5.0) -> None:
        """Wait until ``predicate()`` holds (re-checked whenever something arrives)."""
        async with asyncio.timeout(timeout):
            while not predicate():
                if self.eof.is_set():
                    assert predicate(), "connection closed before the condition held"
                self.changed.clear()
                await self.changed.wait()

    async def wait_eof(self, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            await self.eof.wait()

    # -- sending -------------------------------------------------------------------

    def send_plain(self, plain: bytes) -> None:
        """Encrypt ``plain`` into Noise transport frames and write them."""
        if not self.writer.is_closing():
            self.writer.write(bytes(self.send.seal_frames([plain])))

    def send_raw(self, data: bytes) -> None:
        """Write bytes straight to the socket (bypassing the Noise cipher)."""
        self.writer.write(data)

    def stop_reading(self) -> None:
        """Stop reading the socket: what the host sends piles up in the kernel."""
        self.writer.transport.pause_reading()  # type: ignore[attr-defined]

    async def drain(self) -> None:
        with contextlib.suppress(ConnectionError):
            await self.writer.drain()

    # -- yamux helpers ---------------------------------------------------------------

    def yamux_frames(self, ftype: int) -> list[tuple[int, ...]]:
        return [f for f in self.frames if f[0] == ftype]

    def goaway_codes(self) -> list[int]:
        return [f[3] for f in self.yamux_frames(TYPE_GO_AWAY)]

    async def open_yamux_stream(self, sid: int, protocol: str, timeout: float = 5.0) -> int:
        """SYN + multistream proposal; returns the receive window the host granted."""
        self.send_plain(
            yamux_frame(TYPE_WINDOW_UPDATE, FLAG_SYN, sid, 0)
            + yamux_data(sid, multistream_proposal(protocol))
        )
        await self._await_selected(sid, protocol, timeout)
        ack = [f for f in self.frames if f[2] == sid and f[1] & FLAG_ACK]
        assert ack, f"no ACK for stream {sid}"
        return 256 * 1024 + (ack[0][3] if ack[0][0] == TYPE_WINDOW_UPDATE else 0)

    async def open_mplex_stream(self, mid: int, protocol: str, timeout: float = 5.0) -> None:
        self.send_plain(
            mplex_frame(mid, MPLEX_NEW_STREAM, str(mid).encode())
            + mplex_frame(mid, MPLEX_MESSAGE_INITIATOR, multistream_proposal(protocol))
        )
        await self._await_selected(mid, protocol, timeout)

    async def _await_selected(self, sid: int, protocol: str, timeout: float) -> None:
        answer = multistream_proposal(protocol)  # the listener echoes header + protocol
        await self.wait_for(lambda: bytes(self.data.get(sid, b""))[: len(answer)] == answer, timeout)
        del self.data[sid][: len(answer)]


async def _read_some(reader: asyncio.StreamReader) -> bytes:
    data = await reader.read(65536)
    if not data:
        raise ConnectionError("peer closed the connection during the handshake")
    return data


# -- hostile listener --------------------------------------------------------------


class WrongKeySigner:
    """An identity whose Noise payload signature covers a random static key."""

    def __init__(self, key: Ed25519PrivateKey | None = None) -> None:
        self.key = key or Ed25519PrivateKey.generate()

    def public_key(self) -> Any:
        return self.key.public_key()

    def sign(self, data: bytes) -> bytes:
        assert data.startswith(SIGNATURE_PREFIX)
        return self.key.sign(SIGNATURE_PREFIX + os.urandom(32))


class BadSignatureListener:
    """A TCP listener that answers multistream ``/noise`` and Noise message 1 with a
    message 2 whose identity signature is invalid. Records what each dialer did."""

    def __init__(self) -> None:
        self.signer = WrongKeySigner()
        self.peer_id = PeerID.from_public_key(self.signer.public_key())
        self.server: asyncio.Server | None = None
        self.port = 0
        self.sent_message2 = 0
        self.dialer_closed = 0  # connections the dialer closed after our message 2
        self.errors: list[BaseException] = []
        self._handlers: dict[asyncio.Task[None], asyncio.StreamWriter] = {}

    async def __aenter__(self) -> BadSignatureListener:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        # Abort the sockets rather than cancel the handlers: Python 3.11's start_server
        # callback logs an error for a cancelled client_connected_cb task.
        for w in list(self._handlers.values()):
            w.transport.abort()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        await self.server.wait_closed()

    @property
    def addr(self) -> str:
        return f"/ip4/127.0.0.1/tcp/{self.port}/p2p/{self.peer_id}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers[task] = writer
        try:
            async with asyncio.timeout(10):
                ms = MultistreamListener(["/noise"])
                while not ms.done:
                    ms.receive_data(await _read_some(reader))
                    out = ms.data_to_send()
                    if out:
                        writer.write(out)
                hs = NoiseHandshake(initiator=False, identity=self.signer, muxers=(YAMUX,))
                pending = ms.unused_data()
                while True:
                    if not pending:
                        pending = await _read_some(reader)
                    hs.receive_data(pending)
                    pending = b""
                    out = hs.data_to_send()
                    if out:
                        writer.write(out)
                        self.sent_message2 += 1
                        break
                # The dialer must reject message 2 and close; it never sends message 3.
                try:
                    while await reader.read(65536):
                        pass
                except ConnectionResetError:
                    pass  # an abort with unread data in its buffer
                self.dialer_closed += 1
        except (OSError, P2PError, TimeoutError) as exc:
            self.errors.append(exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), 2)
            self._handlers.pop(task, None)
