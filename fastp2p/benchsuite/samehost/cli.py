"""``python -m fastp2p.benchsuite.samehost [--quick] [--json PATH]``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from . import report
from .backends import SCENARIOS, all_backends
from .runner import GiB, KiB, MiB, Params, Runner, quick_params


def _size(s: str) -> int:
    s = s.strip()
    for unit, mul in (("GiB", GiB), ("MiB", MiB), ("KiB", KiB), ("G", GiB), ("M", MiB), ("K", KiB)):
        if s.endswith(unit):
            return int(float(s[: -len(unit)]) * mul)
    return int(s)


def _split(values: list[str] | None) -> list[str] | None:
    if not values:
        return None
    return [x for v in values for x in v.replace(",", " ").split() if x]


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        prog="python -m fastp2p.benchsuite.samehost",
        description="Same-host suite: fastp2p shared-memory data path vs UCX ucx_perftest (sm), "
                    "iceoryx2, pyzmq ipc://, fastp2p TCP and single-core memcpy.")
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: small totals, one round, no warm-up (< 60 s)")
    ap.add_argument("--json", metavar="PATH", help="write the results as JSON to PATH")
    ap.add_argument("--backends", nargs="+", metavar="B", help="subset (see --list)")
    ap.add_argument("--scenarios", nargs="+", metavar="S", help=f"subset of {', '.join(SCENARIOS)}")
    ap.add_argument("--rounds", type=int, help="measured rounds (default 3, quick 1)")
    ap.add_argument("--warmup", type=int, help="discarded warm-up rounds (default 1, quick 0)")
    ap.add_argument("--total", type=_size, help="bulk total (default 1GiB, quick 32MiB)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--list", action="store_true", help="list backends with availability")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    backends = all_backends()
    if args.list:
        for b in backends:
            why = b.available()
            print(f"{b.name:12s} {b.title}" + (f"   [{why}]" if why else ""))
        print("scenarios:", " ".join(SCENARIOS))
        return 0
    P: Params = quick_params() if args.quick else Params()
    if args.rounds is not None:
        P.rounds = max(1, args.rounds)
    if args.warmup is not None:
        P.warmup = max(0, args.warmup)
    if args.total:
        P.bulk_total = args.total
    sel = _split(args.backends)
    if sel:
        unknown = set(sel) - {b.name for b in backends}
        if unknown:
            print(f"unknown backends: {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
        backends = [b for b in backends if b.name in sel]
    scen = _split(args.scenarios)
    if scen:
        bad = set(scen) - set(SCENARIOS)
        if bad:
            print(f"unknown scenarios: {', '.join(sorted(bad))}", file=sys.stderr)
            return 2
        P.scenarios = [s for s in SCENARIOS if s in scen]

    t0 = time.monotonic()
    runner = Runner(backends, P, progress=not args.no_progress)
    try:
        runner.run()
    except KeyboardInterrupt:
        print("interrupted: reporting what was measured", file=sys.stderr)
    rows = runner.rows()
    targets = runner.targets(rows)
    info = report.machine_info(backends)
    print()
    print(f"fastp2p same-host suite{' (--quick: numbers are not meaningful)' if args.quick else ''}"
          f" - {info.get('cpu_model')}, {info.get('cpu_count')} CPUs, kernel {info.get('kernel')},"
          f" Python {info.get('python')}; {P.rounds} measured round(s), {P.warmup} warm-up;"
          f" bulk total {P.bulk_total >> 20} MiB")
    print()
    print(report.table(rows))
    print(report.targets_text(targets))
    print()
    print(report.legend(backends))
    doc: dict[str, Any] = {
        "suite": "samehost", "quick": bool(args.quick), "elapsed_s": time.monotonic() - t0,
        "machine": info, "params": runner.params_dict(),
        "backends": {b.name: {"title": b.title, "how": b.how, "install": b.install,
                              "status": runner.status.get(b.name) or "ok"} for b in backends},
        "rows": rows, "targets": targets,
    }
    if args.json:
        report.write_json(args.json, doc)
        print(f"\nJSON: {args.json}")
    return 0
