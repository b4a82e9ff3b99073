"""Upgrade a raw connection: multistream(/noise) -> Noise XX -> multistream(muxer) -> muxed.

Also the per-stream protocol negotiation used by ``Host.open_stream`` and the
inbound stream dispatcher. Every step is a sans-IO state machine from
``fastp2p.proto``; this module only moves bytes and applies the timeouts.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from fastp2p import _accel
from fastp2p.config import HostConfig
from fastp2p.errors import (
    HandshakeError,
    IdentityProofError,
    NegotiationError,
    P2PError,
    PeerIDMismatchError,
    PnetError,
    StreamErrorCode,
)
from fastp2p.proto.mplex import session as _mplex_session
from fastp2p.proto.multistream import (
    MultistreamDialer,
    MultistreamListener,
    first_flight,
    select_first_flight,
)
from fastp2p.proto.noise import handshake as _noise_handshake
from fastp2p.proto.noise.cipher import usable_ciphers
from fastp2p.proto.noise.handshake import NoiseHandshake
from fastp2p.proto.yamux import session as _yamux_session
from fastp2p.transport.pnet import PnetConnection
from fastp2p.transport.stream import Stream

if TYPE_CHECKING:
    from fastp2p.peer import Ed25519PrivateKey, PeerID, PublicKey
    from fastp2p.proto.muxer import MuxerSession
    from fastp2p.transport.base import RawConnection
    from fastp2p.transport.busypoll import BusyPoller

__all__ = [
    "NOISE_PROTOCOL_ID",
    "YAMUX_PROTOCOL_ID",
    "MPLEX_PROTOCOL_ID",
    "SecuredChannel",
    "secure_outbound",
    "secure_inbound",
    "make_session",
    "negotiate_outbound",
    "negotiate_lazy",
    "propose_now",
    "negotiate_inbound",
    "prepare_identity",
]

NOISE_PROTOCOL_ID = _noise_handshake.PROTOCOL_ID
YAMUX_PROTOCOL_ID = _yamux_session.PROTOCOL_ID
MPLEX_PROTOCOL_ID = _mplex_session.PROTOCOL_ID
#: the pnet safeguard (spec): with "1", refuse to connect without a PSK
FORCE_PNET_ENV = "LIBP2P_FORCE_PNET"


@dataclass
class SecuredChannel:
    """Result of the security + muxer upgrade, ready to become a Connection."""

    raw: RawConnection
    send_cipher: Any
    recv_cipher: Any
    remote_peer: PeerID
    remote_public_key: PublicKey | None
    muxer: str
    plaintext_leftover: bytes


async def _read_raw(raw: RawConnection, what: str, busy_poll: BusyPoller | None = None) -> bytes:
    if busy_poll is not None:
        busy_poll.kick()  # (HostConfig.busy_poll_us: the answer is a round trip away)
    data = await raw.read_some()
    if not data:
        raise HandshakeError(f"connection closed during {what}")
    return data


class _SansIO(Protocol):
    @property
    def done(self) -> bool: ...

    def data_to_send(self) -> bytes: ...
    def receive_data(self, data: bytes) -> None: ...
    def unused_data(self) -> bytes: ...


async def _run_plain(
    raw: RawConnection,
    machine: _SansIO,
    what: str,
    first: bytes = b"",
    leftover: bytes = b"",
    *,
    hold_last: bool = False,
    on_wait: Callable[[], None] | None = None,
    busy_poll: BusyPoller | None = None,
) -> bytes:
    """Drive a handshake state machine over the raw connection until it is done.

    ``first`` is sent together with the machine's first output; ``leftover`` is
    input that arrived before (bytes after the previous step's last message).
    ``hold_last``: the step's last message waits for what the next step writes
    in the same pass (the listener's multistream answer leaves with Noise
    message 2); otherwise it leaves at once. A message that the peer must
    answer is never held. ``on_wait`` is called once, the first time a message
    of ours is out and this side waits for the answer (work for idle time).
    Returns the bytes that arrived after the machine finished.
    """
    out = machine.data_to_send() + first
    if out:
        raw.write(out)
        raw.flush()
        if on_wait is not None and not machine.done:
            on_wait()
            on_wait = None
    data = leftover
    while True:
        if data:
            machine.receive_data(data)
            out = machine.data_to_send()
            if out:
                if machine.done and hold_last:
                    raw.hold_flush()
                raw.write(out)
                if not machine.done or not hold_last:
                    raw.flush()
                if on_wait is not None and not machine.done:
                    on_wait()
                    on_wait = None
        if machine.done:
            return machine.unused_data()
        data = await _read_raw(raw, what, busy_poll)


async def _select_security(raw: RawConnection, dialer: bool, first_flight: bytes = b"",
                           busy_poll: BusyPoller | None = None) -> bytes:
    """multistream-select ``/noise``; returns bytes that arrived after the answer.

    The dialer appends ``first_flight`` (Noise message 1) to its proposal, as
    multistream-select's lazy mode allows for a single protocol (rust-libp2p
    ``V1Lazy``): the listener hands bytes after the selection to Noise, which
    saves one round trip.
    """
    if dialer:
        ms: MultistreamDialer | MultistreamListener = MultistreamDialer([NOISE_PROTOCOL_ID])
    else:
        ms = MultistreamListener([NOISE_PROTOCOL_ID])
    # (the dialer's Noise message 1 leaves here: its next ephemeral key is made
    # while the answer is on its way)
    return await _run_plain(raw, ms, "security negotiation", first=first_flight, hold_last=True,
                            on_wait=_EPHEMERALS.refill_soon if first_flight else None,
                            busy_poll=busy_poll)


async def _select_muxer(
    raw: RawConnection,
    send: Any,
    recv: Any,
    leftover_cipher: bytes,
    muxers: Sequence[str],
    dialer: bool,
    busy_poll: BusyPoller | None = None,
) -> tuple[str, bytes]:
    if dialer:
        ms: MultistreamDialer | MultistreamListener = MultistreamDialer(list(muxers))
    else:
        ms = MultistreamListener(list(muxers))

    def flush() -> None:
        out = ms.data_to_send()
        if out:
            raw.write(send.seal_frames([out]))

    flush()
    if leftover_cipher:
        plain = recv.open_frames(leftover_cipher)
        if plain:
            ms.receive_data(bytes(plain))
        flush()
    while not ms.done:
        plain = recv.open_frames(await _read_raw(raw, "muxer negotiation", busy_poll))
        if plain:
            ms.receive_data(bytes(plain))
        flush()
    assert ms.selected is not None
    return ms.selected, ms.unused_data()


async def secure_outbound(
    raw: RawConnection,
    identity: Ed25519PrivateKey,
    config: HostConfig,
    expected_peer: PeerID | None = None,
    *,
    busy_poll: BusyPoller | None = None,
) -> SecuredChannel:
    """Run the dialer side of the upgrade (``busy_poll``: the host's poller, kicked
    whenever the upgrade waits for the peer).

    Raises:
        NegotiationError: the peer speaks neither Noise nor any of our muxers.
        HandshakeError, PeerIDMismatchError: the Noise handshake failed.
        TimeoutError: the upgrade (security selection, Noise handshake, muxer)
            took longer than ``config.noise.handshake_timeout`` or
            ``config.negotiation_timeout``, whichever is smaller.

    Cancellation: the raw connection is aborted.
    """
    return await _secure(raw, identity, config, expected_peer, dialer=True, busy_poll=busy_poll)


async def secure_inbound(
    raw: RawConnection, identity: Ed25519PrivateKey, config: HostConfig, *,
    busy_poll: BusyPoller | None = None,
) -> SecuredChannel:
    """Run the listener side of the upgrade (same errors and ``busy_poll`` as
    ``secure_outbound``)."""
    return await _secure(raw, identity, config, None, dialer=False, busy_poll=busy_poll)


async def _secure(
    raw: RawConnection,
    identity: Ed25519PrivateKey,
    config: HostConfig,
    expected_peer: PeerID | None,
    *,
    dialer: bool,
    busy_poll: BusyPoller | None = None,
) -> SecuredChannel:
    if config.psk is not None:
        # pnet: everything from here on (multistream included) is XSalsa20-protected
        raw = PnetConnection(raw, config.psk, timeout=config.pnet_timeout)  # type: ignore[arg-type]
    elif os.environ.get(FORCE_PNET_ENV) == "1":
        raw.abort()
        raise PnetError(f"{FORCE_PNET_ENV}=1 but no private-network key is configured (HostConfig.psk)")
    noise_done = False
    try:
        async with asyncio.timeout(min(config.noise.handshake_timeout, config.negotiation_timeout)):
            static, static_sig = _noise_static(identity)
            hs = NoiseHandshake(
                initiator=dialer,
                identity=identity,
                static_key=static,
                static_signature=static_sig,
                ephemeral_key=_EPHEMERALS.take(),
                expected_peer=expected_peer,
                muxers=config.muxers,
                ciphers=usable_ciphers(config.noise.ciphers),
                hkdf=_accel.noise_hkdf2,
            )
            first = hs.data_to_send() if dialer else b""
            leftover = await _select_security(raw, dialer, first, busy_poll)
            # (the listener's next ephemeral key is made once message 2 is out)
            leftover_cipher = await _run_plain(raw, hs, "noise handshake", leftover=leftover,
                                               on_wait=None if dialer else _EPHEMERALS.refill_soon,
                                               busy_poll=busy_poll)
            noise_done = True
            k1, k2 = hs.split()
            # the cipher agreed in the handshake (fastp2p peers only; others: ChaChaPoly)
            send = _accel.NoiseCipher(k1, 0, hs.transport_cipher)
            recv = _accel.NoiseCipher(k2, 0, hs.transport_cipher)
            early = _early_muxer(config.muxers, hs.remote_muxers, dialer)
            if early is not None:
                muxer = early
                plain_left = bytes(recv.open_frames(leftover_cipher)) if leftover_cipher else b""
            else:
                muxer, plain_left = await _select_muxer(
                    raw, send, recv, leftover_cipher, config.muxers, dialer, busy_poll
                )
    except (P2PError, TimeoutError) as exc:
        raw.abort()
        if config.psk is None or noise_done or isinstance(exc, PnetError | IdentityProofError | PeerIDMismatchError):
            raise
        # Before Noise completes, a peer with another PSK (or none) shows up as
        # garbage: a failed negotiation, a bad handshake message or a closed socket.
        raise PnetError(
            f"private network handshake failed: wrong or missing PSK? ({type(exc).__name__}: {exc})"
        ) from exc
    except BaseException:
        raw.abort()
        raise
    assert hs.remote_peer is not None  # set once the handshake is done
    raw.hold_flush()  # the new connection's first frames (identify's request) leave together
    return SecuredChannel(
        raw=raw,
        send_cipher=send,
        recv_cipher=recv,
        remote_peer=hs.remote_peer,
        remote_public_key=hs.remote_public_key,
        muxer=muxer,
        plaintext_leftover=plain_left,
    )


#: Noise static keys by identity public key (a host's connections share one)
_STATIC_KEYS: dict[bytes, tuple[tuple[bytes, bytes], bytes]] = {}
_STATIC_KEYS_MAX = 64


def prepare_identity(identity: Ed25519PrivateKey) -> None:
    """Make ``identity``'s Noise static key and signature now (a host's start),
    not during its first handshake."""
    _noise_static(identity)


def _noise_static(identity: Ed25519PrivateKey) -> tuple[tuple[bytes, bytes], bytes]:
    """This identity's Noise static key and its signature, made once.

    The static key only authenticates (forward secrecy comes from the
    per-handshake ephemeral keys), so like js-libp2p one key serves every
    connection of a host; the signature over it is then per host too.
    """
    pub = identity.public_key().to_protobuf()
    got = _STATIC_KEYS.get(pub)
    if got is None:
        key = _noise_handshake.new_x25519_key()
        got = (key, _noise_handshake.sign_static_key(identity, key[1]))
        if len(_STATIC_KEYS) >= _STATIC_KEYS_MAX:
            _STATIC_KEYS.pop(next(iter(_STATIC_KEYS)))
        _STATIC_KEYS[pub] = got
    return got


class _Ephemerals:
    """X25519 ephemeral keys made ahead, off the handshake's critical path.

    Making one costs half a Diffie-Hellman; the handshake would make it between
    reading the peer's message and answering it. A key is handed out once and
    never reused, and at most ``size`` wait unused. ``refill_soon`` makes one
    more after the current callbacks: the upgrader calls it once its message
    is out and it waits for the peer's answer, so that the key is made while
    this side would be idle, not when the answer is in.
    """

    def __init__(self, size: int = 4) -> None:
        self._keys: list[tuple[bytes, bytes]] = []
        self._size = size

    def take(self) -> tuple[bytes, bytes] | None:
        """A fresh key, or None when none is ready (the handshake makes its own)."""
        keys = self._keys
        return keys.pop() if keys else None

    def refill_soon(self) -> None:
        """Make a key after the current callbacks (if fewer than ``size`` wait)."""
        if len(self._keys) < self._size:
            asyncio.get_running_loop().call_soon(self._refill)

    def _refill(self) -> None:
        if len(self._keys) < self._size:
            self._keys.append(_noise_handshake.new_x25519_key())


_EPHEMERALS = _Ephemerals()


def _early_muxer(ours: Sequence[str], theirs: Sequence[str], dialer: bool) -> str | None:
    """The muxer agreed inside the Noise handshake, or None to use multistream.

    libp2p inlined muxer negotiation: both sides list muxers in the Noise
    extensions; the first entry of the initiator's list that the responder
    also lists wins. Without a common entry (or without the extension on one
    side) the connection falls back to multistream-select.
    """
    if not ours or not theirs:
        return None
    initiator, responder = (ours, theirs) if dialer else (theirs, ours)
    for m in initiator:
        if m in responder and m in (YAMUX_PROTOCOL_ID, MPLEX_PROTOCOL_ID):
            return m
    return None


def make_session(muxer: str, *, is_client: bool, config: HostConfig) -> MuxerSession:
    """Build the sans-IO session for the negotiated muxer, with native kernels."""
    if muxer == YAMUX_PROTOCOL_ID:
        from fastp2p.proto.yamux.session import YamuxSession

        return YamuxSession(is_client=is_client, config=config.yamux, kernels=_accel)
    if muxer == MPLEX_PROTOCOL_ID:
        from fastp2p.proto.mplex.session import MplexSession

        return MplexSession(is_client=is_client, config=config.mplex, kernels=_accel)
    raise NegotiationError(f"unsupported muxer {muxer!r}", offered=(muxer,))


# -- per-stream protocol negotiation -------------------------------------------------


async def negotiate_outbound(stream: Stream, protocols: Sequence[str], *, early_data: bytes = b"") -> str:
    """Propose ``protocols`` in order on a fresh stream; returns the chosen one.

    ``early_data`` (one protocol only) is sent right behind the proposal, saving
    a round trip when the peer is known to support it (identify said so); if it
    refuses anyway, the peer reads those bytes as a malformed proposal and
    resets the stream.

    Raises:
        NegotiationError: the peer supports none of them.
        StreamResetError, ConnectionClosedError: the stream or connection died.
    """
    ms = MultistreamDialer(list(protocols))
    if early_data:
        if len(protocols) != 1:
            raise ValueError("early_data needs exactly one protocol")
        await stream.write(ms.data_to_send() + early_data)
    await _drive(stream, ms)
    assert ms.selected is not None
    return ms.selected


class _LazyStream(Stream):
    """A stream whose protocol was proposed optimistically (see :func:`negotiate_lazy`).

    The first read takes the listener's answer off the stream, then the stream
    is a plain ``Stream`` again; a refusal surfaces there as NegotiationError
    (and the stream is reset).
    """

    __slots__ = ()  # the same layout as Stream, so a stream can switch classes
    def _dialer(self) -> MultistreamDialer:
        # Nothing is kept per idle stream but its class: the dialer is made here,
        # for ``protocol`` (set when it was proposed).
        assert self.protocol is not None
        ms = MultistreamDialer([self.protocol], lazy=True)
        ms.data_to_send()  # the proposal went out when the stream was opened
        return ms

    def _settled_by(self, data: bytes) -> bool:
        """The usual answer (the header and our proposal echoed) at the start of
        ``data``: the stream becomes a plain one, the rest stays buffered."""
        assert self.protocol is not None
        answer = first_flight(self.protocol)
        if not data.startswith(answer):
            return False
        self.__class__ = Stream  # type: ignore[assignment]  # from here on an ordinary stream
        self.unread(data[len(answer):])
        return True

    async def _settle(self) -> None:
        data = Stream.read_nowait(self, 4096) or await Stream.read(self, 4096)
        if self._settled_by(data):
            return
        # Anything else (a refusal, a split answer, the end of the stream): the
        # full machine, from the same bytes.
        ms = self._dialer()
        self.__class__ = Stream  # type: ignore[assignment]
        try:
            if data:
                ms.receive_data(data)
            await _drive(self, ms)
        except NegotiationError:
            self.reset(StreamErrorCode.PROTOCOL)
            raise

    def _settle_now(self) -> bool:
        # _settle from what is already buffered; False when the answer is not all there
        data = Stream.read_nowait(self, 4096)
        if not data:
            return False
        if self._settled_by(data):
            return True
        ms = self._dialer()
        try:
            ms.receive_data(data)
        except NegotiationError:
            self.reset(StreamErrorCode.PROTOCOL)
            raise
        if not ms.done:
            self.unread(data)  # back in front, for the read that waits
            return False
        self.__class__ = Stream  # type: ignore[assignment]
        self.unread(ms.unused_data())
        return True

    def read_nowait(self, max_bytes: int) -> bytes:
        # the listener's answer comes first: never hand it to the caller
        if not self._settle_now():
            return b""
        return Stream.read_nowait(self, max_bytes)

    async def read(self, max_bytes: int | None = -1) -> bytes:
        await self._settle()
        return await Stream.read(self, max_bytes)

    async def readinto(self, buf: Any) -> int:
        await self._settle()
        return await Stream.readinto(self, buf)

    async def readexactly(self, n: int) -> bytes:
        await self._settle()
        return await Stream.readexactly(self, n)

    read_exactly = readexactly


def _now_lazy(stream: Stream, protocol: str) -> None:
    stream.protocol = protocol
    stream.__class__ = _LazyStream


def propose_now(stream: Stream, protocol: str) -> bool:
    """The synchronous part of :func:`negotiate_lazy`: True once the proposal is
    handed to the muxer (nothing awaited, so no timer is needed around it);
    False when the stream's send window could not take it all at once (the
    caller then awaits :func:`negotiate_lazy`)."""
    out = first_flight(protocol)
    n = stream.write_nowait(out)
    if n == 0:
        return False
    if n != len(out):
        # A fresh stream's window always takes a proposal whole; a driver whose
        # window took part of it gets a typed failure (the caller resets the stream).
        raise NegotiationError("the stream's send window took only part of the protocol proposal")
    _now_lazy(stream, protocol)
    return True


async def negotiate_lazy(stream: Stream, protocol: str) -> str:
    """Propose ``protocol`` and return at once, without waiting for the answer.

    For a protocol the peer is known to support (its identify listed it), as
    go-libp2p does: the header, the proposal and the caller's first data leave
    together, saving a round trip. The listener's answer is consumed by the
    first read; a listener that refuses after all resets the stream (it reads
    our data as a malformed proposal) or answers ``na``, and that read raises.
    """
    await stream.write(first_flight(protocol))
    _now_lazy(stream, protocol)
    return protocol


async def negotiate_inbound(
    stream: Stream,
    supported: Callable[[str], bool] | Collection[str],
    *,
    timeout: float | None = None,
) -> str:
    """Answer the peer's proposals on an inbound stream; returns the chosen protocol.

    ``timeout`` bounds the wait for the peer's proposals (TimeoutError). A
    proposal that came with the stream's opening frame (a lazy dialer's, the
    usual case) is answered at once: no task switch and no timer.
    """
    data = stream.read_nowait(4096)
    if data:
        accept = supported if callable(supported) else supported.__contains__
        hit = select_first_flight(data, accept)
        if hit is not None:
            # The usual case (a lazy dialer's header and proposal, accepted): the
            # answer is the same two lines, made once per protocol.
            proto, used = hit
            stream.unread(data[used:])
            answer = first_flight(proto)
            n = stream.write_nowait(answer)
            if n < len(answer):
                async with asyncio.timeout(timeout):
                    await stream.write(answer[n:])
            return proto
    # Anything else: the full machine, from the same bytes.
    ms = MultistreamListener(supported)
    pending = _answer_now(stream, ms, data) if data else None
    if pending is not None and not pending and ms.done:
        stream.unread(ms.unused_data())
        assert ms.selected is not None
        return ms.selected
    async with asyncio.timeout(timeout):
        await _drive(stream, ms, pending or b"")
    assert ms.selected is not None
    return ms.selected


def _answer_now(stream: Stream, ms: MultistreamDialer | MultistreamListener, data: bytes) -> bytes:
    """Feed ``ms`` ``data`` (what was buffered) and send its answers without waiting.

    Returns the output the send window did not take (b"" when all went).
    """
    ms.receive_data(data)
    out = ms.data_to_send()
    if out:
        return out[stream.write_nowait(out):]
    return b""


async def _drive(stream: Stream, ms: MultistreamDialer | MultistreamListener, pending: bytes = b"") -> None:
    out = pending + ms.data_to_send()
    if out:
        await stream.write(out)
    while not ms.done:
        data = stream.read_nowait(4096) or await stream.read(4096)
        if not data:
            raise NegotiationError("stream closed during protocol negotiation")
        ms.receive_data(data)
        out = ms.data_to_send()
        if out:
            await stream.write(out)
    stream.unread(ms.unused_data())
