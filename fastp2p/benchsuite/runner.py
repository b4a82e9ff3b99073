"""Coordinator: scenarios, interleaved rounds, aggregation."""

from __future__ import annotations

import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from . import wire
from .backends.base import SCENARIOS, Backend, Session, fastp2p_io_limits
from .workerproc import BenchError

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30


@dataclass
class Params:
    bulk_total: int = 1 * GiB
    bulk_sizes: list[int] = field(default_factory=lambda: [KiB, 4 * KiB, 16 * KiB, 64 * KiB,
                                                           256 * KiB, MiB, 4 * MiB])
    bulk8_total: int = 1 * GiB
    bulk8_sizes: list[int] = field(default_factory=lambda: [64 * KiB, MiB])
    bulk8_streams: int = 8
    rtt_n: int = 10_000
    rtt_size: int = 64
    connect_n: int = 200
    streams_k: dict[str, int] = field(default_factory=lambda: {"streams1k": 1000, "streams10k": 10_000})
    rr_size: int = 64
    idle_conns: int = 1000
    idle_streams: int = 1000
    time_cap: float = 4.0  # seconds per bulk/rtt cell; totals shrink to fit (recorded)
    recv_buf: int = 0  # bulk receive buffer, every backend; 0 = fastp2p's TCP receive buffer
    rtt_warmup: int = 200  # round trips discarded on the measured stream before timing
    op_timeout: float = 300.0
    rounds: int = 3
    warmup: int = 1


def quick_params() -> Params:
    return Params(
        bulk_total=4 * MiB, bulk_sizes=[KiB, 64 * KiB, MiB], bulk8_total=8 * MiB,
        bulk8_sizes=[64 * KiB], rtt_n=300, connect_n=3,
        streams_k={"streams1k": 100, "streams10k": 1000}, idle_conns=8, idle_streams=100,
        time_cap=0.5, op_timeout=30.0, rounds=1, warmup=0, rtt_warmup=30,
    )


# metric -> (unit, better)
METRICS: dict[str, tuple[str, str]] = {
    "MB/s": ("10^6 B/s", "higher"),
    "cpu s/GB": ("CPU seconds (client+server) per 10^9 B", "lower"),
    "p50 us": ("microseconds", "lower"),
    "p99 us": ("microseconds", "lower"),
    "p99.9 us": ("microseconds", "lower"),
    "connect p50 ms": ("milliseconds until the library's connect returned", "lower"),
    "connect p99 ms": ("milliseconds until the library's connect returned", "lower"),
    "conn+echo p50 ms": ("milliseconds: connect + open a stream + 1-byte echo", "lower"),
    "conn+echo p99 ms": ("milliseconds: connect + open a stream + 1-byte echo", "lower"),
    "total ms": ("milliseconds for all K", "lower"),
    "streams/s": ("request/response streams per second", "higher"),
    "srv KiB/conn": ("server RSS KiB per idle connection", "lower"),
    "cli KiB/conn": ("client RSS KiB per idle connection", "lower"),
    "srv KiB/stream": ("server RSS KiB per idle stream", "lower"),
    "cli KiB/stream": ("client RSS KiB per idle stream", "lower"),
}


def fmt_size(n: int) -> str:
    for unit, div in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n}B"


class Progress:
    """A dependency-free stderr progress bar."""

    def __init__(self, total: int, enabled: bool = True) -> None:
        self.total, self.done, self.t0 = max(total, 1), 0, time.monotonic()
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self._last = ""

    def step(self, label: str, n: int = 1) -> None:
        self.done = min(self.total, self.done + n)
        self.show(label)

    def show(self, label: str) -> None:
        if not self.enabled:
            return
        width = 30
        fill = int(width * self.done / self.total)
        el = time.monotonic() - self.t0
        line = f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total} {el:5.0f}s {label}"
        if self.tty:
            sys.stderr.write("\r" + line[:120].ljust(120))
        elif label.split(" ")[0] != self._last:
            sys.stderr.write(line + "\n")
            self._last = label.split(" ")[0]
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            sys.stderr.write("\n")


def _cases(scenario: str, p: Params) -> list[str]:
    if scenario == "bulk1":
        return [f"msg={fmt_size(m)}" for m in p.bulk_sizes]
    if scenario == "bulk8":
        return [f"{p.bulk8_streams}x msg={fmt_size(m)}" for m in p.bulk8_sizes]
    if scenario == "rtt":
        return [f"{p.rtt_size}B"]
    if scenario in p.streams_k:
        return [f"K={p.streams_k[scenario]}"]
    return ["-"]


