"""The machine's encrypted ceiling for one secured stream (issue 12's yardstick).

Every byte of an encrypted stream is sealed by the writer and opened by the
reader, on top of what plain TCP costs both processes. With the writer and the
reader each on its own core, the best any Noise transport can do here is::

    ceiling (B/s) = cores / (raw TCP CPU-seconds per byte, both processes
                             + seal seconds per byte + open seconds per byte)

``cores`` is min(2, CPUs): one process each side. The raw TCP cost is the
baseline row's measured ``cpu s/GB`` in the same run; the cipher's single-core
speed comes from ``openssl speed -evp`` (sealing and opening cost the same).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from typing import Any

#: Noise cipher name -> OpenSSL EVP name
CIPHERS = {"ChaChaPoly": "chacha20-poly1305", "AESGCM": "aes-256-gcm"}


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


def _pinned(backend: str) -> str | None:
    """The cipher a backend pinned by its name's suffix (fastp2p-yamux-chacha), else None."""
    from .backends.fastp2p_tcp import PINNED_CIPHERS

    return PINNED_CIPHERS.get(backend.rsplit("-", 1)[-1])


def ceilings(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """The ceiling per bulk1 case and cipher, and each secured backend's share of it.

    ``rows`` are ``Runner.summary`` rows. Returns one dict per (case, cipher) with
    ``ceiling_MBps``, ``raw_cpu_s_per_GB``, ``cipher_GBps`` and ``shares``
    (backend -> MB/s divided by the ceiling).
    """
    cores = min(2, os.cpu_count() or 1)
    raw = {r["case"]: r["median"] for r in rows
           if r["scenario"] == "bulk1" and r["backend"] == baseline and r["metric"] == "cpu s/GB"}
    if not raw:
        return []
    speeds = {name: cipher_speed(evp) for name, evp in CIPHERS.items()}
    out = []
    for case, raw_cpu in raw.items():
        for name, bps in speeds.items():
            if not bps:
                continue
            ceiling = cores / (raw_cpu / 1e9 + 2.0 / bps) / 1e6  # MB/s
            shares = {r["backend"]: r["median"] / ceiling for r in rows
                      if r["scenario"] == "bulk1" and r["case"] == case and r["metric"] == "MB/s"
                      and r["backend"].startswith(("fastp2p", "py-libp2p"))
                      and _pinned(r["backend"]) in (None, name)}
            out.append({"case": case, "cipher": name, "ceiling_MBps": ceiling, "cores": cores,
                        "raw_cpu_s_per_GB": raw_cpu, "cipher_GBps": bps / 1e9, "shares": shares})
    return out


def describe(c: dict[str, Any]) -> str:
    """One note line for a :func:`ceilings` entry."""
    shares = ", ".join(f"{b} x{s:.2f}" for b, s in sorted(c["shares"].items()))
    return (f"encrypted ceiling bulk1 {c['case']} {c['cipher']}: {c['ceiling_MBps']:.0f} MB/s "
            f"= {c['cores']} cores / (raw TCP {c['raw_cpu_s_per_GB']:.3f} CPU s/GB + seal + open at "
            f"{c['cipher_GBps']:.2f} GB/s per core, openssl speed); of it: {shares or 'no secured row'}")
