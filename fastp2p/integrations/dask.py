"""A Dask ``distributed`` comm backend over fastp2p: the ``fastp2p://`` scheme.

Install with ``pip install fastp2p[dask]``; the backend is registered through the
``distributed.comm.backends`` entry point, so ``dask scheduler --protocol fastp2p``
and ``Client("fastp2p:///ip4/10.0.0.5/tcp/8786/p2p/12D3KooW...")`` work with
nothing imported by hand.

Addresses are ``fastp2p://<multiaddr>``; the ``/p2p/<PeerId>`` part names the
peer, and a connector refuses any other peer (the Noise handshake
authenticates it). A listener also accepts Dask's usual ``host:port`` form
(``fastp2p://:8786``, ``fastp2p://0.0.0.0``) and turns it into a multiaddr.

One fastp2p :class:`~fastp2p.Host` per event loop (a Dask process runs one
loop, so one Host per process) is shared by the listeners and connectors
running on that loop; each Dask comm is one fastp2p stream on the (single,
reused) connection to the peer. Same-host peers get the shared-memory data
path through the normal in-band upgrade; ``comm.extra_info["data_path"]`` says
which path carries a comm.

Wire format of one Dask message on the stream: ``u64 n`` (little endian), ``n``
``u64`` frame lengths, then the frames' bytes. Large frames are written from
their own buffers (no Python copy) and read with ``readinto`` into buffers
allocated for them, as ``distributed.comm.tcp`` does.

Configuration (dask config, or ``DASK_DISTRIBUTED__COMM__FASTP2P__...`` env vars):

``distributed.comm.fastp2p.data-paths``
    data paths in order of preference, e.g. ``["tcp"]`` to never upgrade
    (default: fastp2p's own ``HostConfig.data_paths``).
``distributed.comm.fastp2p.identity``
    path of a private-key file; the process keeps that PeerId across restarts
    (created when missing). Default: a fresh key per process.
``distributed.comm.fastp2p.busy-poll-us``
    ``HostConfig.busy_poll_us``: poll the event loop for up to this many
    microseconds while a read waits (lower latency for a busy core). Default 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import struct
from collections.abc import Callable
from typing import Any

import dask
from dask.utils import parse_bytes
from distributed.comm.core import (
    BaseListener,
    Comm,
    CommClosedError,
    Connector,
    FatalCommClosedError,
)
from distributed.comm.registry import Backend
from distributed.comm.utils import ensure_concrete_host, from_frames, to_frames
from distributed.protocol.utils import host_array
from distributed.utils import ensure_ip, ensure_memoryview, get_ip

from fastp2p.config import HostConfig
from fastp2p.errors import P2PError, PeerIDMismatchError, SecurityError
from fastp2p.host import Host
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.stream import Stream

__all__ = ["FastP2PBackend", "FastP2PComm", "FastP2PConnector", "FastP2PListener", "close_hosts"]

log = logging.getLogger("fastp2p.dask")

SCHEME = "fastp2p"
PREFIX = SCHEME + "://"
#: protocol ids are PROTOCOL_PREFIX + "<listener port>" (selects the listener when
#: several Dask listeners share one Host)
PROTOCOL_PREFIX = "/fastp2p/dask/1.0.0/"

_U64 = struct.Struct("<Q")
#: messages smaller than this are joined into one write (as distributed's tcp comm)
_JOIN_TOTAL = 1 << 17
_JOIN_MEAN = 1 << 15
_JOIN_MAX = 1 << 25
#: frames read into one shared buffer when their total is below this
_READ_JOIN = 1 << 16
#: most frames one message may announce (a garbled header must not allocate wildly)
_MAX_FRAMES = 1 << 20


# -- the per-loop host ------------------------------------------------------------


class _HostState:
    """The Host of one event loop and the Dask listeners it serves."""

    def __init__(self, host: Host, loop: asyncio.AbstractEventLoop) -> None:
        self.host = host
        self.loop = loop
        self.listeners: dict[int, FastP2PListener] = {}
        self._self_dialer: asyncio.Future[Host] | None = None
        host.set_handler(PROTOCOL_PREFIX, self._on_stream, match=lambda p: p.startswith(PROTOCOL_PREFIX))

    async def dialer_for(self, expected: PeerID | None, ma: Multiaddr | None) -> Host:
        """The Host that dials ``ma``: ours, or for our own listeners a second
        Host on this loop (a libp2p host does not dial itself)."""
        is_self = expected == self.host.peer_id
        if expected is None and ma is not None and "tcp" in ma.protocols():
            is_self = ma.tcp_host_port()[1] in self.listeners
        if not is_self:
            return self.host
        if self._self_dialer is None:
            self._self_dialer = self.loop.create_future()
            try:
                h = Host(config=self.host.config)
                await h.start()
            except BaseException as exc:
                fut, self._self_dialer = self._self_dialer, None
                fut.set_exception(exc)
                fut.exception()
                raise
            self._self_dialer.set_result(h)
        return await asyncio.shield(self._self_dialer)

    async def aclose(self) -> None:
        if self._self_dialer is not None and self._self_dialer.done() and not self._self_dialer.exception():
            await self._self_dialer.result().aclose()
        await self.host.aclose()

    async def _on_stream(self, stream: Stream) -> None:
        proto = stream.protocol or ""
        try:
            port = int(proto[len(PROTOCOL_PREFIX):])
        except ValueError:
            port = -1
        lst = self.listeners.get(port)
        if lst is None and len(self.listeners) == 1:
            # A peer that reached us through a port mapping names another port.
            lst = next(iter(self.listeners.values()))
        if lst is None:
            stream.reset()
            return
        await lst._handle_stream(stream)


_states: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Future[_HostState]]] = {}


def _host_config() -> HostConfig:
    paths = dask.config.get("distributed.comm.fastp2p.data-paths", None)
    busy_poll_us = int(dask.config.get("distributed.comm.fastp2p.busy-poll-us", 0) or 0)
    if paths is None:
        return HostConfig(busy_poll_us=busy_poll_us)
    if isinstance(paths, str):
        paths = [p.strip() for p in paths.split(",") if p.strip()]
    return HostConfig(data_paths=tuple(paths), busy_poll_us=busy_poll_us)


def _identity() -> Ed25519PrivateKey | None:
    path = dask.config.get("distributed.comm.fastp2p.identity", None)
    if not path:
        return None
    path = os.path.expanduser(str(path))
    if os.path.exists(path):
        return Ed25519PrivateKey.load(path)
    key = Ed25519PrivateKey.generate()
    key.save(path)
    return key


async def _state() -> _HostState:
    """The Host of the running loop, created and started on first use."""
    loop = asyncio.get_running_loop()
    for k, (lp, _) in list(_states.items()):
        if lp.is_closed():
            del _states[k]  # a loop that ended without close_hosts()
    entry = _states.get(id(loop))
    if entry is not None and entry[0] is loop:
        return await asyncio.shield(entry[1])
    fut: asyncio.Future[_HostState] = loop.create_future()
    _states[id(loop)] = (loop, fut)
    try:
        host = Host(_identity(), config=_host_config())
        await host.start()
        st = _HostState(host, loop)
    except BaseException as exc:
        del _states[id(loop)]
        fut.set_exception(exc)
        fut.exception()  # retrieved: nobody else may be waiting
        raise
    fut.set_result(st)
    log.debug("fastp2p host %s started for Dask on %r", host.peer_id, loop)
    return st


async def close_hosts() -> None:
    """Close the Host of the running loop (tests; a process's Host lives until it exits)."""
    loop = asyncio.get_running_loop()
    entry = _states.pop(id(loop), None)
    if entry is None or entry[0] is not loop:
        return
    st = await entry[1]
    await st.aclose()


def local_host() -> Host | None:
    """The fastp2p Host of the running loop, if one was created."""
    with contextlib.suppress(RuntimeError):
        entry = _states.get(id(asyncio.get_running_loop()))
        if entry is not None and entry[1].done() and not entry[1].exception():
            return entry[1].result().host
    return None


# -- addresses -----------------------------------------------------------------------


def _multiaddr(loc: str) -> Multiaddr:
    try:
        return Multiaddr(loc)
    except Exception as exc:
        raise ValueError(f"not a fastp2p address (want fastp2p://<multiaddr>): {loc!r}: {exc}") from exc


def _listen_multiaddr(loc: str, default_port: int = 0) -> Multiaddr:
    """``/ip4/...`` as is; Dask's ``host[:port]`` / ``""`` forms as a TCP multiaddr."""
    if loc.startswith("/"):
        ma = _multiaddr(loc)
        if ma.peer_id() is not None:
            ma = ma.without_peer_id()
        return ma
    from distributed.comm.addressing import parse_host_port

    host, port = parse_host_port(loc, default_port) if loc and loc != ":" else ("", default_port)
    if loc.startswith(":"):
        host, port = "", int(loc[1:] or default_port)
    return Multiaddr.from_host_port(host or "0.0.0.0", int(port))


def _host_port(loc: str) -> tuple[str, int]:
    return _multiaddr(loc).tcp_host_port()


# -- the comm ----------------------------------------------------------------------------


def _closed_error(comm: FastP2PComm, exc: BaseException | None) -> CommClosedError:
    reason = f": {exc}" if exc is not None else ""
    return CommClosedError(f"in {comm!r}{reason}")


class FastP2PComm(Comm):
    """One Dask comm: one fastp2p stream."""

    def __init__(
        self,
        stream: Stream,
        local_addr: str,
        peer_addr: str,
        deserialize: bool = True,
    ) -> None:
        super().__init__(deserialize=deserialize)
        self._stream: Stream | None = stream
        self._local_addr = local_addr
        self._peer_addr = peer_addr
        self._closed = False
        self._closed_event = asyncio.Event()
        self._write_lock = asyncio.Lock()
        self.max_shard_size = parse_bytes(dask.config.get("distributed.comm.shard"))
        conn = stream.conn
        self._extra: dict[str, Any] = {
            "data_path": conn.data_path,
            "data_path_reason": conn.data_path_reason,
            "peer_id": str(conn.remote_peer),
            "muxer": conn.muxer,
            "protocol": stream.protocol,
        }
        log.debug("dask comm %s -> %s on the %s data path", local_addr, peer_addr, conn.data_path,
                  extra=conn.log_extra)

    @property
    def local_address(self) -> str:
        return self._local_addr

    @property
    def peer_address(self) -> str:
        return self._peer_addr

    @property
    def extra_info(self) -> dict[str, Any]:
        s = self._stream
        if s is not None:  # the data path may have changed (upgrade, fallback)
            self._extra["data_path"] = s.conn.data_path
            self._extra["data_path_reason"] = s.conn.data_path_reason
        return self._extra

    def closed(self) -> bool:
        return self._closed

    def _mark_closed(self) -> None:
        self._closed = True
        self._closed_event.set()

    async def _readinto(self, stream: Stream, view: memoryview) -> None:
        got = 0
        n = len(view)
        while got < n:
            k = await stream.readinto(view[got:] if got else view)
            if k == 0:
                raise EOFError("stream ended in the middle of a message" if got else "end of stream")
            got += k

    async def read(self, deserializers: Any = None) -> Any:
        stream = self._stream
        if stream is None or self._closed:
            raise CommClosedError(f"{self!r} is closed")
        try:
            head = bytearray(8)
            await self._readinto(stream, memoryview(head))
            (n,) = _U64.unpack(head)
            if n > _MAX_FRAMES:
                raise EOFError(f"garbled message header ({n} frames)")
            sizes_buf = bytearray(8 * n)
            if n:
                await self._readinto(stream, memoryview(sizes_buf))
            sizes = struct.unpack(f"<{n}Q", sizes_buf)
            total = sum(sizes)
            frames: list[Any] = []
            if total <= _READ_JOIN:
                buf = memoryview(bytearray(total))
                if total:
                    await self._readinto(stream, buf)
                off = 0
                for s in sizes:
                    frames.append(buf[off : off + s])
                    off += s
            else:
                for s in sizes:
                    fb = host_array(s)
                    if s:
                        await self._readinto(stream, fb)
                    frames.append(fb)
        except EOFError as exc:
            self._abort_stream()
            raise _closed_error(self, exc) from None
        except (P2PError, OSError) as exc:
            self._abort_stream()
            raise _closed_error(self, exc) from exc
        except BaseException:
            # Cancelled mid-message (or worse): the stream position is unknown.
            self.abort()
            raise
        try:
            return await from_frames(
                frames,
                deserialize=self.deserialize,
                deserializers=deserializers,
                allow_offload=self.allow_offload,
            )
        except EOFError:
            self.abort()
            raise CommClosedError("aborted stream on truncated data") from None

    async def write(self, msg: Any, serializers: Any = None, on_error: str | None = "message") -> int:
        stream = self._stream
        if stream is None or self._closed:
            raise CommClosedError(f"{self!r} is closed")
        frames = await to_frames(
            msg,
            allow_offload=self.allow_offload,
            serializers=serializers,
            on_error=on_error,
            context={
                "sender": self.local_info,
                "recipient": self.remote_info,
                **self.handshake_options,
            },
            frame_split_size=self.max_shard_size,
        )
        views = [ensure_memoryview(f) for f in frames]
        sizes = [v.nbytes for v in views]
        header = struct.pack(f"<Q{len(sizes)}Q", len(sizes), *sizes)
        total = sum(sizes)
        nbufs = len(views) + 1
        async with self._write_lock:
            stream = self._stream
            if stream is None or self._closed:
                raise CommClosedError(f"{self!r} is closed")
            try:
                if total + len(header) < _JOIN_TOTAL or (
                    total < _JOIN_MAX and total // nbufs < _JOIN_MEAN
                ):
                    await stream.write(b"".join([header, *views]))
                else:
                    await stream.write(header)
                    for v in views:
                        if v.nbytes:
                            await stream.write(v)
            except (P2PError, OSError) as exc:
                self._abort_stream()
                raise _closed_error(self, exc) from exc
            except BaseException:
                self.abort()
                raise
        return total + len(header)

    def _abort_stream(self) -> None:
        stream, self._stream = self._stream, None
        self._mark_closed()
        if stream is not None:
            stream.reset()
            # aclose of a reset stream only releases it (nothing to await on the wire)
            stream.conn.loop.create_task(stream.aclose())

    async def close(self) -> None:
        """Close: every byte written so far reaches the peer, then the stream is reset
        (the peer's reads end with ``CommClosedError`` after the data, its writes fail)."""
        stream, self._stream = self._stream, None
        self._mark_closed()
        if stream is not None:
            async with self._write_lock:  # let a write in progress finish queueing
                stream.reset()
                with contextlib.suppress(P2PError):
                    await stream.aclose()

    def abort(self) -> None:
        self._abort_stream()

    async def _wait_closed(self) -> None:
        await self._closed_event.wait()


# -- connector / listener --------------------------------------------------------------


class FastP2PConnector(Connector):
    async def connect(self, address: str, deserialize: bool = True, **connection_args: Any) -> FastP2PComm:
        ma = _multiaddr(address)
        expected = ma.peer_id()
        st = await _state()
        host = await st.dialer_for(expected, ma)
        port = ma.tcp_host_port()[1] if "tcp" in ma.protocols() else 0
        try:
            peer = await host.connect(ma)
            stream = await host.open_stream(peer, f"{PROTOCOL_PREFIX}{port}")
        except PeerIDMismatchError as exc:
            raise FatalCommClosedError(
                f"fastp2p: the peer at {address} is {exc.actual}, not {expected} named in the "
                "address; refusing to talk to it"
            ) from exc
        except SecurityError as exc:
            raise FatalCommClosedError(f"fastp2p: could not authenticate {address}: {exc}") from exc
        except (P2PError, OSError) as exc:
            raise CommClosedError(f"fastp2p: could not connect to {address}: {exc}") from exc
        conn = stream.conn
        local = conn.local_addr
        local_loc = str(local.with_peer_id(host.peer_id)) if local is not None else f"/p2p/{host.peer_id}"
        peer_loc = address if expected is not None else str(ma.with_peer_id(peer))
        return FastP2PComm(stream, PREFIX + local_loc, PREFIX + peer_loc, deserialize)


class FastP2PListener(BaseListener):
    prefix = PREFIX

    def __init__(
        self,
        address: str,
        comm_handler: Callable[[Comm], Any],
        deserialize: bool = True,
        allow_offload: bool = True,
        default_host: str | None = None,
        default_port: int = 0,
        **connection_args: Any,
    ) -> None:
        super().__init__()
        self._addr = _listen_multiaddr(address, default_port)
        self.default_host = default_host
        self.comm_handler = comm_handler
        self.deserialize = deserialize
        self.allow_offload = allow_offload
        self._state: _HostState | None = None
        self._tcp: Any = None
        self._bound: Multiaddr | None = None
        self._port = -1

    async def start(self) -> None:
        st = await _state()
        host = st.host
        lst = await host.listen(self._addr)
        self._tcp = lst
        self._bound = lst.addrs[0]
        self._port = self._bound.tcp_host_port()[1]
        self._state = st
        st.listeners[self._port] = self
        log.info("Dask fastp2p listener on %s", self.contact_address)

    def stop(self) -> Any:
        st, self._state = self._state, None
        lst, self._tcp = self._tcp, None
        if st is None or lst is None:
            return None
        if st.listeners.get(self._port) is self:
            del st.listeners[self._port]
        return asyncio.ensure_future(st.host.stop_listening(lst))

    def _check_started(self) -> Multiaddr:
        if self._bound is None or self._tcp is None:
            raise ValueError("invalid operation on a fastp2p listener that is not started")
        return self._bound

    @property
    def peer_id(self) -> PeerID:
        """The PeerId of the Host this listener serves."""
        st = self._state
        if st is None:
            raise ValueError("listener is not started")
        return st.host.peer_id

    def get_host_port(self) -> tuple[str, int]:
        return self._check_started().tcp_host_port()

    @property
    def listen_address(self) -> str:
        bound = self._check_started()
        return PREFIX + str(bound.with_peer_id(self.peer_id))

    @property
    def contact_address(self) -> str:
        bound = self._check_started()
        host, port = bound.tcp_host_port()
        concrete = ensure_concrete_host(host, default_host=self.default_host)
        if concrete != host:
            bound = Multiaddr.from_host_port(concrete, port)
        return PREFIX + str(bound.with_peer_id(self.peer_id))

    async def _handle_stream(self, stream: Stream) -> None:
        st = self._state
        if st is None:
            stream.reset()
            return
        conn = stream.conn
        ra = conn.remote_addr
        peer_loc = str(ra.with_peer_id(conn.remote_peer)) if ra is not None else f"/p2p/{conn.remote_peer}"
        comm = FastP2PComm(stream, self.contact_address, PREFIX + peer_loc, self.deserialize)
        comm.allow_offload = self.allow_offload
        try:
            await self.on_connection(comm)
        except CommClosedError:
            log.info("Connection from %s closed before handshake completed", peer_loc)
            comm.abort()
            return
        except BaseException:
            comm.abort()
            raise
        try:
            await self.comm_handler(comm)
            # The host resets the stream when this handler returns: keep it while
            # Dask still uses the comm.
            await comm._wait_closed()
        except asyncio.CancelledError:
            comm.abort()
            raise


class FastP2PBackend(Backend):
    """``distributed.comm.backends`` entry for the ``fastp2p`` scheme."""

    def get_connector(self) -> FastP2PConnector:
        return FastP2PConnector()

    def get_listener(
        self, loc: str, handle_comm: Callable[[Comm], Any], deserialize: bool, **connection_args: Any
    ) -> FastP2PListener:
        return FastP2PListener(loc, handle_comm, deserialize, **connection_args)

    def get_address_host(self, loc: str) -> str:
        if not loc.startswith("/"):
            return _listen_multiaddr(loc).tcp_host_port()[0]
        return _host_port(loc)[0]

    def get_address_host_port(self, loc: str) -> tuple[str, int]:
        if not loc.startswith("/"):
            return _listen_multiaddr(loc).tcp_host_port()
        return _host_port(loc)

    def resolve_address(self, loc: str) -> str:
        if not loc.startswith("/"):
            return loc
        ma = _multiaddr(loc)
        protos = ma.protocols()
        if protos and protos[0] in ("dns", "dns4", "dns6") and "tcp" in protos:
            host, port = ma.tcp_host_port()
            out = Multiaddr.from_host_port(ensure_ip(host), port)
            pid = ma.peer_id()
            return str(out.with_peer_id(pid) if pid is not None else out)
        return loc

    def get_local_address_for(self, loc: str) -> str:
        host = ensure_ip(self.get_address_host(loc))
        local = get_ip(host)
        return str(Multiaddr.from_host_port(local, 0))
