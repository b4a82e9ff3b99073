"""RDMA bench: fastp2p's verbs path against perftest on the same device.

Run it where an RDMA device exists (in CI: inside the Soft-RoCE VM)::

    ../shared/rdma-vm/run.sh --timeout 900 -- python -m fastp2p.benchsuite.rdma [--quick] [--json FILE]

Rows (one run, same device, interleaved in this order):

- RDMA WRITE / READ bandwidth at 64 KiB and 1 MiB: fastp2p's verbs binding
  (a window of outstanding work requests, as perftest keeps) vs ``ib_write_bw``
  / ``ib_read_bw``; also ``conn.put``/``conn.get`` through the grant protocol
  (a round trip and a scoped registration per operation).
- A stream over RDMA (two Hosts in two processes, 1 MiB writes) vs
  ``ib_send_bw`` (64 KiB messages) and vs the same Hosts on TCP.
- 64-byte round trip p50: a stream ping-pong over RDMA and the binding's
  SEND/RECV ping-pong (busy-polled, and woken through asyncio's add_reader on
  the completion channel: the difference is the Python wake-up) vs
  ``ib_send_lat``.

Soft-RoCE is software emulation: numbers say how fastp2p compares with the
verbs baseline on the same device, nothing about NIC hardware.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import statistics
import subprocess
import sys
import time
from typing import Any

MiB = 1 << 20
KiB = 1 << 10
SERVER_IP = os.environ.get("FASTP2P_BENCH_RDMA_IP", "10.99.0.1")


# -- perftest ---------------------------------------------------------------------------


def _perftest(tool: str, args: list[str], port: int) -> str:
    dev = _device()
    common = ["-d", dev.name, "-i", str(dev.port), "-x", str(dev.gid_index), "-p", str(port), "-F", *args]
    server = subprocess.Popen([tool, *common], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # the server needs a moment to listen (seconds under emulation): retry the client
        for attempt in range(4):
            time.sleep(1.0 + 2 * attempt)
            client = subprocess.run([tool, *common, SERVER_IP], capture_output=True, text=True, timeout=600)
            if client.returncode == 0 or server.poll() is not None:
                break
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    if client.returncode != 0:
        raise RuntimeError(f"{tool} failed: {client.stdout[-2000:]} {client.stderr[-2000:]}")
    return client.stdout


def perftest_bw(tool: str, size: int, iters: int, port: int) -> float:
    """Average MB/s (10^6 bytes) reported by ib_*_bw."""
    out = _perftest(tool, ["-s", str(size), "-n", str(iters)], port)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[0] == str(size):
            return float(parts[3])
    raise RuntimeError(f"cannot parse {tool} output:\n{out}")


def perftest_lat(size: int, iters: int, port: int) -> dict[str, float]:
    out = _perftest("ib_send_lat", ["-s", str(size), "-n", str(iters)], port)
    for line in out.splitlines():
        parts = line.split()
        if len(parts) >= 7 and parts[0] == str(size) and re.match(r"^\d+$", parts[1]):
            return {"t_min": float(parts[2]), "t_typical": float(parts[4]), "t_avg": float(parts[5])}
    raise RuntimeError(f"cannot parse ib_send_lat output:\n{out}")


# -- the binding ---------------------------------------------------------------------------

_DEV: Any = None


def _device() -> Any:
    global _DEV
    if _DEV is None:
        from fastp2p import rdma

        _DEV = rdma.open_device()
    return _DEV


class _Loopback:
    """Two connected RC QPs on the device, each with its own CQ (and channel)."""

    def __init__(self, depth: int = 128) -> None:
        from fastp2p._native import verbs as v

        d = _device()
        self.v = v
        acc = v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE
        self.cqa, self.cqb = d.ctx.create_cq(4 * depth), d.ctx.create_cq(4 * depth)
        self.qa = d.pd.create_qp(self.cqa, depth, depth)
        self.qb = d.pd.create_qp(self.cqb, depth, depth)
        for q in (self.qa, self.qb):
            q.to_init(d.port, acc)
        self.qa.to_rtr(self.qb.qp_num, 1, d.gid, d.port, d.sgid_index, d.mtu, d.lid, d.max_rd_atomic)
        self.qb.to_rtr(self.qa.qp_num, 2, d.gid, d.port, d.sgid_index, d.mtu, d.lid, d.max_rd_atomic)
        self.qa.to_rts(2, 14, 7, 7, d.max_rd_atomic)
        self.qb.to_rts(1, 14, 7, 7, d.max_rd_atomic)

    def close(self) -> None:
        for o in (self.qa, self.qb, self.cqa, self.cqb):
            o.close()


def binding_bw(op: str, size: int, total: int, depth: int = 128) -> float:
    """MB/s of ``op`` (write/read) from QP a into b's memory, ``depth`` outstanding."""
    from fastp2p import _accel

    lb = _Loopback(depth)
    v = lb.v
    d = _device()
    src, dst = _accel.alloc_region(size, False), _accel.alloc_region(size, False)
    acc = v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE
    ms, md = d.pd.register(src, acc), d.pd.register(dst, acc)
    opcode = v.OP_WRITE if op == "write" else v.OP_READ
    if op == "read":
        depth = min(depth, d.max_rd_atomic)
    n = max(1, total // size)
    try:
        posted = done = 0
        t0 = time.perf_counter()
        while done < n:
            k = min(depth - (posted - done), n - posted)
            if k:
                lb.qa.post_send_batch(
                    [(i, opcode, ms, 0, size, md.addr, md.rkey, 0, v.WR_SIGNALED) for i in range(posted, posted + k)]
                )
                posted += k
            for wc in lb.cqa.poll(64, 200_000):
                if wc[1] != 0:
                    raise RuntimeError(f"completion error {wc}")
                done += 1
        dt = time.perf_counter() - t0
    finally:
        ms.close()
        md.close()
        lb.close()
        src.close()
        dst.close()
    return n * size / dt / 1e6


def binding_rtt(iters: int, event_driven: bool) -> float:
    """p50 microseconds of a 64-byte SEND/RECV ping-pong between the two QPs."""
    from fastp2p import _accel

    lb = _Loopback(16)
    v = lb.v
    d = _device()
    ra, rb = _accel.alloc_region(4096, False), _accel.alloc_region(4096, False)
    ma, mb = d.pd.register(ra), d.pd.register(rb)
    samples: list[float] = []
    try:
        for _ in range(4):
            lb.qa.post_recv(1, ma, 0, 64)
            lb.qb.post_recv(2, mb, 0, 64)
        if not event_driven:
            for _ in range(iters):
                t0 = time.perf_counter()
                lb.qa.post_send(10, v.OP_SEND, ma, 64, 64, flags=0)
                while not [w for w in lb.cqb.poll(4, 1_000_000) if w[0] == 2]:
                    pass
                lb.qb.post_recv(2, mb, 0, 64)
                lb.qb.post_send(11, v.OP_SEND, mb, 64, 64, flags=0)
                while not [w for w in lb.cqa.poll(4, 1_000_000) if w[0] == 1]:
                    pass
                lb.qa.post_recv(1, ma, 0, 64)
                samples.append(time.perf_counter() - t0)
        else:
            samples = asyncio.run(_event_rtt(lb, ma, mb, iters))
    finally:
        ma.close()
        mb.close()
        lb.close()
        ra.close()
        rb.close()
    return statistics.median(samples) * 1e6


async def _event_rtt(lb: _Loopback, ma: Any, mb: Any, iters: int) -> list[float]:
    v = lb.v
    loop = asyncio.get_running_loop()
    waiters: dict[int, asyncio.Future[None]] = {}

    def on_event(cq: Any, key: int, qp: Any, mr: Any) -> None:
        cq.drain_events()
        for w in cq.poll(16):
            if w[0] == key:
                qp.post_recv(key, mr, 0, 64)
                if key == 2:  # b answers at once, from the callback
                    lb.qb.post_send(11, v.OP_SEND, mb, 64, 64, flags=0)
                fut = waiters.pop(key, None)
                if fut is not None and not fut.done():
                    fut.set_result(None)

    loop.add_reader(lb.cqa.channel_fd, on_event, lb.cqa, 1, lb.qa, ma)
    loop.add_reader(lb.cqb.channel_fd, on_event, lb.cqb, 2, lb.qb, mb)
    samples = []
    try:
        for _ in range(iters):
            fut = waiters[1] = loop.create_future()
            t0 = time.perf_counter()
            lb.qa.post_send(10, v.OP_SEND, ma, 64, 64, flags=0)
            await fut
            samples.append(time.perf_counter() - t0)
    finally:
        loop.remove_reader(lb.cqa.channel_fd)
        loop.remove_reader(lb.cqb.channel_fd)
    return samples


# -- Hosts -----------------------------------------------------------------------------------

_SINK = "/bench/rdma/sink/1"
_ECHO = "/bench/rdma/echo/1"


def _config(path: str) -> Any:
    from fastp2p.config import HostConfig, RdmaConfig

    paths = ("rdma", "tcp") if path == "rdma" else ("tcp",)
    return HostConfig(data_paths=paths, rdma=RdmaConfig(same_host="rdma"))


async def _peer_main(path: str) -> None:
    import fastp2p

    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config(path)) as host:

        async def sink(stream: Any) -> None:
            buf = bytearray(MiB)
            n = 0
            while k := await stream.readinto(buf):
                n += k
            await stream.write(str(n).encode())
            await stream.close_write()

        async def echo(stream: Any) -> None:
            buf = bytearray(64)
            view = memoryview(buf)
            while True:
                got = 0
                while got < 64:
                    k = await stream.readinto(view[got:])
                    if not k:
                        return
                    got += k
                await stream.write(buf)

        host.set_handler(_SINK, sink)
        host.set_handler(_ECHO, echo)
        print(json.dumps({"addr": str(host.full_addrs[0])}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def host_bench(path: str, total: int, rtt_iters: int) -> dict[str, float]:
    """Stream MB/s (1 MiB writes) and 64-byte ping-pong p50 (us) to a child process."""
    import fastp2p

    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fastp2p.benchsuite.rdma", "--peer", path,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    try:
        info = json.loads(await asyncio.wait_for(proc.stdout.readline(), 120))  # type: ignore[union-attr]
        async with fastp2p.Host(config=_config(path)) as host:
            peer = await host.connect(info["addr"])
            conn = host.connection(peer)
            assert conn is not None
            deadline = time.monotonic() + 30
            while conn.data_path != path and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            if conn.data_path != path:
                raise RuntimeError(f"connection on {conn.data_path}: {conn.data_path_reason}")
            s = await host.open_stream(peer, _SINK)
            block = os.urandom(MiB)
            t0 = time.perf_counter()
            for _ in range(total // MiB):
                await s.write(block)
            await s.close_write()
            n = int(await s.read())
            dt = time.perf_counter() - t0
            assert n == total // MiB * MiB
            e = await host.open_stream(peer, _ECHO)
            msg = os.urandom(64)
            buf = bytearray(64)
            samples = []
            for _ in range(rtt_iters):
                t1 = time.perf_counter()
                await e.write(msg)
                got = 0
                while got < 64:
                    got += await e.readinto(memoryview(buf)[got:])
                samples.append(time.perf_counter() - t1)
            await e.aclose()
            return {"stream_MBps": n / dt / 1e6, "rtt64_p50_us": statistics.median(samples[10:]) * 1e6}
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()


# -- the run ----------------------------------------------------------------------------------


def run(quick: bool = False, rounds: int = 3) -> dict[str, Any]:
    """``rounds`` interleaved rounds of every row; the medians (raw rounds under "rounds")."""
    from fastp2p import rdma

    ok, why = rdma.available()
    if not ok:
        raise SystemExit(f"fastp2p.benchsuite.rdma: RDMA unavailable: {why}")
    all_rounds = [_round(quick, 18600 + 20 * i) for i in range(rounds)]

    def med(vals: list[Any]) -> Any:
        if isinstance(vals[0], dict):
            return {k: med([v[k] for v in vals]) for k in vals[0]}
        return statistics.median(vals)

    res: dict[str, Any] = {k: med([r[k] for r in all_rounds]) for k in all_rounds[0] if k not in ("device", "quick")}
    res.update(device=_device().name, quick=quick, rounds=all_rounds)
    return res


def _round(quick: bool, port: int) -> dict[str, Any]:
    scale = 8 if quick else 2
    res: dict[str, Any] = {"device": _device().name, "quick": quick}
    for size, total in ((64 * KiB, 128 * MiB), (MiB, 128 * MiB)):
        t = total // scale
        label = f"{size // KiB} KiB"
        port += 1
        res[f"ib_write_bw {label}"] = perftest_bw("ib_write_bw", size, t // size, port)
        res[f"fastp2p WRITE {label}"] = binding_bw("write", size, t)
        port += 1
        res[f"ib_read_bw {label}"] = perftest_bw("ib_read_bw", size, t // size, port)
        res[f"fastp2p READ {label}"] = binding_bw("read", size, t)
    res["put/get"] = asyncio.run(_put_get(64 * MiB // scale))
    port += 1
    res["ib_send_bw 64 KiB"] = perftest_bw("ib_send_bw", 64 * KiB, 128 * MiB // scale // (64 * KiB), port)
    res["rdma host"] = asyncio.run(host_bench("rdma", 128 * MiB // scale, 1000 // scale))
    res["tcp host"] = asyncio.run(host_bench("tcp", 128 * MiB // scale, 1000 // scale))
    port += 1
    res["ib_send_lat 64 B"] = perftest_lat(64, 1000 // scale, port)
    res["binding SEND/RECV rtt busy-poll us"] = binding_rtt(1000 // scale, event_driven=False)
    res["binding SEND/RECV rtt asyncio us"] = binding_rtt(1000 // scale, event_driven=True)
    return res


async def _put_get(total: int) -> dict[str, float]:
    """conn.put / conn.get MB/s for 64 KiB and 1 MiB operations (in one process)."""
    import fastp2p

    out = {}
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_config("rdma")) as b, fastp2p.Host(
        config=_config("rdma")
    ) as a:
        peer = await a.connect(b.full_addrs[0])
        conn = a.connection(peer)
        assert conn is not None
        deadline = time.monotonic() + 30
        while conn.data_path != "rdma" and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        remote, local = b.alloc(4 * MiB), a.alloc(4 * MiB)
        tok = remote.grant(a.peer_id, read=True, write=True)
        for size in (64 * KiB, MiB):
            for name, fn in (("put", conn.put), ("get", conn.get)):
                n = max(4, total // size)
                t0 = time.perf_counter()
                for i in range(n):
                    await fn(local, tok, offset=(i * size) % (4 * MiB), length=size)
                out[f"{name} {size // KiB} KiB MBps"] = n * size / (time.perf_counter() - t0) / 1e6
    return out


def table(res: dict[str, Any]) -> str:
    def r(a: float, b: float) -> str:
        return f"{a / b:.2f}x" if b else "-"

    rows = [("row", "fastp2p", "baseline", "ratio")]
    for size in ("64 KiB", "1024 KiB"):
        for op, tool in (("WRITE", "ib_write_bw"), ("READ", "ib_read_bw")):
            f, b = res[f"fastp2p {op} {size}"], res[f"{tool} {size}"]
            rows.append((f"RDMA {op} {size} MB/s (binding vs {tool})", f"{f:.1f}", f"{b:.1f}", r(f, b)))
    pg = res["put/get"]
    for k, val in pg.items():
        tool = "ib_write_bw" if k.startswith("put") else "ib_read_bw"
        size = "64 KiB" if "64 KiB" in k else "1024 KiB"
        b = res[f"{tool} {size}"]
        rows.append((f"conn.{k.replace(' MBps', '')} MB/s (vs {tool})", f"{val:.1f}", f"{b:.1f}", r(val, b)))
    s_rdma, s_tcp = res["rdma host"]["stream_MBps"], res["tcp host"]["stream_MBps"]
    b = res["ib_send_bw 64 KiB"]
    rows.append(("stream over RDMA MB/s (vs ib_send_bw 64 KiB)", f"{s_rdma:.1f}", f"{b:.1f}", r(s_rdma, b)))
    rows.append(("stream over RDMA vs fastp2p TCP MB/s", f"{s_rdma:.1f}", f"{s_tcp:.1f}", r(s_rdma, s_tcp)))
    lat = res["ib_send_lat 64 B"]["t_typical"]
    busy = res["binding SEND/RECV rtt busy-poll us"]
    ev = res["binding SEND/RECV rtt asyncio us"]
    wake = max(0.0, ev - busy)
    rtt = res["rdma host"]["rtt64_p50_us"]
    rows.append(("64 B RTT p50 us: binding busy-poll (vs 2x ib_send_lat typical)", f"{busy:.1f}", f"{2 * lat:.1f}",
                 r(busy, 2 * lat)))
    rows.append(("64 B RTT p50 us: binding via asyncio wake-up", f"{ev:.1f}", f"{2 * lat:.1f}", r(ev, 2 * lat)))
    rows.append(("  Python wake-up (asyncio minus busy-poll) us", f"{wake:.1f}", "", ""))
    rows.append(("64 B RTT p50 us: stream over RDMA (vs 2x ib_send_lat + wake-up)", f"{rtt:.1f}",
                 f"{2 * lat + wake:.1f}", r(rtt, 2 * lat + wake)))
    rows.append(("64 B RTT p50 us: stream over TCP", f"{res['tcp host']['rtt64_p50_us']:.1f}", "", ""))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(row)) + " |" for row in rows]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastp2p.benchsuite.rdma", description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="1/8 of the sizes (smoke run)")
    ap.add_argument("--json", help="write the raw results here")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are reported")
    ap.add_argument("--peer", choices=("rdma", "tcp"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.peer:
        asyncio.run(_peer_main(a.peer))
        return 0
    res = run(a.quick, a.rounds)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)
    print(table(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
