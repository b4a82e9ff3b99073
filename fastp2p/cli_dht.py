"""``fastp2p dht find-peer|provide|find-providers|put|get`` and ``listen --dht/--bootstrap``.

Each ``dht`` command starts a host, bootstraps the DHT from ``--bootstrap``
multiaddrs, runs one operation and prints JSON lines::

    fastp2p dht find-peer 12D3KooW... --bootstrap /ip4/.../p2p/...
    {"peer_id": "12D3KooW...", "addrs": ["/ip4/127.0.0.1/tcp/4001"]}
    fastp2p dht provide bafkrei... --listen /ip4/0.0.0.0/tcp/0 --linger 600
    {"key": "bafkrei...", "multihash": "1220...", "peers": 20}
    fastp2p dht find-providers bafkrei... --limit 5
    {"peer_id": "12D3KooW...", "addrs": [...]}
    fastp2p dht put greeting hello            # key /fastp2p/greeting
    {"key": "/fastp2p/greeting", "peers": 20}
    fastp2p dht get greeting
    {"key": "/fastp2p/greeting", "value": "hello"}

Exit 0 on success; a one-line error on stderr and exit 1 otherwise (``find-providers``
fails when it finds none). Provider keys are CIDs (v0 ``Qm...`` or multibase
v1; the key is the CID's multihash, as IPFS does) or, failing CID parsing,
the UTF-8 bytes of the string. Record keys without a leading ``/`` go into
the ``/fastp2p/`` namespace.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from fastp2p.config import HostConfig

__all__ = ["register", "provider_key", "record_key", "apply_listen_options"]

DHT_MODES = ("server", "client", "auto")


def provider_key(text: str) -> bytes:
    """The DHT key of a provider key argument: a CID's multihash, else the UTF-8 bytes."""
    from fastp2p.multibase import b58decode, cid_v1_decode, multihash_decode

    with contextlib.suppress(ValueError):
        if text.startswith("Qm") and len(text) == 46:  # CIDv0: a bare base58btc sha2-256 multihash
            mh = b58decode(text)
            multihash_decode(mh)
            return mh
        return cid_v1_decode(text)[1]
    return text.encode("utf-8")


def record_key(text: str) -> bytes:
    """``name`` -> ``/fastp2p/name``; keys starting with ``/`` are used as given."""
    return text.encode("utf-8") if text.startswith("/") else b"/fastp2p/" + text.encode("utf-8")


def apply_listen_options(args: argparse.Namespace, config: HostConfig) -> HostConfig:
    """``HostConfig`` with ``--dht MODE`` and ``--bootstrap MA`` of ``fastp2p listen`` applied."""
    mode = getattr(args, "dht", None)
    boot = tuple(getattr(args, "bootstrap", None) or ())
    if mode is None and not boot:
        return config
    dht = dataclasses.replace(config.dht, enabled=True, mode=mode or config.dht.mode)
    return dataclasses.replace(config, dht=dht, bootstrap=boot)


def _host(args: argparse.Namespace) -> Any:
    from fastp2p.cli import _config, _load_key
    from fastp2p.host import Host

    config = _config(args.muxer)
    mode = "server" if args.listen else "client"
    config = dataclasses.replace(
        config, dht=dataclasses.replace(config.dht, enabled=True, mode=mode, query_timeout=args.timeout)
    )
    return Host(_load_key(args.key), listen=args.listen or [], config=config)


async def _bootstrap(host: Any, args: argparse.Namespace) -> None:
    if not args.bootstrap:
        raise ValueError("--bootstrap MA is required (a DHT peer to start from)")
    await host.dht.bootstrap(args.bootstrap)


def _emit(obj: dict[str, Any]) -> None:
    print(json.dumps(obj), flush=True)


