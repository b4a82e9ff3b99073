"""The machine's encrypted ceiling for one secured stream (issue 12's yardstick).

Every byte of an encrypted stream is sealed by the writer and opened by the
reader, on top of what plain TCP costs both processes. With the writer and the
reader each on its own core, the best any Noise transport can do here is::

    ceiling (B/s) = cores / (raw TCP CPU-seconds per byte, both processes
                             + seal seconds per byte + open seconds per byte)

``cores`` is min(2, CPUs): one process each side. The raw TCP cost is the
baseline row's measured ``cpu s/GB`` in the same run; the cipher's single-core
speed comes from ``openssl speed -evp`` (sealing and opening cost the same),
or from fastp2p's own kernel where that is faster (AES-256-GCM on a CPU with
VAES, csrc/fp_gcm.c): the ceiling is set by the fastest implementation of the
cipher on the machine, so a faster kernel raises the yardstick too. The share
against ``openssl speed`` alone (issue 12's definition) is reported beside it.

The formula assumes the work splits evenly over the two cores; one stream
cannot split it so (the writer seals and the reader opens, and their TCP
costs differ), so each share comes with how busy each side's core was: a
writer at 100% with an idle reader is bound by the writer's work.

That bound is given too, where the raw baseline's workers reported their
event-loop threads' CPU: a stream whose loop thread does its side's own TCP
work and its cipher work (no seal/open pool: under 4 CPUs, or
``parallel_seal=False``) moves at most::

    loop-thread bound = 1 / (raw TCP loop-thread CPU-seconds per byte, that side
                             + cipher seconds per byte)

for the writer and for the reader, and the lower of the two binds. Over
loopback the writer's ``send()`` also runs the receiver's TCP input, so the
writer's raw cost is about twice the reader's and the writer binds. It bounds
large messages only: for small ones raw TCP pays a send per message, which
fastp2p's writes, joined into one send per 1 MiB, do not.
"""

from __future__ import annotations

import functools
import math
import os
import re
import shutil
import statistics
import subprocess
from typing import Any

#: Noise cipher name -> OpenSSL EVP name
CIPHERS = {"ChaChaPoly": "chacha20-poly1305", "AESGCM": "aes-256-gcm"}


@functools.cache  # a machine's figure: measured once per process (a bench run, a test session)
def cipher_speed(evp: str, *, size: int = 16384, seconds: int = 1) -> float | None:
    """Single-core bytes per second of ``openssl speed -evp EVP`` on ``size``-byte blocks."""
    exe = shutil.which("openssl")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "speed", "-evp", evp, "-bytes", str(size), "-seconds", str(seconds)],
                             capture_output=True, text=True, timeout=30).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    for line in reversed(out.splitlines()):
        m = re.match(r"^\S+\s+([0-9.]+)k\s*$", line.strip())
        if m:
            return float(m.group(1)) * 1000.0
    return None


@functools.cache
def kernel_speed(cipher: str, *, size: int = 16384, seconds: float = 0.5) -> float | None:
    """Single-core bytes per second of fastp2p's native sealing of ``size``-byte
    messages in cache (``aead.seal_speed``: ``openssl speed``'s method), or None in
    the pure build."""
    try:
        from fastp2p._native import aead
    except ImportError:
        return None
    return float(aead.seal_speed(cipher, size, seconds))


def _pinned(backend: str) -> str | None:
    """The cipher a backend pinned by its name's suffix (fastp2p-yamux-chacha), else None."""
    from .backends.fastp2p_tcp import parse_name

    return parse_name(backend)[1] if backend.startswith("fastp2p-") else None


Busy = tuple[float, ...]


def _observed(records: list[dict[str, Any]]) -> tuple[dict[str, str], dict[tuple[str, str], Busy]]:
    """From measured bulk1 records: the cipher each backend reported using, and the
    median CPU busy fractions per (case, backend): (writer, reader) processes, then
    (writer, reader) event-loop threads where the workers reported them."""
    ciphers: dict[str, str] = {}
    busy: dict[tuple[str, str], list[Busy]] = {}
    for r in records:
        m = r.get("metrics", {})
        if not r.get("measured") or r.get("scenario") != "bulk1":
            continue
        if m.get("_cipher"):
            ciphers[r["backend"]] = m["_cipher"]
        secs = m.get("_seconds")
        if secs and "_cli_cpu" in m and "_srv_cpu" in m:
            keys = ["_cli_cpu", "_srv_cpu"]
            if "_cli_main_cpu" in m and "_srv_main_cpu" in m:
                keys += ["_cli_main_cpu", "_srv_main_cpu"]
            busy.setdefault((r["case"], r["backend"]), []).append(tuple(m[k] / secs for k in keys))
    # not strict: a round without the loop threads' figures drops them for the case
    med = {k: tuple(statistics.median(col) for col in zip(*v, strict=False)) for k, v in busy.items()}
    return ciphers, med


def _loop_costs(records: list[dict[str, Any]], baseline: str) -> dict[str, tuple[float, float]]:
    """The raw baseline's (writer, reader) event-loop thread CPU-seconds per byte
    per bulk1 case: medians over its measured rounds that reported them."""
    costs: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        m = r.get("metrics", {})
        if not r.get("measured") or r.get("scenario") != "bulk1" or r.get("backend") != baseline:
            continue
        w, rd, n = m.get("_cli_main_cpu"), m.get("_srv_main_cpu"), m.get("_bytes")
        if w is None or rd is None or not n or math.isnan(w) or math.isnan(rd):
            continue
        costs.setdefault(r["case"], []).append((w / n, rd / n))
    return {case: (statistics.median(v[0] for v in vs), statistics.median(v[1] for v in vs))
            for case, vs in costs.items()}


