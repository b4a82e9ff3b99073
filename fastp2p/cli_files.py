"""``fastp2p share``, ``fastp2p files ls`` and ``fastp2p get``: file sharing from the shell.

``fastp2p share PATH...`` prints its listen multiaddr (with ``/p2p/``) on the
first stdout line, then one JSON line ``{"name", "size", "cid"}`` per file,
and serves (announcing on the topic) until interrupted or ``--timeout``.

``fastp2p files ls`` prints the announcements it hears as JSON lines
``{"name", "size", "cid", "peer", "addrs"}`` (each provider of each file once)
until ``--count`` lines or ``--timeout``.

``fastp2p get CID`` fetches the file from every provider announced on the
topic (or given with ``--provider``), shows a progress bar on a terminal,
prints a summary and exits 0 only when every chunk and the manifest matched
the CID.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import sys
import time
from typing import Any

__all__ = ["register"]


def _host(args: argparse.Namespace, listen: list[str]) -> Any:
    from fastp2p.cli import _config, _load_key
    from fastp2p.host import Host

    cfg = _config(args.muxer, getattr(args, "data_path", "auto"))
    cfg = dataclasses.replace(cfg, files=dataclasses.replace(cfg.files, topic=args.topic))
    return Host(_load_key(args.key), listen=listen, config=cfg)


async def _connect_all(host: Any, addrs: list[str] | None) -> None:
    for a in addrs or ():
        await host.connect(a)


async def _serve_until(timeout: float | None) -> None:
    import signal

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    try:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await stop.wait()
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.remove_signal_handler(sig)


async def _share(args: argparse.Namespace) -> int:
    for p in args.paths:
        if not os.path.isfile(p):
            raise FileNotFoundError(f"no such file: {p}")
    async with _host(args, args.listen or ["/ip4/127.0.0.1/tcp/0"]) as host:
        print(host.full_addrs[0], flush=True)
        await _connect_all(host, args.connect)
        for p in args.paths:
            info = await host.files.share(p)
            print(json.dumps({"name": info.name, "size": info.size, "cid": info.cid}), flush=True)
        await _serve_until(args.timeout)
    return 0


async def _ls(args: argparse.Namespace) -> int:
    async with _host(args, args.listen or []) as host:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(args.timeout):
                await _connect_all(host, args.connect)
                n = 0
                async for ann in host.files.announcements():
                    print(json.dumps(ann.as_dict()), flush=True)
                    n += 1
                    if args.count and n >= args.count:
                        break
    return 0


class _Bar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self.last = 0.0

    def __call__(self, got: int, size: int) -> None:
        now = time.perf_counter()
        if not self.enabled or (now - self.last < 0.1 and got < size):
            return
        self.last = now
        width = 30
        frac = got / size if size else 1.0
        filled = int(width * frac)
        rate = got / max(now - self.t0, 1e-9) / 1e6
        sys.stderr.write(
            f"\r[{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
            f"{got / 1e6:9.1f} / {size / 1e6:.1f} MB {rate:8.1f} MB/s"
        )
        if got >= size:
            sys.stderr.write("\n")
        sys.stderr.flush()


async def _get(args: argparse.Namespace) -> int:
    from fastp2p.proto.manifest import cid_from_bytes, cid_to_bytes
    from fastp2p.services.files import safe_name

    cid = cid_from_bytes(cid_to_bytes(args.cid))  # ManifestError (a ValueError) when malformed
    async with _host(args, args.listen or []) as host:
        async with asyncio.timeout(args.timeout):
            await _connect_all(host, args.connect)
            out = args.out
            if out is None and not args.provider:
                # Name the file as announced: wait briefly for its first announcement.
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(5.0):
                        async for ann in host.files.announcements():
                            if ann.cid == cid:
                                out = safe_name(ann.name, cid)
                                break
            out = out or cid
            bar = _Bar(sys.stderr.isatty() and not args.no_progress)
            res = await host.files.fetch(
                cid, out, providers=args.provider or None, progress=bar
            )
    if args.json:
        print(json.dumps({
            "cid": cid, "path": out, "size": res.size, "seconds": res.seconds, "verified": True,
            "resumed": res.resumed,
            "bytes_per_provider": {str(p): n for p, n in res.bytes_per_provider.items()},
            "dropped": {str(p): why for p, why in res.dropped.items()},
        }))
        return 0
    mbps = res.size / res.seconds / 1e6 if res.seconds else 0.0
    print(
        f"fetched {res.size} bytes in {res.seconds:.3f} s = {mbps:.1f} MB/s "
        f"from {len(res.providers)} provider(s), verified: every chunk and the manifest match {cid}"
    )
    if res.resumed:
        print(f"  resumed: {res.resumed} bytes were already there and verified")
    for peer, n in sorted(res.bytes_per_provider.items(), key=lambda kv: -kv[1]):
        print(f"  {peer}: {n} bytes ({n / res.size * 100 if res.size else 100:.1f}%)")
    for peer, why in res.dropped.items():
        print(f"  dropped {peer}: {why}")
    print(f"saved to {out}")
    return 0


def register(sub: Any) -> None:
    """Add ``share``, ``files ls`` and ``get`` to the CLI's subparsers."""
    from fastp2p.cli import DATA_PATHS, MUXERS, _guard
    from fastp2p.config import FilesConfig

    topic = FilesConfig().topic

    def common(s: argparse.ArgumentParser, listen: bool = True) -> None:
        s.add_argument("--connect", action="append", metavar="MA", help="peer to dial (repeatable)")
        if listen:
            s.add_argument("--listen", action="append", metavar="MA", help="listen multiaddr (repeatable)")
        s.add_argument("--topic", default=topic, help=f"announcement topic (default {topic})")
        s.add_argument("--key", help="key file; created if missing")
        s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
        s.add_argument("--data-path", choices=sorted(DATA_PATHS), default="auto",
                       help="tcp: never upgrade; shm/auto: shared memory when on one host")

    s = sub.add_parser("share", help="share files: print their CIDs, announce and serve them")
    s.add_argument("paths", nargs="+", metavar="PATH")
    common(s)
    s.add_argument("--timeout", type=float, default=None, help="stop serving after S seconds (exit 0)")
    s.set_defaults(func=_guard(_share))

    p = sub.add_parser("files", help="file sharing: list announced files")
    cmds = p.add_subparsers(dest="files_command", required=True)
    s = cmds.add_parser("ls", help="print announcements heard on the topic as JSON lines")
    common(s)
    s.add_argument("--count", type=int, default=0, help="exit 0 after N announcements (0: at --timeout)")
    s.add_argument("--timeout", type=float, default=10.0, help="listen this long (default 10 s)")
    s.set_defaults(func=_guard(_ls))

    s = sub.add_parser("get", help="fetch a file by CID from every provider, verified")
    s.add_argument("cid")
    common(s)
    s.add_argument("--out", help="destination (default: the announced name, else the CID)")
    s.add_argument("--provider", action="append", metavar="MA",
                   help="fetch from this peer only (repeatable; default: announced providers)")
    s.add_argument("--timeout", type=float, default=None, help="give up (exit 1) after S seconds")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")
    s.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    s.set_defaults(func=_guard(_get))
