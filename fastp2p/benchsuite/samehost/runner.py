"""Coordinator of the same-host suite: interleaved rounds, aggregation, ratios."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .backends import SCENARIOS, Backend
from .proc import GiB, KiB, MiB

# scenario -> metrics in column order; (unit, better)
METRICS: dict[str, tuple[str, str]] = {
    "GB/s": ("10^9 bytes per second into the receiver's preallocated buffer", "higher"),
    "p50 us": ("64-byte round trip, median, microseconds", "lower"),
    "p99 us": ("64-byte round trip, 99th percentile, microseconds", "lower"),
    "put GB/s": ("64 MiB put into a granted remote region, 10^9 B/s", "higher"),
    "get GB/s": ("64 MiB get from a granted remote region, 10^9 B/s", "higher"),
    "total ms": ("K concurrent streams (open, 1 KiB echo, close), wall ms", "lower"),
    "streams/s": ("K / total time", "higher"),
    "srv KiB/conn": ("server RSS delta per idle connection, KiB", "lower"),
    "cli KiB/conn": ("client RSS delta per idle connection (Host excluded), KiB", "lower"),
    "srv shm KiB/conn": ("of which shared memory (RssShmem), server", "lower"),
    "cli shm KiB/conn": ("of which shared memory (RssShmem), client", "lower"),
}

# ratio columns: scenario -> [(label, reference backend, metric the ratio is taken on)]
REFERENCES: dict[str, list[tuple[str, str, str]]] = {
    "bulk": [("x ucx", "ucx-sm", "GB/s"), ("x memcpy", "memcpy", "GB/s"),
             ("x tcp", "fastp2p-tcp", "GB/s")],
    "rtt": [("x ucx", "ucx-sm", "p50 us"), ("x tcp", "fastp2p-tcp", "p50 us")],
    "putget": [("put x memcpy", "memcpy", "put GB/s"), ("get x memcpy", "memcpy", "get GB/s")],
    "streams": [("x tcp", "fastp2p-tcp", "total ms")],
    "idle": [("srv x tcp", "fastp2p-tcp", "srv KiB/conn"), ("cli x tcp", "fastp2p-tcp", "cli KiB/conn")],
}


@dataclass
class Params:
    bulk_total: int = 1 * GiB
    bulk_sizes: list[int] = field(default_factory=lambda: [64 * KiB, 1 * MiB])
    rtt_n: int = 10_000
    rtt_warmup: int = 500
    rtt_size: int = 64
    putget_bytes: int = 64 * MiB
    putget_reps: int = 5
    streams_k: int = 1000
    idle_conns: int = 50
    idle_settle: float = 0.3
    rounds: int = 3
    warmup: int = 1
    op_timeout: float = 300.0
    start_timeout: float = 60.0
    scenarios: list[str] = field(default_factory=lambda: list(SCENARIOS))


def quick_params() -> Params:
    return Params(bulk_total=32 * MiB, rtt_n=300, rtt_warmup=50, putget_bytes=8 * MiB,
                  putget_reps=2, streams_k=100, idle_conns=5, idle_settle=0.1, rounds=1,
                  warmup=0, op_timeout=30.0, start_timeout=30.0)


class Progress:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        if self.enabled:
            print(f"[{time.monotonic() - self.t0:6.1f}s] {msg}", file=sys.stderr, flush=True)


def _short(e: BaseException) -> str:
    s = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    # worker errors come as "<backend>/<role>: Type: message"; keep the message
    for marker in ("RuntimeError: ", "BenchError: "):
        if marker in s:
            s = s.split(marker, 1)[1]
    return s[:300]


class Runner:
    def __init__(self, backends: list[Backend], P: Params, progress: bool = True) -> None:
        self.backends = backends
        self.P = P
        self.log = Progress(progress)
        # (scenario, case, backend) -> list of per-round metric dicts (measured rounds only)
        self.samples: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
        # (scenario, case, backend) -> cell text when there is no number
        self.cells: dict[tuple[str, str, str], str] = {}
        self.status: dict[str, str | None] = {}
        self.order: list[tuple[str, str, str]] = []

    def _plan(self, b: Backend) -> list[tuple[str, str, Any]]:
        out = []
        for scen in self.P.scenarios:
            if b.supports(scen):
                for label, arg in b.cases(scen, self.P):
                    out.append((scen, label, arg))
        return out

    def run(self) -> None:
        P = self.P
        live: list[Backend] = []
        for b in self.backends:
            why = b.available()
            self.status[b.name] = why
            for scen, label, _ in self._plan(b):
                key = (scen, label, b.name)
                self.order.append(key)
                if why:
                    self.cells[key] = why
            if why:
                self.log(f"{b.name}: {why}")
            else:
                live.append(b)
        total = P.warmup + P.rounds
        for rnd in range(total):
            warm = rnd < P.warmup
            k = rnd % max(1, len(live))
            for b in live[k:] + live[:k]:  # interleave: rotate the order every round
                self.log(f"round {rnd + 1}/{total}{' (warm-up)' if warm else ''}: {b.name}")
                self._session(b, warm)

    def _session(self, b: Backend, warm: bool) -> None:
        plan = self._plan(b)
        try:
            sess = b.open(self.P)
        except Exception as e:  # noqa: BLE001
            for scen, label, _ in plan:
                self.cells.setdefault((scen, label, b.name), f"error: {_short(e)}")
            self.log(f"  {b.name}: session failed: {_short(e)}")
            return
        try:
            for scen, label, arg in plan:
                key = (scen, label, b.name)
                try:
                    m = b.measure(sess, scen, arg, self.P)
                except Exception as e:  # noqa: BLE001
                    msg = _short(e)
                    self.cells[key] = msg if msg.startswith("missing:") else f"error: {msg}"
                    self.log(f"  {scen} {label}: {self.cells[key]}")
                    continue
                nums = {k: v for k, v in m.items() if k in METRICS}
                self.log(f"  {scen} {label}: " + ", ".join(f"{k}={v:.3g}" for k, v in nums.items())
                         + (f"  ({m['note']})" if m.get("note") else ""))
                if not warm:
                    self.samples.setdefault(key, []).append(m)
                    self.cells.pop(key, None)
        finally:
            sess.close()

    # ---- aggregation
    def rows(self) -> list[dict[str, Any]]:
        agg: dict[tuple[str, str, str], dict[str, dict[str, Any]]] = {}
        for key, ms in self.samples.items():
            out: dict[str, dict[str, Any]] = {}
            for metric in METRICS:
                vals = [m[metric] for m in ms if isinstance(m.get(metric), (int, float))]
                if vals:
                    out[metric] = {"median": statistics.median(vals), "min": min(vals),
                                   "max": max(vals), "n": len(vals), "samples": vals}
            agg[key] = out
        rows = []
        for key in self.order:
            scen, case, be = key
            notes = sorted({str(m["note"]) for m in self.samples.get(key, []) if m.get("note")})
            paths = sorted({str(m["data_path"]) for m in self.samples.get(key, [])
                            if m.get("data_path")})
            row: dict[str, Any] = {"scenario": scen, "case": case, "backend": be,
                                   "metrics": agg.get(key, {}), "cell": self.cells.get(key),
                                   "notes": notes, "data_path": paths[0] if len(paths) == 1 else paths or None,
                                   "ratios": {}}
            for label, ref, metric in REFERENCES.get(scen, []):
                mine = agg.get(key, {}).get(metric)
                theirs = agg.get((scen, case, ref), {}).get(metric)
                if ref == be or not mine or not theirs or not theirs["median"]:
                    continue
                row["ratios"][label] = mine["median"] / theirs["median"]
            rows.append(row)
        return rows

    def targets(self, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """The issue's targets, evaluated (reported, never asserted)."""
        def med(scen: str, case: str, be: str, metric: str) -> float | None:
            for r in rows:
                if (r["scenario"], r["case"], r["backend"]) == (scen, case, be):
                    m = r["metrics"].get(metric)
                    return m["median"] if m else None
            return None

        bulk_case = next((c for s, c, _ in self.order if s == "bulk" and c == "1MiB"), "1MiB")
        shm = med("bulk", bulk_case, "fastp2p-shm", "GB/s")
        out: list[dict[str, Any]] = []

        def add(name: str, value: float | None, goal: str, ok: bool | None) -> None:
            out.append({"target": name, "value": value, "goal": goal,
                        "met": ok if value is not None else None})

        for ref, goal in (("ucx-sm", 0.6), ("fastp2p-tcp", 3.0)):
            theirs = med("bulk", bulk_case, ref, "GB/s")
            v = shm / theirs if shm and theirs else None
            add(f"shm bulk 1MiB / {ref} bulk 1MiB", v, f">= {goal}x",
                v is not None and v >= goal)
        for ref in ("zmq-ipc", "iceoryx2"):
            theirs = med("bulk", bulk_case, ref, "GB/s")
            v = shm / theirs if shm and theirs else None
            add(f"shm bulk 1MiB / {ref} bulk 1MiB", v, "> 1x", v is not None and v > 1.0)
        rtt = med("rtt", f"{self.P.rtt_size}B", "fastp2p-shm", "p50 us")
        add("shm 64B RTT p50 (us)", rtt, "<= 5 us", rtt is not None and rtt <= 5.0)
        pg_case = next((c for s, c, _ in self.order if s == "putget"), "")
        mc = med("putget", pg_case, "memcpy", "put GB/s")
        for what in ("put", "get"):
            v = med("putget", pg_case, "fastp2p-shm", f"{what} GB/s")
            r = v / mc if v and mc else None
            add(f"shm {what} {pg_case} / memcpy {pg_case}", r, ">= 0.7x", r is not None and r >= 0.7)
        idle_case = next((c for s, c, _ in self.order if s == "idle"), "")
        for side in ("srv", "cli"):
            v = med("idle", idle_case, "fastp2p-shm", f"{side} KiB/conn")
            add(f"shm idle memory per connection, {side} (KiB)", v, "stated", None)
        return out

    def params_dict(self) -> dict[str, Any]:
        return asdict(self.P)