def ceilings(rows: list[dict[str, Any]], baseline: str,
             records: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """The ceiling per bulk1 case and cipher, and each secured backend's share of it.

    ``rows`` are ``Runner.summary`` rows; ``records`` (``Runner.records``), when
    given, say which cipher each backend negotiated (a backend counts only
    against its own cipher's ceiling; without a record, an unpinned backend
    counts against every cipher's) and how busy its writer and reader were.
    Returns one dict per (case, cipher) with ``ceiling_MBps``,
    ``raw_cpu_s_per_GB``, ``cipher_GBps``, ``shares`` (backend -> MB/s divided
    by the ceiling) and ``busy`` (backend -> (writer, reader) CPU fractions, then
    their event-loop threads' where known).
    """
    cores = min(2, os.cpu_count() or 1)
    raw = {r["case"]: r["median"] for r in rows
           if r["scenario"] == "bulk1" and r["backend"] == baseline and r["metric"] == "cpu s/GB"}
    if not raw:
        return []
    used, busy = _observed(records or [])
    loop_costs = _loop_costs(records or [], baseline)
    speeds = {name: cipher_speed(evp) for name, evp in CIPHERS.items()}
    kernels = {name: kernel_speed(name) for name in CIPHERS}
    out = []
    for case, raw_cpu in raw.items():
        for name, ossl in speeds.items():
            if not ossl:
                continue
            kern = kernels.get(name) or 0.0
            # the faster of the two sets the ceiling; a kernel within 10% of openssl
            # speed is the same code plus call overhead (measurement noise)
            bps, source = (kern, "fastp2p kernel") if kern > 1.1 * ossl else (ossl, "openssl speed")
            ceiling = cores / (raw_cpu / 1e9 + 2.0 / bps) / 1e6  # MB/s
            ceiling_ossl = cores / (raw_cpu / 1e9 + 2.0 / ossl) / 1e6
            mbps = {r["backend"]: r["median"] for r in rows
                    if r["scenario"] == "bulk1" and r["case"] == case and r["metric"] == "MB/s"
                    and r["backend"].startswith(("fastp2p", "py-libp2p"))
                    and (used.get(r["backend"]) or _pinned(r["backend"])) in (None, name)}
            entry: dict[str, Any] = {}
            if case in loop_costs:
                w, rd = loop_costs[case]
                wb, rb = 1.0 / (w + 1.0 / bps) / 1e6, 1.0 / (rd + 1.0 / bps) / 1e6
                bound = min(wb, rb)
                entry = {"loop_bound_MBps": (wb, rb),
                         "loop_shares": {b: v / bound for b, v in mbps.items()}}
            out.append({**entry, "case": case, "cipher": name, "ceiling_MBps": ceiling, "cores": cores,
                        "raw_cpu_s_per_GB": raw_cpu, "cipher_GBps": bps / 1e9,
                        "cipher_source": source, "openssl_GBps": ossl / 1e9,
                        "kernel_GBps": kern / 1e9 if kern else None,
                        "ceiling_openssl_MBps": ceiling_ossl,
                        "shares": {b: v / ceiling for b, v in mbps.items()},
                        "shares_openssl": {b: v / ceiling_ossl for b, v in mbps.items()},
                        "busy": {b: busy[(case, b)] for b in mbps if (case, b) in busy}})
    return out


def describe(c: dict[str, Any]) -> str:
    """One note line for a :func:`ceilings` entry."""
    busy = c.get("busy", {})

    def one(b: str, s: float) -> str:
        if b not in busy:
            return f"{b} x{s:.2f}"
        w, r, *loop = busy[b]
        if len(loop) == 2 and not any(math.isnan(x) for x in loop):  # NaN: a worker could not say
            return (f"{b} x{s:.2f} (writer {w:.0%}, reader {r:.0%} of a core; "
                    f"their event-loop threads {loop[0]:.0%}, {loop[1]:.0%})")
        return f"{b} x{s:.2f} (writer {w:.0%}, reader {r:.0%} of a core)"

    shares = ", ".join(one(b, s) for b, s in sorted(c["shares"].items()))
    line = (f"encrypted ceiling bulk1 {c['case']} {c['cipher']}: {c['ceiling_MBps']:.0f} MB/s "
            f"= {c['cores']} cores / (raw TCP {c['raw_cpu_s_per_GB']:.3f} CPU s/GB + seal + open at "
            f"{c['cipher_GBps']:.2f} GB/s per core, {c.get('cipher_source', 'openssl speed')}); "
            f"of it: {shares or 'no secured row'}")
    if c.get("cipher_source", "openssl speed") != "openssl speed":
        ossl = ", ".join(f"{b} x{s:.2f}" for b, s in sorted(c["shares_openssl"].items()))
        line += (f"; against openssl speed's {c['openssl_GBps']:.2f} GB/s instead: "
                 f"{c['ceiling_openssl_MBps']:.0f} MB/s, {ossl or 'no secured row'}")
    if "loop_bound_MBps" in c:
        wb, rb = c["loop_bound_MBps"]
        loop = ", ".join(f"{b} x{s:.2f}" for b, s in sorted(c["loop_shares"].items()))
        line += (f"; one loop thread a side, raw TCP's work + the cipher's (no pool) bounds it at "
                 f"writer {wb:.0f}, reader {rb:.0f} MB/s: {loop or 'no secured row'}")
    return line
