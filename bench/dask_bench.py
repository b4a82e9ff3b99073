"""Dask worker-to-worker transfer over tcp://, tls://, fastp2p:// (TCP path) and fastp2p:// (shm).

Same layout for every comm: a scheduler and 2 workers (1 thread each, no nanny),
each its own process on this host (``fastp2p.testing.dask_cluster``). Measured:

* large: a ``--size`` MiB numpy array made on worker 0 and consumed by a task on
  worker 1 (one worker-to-worker transfer per round, timed from the client, so a
  few scheduler round trips are included; MiB/s, median and best of ``--rounds``
  after one warm-up round; ratios use the medians);
* small: ``--msgs`` round trips of a 100-byte ``echo`` from worker 1 to worker 0
  through the worker's own rpc pool, one at a time and 16 concurrent (msgs/s).

Usage: ``python -m bench.dask_bench [--size 256] [--rounds 5] [--msgs 2000] [--json out.json]``.
``ucxx`` is measured only when ``distributed-ucxx`` is importable.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client
from distributed.security import Security

from fastp2p.testing.dask_cluster import ProcessCluster


def _make(nbytes: int, seed: int) -> np.ndarray:
    a = np.empty(nbytes, dtype="u1")
    a[::4096] = seed % 251  # touch every page
    return a


def _nbytes(a: np.ndarray) -> int:
    return int(a.nbytes)


async def _echo_bench(addr: str, n: int, size: int, concurrency: int, dask_worker: Any = None) -> float:
    payload = b"x" * size
    r = dask_worker.rpc(addr)
    for _ in range(20):  # warm the pool
        await r.echo(data=payload)

    async def loop(k: int) -> None:
        for _ in range(k):
            await r.echo(data=payload)

    t0 = time.perf_counter()
    await asyncio.gather(*(loop(n // concurrency) for _ in range(concurrency)))
    return (n // concurrency) * concurrency / (time.perf_counter() - t0)


def _paths(dask_worker: Any = None) -> list[str]:
    pools = [*dask_worker.rpc.available.values(), *dask_worker.rpc.occupied.values()]
    return sorted({str(c.extra_info.get("data_path", "-")) for cs in pools for c in cs})


def self_signed(dirname: str) -> tuple[str, str]:
    """A self-signed certificate (CN localhost, SAN localhost/127.0.0.1) and its key."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(dirname, "cert.pem"), os.path.join(dirname, "key.pem")
    Path(cert_path).write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    Path(key_path).write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_path, key_path


def variants(certdir: str) -> list[tuple[str, str, dict[str, str], list[str], Security | None]]:
    cert, key = self_signed(certdir)
    tls_args = ["--tls-ca-file", cert, "--tls-cert", cert, "--tls-key", key]
    sec = Security(tls_ca_file=cert, tls_client_cert=cert, tls_client_key=key, require_encryption=True)
    out: list[tuple[str, str, dict[str, str], list[str], Security | None]] = [
        ("tcp://", "tcp", {}, [], None),
        ("tls:// (self-signed)", "tls", {}, tls_args, sec),
        ("fastp2p:// tcp path", "fastp2p", {"DASK_DISTRIBUTED__COMM__FASTP2P__DATA_PATHS": '["tcp"]'}, [], None),
        ("fastp2p:// shm path", "fastp2p", {"DASK_DISTRIBUTED__COMM__FASTP2P__DATA_PATHS": '["shm", "tcp"]'}, [], None),
    ]
    try:
        import distributed_ucxx  # noqa: F401

        out.append(("ucxx://", "ucxx", {}, [], None))
    except ImportError:
        print("ucxx: distributed-ucxx is not installed; not measured", file=sys.stderr)
    return out


def run_one(protocol: str, env: dict[str, str], args: list[str], sec: Security | None,
            size_mib: int, rounds: int, msgs: int) -> dict[str, Any]:
    with ProcessCluster(protocol, 2, env=env, extra_args=args) as c, \
            Client(c.address, security=sec, timeout=60) as client:
        client.wait_for_workers(2, timeout=60)
        info = client.scheduler_info()["workers"]
        by_name = {v["name"]: k for k, v in info.items()}
        w0, w1 = by_name["w0"], by_name["w1"]
        nbytes = size_mib << 20
        rates = []
        for i in range(rounds + 1):  # round 0 warms up the connections
            src = client.submit(_make, nbytes, i, workers=[w0], pure=False)
            src.result()
            t0 = time.perf_counter()
            n = client.submit(_nbytes, src, workers=[w1], pure=False).result()
            dt = time.perf_counter() - t0
            assert n == nbytes
            if i:
                rates.append(size_mib / dt)
            del src
            time.sleep(0.2)
        seq = client.run(_echo_bench, w0, msgs, 100, 1, workers=[w1])[w1]
        conc = client.run(_echo_bench, w0, msgs, 100, 16, workers=[w1])[w1]
        paths = client.run(_paths, workers=[w1])[w1]
        return {"large_mib_s": statistics.median(rates), "large_best": max(rates), "large_all": rates,
                "small_seq_msg_s": seq,
                "small_conc16_msg_s": conc, "data_paths": paths}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", type=int, default=256, help="MiB per large transfer")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--msgs", type=int, default=2000)
    p.add_argument("--only", default="", help="comma-separated protocols (tcp,tls,fastp2p)")
    p.add_argument("--json", default="")
    a = p.parse_args(argv)
    results: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as d:
        for label, proto, env, args, sec in variants(d):
            if a.only and proto not in a.only.split(","):
                continue
            print(f"running {label} ...", file=sys.stderr, flush=True)
            results[label] = run_one(proto, env, args, sec, a.size, a.rounds, a.msgs)
    base = results.get("tcp://")
    tls = results.get("tls:// (self-signed)")
    print(f"\n| comm | {a.size} MiB transfer, MiB/s median (best) | x tcp | x tls | echo msgs/s (1) | "
          "echo msgs/s (16) | x tcp (16) | comm data path |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for label, r in results.items():
        xt = f"{r['large_mib_s'] / base['large_mib_s']:.2f}" if base else "-"
        xl = f"{r['large_mib_s'] / tls['large_mib_s']:.2f}" if tls else "-"
        xs = f"{r['small_conc16_msg_s'] / base['small_conc16_msg_s']:.2f}" if base else "-"
        print(f"| {label} | {r['large_mib_s']:.0f} ({r['large_best']:.0f}) | {xt} | {xl} | {r['small_seq_msg_s']:.0f} | "
              f"{r['small_conc16_msg_s']:.0f} | {xs} | {','.join(r['data_paths'])} |")
    if a.json:
        Path(a.json).write_text(json.dumps({"args": vars(a), "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
