"""File fetch vs ``fastp2p perf``: one local provider, the same connection path.

    python -m fastp2p.benchsuite.files [--size 1G] [--rounds 3] [--data-path auto|tcp]

A provider process shares a file of ``--size`` random bytes and serves
``/perf/1.0.0``. This process connects once, then alternates, ``--rounds``
times: a perf download of ``--size`` bytes, and ``host.files.fetch`` of the
file into a fresh destination (every chunk verified against the manifest,
written through an ``mmap``). It prints both throughputs per round and the
ratio of the medians (the issue's target: fetch >= 0.9x perf).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from typing import Any

__all__ = ["main", "run"]


def _make_file(path: str, size: int) -> None:
    chunk = 8 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


async def _serve(path: str, data_path: str) -> int:
    from fastp2p.cli import DATA_PATHS
    from fastp2p.config import HostConfig
    from fastp2p.host import Host
    from fastp2p.services import serve_perf

    cfg = HostConfig(data_paths=DATA_PATHS[data_path])
    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=cfg) as host:
        serve_perf(host)
        info = await host.files.share(path)
        print(json.dumps({"addr": str(host.full_addrs[0]), "cid": info.cid}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


def _cpu_self() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _cpu_pid(pid: int) -> float:
    """CPU seconds (user + system) of process ``pid`` (Linux /proc), 0 when unknown."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


async def _client(addr: str, cid: str, size: int, rounds: int, data_path: str, dest_dir: str,
                  server_pid: int = 0) -> dict[str, Any]:
    from fastp2p.cli import DATA_PATHS
    from fastp2p.config import HostConfig
    from fastp2p.host import Host
    from fastp2p.services import perf

    cfg = HostConfig(data_paths=DATA_PATHS[data_path])
    perf_mbps: list[float] = []
    fetch_mbps: list[float] = []
    gib = size / 2**30
    cpu: dict[str, list[tuple[float, float]]] = {"perf": [], "fetch": []}
    async with Host(config=cfg) as host:
        peer = await host.connect(addr)
        conn = host.connection(peer)
        path = conn.data_path if conn is not None else "?"
        dest = os.path.join(dest_dir, "fetched.bin")
        for r in range(rounds):
            c0, s0 = _cpu_self(), _cpu_pid(server_pid)
            res = await perf(host, peer, 0, size)
            cpu["perf"].append(((_cpu_self() - c0) / gib, (_cpu_pid(server_pid) - s0) / gib))
            perf_mbps.append(size / res.download_seconds / 1e6)
            if os.path.exists(dest):
                os.unlink(dest)
            c0, s0 = _cpu_self(), _cpu_pid(server_pid)
            t0 = time.perf_counter()
            fr = await host.files.fetch(cid, dest, providers=[peer])
            dt = time.perf_counter() - t0
            cpu["fetch"].append(((_cpu_self() - c0) / gib, (_cpu_pid(server_pid) - s0) / gib))
            assert fr.size == size and fr.resumed == 0
            fetch_mbps.append(size / dt / 1e6)
            (pc, ps), (fc, fs) = cpu["perf"][-1], cpu["fetch"][-1]
            print(
                f"round {r + 1}: perf download {perf_mbps[-1]:8.1f} MB/s "
                f"(CPU s/GiB client {pc:.2f} server {ps:.2f})   files fetch {fetch_mbps[-1]:8.1f} MB/s "
                f"verified (CPU s/GiB client {fc:.2f} server {fs:.2f})",
                flush=True,
            )
        os.unlink(dest)
    p, f = statistics.median(perf_mbps), statistics.median(fetch_mbps)
    return {
        "data_path": path,
        "size": size,
        "perf_MBps": perf_mbps,
        "fetch_MBps": fetch_mbps,
        "perf_median_MBps": p,
        "fetch_median_MBps": f,
        "ratio": f / p,
        "cpu_s_per_GiB": {k: {"client": statistics.median(c for c, _ in v),
                              "server": statistics.median(x for _, x in v)} for k, v in cpu.items()},
    }


def run(size: int, rounds: int, data_path: str, dest_dir: str | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the figures (throughputs in MB/s, ``ratio`` = fetch/perf)."""
    from fastp2p.cli import _run

    with tempfile.TemporaryDirectory(prefix="fastp2p-filebench-", dir=dest_dir) as tmp:
        src = os.path.join(tmp, "shared.bin")
        _make_file(src, size)
        prov = subprocess.Popen(
            [sys.executable, "-m", "fastp2p.benchsuite.files", "--serve", src, "--data-path", data_path],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
        )
        try:
            assert prov.stdout is not None
            line = prov.stdout.readline()
            if not line:
                raise RuntimeError(f"provider exited with {prov.wait()}")
            info = json.loads(line)
            out: dict[str, Any] = {}

            async def go() -> int:
                out.update(await _client(info["addr"], info["cid"], size, rounds, data_path, tmp, prov.pid))
                return 0

            _run(go())
            return out
        finally:
            if prov.stdin is not None:
                prov.stdin.close()
            try:
                prov.wait(10)
            except subprocess.TimeoutExpired:
                prov.kill()
                prov.wait()


def main(argv: list[str] | None = None) -> int:
    from fastp2p.cli import DATA_PATHS, _run, _size

    p = argparse.ArgumentParser(prog="python -m fastp2p.benchsuite.files", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=_size, default=1 << 30)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--data-path", choices=sorted(DATA_PATHS), default="auto")
    p.add_argument("--dest-dir", default=None, help="where the file and the fetched copy live")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON object")
    p.add_argument("--serve", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.serve:
        return _run(_serve(a.serve, a.data_path))
    res = run(a.size, a.rounds, a.data_path, a.dest_dir)
    if a.json:
        print(json.dumps(res))
    else:
        print(
            f"{res['size'] / 2**30:.2f} GiB over {res['data_path']}: perf download "
            f"{res['perf_median_MBps']:.1f} MB/s, files fetch {res['fetch_median_MBps']:.1f} MB/s "
            f"(median of {a.rounds}) -> fetch/perf = {res['ratio']:.2f}x"
        )
        c = res["cpu_s_per_GiB"]
        print(
            f"CPU s/GiB (median): perf client {c['perf']['client']:.2f} server {c['perf']['server']:.2f}; "
            f"fetch client {c['fetch']['client']:.2f} server {c['fetch']['server']:.2f} "
            "(the fetch adds SHA-256 of every chunk and writing a new file)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
