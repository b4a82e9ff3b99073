"""DHT server throughput: FIND_NODE RPCs served per second by one server process.

    python -m bench.dht_bench [--seconds 8] [--connections 4] [--concurrency 16]
                              [--servers fastp2p,js,py] [--core 1] [--json OUT]

Each server runs alone in its own process on 127.0.0.1, pinned to one core
(``--core``, with ``taskset``): a fastp2p host (``python -m fastp2p listen
--dht server``), js-libp2p's ``@libp2p/kad-dht`` (tests/interop/js/dht_peer.mjs)
and py-libp2p's ``KadDHT`` (tests/interop/py_dht_peer.py). The same load
generator, written with fastp2p, drives each in turn: ``--connections``
client hosts (each one connection; DHT servers themselves, so the server under
test adds them to its routing table and its answers carry them) each run
``--concurrency`` loops of FIND_NODE for random keys, one stream per RPC, as
the fastp2p and js-libp2p clients do (the js server's answers carried no
peers in our runs: its routing table did not take the clients, so its
figure is for lighter answers). After a warm-up second, the figure is
answers received per second of wall time, and per second of the server
process's CPU time (``/proc/PID/stat``), which does not depend on whether the
load generator could saturate the server's core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class Result:
    server: str
    seconds: float = 0.0
    rpcs: int = 0
    errors: int = 0
    server_cpu: float = 0.0
    closer_peers: list[int] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "server": self.server, "rpcs": self.rpcs, "errors": self.errors,
            "seconds": round(self.seconds, 2),
            "rpcs_per_s": round(self.rpcs / self.seconds, 1) if self.seconds else 0.0,
            "server_cpu_s": round(self.server_cpu, 2),
            "rpcs_per_server_cpu_s": round(self.rpcs / self.server_cpu, 1) if self.server_cpu else None,
            "server_core_busy": round(self.server_cpu / self.seconds, 2) if self.seconds else None,
            "closer_peers_mean": round(statistics.fmean(self.closer_peers), 1) if self.closer_peers else 0,
            "latency_ms_median": round(lat[len(lat) // 2] * 1000, 2) if lat else None,
        }


@contextlib.asynccontextmanager
async def _server(kind: str, core: int | None) -> Any:
    """Start one DHT server; yields (multiaddr with /p2p/, process)."""
    pin = ["taskset", "-c", str(core)] if core is not None and shutil.which("taskset") else []
    env = dict(os.environ)
    if kind == "fastp2p":
        argv = [sys.executable, "-m", "fastp2p", "listen", "--dht", "server", "--data-path", "tcp",
                "--addr", "/ip4/127.0.0.1/tcp/0"]
    else:
        from tests.interop.dht_harness import JS_DHT_PEER, PY_DHT_PEER, missing_dht
        from tests.interop.peers import command

        reason = missing_dht(kind)
        if reason:
            raise RuntimeError(f"{kind} DHT server unavailable: {reason}")
        argv = command(kind, py_script=PY_DHT_PEER, js_script=JS_DHT_PEER)
        env.pop("PYTHONPATH", None)
        env.setdefault("NODE_NO_WARNINGS", "1")
    proc = await asyncio.create_subprocess_exec(*pin, *argv, stdin=asyncio.subprocess.PIPE,
                                                stdout=asyncio.subprocess.PIPE,
                                                stderr=asyncio.subprocess.DEVNULL, env=env, cwd=ROOT)
    try:
        assert proc.stdout is not None
        async with asyncio.timeout(60):
            while True:
                line = (await proc.stdout.readline()).decode()
                if not line:
                    raise RuntimeError(f"{kind} server exited before listening")
                line = line.strip()
                if kind == "fastp2p" and line.startswith("/ip4/"):
                    addr = line
                    break
                if line.startswith("{"):
                    ev = json.loads(line)
                    if ev.get("event") == "listening":
                        addr = next(a for a in ev["addrs"] if a.startswith("/ip4/127.0.0.1/"))
                        if "/p2p/" not in addr:
                            addr += f"/p2p/{ev['peer_id']}"
                        break
        yield addr, proc
    finally:
        if proc.returncode is None:
            proc.kill()
        await proc.wait()


async def measure(kind: str, *, seconds: float, connections: int, concurrency: int,
                  core: int | None) -> Result:
    from fastp2p.config import DhtConfig, GossipsubConfig, HostConfig
    from fastp2p.host import Host
    from fastp2p.multiaddr import Multiaddr
    from fastp2p.peer import Ed25519PrivateKey
    from fastp2p.proto.kad.messages_pb import KadMessage, MessageType

    res = Result(kind)
    cfg = HostConfig(data_paths=("tcp",), enable_ping=False, pubsub=GossipsubConfig(enabled=False),
                     dht=DhtConfig(enabled=True, mode="server", rpc_timeout=10.0))
    async with _server(kind, core) as (addr, proc), contextlib.AsyncExitStack() as stack:
        pid = proc.pid
        server = Multiaddr(addr).peer_id()
        assert server is not None
        hosts = []
        for _ in range(connections):
            h = Host(Ed25519PrivateKey.generate(), listen=["/ip4/127.0.0.1/tcp/0"], config=cfg)
            await stack.enter_async_context(h)
            await h.connect(addr)
            hosts.append(h)
        await asyncio.sleep(3.0)  # identify both ways: the server learns the clients
        # drain stdout so the server never blocks on a full pipe
        drain = asyncio.ensure_future(proc.stdout.read())
        stack.callback(drain.cancel)
        rng = random.Random(1)
        measuring = False
        stop = False

        async def loop(h: Any) -> None:
            while not stop:
                key = rng.randbytes(32)
                t0 = time.perf_counter()
                try:
                    resp = await h.dht._request(server, KadMessage(MessageType.FIND_NODE, key=key))
                except Exception:
                    if measuring:
                        res.errors += 1
                    await asyncio.sleep(0.01)
                    continue
                if measuring and not stop:
                    res.rpcs += 1
                    res.latencies.append(time.perf_counter() - t0)
                    res.closer_peers.append(len(resp.closer_peers) if resp is not None else 0)

        tasks = [asyncio.ensure_future(loop(h)) for h in hosts for _ in range(concurrency)]
        await asyncio.sleep(1.0)  # warm-up
        measuring = True
        cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
        await asyncio.sleep(seconds)
        stop = True
        res.seconds = time.perf_counter() - t0
        res.server_cpu = _cpu_seconds(pid) - cpu0
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return res


async def main_async(args: argparse.Namespace) -> list[dict[str, Any]]:
    out = []
    for kind in args.servers.split(","):
        try:
            r = await measure(kind, seconds=args.seconds, connections=args.connections,
                              concurrency=args.concurrency, core=args.core)
            d = r.as_dict()
        except Exception as exc:  # one missing reference server must not hide the others
            d = {"server": kind, "error": f"{type(exc).__name__}: {exc}"}
        print(json.dumps(d), flush=True)
        out.append(d)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--connections", type=int, default=4)
    ap.add_argument("--concurrency", type=int, default=16, help="RPC loops per connection")
    ap.add_argument("--servers", default="fastp2p,js,py")
    ap.add_argument("--core", type=int, default=1, help="pin each server to this CPU (-1: no pinning)")
    ap.add_argument("--json", help="also write the results here")
    args = ap.parse_args(argv)
    if args.core < 0:
        args.core = None
    results = asyncio.run(main_async(args))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return 0 if all("error" not in r for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
