"""Same-host backends. Each is a coordinator-side descriptor; the measured
sides run in spawned worker processes (``..proc``), except ``ucx_perftest``,
which is spawned as its own two binaries."""

from __future__ import annotations

import time
from typing import Any

from ..proc import GiB, KiB, MiB, Session  # noqa: F401 - re-exported for backends

# scenario -> cases; a case is (label, arg)
SCENARIOS = ("bulk", "rtt", "putget", "streams", "idle")


class Backend:
    name = "?"
    title = "?"
    how = ""  # how it is run, one line (report + docs)
    install = ""  # how to get it when missing
    uses_server = True

    def available(self) -> str | None:
        """None when runnable, else the cell text (``missing: ...`` / ``cannot run: ...``)."""
        return None

    def supports(self, scenario: str) -> bool:
        return scenario in ("bulk", "rtt")

    def versions(self) -> dict[str, str]:
        return {}

    def cases(self, scenario: str, P: Any) -> list[tuple[str, Any]]:
        return default_cases(scenario, P)

    # --- coordinator side
    def open(self, P: Any) -> Any:
        return Session(self.name, self.worker_params(P), server=self.uses_server,
                       start_timeout=P.start_timeout)

    def worker_params(self, P: Any) -> dict[str, Any]:
        return {"bulk_total": P.bulk_total, "putget_bytes": P.putget_bytes}

    def measure(self, sess: Any, scenario: str, arg: Any, P: Any) -> dict[str, Any]:
        """Run one cell; return {metric: value, ...} plus optional "note"."""
        if scenario == "bulk":
            r = sess.call("bulk", P.op_timeout, total=P.bulk_total, msg_size=arg)
            out = {"GB/s": r["bytes"] / r["seconds"] / 1e9}
        elif scenario == "rtt":
            r = sess.call("rtt", P.op_timeout, n=P.rtt_n, size=arg, warmup=P.rtt_warmup)
            out = {"p50 us": r["p50_us"], "p99 us": r["p99_us"]}
        elif scenario == "putget":
            r = sess.call("putget", P.op_timeout, size=arg, reps=P.putget_reps)
            out = {"put GB/s": r["put_gbps"], "get GB/s": r["get_gbps"]}
        elif scenario == "streams":
            r = sess.call("streams", P.op_timeout, k=arg, size=KiB)
            out = {"total ms": r["seconds"] * 1e3, "streams/s": arg / r["seconds"]}
        elif scenario == "idle":
            s0 = sess.server_usage()
            r = sess.call("idle_open", P.op_timeout, n=arg)
            time.sleep(P.idle_settle)
            s1 = sess.server_usage()
            sess.call("idle_close", P.op_timeout)
            n = max(1, r.get("conns", arg))
            out = {"srv KiB/conn": (s1["rss"] - s0["rss"]) / n / 1024,
                   "cli KiB/conn": r["cli_bytes_per_conn"] / 1024,
                   "srv shm KiB/conn": (s1.get("shmem", 0) - s0.get("shmem", 0)) / n / 1024,
                   "cli shm KiB/conn": r.get("cli_shm_bytes_per_conn", 0) / 1024}
        else:
            raise ValueError(scenario)
        for k in ("data_path", "note"):
            if k in r:
                out[k] = r[k]
        return out

    # --- worker side
    def make_server(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError

    def make_client(self, params: dict[str, Any]) -> Any:
        raise NotImplementedError


def default_cases(scenario: str, P: Any) -> list[tuple[str, Any]]:
    if scenario == "bulk":
        return [(fmt_size(m), m) for m in P.bulk_sizes]
    if scenario == "rtt":
        return [(f"{P.rtt_size}B", P.rtt_size)]
    if scenario == "putget":
        return [(fmt_size(P.putget_bytes), P.putget_bytes)]
    if scenario == "streams":
        return [(f"{P.streams_k} x 1KiB echo", P.streams_k)]
    if scenario == "idle":
        return [(f"{P.idle_conns} conns", P.idle_conns)]
    return []


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n}B"


def percentiles_us(samples_ns: list[int]) -> dict[str, float]:
    from ...wire import percentile

    s = sorted(x / 1e3 for x in samples_ns)
    return {"p50_us": percentile(s, 0.5), "p99_us": percentile(s, 0.99), "n": len(s)}


def all_backends() -> list[Backend]:
    from .fastp2p_paths import Fastp2pShm, Fastp2pTcp
    from .iceoryx import Iceoryx2
    from .memcpy import Memcpy
    from .ucx import UcxPerftest
    from .zmq_ipc import ZmqIpc

    return [Memcpy(), UcxPerftest(), Iceoryx2(), ZmqIpc(), Fastp2pTcp(), Fastp2pShm()]


def get_backend(name: str) -> Backend:
    for b in all_backends():
        if b.name == name:
            return b
    raise KeyError(name)
