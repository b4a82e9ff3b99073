"""The ``fastp2p`` command line: id, psk, listen, ping, perf, demo, bench, doctor."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import contextvars
import dataclasses
import json
import os
import sys
import time
from collections.abc import Callable, Coroutine, Sequence
from typing import TYPE_CHECKING, Any

from fastp2p.transport.upgrader import MPLEX_PROTOCOL_ID, YAMUX_PROTOCOL_ID

if TYPE_CHECKING:
    from fastp2p.config import HostConfig
    from fastp2p.peer import Ed25519PrivateKey

__all__ = ["main"]

MUXERS = {"yamux": YAMUX_PROTOCOL_ID, "mplex": MPLEX_PROTOCOL_ID}


def _size(text: str) -> int:
    """Parse a byte count: 1048576, 1MiB, 256M, 1G, 10k (binary multiples)."""
    t = text.strip().lower().replace("ib", "").rstrip("b")
    mult = 1
    for suffix, m in (("k", 1 << 10), ("m", 1 << 20), ("g", 1 << 30), ("t", 1 << 40)):
        if t.endswith(suffix):
            t, mult = t[:-1], m
            break
    try:
        value = int(float(t) * mult)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a size: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"negative size: {text!r}")
    return value


def _load_key(path: str | None) -> Ed25519PrivateKey:
    from fastp2p.peer import Ed25519PrivateKey

    if path is None:
        return Ed25519PrivateKey.generate()
    if os.path.exists(path):
        return Ed25519PrivateKey.load(path)
    key = Ed25519PrivateKey.generate()
    key.save(path)
    return key


DATA_PATHS = {"auto": ("shm", "tcp"), "shm": ("shm", "tcp"), "tcp": ("tcp",)}


#: ``--psk FILE`` of the command being run: set by ``_guard``, applied by ``_config``,
#: so every command that builds a Host joins the private network in one place
_PSK_FILE: contextvars.ContextVar[str | None] = contextvars.ContextVar("fastp2p_cli_psk", default=None)
#: the commands (and their subcommands) that listen or dial, hence take ``--psk``
PSK_COMMANDS = ("listen", "ping", "perf", "pubsub", "share", "files", "get", "dht")
#: commands with ``--busy-poll US`` (HostConfig.busy_poll_us), set like ``--psk``
BUSY_POLL_COMMANDS = ("listen", "ping", "perf")
_BUSY_POLL_US: contextvars.ContextVar[int] = contextvars.ContextVar("fastp2p_cli_busy_poll", default=0)


def _config(muxer: str, data_path: str = "auto") -> HostConfig:
    from fastp2p.config import HostConfig

    return HostConfig(muxers=(MUXERS[muxer],), data_paths=DATA_PATHS[data_path], psk=_PSK_FILE.get(),
                      busy_poll_us=_BUSY_POLL_US.get())


def _add_psk_option(parser: argparse.ArgumentParser) -> None:
    """``--psk FILE`` on ``parser``, or on each of its subcommands."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if subs:
        for child in subs[0].choices.values():
            _add_psk_option(child)
        return
    parser.add_argument("--psk", metavar="FILE", default=None,
                        help="private network: a /key/swarm/psk/1.0.0/ key file (swarm.key); "
                             "only peers with the same key can connect")


def _data_path_line(conn: Any) -> str:
    if conn is None:
        return "data path: unknown (no connection)"
    line = f"data path: {conn.data_path}"
    if conn.data_path_reason:
        line += f" ({conn.data_path_reason})"
    return line


def _run(coro: Coroutine[Any, Any, int]) -> int:
    try:
        import uvloop

        factory = uvloop.new_event_loop
    except ImportError:
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


# -- commands ------------------------------------------------------------------------


def cmd_id(args: argparse.Namespace) -> int:
    from fastp2p.peer import PeerID

    key = _load_key(args.key)
    print(PeerID.from_public_key(key.public_key()))
    return 0


def cmd_psk(args: argparse.Namespace) -> int:
    from fastp2p.pnet import write_psk_file

    try:
        write_psk_file(args.file)
    except OSError as exc:
        print(f"fastp2p psk: error: {exc}", file=sys.stderr)
        return 1
    print(args.file)
    return 0