class Runner:
    def __init__(self, backends: list[Backend], scenarios: list[str], params: Params,
                 progress: bool = True) -> None:
        self.backends = backends
        self.scenarios = [s for s in SCENARIOS if s in scenarios]
        self.p = params
        self.records: list[dict[str, Any]] = []  # one per (round, scenario, case, backend)
        self.notes: dict[str, list[str]] = {}  # backend -> notes
        self.samples: dict[str, dict[str, list[float]]] = {}  # kind -> backend -> samples
        self.wall: dict[str, float] = {}  # backend -> seconds spent, all rounds
        self.missing: dict[str, str] = {}  # backend -> what is missing (and how to get it)
        self.errors: dict[tuple[str, str, str], str] = {}  # (scenario, case, backend) -> error
        if not self.p.recv_buf:
            self.p.recv_buf = fastp2p_io_limits()[0]
        units = sum(len(_cases(s, params)) for s in self.scenarios)
        self.progress = Progress((params.rounds + params.warmup) * len(backends) * units, progress)

    def note(self, backend: str, text: str) -> None:
        lst = self.notes.setdefault(backend, [])
        if text not in lst:
            lst.append(text)

    # ------------------------------------------------------------------ scenarios

    def _bulk(self, s: Session, total: int, msg: int, streams: int) -> dict[str, float]:
        p = self.p
        rb = max(msg, p.recv_buf)  # the same receive buffer on every backend
        probe = min(total, max(msg * streams * 4, MiB))
        probe -= probe % (msg * streams) if probe >= msg * streams else 0
        r = s.call("bulk", p.op_timeout, total=probe, msg_size=msg, streams=streams,
                   recv_buf=rb)  # warm-up
        res = r["result"]
        rate = res["bytes"] / max(res["seconds"], 1e-9)
        n = min(total, max(msg * streams, int(rate * p.time_cap)))
        n -= n % msg
        u0 = s.server_usage()
        r = s.call("bulk", p.op_timeout, total=n, msg_size=msg, streams=streams, recv_buf=rb)
        u1 = s.server_usage()
        res = r["result"]
        srv_cpu = res.get("server_cpu", u1["cpu"] - u0["cpu"])
        gb = res["bytes"] / 1e9
        out = {"MB/s": res["bytes"] / res["seconds"] / 1e6,
               "cpu s/GB": (srv_cpu + r["cpu"]) / gb if gb else float("nan"),
               "_bytes": res["bytes"], "_seconds": res["seconds"], "_cli_cpu": r["cpu"],
               "_srv_cpu": srv_cpu, "_cipher": res.get("cipher")}
        # the event-loop thread's share, where both workers could say (see ceiling.describe)
        if "main_cpu" in r and "main_cpu" in u0 and "main_cpu" in u1 and "server_cpu" not in res:
            out["_cli_main_cpu"] = r["main_cpu"]
            out["_srv_main_cpu"] = u1["main_cpu"] - u0["main_cpu"]
        return out

    def _rtt(self, s: Session, backend: str, measured: bool) -> dict[str, float]:
        p = self.p
        warm = p.rtt_warmup
        # sizing probe (not reported): how many round trips fit in time_cap
        r = s.call("rtt", p.op_timeout, n=max(10, warm // 4), size=p.rtt_size, warmup=0)
        per = max(statistics.median(r["result"]["samples_us"]), 1.0) * 1e-6
        n = int(min(p.rtt_n, max(100, p.time_cap / per)))
        # measured: `warm` round trips discarded, then n timed, all on one stream
        r = s.call("rtt", p.op_timeout, n=n, size=p.rtt_size, warmup=warm)
        xs = sorted(r["result"]["samples_us"])
        if measured:
            pool = self.samples.setdefault("rtt_us", {}).setdefault(backend, [])
            pool.extend(xs[:: max(1, len(xs) // 5000)])
        return {"p50 us": wire.percentile(xs, 0.5), "p99 us": wire.percentile(xs, 0.99),
                "p99.9 us": wire.percentile(xs, 0.999), "_n": len(xs)}

    def _connect(self, s: Session) -> dict[str, float]:
        s.call("connect", self.p.op_timeout, n=1)  # warm-up
        r = s.call("connect", self.p.op_timeout, n=self.p.connect_n)
        out: dict[str, float] = {}
        # the same two quantities for every backend, from the same start:
        # "connect" until the library's connect returned (absent where the
        # library connects in the background: zmq), "conn+echo" until a first
        # stream was open and a 1-byte echo came back
        cs = r["result"].get("connect_ms")
        if cs:
            cs = sorted(cs)
            out["connect p50 ms"] = wire.percentile(cs, 0.5)
            out["connect p99 ms"] = wire.percentile(cs, 0.99)
        xs = sorted(r["result"]["samples_ms"])
        out["conn+echo p50 ms"] = wire.percentile(xs, 0.5)
        out["conn+echo p99 ms"] = wire.percentile(xs, 0.99)
        return out

    def _streams(self, s: Session, k: int) -> dict[str, float]:
        p = self.p
        s.call("rr", p.op_timeout, k=min(k, 50), req=p.rr_size, resp=p.rr_size)  # warm-up
        r = s.call("rr", p.op_timeout, k=k, req=p.rr_size, resp=p.rr_size)
        secs = r["result"]["seconds"]
        return {"total ms": secs * 1e3, "streams/s": k / secs}

    def _idle_one(self, b: Backend, conns: int, streams: int) -> tuple[float, float]:
        # fresh processes: RSS deltas in a process that already freed memory
        # (earlier scenarios) mostly measure allocator reuse, not the cost
        s = b.open_session(start_timeout=min(60.0, self.p.op_timeout))
        try:
            return self._idle_measure(s, conns, streams)
        finally:
            s.close()

    def _idle_measure(self, s: Session, conns: int, streams: int) -> tuple[float, float]:
        k = conns + streams
        s.call("rtt", self.p.op_timeout, n=5, size=self.p.rtt_size)  # warm: connection, code paths
        time.sleep(0.05)
        u0 = s.server_usage()
        r = s.call("idle_open", self.p.op_timeout, conns=conns, streams=streams)
        deadline = time.monotonic() + 15
        u1 = s.server_usage()
        while u1.get("idle", k) - u0.get("idle", 0) < k and time.monotonic() < deadline:
            time.sleep(0.05)
            u1 = s.server_usage()
        time.sleep(0.05)
        u1 = s.server_usage()
        s.call("idle_close", self.p.op_timeout)
        return (u1["rss"] - u0["rss"]) / k / KiB, (r["rss1"] - r["rss0"]) / k / KiB

    def _idle(self, b: Backend) -> dict[str, float]:
        conns = self.p.idle_conns
        if b.idle_conns_cap is not None and conns > b.idle_conns_cap:
            conns = b.idle_conns_cap
            self.note(b.name, f"idle: {conns} idle connections instead of {self.p.idle_conns} "
                              "(backend cap: each needs its own client host)")
        sc, cc = self._idle_one(b, conns, 0)
        out = {"srv KiB/conn": sc, "cli KiB/conn": cc}
        if b.streams_are_connections:
            self.note(b.name, "no muxer: an idle 'stream' is an idle connection/socket")
        streams = self.p.idle_streams
        if b.idle_streams_cap is not None and streams > b.idle_streams_cap:
            streams = b.idle_streams_cap
            self.note(b.name, f"idle: {streams} idle streams instead of {self.p.idle_streams} (stream limit)")
        ss, cs = self._idle_one(b, 0, streams)
        out.update({"srv KiB/stream": ss, "cli KiB/stream": cs})
        return out

    def _run_case(self, s: Session, b: Backend, scen: str, case_i: int, measured: bool) -> dict[str, float]:
        p = self.p
        if scen == "bulk1":
            return self._bulk(s, p.bulk_total, p.bulk_sizes[case_i], 1)
        if scen == "bulk8":
            return self._bulk(s, p.bulk8_total, p.bulk8_sizes[case_i], p.bulk8_streams)
        if scen == "rtt":
            return self._rtt(s, b.name, measured)
        if scen == "connect":
            return self._connect(s)
        if scen in p.streams_k:
            return self._streams(s, p.streams_k[scen])
        if scen == "idle":
            return self._idle(b)
        raise ValueError(scen)

    # ------------------------------------------------------------------ main loop

    def run(self) -> None:
        total_rounds = self.p.warmup + self.p.rounds
        skip: dict[str, str] = {}
        rx, hi, lo = fastp2p_io_limits()
        self.note("all", f"bulk: every backend's receiver reads into one preallocated buffer of "
                         f"max(message size, {fmt_size(self.p.recv_buf)}); {fmt_size(rx)} is fastp2p's "
                         f"per-loop TCP receive buffer")
        self.note("all", f"write queues: asyncio transports (raw TCP baselines and fastp2p) pause "
                         f"writers at fastp2p's high/low-water marks {fmt_size(hi)}/{fmt_size(lo)}; "
                         f"blocking sockets queue in the kernel only; zmq as noted")
        self.note("all", f"rtt: {self.p.rtt_warmup} round trips discarded on the measured "
                         f"connection/stream, then the timed ones, for every backend")
        self.note("all", "connect: 'connect' = until the library's connect returned (TCP: connected; "
                         "libp2p: secured and muxed; fastp2p also has identify done), 'conn+echo' = "
                         "connect + open a stream + 1-byte echo, both timed from the same start")
        for b in self.backends:
            why = b.available()
            if why:
                skip[b.name] = why
                self.missing[b.name] = why  # shown in the table and below it
            elif getattr(b, "config_note", None):
                self.note(b.name, b.config_note)  # type: ignore[attr-defined]
        for rnd in range(total_rounds):
            measured = rnd >= self.p.warmup
            tag = f"r{rnd + 1}/{total_rounds}{'' if measured else ' warm-up'}"
            for b in self.backends:  # interleaved: A B C ... A B C ...
                units = [(sc, i, c) for sc in self.scenarios for i, c in enumerate(_cases(sc, self.p))]
                if b.name in skip:
                    self.progress.step(f"{b.name} skipped", len(units))
                    continue
                sess: Session | None = None
                tb = time.monotonic()
                for sc, i, case in units:
                    label = f"{b.name} {tag} {sc} {case}"
                    why = b.supports(sc)
                    if why:
                        self.note(b.name, f"{sc}: n/a ({why})")
                        self.progress.step(label)
                        continue
                    self.progress.show(label)
                    try:
                        if sc == "idle" and sess is not None:  # measured alone, fresh processes
                            sess.close()
                            sess = None
                        if sess is None and sc != "idle":
                            sess = b.open_session(start_timeout=min(60.0, self.p.op_timeout))
                        m = self._run_case(sess, b, sc, i, measured)  # type: ignore[arg-type]
                        self.records.append({"round": rnd, "measured": measured, "scenario": sc,
                                             "case": case, "backend": b.name, "metrics": m})
                    except (BenchError, OSError, KeyError, ZeroDivisionError) as e:
                        first = str(e).splitlines()[0][:300] if str(e) else type(e).__name__
                        self.note(b.name, f"{sc} {case}: error: {first}")
                        self.errors[(sc, case, b.name)] = first
                        if sess is not None:
                            sess.close()
                            sess = None
                    self.progress.step(label)
                if sess is not None:
                    sess.close()
                self.wall[b.name] = self.wall.get(b.name, 0.0) + time.monotonic() - tb
        self.progress.close()

    # ------------------------------------------------------------------ aggregation

    def summary(self, baseline: str) -> list[dict[str, Any]]:
        groups: dict[tuple[str, str, str, str], list[float]] = {}
        for r in self.records:
            if not r["measured"]:
                continue
            for k, v in r["metrics"].items():
                if k.startswith("_"):
                    continue
                groups.setdefault((r["scenario"], r["case"], r["backend"], k), []).append(v)
        rows: list[dict[str, Any]] = []
        for (sc, case, be, metric), vals in groups.items():
            rows.append({"scenario": sc, "case": case, "backend": be, "metric": metric,
                         "unit": METRICS.get(metric, ("", ""))[0],
                         "better": METRICS.get(metric, ("", "lower"))[1],
                         "values": vals, "median": statistics.median(vals),
                         "min": min(vals), "max": max(vals), "n": len(vals)})
        base = {(r["scenario"], r["case"], r["metric"]): r["median"] for r in rows
                if r["backend"] == baseline}
        for r in rows:
            b = base.get((r["scenario"], r["case"], r["metric"]))
            r["ratio"] = (r["median"] / b) if b else None
        order = {s: i for i, s in enumerate(SCENARIOS)}
        bidx = {b.name: i for i, b in enumerate(self.backends)}
        rows.sort(key=lambda r: (order[r["scenario"]], r["case"] if r["scenario"] != "bulk1" else "",
                                 bidx.get(r["backend"], 99)))
        return rows

    def absent(self) -> dict[tuple[str, str, str], str]:
        """Cells with no figure where one was expected: (scenario, case, backend) -> why.

        A missing backend gets one for every scenario it supports; a backend
        that errored, for the cases it never measured. Not-applicable
        scenarios (``supports``) get none."""
        have = {(r["scenario"], r["case"], r["backend"]) for r in self.records if r["measured"]}
        out: dict[tuple[str, str, str], str] = {}
        for b in self.backends:
            for sc in self.scenarios:
                if b.supports(sc):
                    continue
                for case in _cases(sc, self.p):
                    key = (sc, case, b.name)
                    if key in have:
                        continue
                    if b.name in self.missing:
                        out[key] = f"missing: {self.missing[b.name]}"
                    elif key in self.errors:
                        out[key] = "error (see notes)"
                    else:
                        out[key] = "not measured (interrupted?)"
        return out

    def params_dict(self) -> dict[str, Any]:
        return asdict(self.p)
