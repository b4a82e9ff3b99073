"""Parallel sealing and opening of large writes: bytes per second against threads.

``python -m fastp2p.benchsuite.parallel [--size 4MiB] [--threads 0 1 3 7] [--seconds 1]``

One :class:`~fastp2p._native.aead.NoiseCipher` seals a ``size``-byte write into
Noise frames again and again (``seal_frames``), with ``parallel_seal(t)`` set
to each thread count in turn (0: the writer's thread alone, the serial path).
The reading side is measured the same way: one ``size``-byte read of sealed
frames opened with ``parallel_open(t)``. Each row is the median of five timed
runs; ``x serial`` is the row's speed over the 0-thread row's. This is the
kernel-level speed-up issue 12 asks about; the bulk rows of ``bench.run`` with
the ``-serial`` backends show what it gives end to end.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from typing import Any

from fastp2p.config import _usable_cpus

from .cli import _size

CIPHERS = ("AESGCM", "ChaChaPoly")


def _rate(fn: Any, size: int, seconds: float) -> float:
    """Median bytes per second of ``fn()`` (which handles ``size`` bytes) over 5 runs."""
    fn()  # warm: pool threads started, clones made, pages touched
    rates = []
    for _ in range(5):
        n, t0 = 0, time.perf_counter()
        while True:
            fn()
            n += 1
            dt = time.perf_counter() - t0
            if dt >= seconds / 5:
                break
        rates.append(n * size / dt)
    return statistics.median(rates)


def measure(cipher: str, size: int, threads: list[int], seconds: float) -> list[dict[str, Any]]:
    """Seal and open rates of ``cipher`` for each thread count."""
    from fastp2p._native.aead import NoiseCipher  # the native build's (the pure one is serial)

    key = bytes(range(32))
    data = memoryview(os.urandom(size))
    rows: list[dict[str, Any]] = []
    for t in threads:
        tx = NoiseCipher(key, 0, cipher)
        tx.parallel_seal(t, 0)
        row: dict[str, Any] = {"cipher": cipher, "threads": t, "impl": tx.impl,
                               "seal B/s": _rate(lambda tx=tx: tx.seal_frames(data), size, seconds)}
        sealed = bytes(NoiseCipher(key, 0, cipher).seal_frames(data))

        def open_once(t: int = t, sealed: bytes = sealed) -> None:
            # a fresh receiving cipher per read: the frames carry nonces from 0
            rx = NoiseCipher(key, 0, cipher)
            rx.parallel_open(t, 0)
            rx.open_frames(sealed)

        row["open B/s"] = _rate(open_once, size, seconds)
        tx.close()
        rows.append(row)
    for metric in ("seal B/s", "open B/s"):
        base = next((r[metric] for r in rows if r["threads"] == 0 and metric in r), None)
        for r in rows:
            if base and metric in r:
                r[metric.split()[0] + " x serial"] = r[metric] / base
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="4MiB", help="bytes per write/read (default 4MiB)")
    ap.add_argument("--threads", type=int, nargs="*",
                    help="pool threads besides the caller's (default: 0 1 3 7 15, up to CPUs - 1)")
    ap.add_argument("--ciphers", nargs="*", default=list(CIPHERS), choices=CIPHERS)
    ap.add_argument("--seconds", type=float, default=1.0, help="timed seconds per row")
    ap.add_argument("--json", help="also write the rows to this file")
    args = ap.parse_args(argv)
    cpus = _usable_cpus()
    threads = args.threads if args.threads is not None else [t for t in (0, 1, 3, 7, 15) if t < cpus]
    size = _size(args.size)
    rows = [r for c in args.ciphers for r in measure(c, size, threads, args.seconds)]
    print(f"# parallel seal/open of one {args.size} write, {cpus} usable CPUs")
    print("| cipher | impl | threads | seal GB/s | x serial | open GB/s | x serial |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        op = f"{r['open B/s'] / 1e9:.2f} | {r['open x serial']:.2f}" if "open B/s" in r else "- | -"
        print(f"| {r['cipher']} | {r['impl']} | {r['threads']} | {r['seal B/s'] / 1e9:.2f} | "
              f"{r['seal x serial']:.2f} | {op} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpus": cpus, "size": size, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
