"""``python -m bench.run`` / ``fastp2p bench``: argument parsing and output."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Any

from . import latency, report
from .backends import BASELINE, all_backends
from .backends.base import SCENARIOS
from .ceiling import ceilings, describe
from .runner import GiB, KiB, MiB, Params, Runner, quick_params


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    out: list[str] = []
    for v in values:
        out.extend(x for x in v.replace(",", " ").split() if x)
    return out


def _size(s: str) -> int:
    s = s.strip()
    for unit, mul in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mul)
    return int(s)


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="fastp2p end-to-end benchmarks against raw asyncio/uvloop TCP, sockets, "
                    "pyzmq, py-libp2p and iperf3/memcpy limits.")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, 1 round, < 60 s")
    ap.add_argument("--scenarios", nargs="+", metavar="S",
                    help=f"subset of: {', '.join(SCENARIOS)} (comma or space separated)")
    ap.add_argument("--backends", nargs="+", metavar="B", help="subset of backends (see --list)")
    ap.add_argument("--out", metavar="DIR",
                    help="results folder (default bench/results/<timestamp>/)")
    ap.add_argument("--rounds", type=int, help="measured rounds (default 3, quick 1)")
    ap.add_argument("--warmup", type=int, help="discarded warm-up rounds (default 1, quick 0)")
    ap.add_argument("--baseline", default=BASELINE, help=f"ratio reference (default {BASELINE})")
    ap.add_argument("--time-cap", type=float,
                    help="seconds per bulk/rtt measurement; totals shrink to fit (default 4)")
    ap.add_argument("--total", type=_size, help="bulk total bytes (default 1GiB)")
    ap.add_argument("--msg-sizes", nargs="+", type=_size, help="bulk message sizes")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--list", action="store_true", help="list backends and scenarios, then exit")
    ap.add_argument("--setup-baselines", action="store_true",
                    help="install the py-libp2p baseline into its own venv (pinned; see --venv), "
                         "report the other baselines, then exit")
    ap.add_argument("--venv", metavar="DIR",
                    help="venv for --setup-baselines (default ~/.cache/fastp2p/bench-pylibp2p)")
    return ap


def _default_out() -> str:
    here = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    base = os.path.join(here, "bench", "results")
    if not os.path.isdir(os.path.join(here, "bench")):
        base = os.path.join(os.getcwd(), "bench-results")
    return os.path.join(base, time.strftime("%Y%m%d-%H%M%S"))


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


EXTRAS_HINT = 'pip install "fastp2p[bench]"'  # uvloop, pyzmq, numpy, matplotlib


def _extras_missing() -> list[str]:
    missing = []
    for mod, what in (("uvloop", "uvloop"), ("zmq", "pyzmq"), ("numpy", "numpy"),
                      ("matplotlib", "matplotlib")):
        try:
            __import__(mod)
        except ImportError:
            missing.append(what)
    return missing


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.setup_baselines:
        from .baselines import setup_baselines

        rc = setup_baselines(args.venv)
        if _extras_missing():
            print(f"for the other baselines and the plots: {EXTRAS_HINT}")
        return rc
    backends = all_backends()
    if args.list:
        for b in backends:
            why = b.available()
            print(f"{b.name:22s} {b.kind:9s} loop={b.loop:14s} {b.title}"
                  + (f"   [unavailable: {why}]" if why else ""))
        print("scenarios:", " ".join(SCENARIOS))
        return 0
    names = _split(args.backends)
    if names:
        known = {b.name for b in backends}
        bad = [n for n in names if n not in known]
        if bad:
            print(f"unknown backend(s): {', '.join(bad)}; known: {', '.join(sorted(known))}",
                  file=sys.stderr)
            return 2
        backends = [b for b in backends if b.name in names]
    scen = _split(args.scenarios) or list(SCENARIOS)
    bad = [s for s in scen if s not in SCENARIOS]
    if bad:
        print(f"unknown scenario(s): {', '.join(bad)}; known: {', '.join(SCENARIOS)}",
              file=sys.stderr)
        return 2

    p: Params = quick_params() if args.quick else Params()
    if args.rounds is not None:
        p.rounds = max(1, args.rounds)
    if args.warmup is not None:
        p.warmup = max(0, args.warmup)
    if args.time_cap is not None:
        p.time_cap = args.time_cap
    if args.total is not None:
        p.bulk_total = p.bulk8_total = args.total
    if args.msg_sizes:
        p.bulk_sizes = args.msg_sizes

    extras = _extras_missing()
    if extras:
        print(f"note: {', '.join(extras)} not installed: their baselines/plots are missing from "
              f"this run. Get them with:\n  {EXTRAS_HINT}            # uvloop, pyzmq, numpy, "
              "matplotlib\n  fastp2p bench --setup-baselines   # py-libp2p, in a venv of its own",
              file=sys.stderr)
    outdir = args.out or _default_out()
    os.makedirs(outdir, exist_ok=True)
    t0 = time.monotonic()
    info = report.machine_info(backends)
    if "rtt" in scen:
        # what waking a sleeping CPU costs here: most of a sleeping round trip on a VM
        from fastp2p.doctor import measure_wakeup

        try:
            info["wakeup_us"] = dict(zip(("sleeping", "polling"), measure_wakeup(1000), strict=True))
        except Exception as exc:  # noqa: BLE001 - the bench runs without it
            info["wakeup_us"] = {"error": f"{type(exc).__name__}: {exc}"}
    runner = Runner(backends, scen, p, progress=not args.no_progress)

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old_term = signal.signal(signal.SIGTERM, _term) if _main_thread() else None
    try:
        runner.run()
    except KeyboardInterrupt:
        runner.progress.close()
        print("interrupted: reporting what was measured", file=sys.stderr)
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    rows = runner.summary(args.baseline)
    if not any(r["backend"] == args.baseline for r in rows):
        runner.note(args.baseline, "baseline not measured in this run: no ratios")
    absent = runner.absent()
    ceil = ceilings(rows, args.baseline, runner.records) if "bulk1" in runner.scenarios else []
    for c in ceil:
        runner.note("all", describe(c))
    wake = info.get("wakeup_us", {})
    if "sleeping" in wake:
        runner.note("all", latency.describe_machine(wake["sleeping"], wake["polling"]))
    gaps = latency.work_gaps(rows, args.baseline) if "rtt" in runner.scenarios else []
    for g in gaps:
        runner.note("all", latency.describe(g))
    txt = report.table(rows, args.baseline, runner.notes, absent=absent,
                       scenarios=runner.scenarios, backends=[b.name for b in backends])
    print(txt)
    payload: dict[str, Any] = {
        "schema": "fastp2p-bench-e2e/1", "machine": info, "quick": args.quick,
        "baseline": args.baseline, "params": runner.params_dict(), "scenarios": runner.scenarios,
        "backends": [{"name": b.name, "title": b.title, "kind": b.kind, "loop": b.loop,
                      "streams_are_connections": b.streams_are_connections} for b in backends],
        "summary": rows, "records": runner.records, "notes": runner.notes, "ceilings": ceil,
        "rtt_work_gaps": gaps,
        "missing": runner.missing,
        "absent": [{"scenario": k[0], "case": k[1], "backend": k[2], "why": v}
                   for k, v in absent.items()],
        "rtt_samples_us": runner.samples.get("rtt_us", {}),
        "backend_wall_s": runner.wall, "elapsed_s": time.monotonic() - t0,
    }
    report.write_json(os.path.join(outdir, "results.json"), payload)
    with open(os.path.join(outdir, "table.txt"), "w") as f:
        f.write(txt + "\n")
    pngs = [] if args.no_plots else report.plots(outdir, rows, runner.samples)
    print(f"\nresults: {outdir}/results.json" + "".join(f", {os.path.basename(x)}" for x in pngs)
          + f"  ({time.monotonic() - t0:.0f}s)")
    if not args.no_plots and not pngs and "matplotlib" in extras:
        print(f"no plots: matplotlib is not installed; {EXTRAS_HINT}")
    if runner.missing:
        print(f"missing baselines: {', '.join(runner.missing)}. Get them with {EXTRAS_HINT} "
              "and fastp2p bench --setup-baselines (py-libp2p)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
