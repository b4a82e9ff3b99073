"""A fastp2p pubsub peer speaking the bench's JSON-lines protocol (see ``pubsub.py``).

The js-libp2p and py-libp2p peers (``tests/interop/js/pubsub_peer.mjs``,
``tests/interop/py_pubsub_peer.py``) speak the same protocol, so the bench
drives all three the same way, one process per peer.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from dataclasses import replace
from typing import Any


def emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, **fields}) + "\n")
    sys.stdout.flush()


def _pct(s: list[float], f: float) -> float | None:
    return s[min(len(s) - 1, int(f * len(s)))] if s else None


async def main(args: argparse.Namespace) -> int:
    from fastp2p.config import GossipsubConfig, HostConfig
    from fastp2p.host import Host
    from fastp2p.transport.upgrader import MPLEX_PROTOCOL_ID, YAMUX_PROTOCOL_ID

    muxer = YAMUX_PROTOCOL_ID if args.muxer == "yamux" else MPLEX_PROTOCOL_ID
    pubsub = replace(GossipsubConfig(), subscription_queue_size=1 << 20, peer_queue_size=1 << 20)
    config = HostConfig(muxers=(muxer,), data_paths=("tcp",), pubsub=pubsub)
    state: dict[str, Any] = {"quiet": False, "received": 0, "first": None, "last": None, "lats": []}
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=config) as host:
        tasks: set[asyncio.Task[None]] = set()

        async def reader(topic: str) -> None:
            sub = await host.pubsub.subscribe(topic)
            async for msg in sub:
                now = time.time() * 1000
                state["received"] += 1
                if state["quiet"]:
                    try:
                        state["lats"].append(now - float(msg.data[:32].split(b";")[0]))
                    except ValueError:
                        pass
                    if state["first"] is None:
                        state["first"] = now
                    state["last"] = now
                    continue
                emit("message", topic=msg.topic, **{"from": str(msg.from_peer)}, seqno=str(msg.seqno),
                     data=msg.data.decode("utf-8", errors="replace"), recv_ms=now)

        def start(coro: Any) -> None:
            t = asyncio.create_task(coro)
            tasks.add(t)
            t.add_done_callback(tasks.discard)

        for t in args.topic:
            start(reader(t))
        await asyncio.sleep(0)
        emit("listening", addrs=[str(a) for a in host.full_addrs], peer_id=str(host.peer_id))
        for a in args.dial:
            await host.connect(a)
            emit("connected", addr=a)
        loop = asyncio.get_running_loop()
        rd = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(rd), sys.stdin)
        while line := await rd.readline():
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            c = cmd.get("cmd")
            if c == "subscribe":
                start(reader(cmd["topic"]))
            elif c == "publish":
                await host.pubsub.publish(cmd["topic"], cmd["data"].encode())
                emit("published", id=cmd.get("id"))
            elif c == "wait_peers":
                async def wait(topic: str, n: int) -> None:
                    peers = await host.pubsub.wait_for_peers(topic, n)
                    emit("peers", topic=topic, n=len(peers))
                start(wait(cmd["topic"], int(cmd.get("n", 1))))
            elif c == "dial":
                await host.connect(cmd["addr"])
                emit("connected", addr=cmd["addr"])
            elif c == "quiet":
                state.update(quiet=True, received=0, first=None, last=None, lats=[])
                emit("quiet")
            elif c == "bench_publish":
                t0 = time.time() * 1000
                size = int(cmd["size"])
                pad = b"x" * size
                for i in range(int(cmd["n"])):
                    head = b"%.3f;" % (time.time() * 1000)
                    await host.pubsub.publish(cmd["topic"], (head + pad)[:size])
                    if i % 16 == 15:
                        await asyncio.sleep(0)  # let the writers run, as an awaited send would
                await host.pubsub.flush()
                emit("bench_published", n=cmd["n"], start_ms=t0, end_ms=time.time() * 1000)
            elif c == "stats":
                lats = sorted(state["lats"])
                emit("stats", received=state["received"], first_ms=state["first"], last_ms=state["last"],
                     p50_ms=_pct(lats, 0.5), p99_ms=_pct(lats, 0.99))
            elif c == "count":
                emit("count", received=state["received"])
            elif c == "exit":
                break
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--muxer", choices=("yamux", "mplex"), default="yamux")
    p.add_argument("--topic", action="append", default=[])
    p.add_argument("--dial", action="append", default=[])
    ns = p.parse_args()
    try:
        import uvloop

        runner = asyncio.Runner(loop_factory=uvloop.new_event_loop)
    except ImportError:
        runner = asyncio.Runner()
    with runner:
        sys.exit(runner.run(main(ns)))