async def _listen(args: argparse.Namespace) -> int:
    from fastp2p.host import Host
    from fastp2p.services import serve_echo, serve_perf

    # mDNS announces no loopback address: with --mdns the default is every interface
    addrs = args.addr or (["/ip4/0.0.0.0/tcp/0"] if args.mdns else ["/ip4/127.0.0.1/tcp/0"])
    from fastp2p.cli_dht import apply_listen_options

    config = apply_listen_options(args, _config(args.muxer, args.data_path))
    if args.mdns:
        from fastp2p.config import MdnsConfig

        config = dataclasses.replace(config, mdns=MdnsConfig(interval=args.mdns_interval))
    t0 = time.monotonic()
    async with Host(_load_key(args.key), listen=addrs, config=config) as host:
        serve_echo(host)
        serve_perf(host)
        if args.mdns:
            host.on_peer_discovered(_mdns_reporter(host, t0, dial=args.mdns_dial))
        metrics_server = None
        if args.metrics:
            from fastp2p.metrics import serve_prometheus

            mhost, mport = _host_port(args.metrics)
            try:
                metrics_server = await serve_prometheus(host.metrics_registry, mhost, mport)
            except ImportError:
                raise ValueError(
                    '--metrics needs prometheus-client: pip install "fastp2p[metrics]"'
                ) from None
            bound = metrics_server.sockets[0].getsockname()
            print(f"metrics: http://{bound[0]}:{bound[1]}/metrics", file=sys.stderr, flush=True)
        for a in host.full_addrs:
            print(a, flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError):
                loop.add_signal_handler(sig, stop.set)
        try:
            if args.timeout:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(args.timeout):
                        await stop.wait()
            else:
                await stop.wait()
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError):
                    loop.remove_signal_handler(sig)
            if metrics_server is not None:
                metrics_server.close()
    return 0


def _mdns_reporter(host: Any, t0: float, *, dial: bool) -> Callable[..., Coroutine[Any, Any, None]]:
    """``fastp2p listen --mdns``: one JSON line per discovery (and, with ``--mdns-dial``,
    per connection made to a discovered peer, with a ping's RTT)."""
    from fastp2p.errors import P2PError
    from fastp2p.peerstore import PeerInfo

    def emit(**fields: Any) -> None:
        print(json.dumps(fields), flush=True)

    async def report(peer: Any, addrs: list[Any]) -> None:
        emit(event="mdns:discovered", peer_id=str(peer), addrs=[str(a) for a in addrs],
             elapsed_s=round(time.monotonic() - t0, 3))
        if not dial:
            return
        try:
            await host.connect(PeerInfo(peer, tuple(addrs)))
            rtt = await host.ping(peer)
        except (P2PError, OSError, TimeoutError) as exc:
            emit(event="mdns:dial_failed", peer_id=str(peer), error=f"{type(exc).__name__}: {exc}")
            return
        emit(event="mdns:connected", peer_id=str(peer), rtt_ms=round(rtt * 1000, 3),
             elapsed_s=round(time.monotonic() - t0, 3))

    return report


def _host_port(text: str) -> tuple[str, int]:
    """``ADDR:PORT``, ``[v6]:PORT`` or ``:PORT`` (all interfaces) for ``--metrics``."""
    addr, sep, port = text.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--metrics wants ADDR:PORT, got {text!r}")
    return addr.strip("[]") or "0.0.0.0", int(port)


async def _ping(args: argparse.Namespace) -> int:
    from fastp2p.host import Host

    async with Host(_load_key(args.key), config=_config(args.muxer)) as host:
        async with asyncio.timeout(args.timeout):
            peer = await host.connect(args.addr)
            for _ in range(args.count):
                rtt = await host.ping(peer)
                print(f"{rtt * 1000:.3f} ms", flush=True)
    return 0


