"""``fastp2p pubsub sub|pub``: subscribe to or publish on a gossipsub topic from the shell.

``fastp2p pubsub sub TOPIC`` prints its listen multiaddr (with ``/p2p/``) as
the first stdout line, then one JSON line per message received::

    {"topic": "...", "from": "12D3KooW...", "seqno": 17, "data": "<UTF-8 text>"}

and exits 0 after ``--count`` messages. ``fastp2p pubsub pub TOPIC MESSAGE``
waits until ``--wait-peers`` peers are subscribed to the topic, publishes
once and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

__all__ = ["register"]


def _host(args: argparse.Namespace, listen: list[str]) -> Any:
    from fastp2p.cli import _config, _load_key
    from fastp2p.host import Host

    return Host(_load_key(args.key), listen=listen, config=_config(args.muxer))


async def _connect_all(host: Any, addrs: list[str] | None) -> None:
    for a in addrs or ():
        await host.connect(a)


async def _sub(args: argparse.Namespace) -> int:
    async with _host(args, args.listen or ["/ip4/127.0.0.1/tcp/0"]) as host:
        for a in host.full_addrs[:1]:
            print(a, flush=True)
        async with asyncio.timeout(args.timeout):
            sub = await host.pubsub.subscribe(args.topic)
            await _connect_all(host, args.connect)
            n = 0
            async for msg in sub:
                line = {
                    "topic": msg.topic,
                    "from": str(msg.from_peer) if msg.from_peer is not None else None,
                    "seqno": msg.seqno,
                    "data": msg.data.decode("utf-8", errors="replace"),
                }
                print(json.dumps(line), flush=True)
                n += 1
                if args.count and n >= args.count:
                    break
    return 0


async def _pub(args: argparse.Namespace) -> int:
    async with _host(args, args.listen or []) as host:
        async with asyncio.timeout(args.timeout):
            await _connect_all(host, args.connect)
            if args.wait_peers > 0:
                await host.pubsub.wait_for_peers(args.topic, args.wait_peers)
            await host.pubsub.publish(args.topic, args.message.encode())
            await host.pubsub.flush()
    return 0


def register(sub: Any) -> None:
    """Add the ``pubsub`` command (with ``sub`` and ``pub``) to the CLI's subparsers."""
    from fastp2p.cli import MUXERS, _guard

    p = sub.add_parser("pubsub", help="gossipsub: subscribe to or publish on a topic")
    cmds = p.add_subparsers(dest="pubsub_command", required=True)

    s = cmds.add_parser("sub", help="print messages of TOPIC as JSON lines")
    s.add_argument("topic")
    s.add_argument("--connect", action="append", metavar="MA", help="peer to dial (repeatable)")
    s.add_argument("--listen", action="append", metavar="MA", help="listen multiaddr (repeatable)")
    s.add_argument("--count", type=int, default=0, help="exit 0 after N messages (0: never)")
    s.add_argument("--timeout", type=float, default=None, help="give up (exit 1) after S seconds")
    s.add_argument("--key", help="key file; created if missing")
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.set_defaults(func=_guard(_sub))

    s = cmds.add_parser("pub", help="publish MESSAGE on TOPIC once")
    s.add_argument("topic")
    s.add_argument("message")
    s.add_argument("--connect", action="append", metavar="MA", help="peer to dial (repeatable)")
    s.add_argument("--listen", action="append", metavar="MA", help="listen multiaddr (repeatable)")
    s.add_argument("--wait-peers", type=int, default=1, help="subscribed peers to wait for (default 1)")
    s.add_argument("--timeout", type=float, default=30.0, help="give up (exit 1) after S seconds")
    s.add_argument("--key", help="key file; created if missing")
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.set_defaults(func=_guard(_pub))
