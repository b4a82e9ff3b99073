"""py-libp2p (0.8.1) reference pubsub peer for fastp2p interop tests and the pubsub bench.

Run with the interop venv's interpreter (``.venv-interop/bin/python``)::

    py_pubsub_peer.py [--muxer yamux|mplex] [--topic T]... [--dial MA]...

Listens on 127.0.0.1 (TCP, Noise, one muxer) and runs py-libp2p's GossipSub
(meshsub 1.2/1.1/1.0, StrictSign, message id from+seqno as go/js). Its per-topic
rate limiter (``spam_protection_enabled``, 10 messages/s per forwarder by
default) is switched off: it would drop honest traffic in the mixed-mesh test
and the bench.

JSON lines, as ``js/pubsub_peer.mjs``:
  stdout: listening (first), message {topic, from, seqno, data, recv_ms},
          peers {topic, n}, published {id}, publish_error {id, msg},
          connected {addr}, count {received}, quiet, error {msg}
  stdin:  subscribe {topic}, publish {topic, data, id}, wait_peers {topic, n},
          dial {addr}, quiet, count, exit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback

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
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.pubsub.gossipsub import (  # noqa: E402
    PROTOCOL_ID,
    PROTOCOL_ID_V11,
    PROTOCOL_ID_V12,
    GossipSub,
)
from libp2p.pubsub.pubsub import Pubsub  # noqa: E402
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402


def emit(event: str, **fields: object) -> None:
    _OUT.write(json.dumps({"event": event, **fields}) + "\n")


class Peer:
    def __init__(self, host, pubsub) -> None:  # type: ignore[no-untyped-def]
        self.host = host
        self.pubsub = pubsub
        self.quiet = False
        self.received = 0
        self.first_ms: float | None = None
        self.last_ms: float | None = None
        self.lats: list[float] = []
        self.subscribed: set[str] = set()

    async def reader(self, sub) -> None:  # type: ignore[no-untyped-def]
        while True:
            msg = await sub.get()
            recv_ms = time.time() * 1000
            self.received += 1
            if self.quiet:
                # bench mode: payloads start with "<send time ms>;"
                try:
                    self.lats.append(recv_ms - float(msg.data[:32].split(b";")[0]))
                except ValueError:
                    pass
                if self.first_ms is None:
                    self.first_ms = recv_ms
                self.last_ms = recv_ms
                continue
            try:
                from_id = str(multiaddr_peer(msg.from_id))
            except Exception:
                from_id = None
            emit(
                "message",
                topic=msg.topicIDs[0] if msg.topicIDs else getattr(msg, "topic", None),
                **{"from": from_id},
                seqno=str(int.from_bytes(msg.seqno, "big")) if msg.seqno else None,
                data=msg.data.decode("utf-8", errors="replace"),
                recv_ms=recv_ms,
            )

    async def subscribe(self, nursery, topic: str) -> None:  # type: ignore[no-untyped-def]
        if topic in self.subscribed:
            return
        self.subscribed.add(topic)
        sub = await self.pubsub.subscribe(topic)
        nursery.start_soon(self.reader, sub)

    async def wait_peers(self, topic: str, n: int) -> None:
        while True:
            peers = self.pubsub.peer_topics.get(topic, ())
            if len(peers) >= n:
                emit("peers", topic=topic, n=len(peers))
                return
            await trio.sleep(0.05)


def multiaddr_peer(raw: bytes):  # type: ignore[no-untyped-def]
    from libp2p.peer.id import ID

    return ID(raw)


async def commands(peer: Peer, nursery) -> None:  # type: ignore[no-untyped-def]
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = b""
    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            nursery.cancel_scope.cancel()
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            c = cmd.get("cmd")
            if c == "subscribe":
                await peer.subscribe(nursery, cmd["topic"])
            elif c == "publish":
                try:
                    await peer.pubsub.publish(cmd["topic"], cmd["data"].encode())
                    emit("published", id=cmd.get("id"))
                except Exception as exc:
                    emit("publish_error", id=cmd.get("id"), msg=repr(exc))
            elif c == "wait_peers":
                nursery.start_soon(peer.wait_peers, cmd["topic"], int(cmd.get("n", 1)))
            elif c == "dial":
                await peer.host.connect(info_from_p2p_addr(multiaddr.Multiaddr(cmd["addr"])))
                emit("connected", addr=cmd["addr"])
            elif c == "quiet":
                peer.quiet = True
                peer.received = 0
                peer.first_ms = peer.last_ms = None
                peer.lats = []
                emit("quiet")
            elif c == "bench_publish":
                t0 = time.time() * 1000
                pad = b"x" * int(cmd["size"])
                for _ in range(int(cmd["n"])):
                    head = b"%.3f;" % (time.time() * 1000)
                    await peer.pubsub.publish(cmd["topic"], (head + pad)[: int(cmd["size"])])
                emit("bench_published", n=cmd["n"], start_ms=t0, end_ms=time.time() * 1000)
            elif c == "stats":
                s = sorted(peer.lats)

                def q(f: float, s: list[float] = s) -> float | None:
                    return s[min(len(s) - 1, int(f * len(s)))] if s else None

                emit("stats", received=peer.received, first_ms=peer.first_ms, last_ms=peer.last_ms,
                     p50_ms=q(0.5), p99_ms=q(0.99))
            elif c == "count":
                emit("count", received=peer.received)
            elif c == "exit":
                nursery.cancel_scope.cancel()
                return


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
    router = GossipSub(
        protocols=[PROTOCOL_ID_V12, PROTOCOL_ID_V11, PROTOCOL_ID],
        degree=6,
        degree_low=5,
        degree_high=12,
        heartbeat_interval=1,
        heartbeat_initial_delay=0.1,
        spam_protection_enabled=False,
    )
    pubsub = Pubsub(host, router, strict_signing=True)
    async with host.run(listen_addrs=listen), background_trio_service(pubsub), background_trio_service(router):
        await pubsub.wait_until_ready()
        pid = host.get_id()
        addrs = []
        for a in host.get_addrs():
            s = str(a)
            if "/p2p/" not in s:
                s += f"/p2p/{pid}"
            addrs.append(s)
        peer = Peer(host, pubsub)
        async with trio.open_nursery() as nursery:
            for t in args.topic:
                await peer.subscribe(nursery, t)
            emit("listening", addrs=addrs, peer_id=str(pid))
            for a in args.dial:
                await host.connect(info_from_p2p_addr(multiaddr.Multiaddr(a)))
                emit("connected", addr=a)
            nursery.start_soon(commands, peer, nursery)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--muxer", choices=("yamux", "mplex"), default="yamux")
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--dial", action="append", default=[])
    args = p.parse_args()
    try:
        rc = trio.run(main, args)
    except KeyboardInterrupt:
        rc = 130
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        emit("error", msg=f"{type(exc).__name__}: {exc}")
        rc = 1
    sys.exit(rc)