async def _perf(args: argparse.Namespace) -> int:
    from fastp2p.host import Host
    from fastp2p.services import perf

    async with Host(_load_key(args.key), config=_config(args.muxer, args.data_path)) as host:
        t0 = time.perf_counter()
        peer = await host.connect(args.addr)
        path_line = _data_path_line(host.connection(peer))
        res = await perf(host, peer, args.upload, args.download)
        total = time.perf_counter() - t0
    print(path_line)
    print(f"upload: {args.upload} bytes in {res.upload_seconds:.3f} s = {res.upload_gbps:.3f} Gbit/s")
    print(
        f"download: {args.download} bytes in {res.download_seconds:.3f} s = "
        f"{res.download_gbps:.3f} Gbit/s"
    )
    print(f"total (incl. connection set-up): {total:.4f} s")
    # The libp2p perf dashboard's latency figure: a fresh connection, then 1 byte each way.
    async with Host(_load_key(None), config=_config(args.muxer, args.data_path)) as host:
        t0 = time.perf_counter()
        peer = await host.connect(args.addr)
        await perf(host, peer, 1, 1)
        latency = time.perf_counter() - t0
    print(f"latency (1-byte round trip incl. connection set-up): {latency * 1000:.3f} ms")
    return 0


def _guard(
    coro_fn: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from fastp2p.errors import P2PError

        _PSK_FILE.set(getattr(args, "psk", None))
        _BUSY_POLL_US.set(getattr(args, "busy_poll", 0))
        try:
            return _run(coro_fn(args))
        except KeyboardInterrupt:
            return 130
        except (P2PError, OSError, TimeoutError, ValueError) as exc:
            msg = str(exc) or type(exc).__name__
            if isinstance(exc, TimeoutError):
                msg = "timed out"
            print(f"fastp2p {args.command}: error: {type(exc).__name__}: {msg}", file=sys.stderr)
            return 1

    return run


def cmd_demo(args: argparse.Namespace) -> int:
    from fastp2p.demo import run_demo

    return run_demo(args)


def cmd_doctor(args: argparse.Namespace) -> int:
    from fastp2p.doctor import format_checks, run_checks

    checks = run_checks()
    if args.latency:
        from fastp2p.doctor import check_wakeup

        checks.append(check_wakeup())
    if args.json:
        import json

        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        print(format_checks(checks))
    return 0


class _VersionAction(argparse.Action):
    def __init__(self, option_strings: Sequence[str], dest: str, **kw: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, help=kw.get("help"))

    def __call__(self, parser: argparse.ArgumentParser, *_: Any) -> None:
        from fastp2p.doctor import version_lines

        print("\n".join(version_lines()))
        parser.exit()


def cmd_bench(args: argparse.Namespace) -> int:
    rest = list(args.rest)
    # The other suites: same host (shm vs ucx_perftest, iceoryx2, pyzmq ipc, memcpy),
    # RDMA (vs perftest; needs a verbs device), pubsub (vs js/py-libp2p), files (fetch vs perf).
    suites = {"--same-host": "samehost", "--rdma": "rdma", "--pubsub": "pubsub", "--files": "files"}
    for flag, module in suites.items():
        if flag in rest:
            rest.remove(flag)
            import importlib

            suite = importlib.import_module(f"fastp2p.benchsuite.{module}")
            return int(suite.main(rest))
    try:
        from fastp2p.benchsuite import main as bench_main
    except ImportError as exc:
        print(f"fastp2p bench: the bench suite is unavailable: {exc}", file=sys.stderr)
        return 1
    return int(bench_main(rest))


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="fastp2p", description=__doc__)
    p.add_argument("--version", action=_VersionAction,
                   help="print the version, native core and verbs status, OpenSSL in use")
    p.add_argument("--log-level", default=None, metavar="LEVEL",
                   help="log fastp2p records at LEVEL and above to stderr (debug, info, warning, ...)")
    p.add_argument("--log-json", action="store_true",
                   help="log one JSON object per record (with peer and conn_id)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("id", help="print the PeerId of a key (a new key file is created)")
    s.add_argument("--key", help="key file (libp2p protobuf); created if missing")
    s.set_defaults(func=cmd_id)

    s = sub.add_parser("listen", help="serve ping, identify, perf and /echo/1.0.0")
    s.add_argument("--addr", action="append", help="listen multiaddr (repeatable)")
    s.add_argument("--key", help="key file; created if missing")
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.add_argument("--timeout", type=float, default=None, help="exit after S seconds")
    s.add_argument("--data-path", choices=sorted(DATA_PATHS), default="auto",
                   help="tcp: never upgrade; shm/auto: shared memory when on one host")
    s.add_argument("--metrics", metavar="ADDR:PORT", default=None,
                   help='serve Prometheus metrics at http://ADDR:PORT/metrics (needs "fastp2p[metrics]")')
    s.add_argument("--mdns", action="store_true",
                   help="discover peers on the LAN with mDNS; prints one JSON line per discovery")
    s.add_argument("--mdns-interval", type=float, default=10.0, metavar="S",
                   help="seconds between mDNS queries (default 10)")
    s.add_argument("--mdns-dial", action="store_true",
                   help="connect to (and ping) each peer mDNS discovers")
    s.set_defaults(func=_guard(_listen))

    s = sub.add_parser("psk", help="write a new private-network key file (/key/swarm/psk/1.0.0/)")
    s.add_argument("file", help="where to write it (mode 0600; an existing file is never overwritten)")
    s.set_defaults(func=cmd_psk)

    s = sub.add_parser("ping", help="ping a peer and print one RTT per line")
    s.add_argument("addr", help="multiaddr of the peer, ideally with /p2p/<id>")
    s.add_argument("--count", type=int, default=4)
    s.add_argument("--key", help="key file; created if missing")
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.add_argument("--timeout", type=float, default=30.0)
    s.set_defaults(func=_guard(_ping))

    s = sub.add_parser("perf", help="libp2p perf: measure upload/download throughput")
    s.add_argument("addr")
    s.add_argument("--upload", type=_size, default=0)
    s.add_argument("--download", type=_size, default=0)
    s.add_argument("--key", help="key file; created if missing")
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.add_argument("--data-path", choices=sorted(DATA_PATHS), default="auto",
                   help="tcp: never upgrade; shm/auto: shared memory when on one host")
    s.set_defaults(func=_guard(_perf))

    s = sub.add_parser("demo", help="local peers: connect, ping, share and fetch a file")
    s.add_argument("--size", type=_size, default=256 << 20, help="generated file size")
    s.add_argument("--file", help="share this file instead of a generated one")
    s.add_argument("--peers", type=int, choices=(2, 3), default=2)
    s.add_argument("--muxer", choices=sorted(MUXERS), default="yamux")
    s.add_argument("--no-progress", action="store_true")
    s.add_argument("--data-path", choices=sorted(DATA_PATHS), default="auto",
                   help="tcp: never upgrade; shm/auto: shared memory when on one host")
    s.set_defaults(func=cmd_demo)

    s = sub.add_parser("doctor", help="what this machine supports (native core, RDMA, ...) and why not")
    s.add_argument("--json", action="store_true", help="one JSON object per check")
    s.add_argument("--latency", action="store_true",
                   help="also measure what waking a sleeping CPU adds to a round trip here "
                        "(about a second): whether busy polling pays")
    s.set_defaults(func=cmd_doctor)

    s = sub.add_parser("bench", help="run the benchmark suite (see bench/README.md)")
    s.add_argument("rest", nargs=argparse.REMAINDER)
    s.set_defaults(func=cmd_bench)
    from fastp2p.cli_pubsub import register as register_pubsub

    register_pubsub(sub)
    from fastp2p.cli_files import register as register_files

    register_files(sub)
    from fastp2p.cli_dht import register as register_dht

    register_dht(sub)
    for name in PSK_COMMANDS:
        if name in sub.choices:
            _add_psk_option(sub.choices[name])
    for name in BUSY_POLL_COMMANDS:
        sub.choices[name].add_argument(
            "--busy-poll", type=int, default=0, metavar="US",
            help="keep the event loop polling up to US microseconds while a read waits: "
                 "lower latency for a busy core (HostConfig.busy_poll_us; default 0, off)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fastp2p`` console script."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["bench"]:
        # The bench suite owns its whole option set (including --help).
        return cmd_bench(argparse.Namespace(rest=argv[1:]))
    args = build_parser().parse_args(argv)
    if args.log_level is not None or args.log_json:
        from fastp2p.logs import configure

        try:
            configure(args.log_level or "INFO", json_format=args.log_json)
        except ValueError as exc:
            print(f"fastp2p: error: {exc}", file=sys.stderr)
            return 2
    return int(args.func(args))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
