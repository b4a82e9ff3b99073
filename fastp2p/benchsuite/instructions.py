"""Instructions per operation, counted by valgrind: the per-message and per-stream
paths without the timing noise of a shared VM.

Wall-clock figures of a 64-byte round trip move by 20-30% between runs on a
2-vCPU VM; the user-space instructions the same workload executes move by ~1%.
This harness runs each workload in ONE process (server and client on one uvloop
loop, over real loopback TCP) under ``valgrind --tool=cachegrind`` twice, with
``n1`` and ``n2`` operations, and reports ``(I(n2) - I(n1)) / (n2 - n1)``: the
instructions of one operation, both sides together, set-up and start-up cancelled
out. Kernel work (syscalls, wake-ups) is not counted: this measures what the
library adds in user space, not latency.

valgrind does not run AVX-512, so a workload there may seal and open on other
AEAD code than it does natively (AES-256-GCM on OpenSSL's EVP instead of
fastp2p's VAES kernel, for one): the table's last lines name both, and a count
is then the EVP path's.

Workloads:

``rtt``
    one 64-byte echo round trip on an open stream (connection), as the
    end-to-end bench's ``rtt`` scenario.
``stream``
    one request/response stream (64 bytes each way: open, write, half-close,
    read, close), 1000 at a time on one connection, as ``streams1k``; raw
    uvloop does it with one connection per request.
``connect``
    a fresh client host connects (TCP, multistream, Noise XX, yamux or mplex,
    identify both ways), echoes one byte on a new stream and closes, as the
    ``connect`` scenario's ``conn+echo``; the count includes the client host's
    start and close (its identity key is made outside the counted difference).
    Raw uvloop: TCP connect, a 1-byte request/response, close.

Run: ``python -m fastp2p.benchsuite.instructions [--backends ...] [--ops ...]``
(needs ``valgrind`` on PATH and uvloop).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

from . import wire

BACKENDS = ("tcp-uvloop-proto", "fastp2p-yamux", "fastp2p-yamux-chacha", "fastp2p-yamux-aesgcm",
            "fastp2p-mplex")
OPS = {"rtt": (500, 2500), "stream": (1000, 4000), "connect": (50, 250)}
BATCH = 1000  # streams in flight at once (the stream workload)
RAW = "tcp-uvloop-proto"


# -- the workloads (run inside valgrind) ----------------------------------------------


async def _raw_rtt(n: int) -> None:
    from .backends import asyncio_tcp as A

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(A._ServerProto, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    _, c = await loop.create_connection(A._ClientProto, "127.0.0.1", port)
    c.t.write(wire.pack(wire.OP_ECHO, 64))
    msg = bytes(64)
    for _ in range(n):
        f = c.expect(64)
        c.t.write(msg)
        await f
    c.t.close()
    srv.close()


async def _raw_stream(n: int) -> None:
    from .backends import asyncio_tcp as A

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(A._ServerProto, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    payload = wire.pack(wire.OP_RR, 64, 64) + bytes(64)

    async def one() -> None:
        _, c = await loop.create_connection(A._ClientProto, "127.0.0.1", port)
        f = c.expect(64)
        c.t.write(payload)
        await f
        c.t.close()

    for left in range(n, 0, -BATCH):
        await asyncio.gather(*(one() for _ in range(min(BATCH, left))))
    srv.close()


async def _raw_connect(n: int) -> None:
    from .backends import asyncio_tcp as A

    loop = asyncio.get_running_loop()
    srv = await loop.create_server(A._ServerProto, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    payload = wire.pack(wire.OP_RR, 1, 1) + b"x"
    for _ in range(n):
        _, c = await loop.create_connection(A._ClientProto, "127.0.0.1", port)
        f = c.expect(1)
        c.t.write(payload)
        await f
        c.t.close()
    srv.close()


async def _fastp2p_connect(muxer: str, pinned: str | None, n: int) -> None:
    import fastp2p

    from .backends import fastp2p_tcp as F

    # Identity keys for the largest n in both runs, so that their making cancels out;
    # each connect starts a fresh client host from one (as the wall-clock bench does).
    keys = [fastp2p.Ed25519PrivateKey.generate() for _ in range(max(OPS["connect"]))]
    async with F._new_host(muxer, True, pinned) as server:
        server.set_handler(wire.PROTOCOL_ID, F._handler)
        addr = f"{server.addrs[0]}/p2p/{server.peer_id}"
        for key in keys[:n]:
            async with fastp2p.Host(key, listen=[], config=F._config(muxer, pinned)) as client:
                peer = await client.connect(addr)
                s = await client.open_stream(peer, wire.PROTOCOL_ID)
                await s.write(wire.pack(wire.OP_ECHO, 1) + b"x")
                await s.readexactly(1)
                await s.aclose()


async def _fastp2p(backend: str, op: str, n: int) -> None:
    from .backends import fastp2p_tcp as F

    muxer, pinned, _ = F.parse_name(backend)  # (the serial variant differs only on >= 4 CPUs)
    if op == "connect":
        await _fastp2p_connect(muxer, pinned, n)
        return
    async with F._new_host(muxer, True, pinned) as server, F._new_host(muxer, False, pinned) as client:
        server.set_handler(wire.PROTOCOL_ID, F._handler)
        peer = await client.connect(f"{server.addrs[0]}/p2p/{server.peer_id}")
        if op == "rtt":
            s = await client.open_stream(peer, wire.PROTOCOL_ID)
            await s.write(wire.pack(wire.OP_ECHO, 64))
            msg = bytes(64)
            buf = memoryview(bytearray(64))
            for _ in range(n):
                await s.write(msg)
                await F._readexactly_into(s, buf, 64)
            await s.aclose()
            return
        payload = wire.pack(wire.OP_RR, 64, 64) + bytes(64)

        async def one() -> None:
            s = await client.open_stream(peer, wire.PROTOCOL_ID)
            await s.write(payload)
            await s.close_write()
            await s.readexactly(64)
            await s.aclose()

        for left in range(n, 0, -BATCH):
            await asyncio.gather(*(one() for _ in range(min(BATCH, left))))


def aead_impls() -> str:
    """The AEAD code new ciphers run on in this process (pure twins: the ``cryptography``
    package)."""
    from fastp2p import _accel

    if not _accel.HAVE_NATIVE:
        return "AES-256-GCM and ChaCha20-Poly1305 on the cryptography package (pure twins)"
    from fastp2p._native import aead

    return f"AES-256-GCM on {aead.aesgcm_impl()}, ChaCha20-Poly1305 on {aead.chacha_impl()}"


_AEAD_MARK = "fastp2p-instructions-aead: "


def run_workload(backend: str, op: str, n: int) -> None:
    """The workload itself (what valgrind runs): ``n`` operations, one process."""
    import uvloop

    if backend == RAW:
        coro = {"rtt": _raw_rtt, "stream": _raw_stream, "connect": _raw_connect}[op](n)
    else:
        print(_AEAD_MARK + aead_impls(), file=sys.stderr, flush=True)
        coro = _fastp2p(backend, op, n)
    uvloop.run(coro)


# -- the driver --------------------------------------------------------------------------

_IREFS = re.compile(r"I\s+refs:\s+([\d,]+)")
#: the AEAD code the workloads ran on under valgrind (from their stderr)
UNDER_VALGRIND: set[str] = set()


def _count(backend: str, op: str, n: int) -> int:
    """User-space instructions of one whole run with ``n`` operations."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["valgrind", "--tool=cachegrind", "--cache-sim=no",
               f"--cachegrind-out-file={os.path.join(tmp, 'cg.out')}",
               # sys.executable as it is, not resolved: a venv's python is a link to
               # the base interpreter, which finds the venv (pyvenv.cfg) only by it
               sys.executable, "-m", "fastp2p.benchsuite.instructions",
               "--worker", backend, op, str(n)]
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    m = _IREFS.search(res.stderr)
    for line in res.stderr.splitlines():
        if line.startswith(_AEAD_MARK) and line[len(_AEAD_MARK):]:
            UNDER_VALGRIND.add(line[len(_AEAD_MARK):])
    if res.returncode != 0 or m is None:
        raise RuntimeError(f"{backend} {op} n={n} failed (rc {res.returncode}): {res.stderr[-2000:]}")
    return int(m.group(1).replace(",", ""))


