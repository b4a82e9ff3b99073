"""A multi-host DHT testbed: one fastp2p host process per network namespace.

:class:`Testbed` builds a :class:`~fastp2p.testing.netns.NetnsLab` of ``n``
nodes (links shaped with netem: delay, jitter, loss) and starts in each node
one worker process running a full ``Host`` (TCP, Noise, yamux, identify,
gossipsub, the Kademlia DHT in server mode, file sharing) listening on
``/ip4/10.77.0.<i>/tcp/4001``. The test drives the workers through a pipe:
``worker.call("find_peer", peer=...)`` runs the operation inside that host
and returns its figures.

Workers are forked from the test process, which imported fastp2p once, and
then enter their namespace as ``ip netns exec`` does (``setns(2)``, and
``/sys`` remounted in a private mount namespace): every socket they create
lives in that namespace, and ``/sys/class/net`` lists its interfaces.
Forking matters where the testbed runs: in the emulated VM of
``ci/testbed_vm.sh`` a fresh ``python -m fastp2p`` spends ~20 s importing,
a fork a fraction of a second.

:meth:`Testbed.close` (the context manager calls it, also on failure)
SIGKILLs every worker, then the lab deletes every namespace (and with them
every veth and the bridge).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import itertools
import multiprocessing
import multiprocessing.connection
import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fastp2p.testing.netns import NetnsLab, Node

__all__ = ["Testbed", "Worker", "WorkerError", "PORT", "dump_prefix_table"]

PORT = 4001
_CLONE_NEWNET = 0x40000000
_CLONE_NEWNS = 0x00020000
_MS_REC, _MS_SLAVE, _MNT_DETACH = 0x4000, 1 << 19, 2
#: a file written by :func:`dump_prefix_table`: the DHT's bucket-refresh key table, precomputed
PREFIX_TABLE_ENV = "FASTP2P_KAD_PREFIX_TABLE"
_PREFIX_ENTRY = 38  # bytes per entry: identity-multihash header (6) + 24 zero bytes + counter (8)


class WorkerError(RuntimeError):
    """A worker's operation raised (the message carries its type and text)."""


