#!/usr/bin/env python3
"""py-libp2p (0.8.1) reference peer for fastp2p interop tests.

Run it with the interop venv's interpreter (``.venv-interop/bin/python``, made by
``ci/setup_interop.sh``), never with the project's own environment.

    py_peer.py --listen [--muxer yamux|mplex]
    py_peer.py --dial /ip4/127.0.0.1/tcp/PORT/p2p/PEER [--muxer yamux|mplex] [--pings N]
               [--echo-mode auto|duplex|lockstep] [--linger SECONDS] [--timeout SECONDS]

Security is forced to Noise only; exactly one muxer is offered. Serves ``/echo/1.0.0``
(echo until EOF, then close); ping and identify are the library's defaults.

Known py-libp2p 0.8.1 limitation: an mplex stream cannot be read and written at the same
time (MplexStream takes one ReadWriteLock for both; a reader parked in read() blocks
every write), so a duplex echo over mplex deadlocks until the 5 s receive timeout resets
the stream. As a dialer over mplex this peer therefore echoes in lock-step (write 64 KiB,
read it back); ``--echo-mode duplex`` reproduces the deadlock.

Stdout carries JSON lines only (the library's own output is moved to stderr):

    {"event":"listening","addrs":[".../p2p/<id>"],"peer_id":"<id>"}      always first
    {"event":"connected","peer_id":...}                                   dialer
    {"event":"ping","rtt_ms":...}                                         dialer, N times
    {"event":"identify","peer_id":...,"agent_version":...,"protocol_version":...,
     "protocols":[...],"listen_addrs":[...]}                              both sides
    {"event":"echo","ok":true,"sha256":...,"bytes":...}                   dialer
    {"event":"echo_served","peer_id":...,"bytes":...,"sha256":...}        listener
    {"event":"done"}                                                      dialer, exit 0
    {"event":"error","msg":...}                                           exit 1
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import secrets
import sys
import time
import traceback

# Keep stdout for our JSON lines only: anything the library prints goes to stderr.
_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

import multiaddr  # noqa: E402
import trio  # noqa: E402
from libp2p import (  # noqa: E402
    MPLEX_PROTOCOL_ID,
    NOISE_PROTOCOL_ID,
    YAMUX_PROTOCOL_ID,
    Mplex,
    NoiseTransport,
    Yamux,
    create_new_ed25519_key_pair,
    create_new_x25519_key_pair,
    new_host,
)
from libp2p.abc import INotifee  # noqa: E402
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.host.ping import PingService  # noqa: E402
from libp2p.identity.identify.identify import ID as IDENTIFY_ID  # noqa: E402
from libp2p.identity.identify.pb.identify_pb2 import Identify  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.utils.varint import read_length_prefixed_protobuf  # noqa: E402

ECHO = TProtocol("/echo/1.0.0")
ECHO_SIZE = 1024 * 1024
CHUNK = 64 * 1024


def emit(event: str, **fields: object) -> None:
    _OUT.write(json.dumps({"event": event, **fields}) + "\n")
    _OUT.flush()


def _addr_str(raw: bytes) -> str:
    try:
        return str(multiaddr.Multiaddr(raw))
    except Exception:
        return raw.hex()


async def _read_some(stream, n: int = CHUNK) -> bytes:
    """Read up to n bytes; b"" at EOF (py-libp2p raises StreamEOF or returns b"")."""
    from libp2p.network.stream.exceptions import StreamEOF

    try:
        return await stream.read(n)
    except StreamEOF:
        return b""


async def identify_remote(host, peer_id) -> None:
    """Run our own identify request so every field (agent_version too) is seen."""
    stream = await host.new_stream(peer_id, [IDENTIFY_ID])
    try:
        with trio.fail_after(10):
            data = await read_length_prefixed_protobuf(stream, use_varint_format=True)
    finally:
        try:
            await stream.close()
        except Exception:
            pass
    msg = Identify()
    msg.ParseFromString(data)
    emit(
        "identify",
        peer_id=str(peer_id),
        agent_version=msg.agent_version,
        protocol_version=msg.protocol_version,
        protocols=list(msg.protocols),
        listen_addrs=[_addr_str(a) for a in msg.listen_addrs],
        observed_addr=_addr_str(msg.observed_addr) if msg.observed_addr else None,
    )


async def echo_handler(stream) -> None:
    peer = stream.muxed_conn.peer_id
    h = hashlib.sha256()
    total = 0
    try:
        while True:
            chunk = await _read_some(stream)
            if not chunk:
                break
            h.update(chunk)
            total += len(chunk)
            await stream.write(chunk)
        await stream.close()
        emit("echo_served", peer_id=str(peer), bytes=total, sha256=h.hexdigest())
    except Exception as exc:  # a handler must not kill the host
        emit("echo_served_error", peer_id=str(peer), bytes=total, msg=repr(exc))
        try:
            await stream.reset()
        except Exception:
            pass


async def do_echo(host, peer_id, mode: str) -> None:
    payload = secrets.token_bytes(ECHO_SIZE)
    want = hashlib.sha256(payload).hexdigest()
    stream = await host.new_stream(peer_id, [ECHO])
    received = bytearray()

    async def writer() -> None:
        view = memoryview(payload)
        for off in range(0, len(payload), CHUNK):
            await stream.write(bytes(view[off : off + CHUNK]))
        await stream.close_write()

    async def reader() -> None:
        while True:
            chunk = await _read_some(stream)
            if not chunk:
                return
            received.extend(chunk)

    async def lockstep() -> None:
        # py-libp2p 0.8.1's MplexStream guards read() and write() with one
        # ReadWriteLock (readers exclude the writer), so a stream cannot be read and
        # written concurrently: a reader parked in read() blocks every write and a
        # duplex echo deadlocks (go-mplex-style 5 s receive timeout then resets it).
        # Send a chunk, read its echo back, repeat.
        view = memoryview(payload)
        for off in range(0, len(payload), CHUNK):
            chunk = bytes(view[off : off + CHUNK])
            await stream.write(chunk)
            want_len = len(received) + len(chunk)
            while len(received) < want_len:
                got = await _read_some(stream, want_len - len(received))
                if not got:
                    raise RuntimeError(f"echo stream EOF after {len(received)} bytes")
                received.extend(got)
        await stream.close_write()
        tail = await _read_some(stream)
        if tail:
            received.extend(tail)

    with trio.fail_after(60):
        if mode == "lockstep":
            await lockstep()
        else:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(writer)
                nursery.start_soon(reader)
    got = hashlib.sha256(received).hexdigest()
    try:
        await stream.close()
    except Exception:
        pass
    if got != want:
        raise RuntimeError(
            f"echo mismatch: sent {len(payload)} bytes sha256 {want}, got {len(received)} bytes sha256 {got}"
        )
    emit("echo", ok=True, sha256=got, bytes=len(received), mode=mode)


class _InboundNotifee(INotifee):
    """Hands every new connection to ``watch_inbound`` (the notifee must not block)."""

    def __init__(self, send) -> None:
        self._send = send

    async def connected(self, network, conn) -> None:
        try:
            self._send.send_nowait(conn)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            pass

    async def disconnected(self, network, conn) -> None:
        return None

    async def opened_stream(self, network, stream) -> None:
        return None

    async def closed_stream(self, network, stream) -> None:
        return None

    async def listen(self, network, multiaddr) -> None:
        return None

    async def listen_close(self, network, multiaddr) -> None:
        return None


async def watch_inbound(host, conns) -> None:
    """Listener: identify every peer as soon as its connection is up."""
    seen: set = set()
    async with trio.open_nursery() as nursery:
        async for conn in conns:
            peer = getattr(conn.muxed_conn, "peer_id", None)
            if peer is None or peer in seen:
                continue
            seen.add(peer)

            async def one(p=peer, c=conn) -> None:
                try:
                    started = getattr(c, "event_started", None)
                    if started is not None:
                        with trio.fail_after(10):
                            await started.wait()
                    # The host runs its own identify on connect; js-libp2p accepts one
                    # inbound identify stream at a time, so let that one finish first
                    # and retry a refused attempt.
                    inflight = getattr(host, "_identify_inflight", set())
                    with trio.move_on_after(5):
                        while p in inflight:
                            await trio.sleep(0.02)
                    for attempt in range(8):
                        try:
                            await identify_remote(host, p)
                            return
                        except Exception as exc:
                            if attempt == 7 or not host.get_network().get_connections(p):
                                raise
                            emit("identify_retry", peer_id=str(p), msg=repr(exc))
                            await trio.sleep(0.1 * (attempt + 1))
                except Exception as exc:
                    emit("identify_error", peer_id=str(p), msg=repr(exc))

            nursery.start_soon(one)


async def main(args: argparse.Namespace) -> int:
    key_pair = create_new_ed25519_key_pair()
    noise_key = create_new_x25519_key_pair()
    sec_opt = {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=noise_key.private_key)}
    if args.muxer == "yamux":
        muxer_opt = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    else:
        muxer_opt = {TProtocol(MPLEX_PROTOCOL_ID): Mplex}
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(key_pair=key_pair, sec_opt=sec_opt, muxer_opt=muxer_opt, listen_addrs=listen)
    host.set_stream_handler(ECHO, echo_handler)
    conn_send, conn_recv = trio.open_memory_channel(64)
    if args.listen:
        host.get_network().register_notifee(_InboundNotifee(conn_send))

    async with host.run(listen_addrs=listen):
        pid = host.get_id()
        addrs = []
        for a in host.get_addrs():
            s = str(a)
            if "/p2p/" not in s:
                s += f"/p2p/{pid}"
            addrs.append(s)
        emit("listening", addrs=addrs, peer_id=str(pid))

        if args.listen:
            await watch_inbound(host, conn_recv)  # until killed
            return 0

        info = info_from_p2p_addr(multiaddr.Multiaddr(args.dial))
        with trio.fail_after(args.timeout):
            t0 = time.monotonic()
            await host.connect(info)
            emit("connected", peer_id=str(info.peer_id), ms=round((time.monotonic() - t0) * 1e3, 3))
            ping = PingService(host)
            for _ in range(args.pings):
                t0 = time.monotonic()
                rtts = await ping.ping(info.peer_id, ping_amt=1)
                emit("ping", rtt_ms=round((time.monotonic() - t0) * 1e3, 3), lib_rtt_ms=rtts[0])
            await identify_remote(host, info.peer_id)
            mode = args.echo_mode
            if mode == "auto":
                mode = "lockstep" if args.muxer == "mplex" else "duplex"
            await do_echo(host, info.peer_id, mode)
        emit("done")
        # Stay connected a moment so the listener can finish identifying us.
        await trio.sleep(args.linger)
        return 0


def _flatten(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--listen", action="store_true")
    g.add_argument("--dial", metavar="MULTIADDR")
    p.add_argument("--muxer", choices=("yamux", "mplex"), default="yamux")
    p.add_argument("--pings", type=int, default=3)
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--linger", type=float, default=1.0, help="dialer: seconds to stay connected after done"
    )
    p.add_argument(
        "--echo-mode",
        choices=("auto", "duplex", "lockstep"),
        default="auto",
        help="duplex: write and read concurrently; lockstep: write a chunk, read it back "
        "(auto: lockstep for mplex, whose py-libp2p streams are half-duplex)",
    )
    a = p.parse_args()
    try:
        rc = trio.run(main, a)
    except KeyboardInterrupt:
        rc = 0
    except BaseException as e:  # noqa: BLE001
        e = _flatten(e)
        traceback.print_exception(e, file=sys.stderr)
        emit("error", msg=f"{type(e).__name__}: {e}")
        rc = 1
    _OUT.flush()
    os._exit(rc)