def measure(backend: str, op: str, n1: int, n2: int) -> float:
    """Instructions per operation: the difference of two runs over their difference."""
    return (_count(backend, op, n2) - _count(backend, op, n1)) / (n2 - n1)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fastp2p.benchsuite.instructions", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backends", nargs="+", default=list(BACKENDS), choices=BACKENDS)
    ap.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    ap.add_argument("--worker", nargs=3, metavar=("BACKEND", "OP", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        backend, op, n = args.worker
        run_workload(backend, op, int(n))
        return 0
    if shutil.which("valgrind") is None:
        print("valgrind not found: apt-get install valgrind", file=sys.stderr)
        return 2
    backends = list(args.backends)
    if RAW not in backends:
        backends.insert(0, RAW)  # the reference of every ratio
    print(f"instructions per operation, both sides, user space (valgrind; {sys.version.split()[0]})")
    print(f"{'op':7s} {'backend':22s} {'instr/op':>12s} {'x raw':>7s} {'s':>5s}")
    for op in args.ops:
        n1, n2 = OPS[op]
        ref = None
        for b in backends:
            t0 = time.monotonic()
            per = measure(b, op, n1, n2)
            if b == RAW:
                ref = per
            ratio = f"x{per / ref:.2f}" if ref else "-"
            print(f"{op:7s} {b:22s} {per:12,.0f} {ratio:>7s} {time.monotonic() - t0:5.0f}", flush=True)
    native = aead_impls()
    for ran in sorted(UNDER_VALGRIND):
        same = "as natively" if ran == native else f"natively: {native}"
        print(f"AEAD under valgrind: {ran} ({same})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