def _enter_netns(path: str) -> None:
    """Move this (single-threaded, just forked) process into a network namespace.

    As ``ip netns exec`` does: ``setns(2)`` into the namespace, then a private
    mount namespace with ``/sys`` mounted afresh, so that ``/sys/class/net``
    shows this namespace's interfaces (mDNS, for one, reads interface flags there).
    """
    libc = ctypes.CDLL(None, use_errno=True)

    def check(rc: int, what: str) -> None:
        if rc != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"{what}: {os.strerror(err)}")

    fd = os.open(path, os.O_RDONLY)
    try:
        check(libc.setns(fd, _CLONE_NEWNET), f"setns({path})")
    finally:
        os.close(fd)
    check(libc.unshare(_CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    check(libc.mount(None, b"/", None, _MS_REC | _MS_SLAVE, None), "mount --make-rslave /")
    check(libc.umount2(b"/sys", _MNT_DETACH), "umount -l /sys")
    check(libc.mount(b"sysfs", b"/sys", b"sysfs", 0, None), "mount -t sysfs /sys")


def _ns_path(ns: str) -> str:
    for d in ("/run/netns", "/var/run/netns"):
        if os.path.exists(f"{d}/{ns}"):
            return f"{d}/{ns}"
    raise FileNotFoundError(f"network namespace {ns} has no /run/netns entry")


# --------------------------------------------------------------------------- warm-up


def dump_prefix_table(path: str) -> None:
    """Write the DHT's refresh-key table (deterministic) for :envvar:`FASTP2P_KAD_PREFIX_TABLE`."""
    from fastp2p.proto.kad import routing_table as rt

    table = rt._prefix_table()
    assert all(len(t) == _PREFIX_ENTRY for t in table)
    with open(path, "wb") as f:
        f.write(b"".join(table))


def _prime_prefix_table() -> None:
    """Build (or load) the refresh-key table once, before the workers fork.

    Every DHT process builds it at its first bucket refresh: ~7 x 10^5
    SHA-256, seconds of CPU, a minute under emulation. Forked workers
    inherit it. A precomputed file (``$FASTP2P_KAD_PREFIX_TABLE``, written on
    a fast host by ``ci/testbed_vm.sh``) is verified entry by entry (one
    hash each) before it is used.
    """
    import functools
    import hashlib

    from fastp2p.proto.kad import routing_table as rt

    path = os.environ.get(PREFIX_TABLE_ENV)
    if path and os.path.exists(path):
        raw = open(path, "rb").read()
        table = tuple(raw[i : i + _PREFIX_ENTRY] for i in range(0, len(raw), _PREFIX_ENTRY))
        ok = len(table) == 65536 and all(
            hashlib.sha256(t).digest()[:2] == i.to_bytes(2, "big") and t[:6] == b"\x00\x24\x08\x01\x12\x20"
            for i, t in enumerate(table)
        )
        if ok:
            rt._prefix_table = functools.lru_cache(maxsize=1)(lambda: table)
            return
    rt._prefix_table()


async def _warm(config: Any) -> None:
    """Start and stop one host: the modules hosts import lazily are then loaded before forking."""
    from fastp2p.errors import P2PError
    from fastp2p.host import Host
    from fastp2p.peer import Ed25519PrivateKey

    async with Host(Ed25519PrivateKey.generate(), listen=["/ip4/127.0.0.1/tcp/0"], config=config) as h:
        for service in ("files", "pubsub", "dht"):
            with contextlib.suppress(P2PError):  # a service this config disables
                getattr(h, service)


# --------------------------------------------------------------------------- worker side


class _Agent:
    """The host of one worker and the operations the test may call."""

    def __init__(self, host: Any) -> None:
        self.host = host
        self.subs: dict[str, list[bytes]] = {}
        self._sub_tasks: list[asyncio.Task[None]] = []
        #: peers discovery (mDNS, ``HostConfig.mdns``) reported, with their addresses
        self.discovered: dict[str, list[str]] = {}
        host.on_peer_discovered(self._on_discovered)

    def _on_discovered(self, peer: Any, addrs: list[Any]) -> None:
        self.discovered[str(peer)] = [str(a) for a in addrs]

    async def op_discovered(self) -> dict[str, Any]:
        return {"peers": dict(self.discovered)}

    async def op_info(self) -> dict[str, Any]:
        return {"peer_id": str(self.host.peer_id), "addrs": [str(a) for a in self.host.full_addrs]}

    async def op_bootstrap(self, peers: list[str]) -> dict[str, Any]:
        n = await self.host.dht.bootstrap(peers)
        return {"table": n}

    async def op_table(self) -> dict[str, Any]:
        return {"table": len(self.host.dht.routing_table()),
                "connections": len(self.host.connections)}

    async def op_refresh(self) -> dict[str, Any]:
        await self.host.dht.refresh(force=True)
        return {"table": len(self.host.dht.routing_table())}

    async def op_find_peer(self, peer: str, disconnect: bool = True) -> dict[str, Any]:
        from fastp2p.peer import PeerID

        pid = PeerID.from_string(peer)
        if disconnect and self.host.connection(pid) is not None:
            # measure the lookup, not the shortcut through an open connection
            await self.host.disconnect(pid)
        t0 = time.perf_counter()
        info, stats = await self.host.dht.find_peer_with_stats(pid)
        return {"seconds": time.perf_counter() - t0, "hops": stats.hops, "rpcs": stats.requests,
                "addrs": [str(a) for a in info.addrs]}

    async def op_provide(self, key: str) -> dict[str, Any]:
        t0 = time.perf_counter()
        n, stats = await self.host.dht.provide_with_stats(bytes.fromhex(key))
        return {"peers": n, "seconds": time.perf_counter() - t0, "hops": stats.hops, "rpcs": stats.requests}

    async def op_find_providers(self, key: str, limit: int = 1) -> dict[str, Any]:
        dht = self.host.dht
        before = dht.stats.rpcs_sent.get("GET_PROVIDERS", 0)
        t0 = time.perf_counter()
        found = [str(i.peer_id) async for i in dht.find_providers(bytes.fromhex(key), limit=limit)]
        return {"providers": found, "seconds": time.perf_counter() - t0,
                "rpcs": dht.stats.rpcs_sent.get("GET_PROVIDERS", 0) - before}

    async def op_share(self, path: str) -> dict[str, Any]:
        from fastp2p.services.files import _dht_key

        info = await self.host.files.share(path)
        # share() provides in the background; announce now so the test knows it is done
        n = await self.host.dht.provide(_dht_key(info.cid))
        return {"cid": info.cid, "peers": n}

    async def op_fetch_via_dht(self, cid: str, dest: str, wait: float = 30.0) -> dict[str, Any]:
        """Fetch ``cid`` from the providers the DHT names (no pubsub, no open connection)."""
        from fastp2p.services.files import _dht_key

        key = _dht_key(cid)
        deadline = time.monotonic() + wait
        providers: list[Any] = []
        while not providers and time.monotonic() < deadline:
            providers = [i async for i in self.host.dht.find_providers(key, limit=5)
                         if i.peer_id != self.host.peer_id]
            if not providers:
                await asyncio.sleep(0.5)
        if not providers:
            raise LookupError(f"the DHT names no provider of {cid}")
        res = await self.host.files.fetch(cid, dest, providers=providers)
        return {"digest": res.digest, "size": res.size, "seconds": res.seconds,
                "providers": [str(p.peer_id) for p in providers],
                "used": [str(p) for p in res.providers]}

    async def op_subscribe(self, topic: str) -> dict[str, Any]:
        sub = await self.host.pubsub.subscribe(topic)
        got = self.subs.setdefault(topic, [])

        async def drain() -> None:
            async for msg in sub:
                got.append(bytes(msg.data))

        self._sub_tasks.append(asyncio.ensure_future(drain()))
        return {}

    async def op_publish(self, topic: str, data: str) -> dict[str, Any]:
        await self.host.pubsub.publish(topic, data.encode())
        return {}

    async def op_received(self, topic: str) -> dict[str, Any]:
        return {"messages": [m.decode() for m in self.subs.get(topic, [])]}

    async def op_interfaces(self) -> dict[str, Any]:
        return {"sys": sorted(os.listdir("/sys/class/net")), "kernel": sorted(n for _i, n in socket.if_nameindex())}

    async def op_stats(self) -> dict[str, Any]:
        st = self.host.dht.stats
        return {"rpcs_sent": dict(st.rpcs_sent), "rpcs_received": dict(st.rpcs_received),
                "rpc_failures": st.rpc_failures, "queries": st.queries}

    async def op_sleep(self, seconds: float) -> dict[str, Any]:
        await asyncio.sleep(seconds)
        return {}


async def _serve(conn: multiprocessing.connection.Connection, listen: str, config: Any) -> None:
    from fastp2p.host import Host
    from fastp2p.peer import Ed25519PrivateKey

    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[Any] = asyncio.Queue()
    closed = asyncio.Event()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):
            loop.remove_reader(conn.fileno())
            closed.set()

    def reply(obj: dict[str, Any]) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            conn.send(obj)

    async with Host(Ed25519PrivateKey.generate(), listen=[listen], config=config) as host:
        agent = _Agent(host)
        loop.add_reader(conn.fileno(), readable)
        tasks: set[asyncio.Task[None]] = set()

        async def run(req: dict[str, Any]) -> None:
            fn: Callable[..., Any] | None = getattr(agent, f"op_{req['op']}", None)
            try:
                if fn is None:
                    raise ValueError(f"unknown operation {req['op']!r}")
                async with asyncio.timeout(req.get("timeout")):
                    result = await fn(**req["args"])
                reply({"id": req["id"], "ok": True, "result": result})
            except Exception as exc:
                reply({"id": req["id"], "ok": False, "error": f"{type(exc).__name__}: {exc}",
                       "type": type(exc).__name__, "trace": traceback.format_exc(limit=5)})

        reply({"id": 0, "ok": True, "result": await agent.op_info()})
        stop = asyncio.ensure_future(closed.wait())
        while True:
            get = asyncio.ensure_future(inbox.get())
            done, _ = await asyncio.wait({get, stop}, return_when=asyncio.FIRST_COMPLETED)
            if get not in done:
                get.cancel()
                break
            req = get.result()
            if req.get("op") == "exit":
                break
            t = asyncio.ensure_future(run(req))
            tasks.add(t)
            t.add_done_callback(tasks.discard)
        stop.cancel()
        for t in [*tasks, *agent._sub_tasks]:
            t.cancel()
        await asyncio.gather(*tasks, *agent._sub_tasks, return_exceptions=True)


def _worker_main(ns_path: str, conn: multiprocessing.connection.Connection, listen: str, config: Any) -> None:
    _enter_netns(ns_path)
    asyncio.run(_serve(conn, listen, config))


# --------------------------------------------------------------------------- test side


@dataclass
class Worker:
    """One host process of the testbed, inside ``node``'s namespace."""

    node: Node
    proc: Any
    conn: multiprocessing.connection.Connection
    peer_id: str = ""
    addr: str = ""
    _ids: Any = field(default_factory=lambda: itertools.count(1))
    _replies: dict[int, dict[str, Any]] = field(default_factory=dict)

    def start(self, op: str, *, timeout: float | None = None, **args: Any) -> int:
        """Send ``op`` without waiting; :meth:`result` collects the reply."""
        rid = next(self._ids)
        self.conn.send({"id": rid, "op": op, "args": args, "timeout": timeout})
        return rid

    def result(self, rid: int, timeout: float) -> dict[str, Any]:
        """The reply to request ``rid``; WorkerError if it failed, TimeoutError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while rid not in self._replies:
            left = deadline - time.monotonic()
            if left <= 0 or not self.conn.poll(left):
                raise TimeoutError(f"worker {self.node.index}: no reply to request {rid} in {timeout} s")
            try:
                msg = self.conn.recv()
            except EOFError:
                raise WorkerError(f"worker {self.node.index} exited (code {self.proc.exitcode})") from None
            self._replies[msg["id"]] = msg
        msg = self._replies.pop(rid)
        if not msg["ok"]:
            err = WorkerError(f"worker {self.node.index}: {msg['error']}")
            err.kind = msg["type"]  # type: ignore[attr-defined]
            raise err
        result: dict[str, Any] = msg["result"]
        return result

    def call(self, op: str, *, timeout: float = 60.0, **args: Any) -> dict[str, Any]:
        """Run ``op`` in the worker's host; the worker cancels it after ``timeout``."""
        return self.result(self.start(op, timeout=timeout, **args), timeout + 10.0)

    def kill(self) -> None:
        """SIGKILL the worker process."""
        if self.proc.is_alive():
            self.proc.kill()
        self.proc.join(10)


class Testbed:
    """``n`` hosts on a netem-shaped switch, one worker process each."""

    __test__ = False  # not a pytest test class

    def __init__(self, n: int, *, delay_ms: float | None = None, jitter_ms: float | None = None,
                 loss_pct: float | None = None, config: Any = None, start_timeout: float = 120.0) -> None:
        from fastp2p.config import DhtConfig, HostConfig

        if config is None:
            config = HostConfig(data_paths=("tcp",),
                                dht=DhtConfig(enabled=True, mode="server", rpc_timeout=5.0,
                                              query_timeout=30.0))
        _prime_prefix_table()
        asyncio.run(_warm(config))
        self.lab = NetnsLab()
        self.workers: list[Worker] = []
        ctx = multiprocessing.get_context("fork")
        try:
            for _ in range(n):
                node = self.lab.add_node(delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                                         egress_only=True)
                parent, child = ctx.Pipe()
                proc = ctx.Process(target=_worker_main, daemon=True,
                                   args=(_ns_path(node.ns), child, f"/ip4/{node.ip}/tcp/{PORT}", config))
                proc.start()
                child.close()
                self.workers.append(Worker(node, proc, parent))
            for w in self.workers:
                info = w.result(0, start_timeout)
                w.peer_id = info["peer_id"]
                w.addr = next(a for a in info["addrs"] if f"/ip4/{w.node.ip}/" in a)
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Kill every worker, then remove every namespace and link. Idempotent."""
        for w in self.workers:
            with contextlib.suppress(Exception):
                w.kill()
            with contextlib.suppress(Exception):
                w.conn.close()
        self.workers_closed = True
        self.lab.close()

    def __enter__(self) -> Testbed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