async def _linger(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _find_peer(args: argparse.Namespace) -> int:
    from fastp2p.peer import PeerID

    peer = PeerID.from_string(args.peer_id)
    async with _host(args) as host, asyncio.timeout(args.timeout):
        await _bootstrap(host, args)
        info = await host.dht.find_peer(peer)
        _emit({"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]})
    return 0


async def _provide(args: argparse.Namespace) -> int:
    key = provider_key(args.key_text)
    async with _host(args) as host:
        async with asyncio.timeout(args.timeout):
            await _bootstrap(host, args)
            n = await host.dht.provide(key)
        _emit({"key": args.key_text, "multihash": key.hex(), "peers": n,
               "provider": [str(a) for a in host.full_addrs]})
        await _linger(args.linger)
    return 0


async def _find_providers(args: argparse.Namespace) -> int:
    key = provider_key(args.key_text)
    n = 0
    async with _host(args) as host, asyncio.timeout(args.timeout):
        await _bootstrap(host, args)
        async for info in host.dht.find_providers(key, limit=args.limit):
            if info.peer_id == host.peer_id:
                continue
            _emit({"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]})
            n += 1
    if not n:
        raise LookupError(f"no providers found for {args.key_text}")
    return 0


async def _put(args: argparse.Namespace) -> int:
    key = record_key(args.key_text)
    async with _host(args) as host:
        async with asyncio.timeout(args.timeout):
            await _bootstrap(host, args)
            n = await host.dht.put_value(key, args.value.encode("utf-8"))
        _emit({"key": key.decode("utf-8", "replace"), "peers": n})
        await _linger(args.linger)
    return 0


async def _get(args: argparse.Namespace) -> int:
    key = record_key(args.key_text)
    async with _host(args) as host, asyncio.timeout(args.timeout):
        await _bootstrap(host, args)
        value = await host.dht.get_value(key)
    _emit({"key": key.decode("utf-8", "replace"), "value": value.decode("utf-8", "replace"),
           "value_hex": value.hex()})
    return 0


def _guard(fn: Any) -> Any:
    from fastp2p.cli import _guard as cli_guard

    async def run(args: argparse.Namespace) -> int:
        try:
            return int(await fn(args))
        except LookupError as exc:  # no providers: a P2PError-shaped one-line failure
            from fastp2p.services.kad import QueryError

            raise QueryError(str(exc)) from exc

    return cli_guard(run)


def register(sub: Any) -> None:
    """Add the ``dht`` command and ``listen --dht/--bootstrap`` to the CLI's subparsers."""
    from fastp2p.cli import MUXERS

    listen = sub.choices.get("listen")
    if listen is not None:
        listen.add_argument("--dht", choices=DHT_MODES, default=None,
                            help="run the Kademlia DHT in this mode (auto: server once reachable)")
        listen.add_argument("--bootstrap", action="append", metavar="MA", default=None,
                            help="bootstrap peer multiaddr with /p2p/ (repeatable; retried with backoff)")

    p = sub.add_parser("dht", help="Kademlia DHT: find peers, provide/find content, put/get values")
    cmds = p.add_subparsers(dest="dht_command", required=True)

    def common(s: argparse.ArgumentParser, *, lingers: bool = False) -> None:
        s.add_argument("--bootstrap", action="append", metavar="MA", help="DHT peer to start from (repeatable)")
        s.add_argument("--timeout", type=float, default=30.0, help="give up (exit 1) after S seconds")
        s.add_argument("--listen", action="append", metavar="MA",
                       help="listen (and serve the DHT) on MA; without it the command is a DHT client")
        s.add_argument("--key", help="key file; created if missing")
        s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
        if lingers:
            s.add_argument("--linger", type=float, default=0.0,
                           help="keep running S seconds afterwards (serve as provider/record holder)")

    s = cmds.add_parser("find-peer", help="print the addresses of PEER_ID")
    s.add_argument("peer_id")
    common(s)
    s.set_defaults(func=_guard(_find_peer))

    s = cmds.add_parser("provide", help="announce this host as a provider of KEY (a CID or text)")
    s.add_argument("key_text", metavar="KEY")
    common(s, lingers=True)
    s.set_defaults(func=_guard(_provide))

    s = cmds.add_parser("find-providers", help="print providers of KEY (a CID or text), one per line")
    s.add_argument("key_text", metavar="KEY")
    s.add_argument("--limit", type=int, default=20)
    common(s)
    s.set_defaults(func=_guard(_find_providers))

    s = cmds.add_parser("put", help="store VALUE under KEY (/fastp2p/KEY unless KEY starts with /)")
    s.add_argument("key_text", metavar="KEY")
    s.add_argument("value")
    common(s, lingers=True)
    s.set_defaults(func=_guard(_put))

    s = cmds.add_parser("get", help="print the value stored under KEY")
    s.add_argument("key_text", metavar="KEY")
    common(s)
    s.set_defaults(func=_guard(_get))
