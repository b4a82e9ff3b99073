"""Machine info, terminal table, JSON and PNG output."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from typing import Any

from .backends.base import Backend


def machine_info(backends: list[Backend]) -> dict[str, Any]:
    cpu = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        cpu = platform.processor() or "?"
    try:
        affinity = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        affinity = None
    mem = None
    try:
        with open("/proc/meminfo") as f:
            mem = int(f.readline().split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    gov = None
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as f:
            gov = f.read().strip()
    except OSError:
        pass
    commit = None
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5).stdout.strip() or None
    except Exception:  # noqa: BLE001
        pass
    versions: dict[str, str] = {}
    for b in backends:
        try:
            if b.available() is None:
                versions.update(b.versions())
        except Exception:  # noqa: BLE001
            pass
    for mod in ("numpy", "matplotlib", "uvloop", "zmq"):
        try:
            m = __import__(mod)
            versions.setdefault("pyzmq" if mod == "zmq" else mod, m.__version__)
        except Exception:  # noqa: BLE001
            pass
    try:
        import fastp2p

        versions.setdefault("fastp2p", fastp2p.__version__)
    except Exception:  # noqa: BLE001
        pass
    return {
        "cpu_model": cpu, "cpu_count": os.cpu_count(), "cpu_affinity": affinity,
        "memory_bytes": mem, "cpu_governor": gov, "loadavg": os.getloadavg(),
        "kernel": platform.release(), "os": platform.platform(),
        "python": sys.version.split()[0], "python_impl": platform.python_implementation(),
        "versions": versions, "git_commit": commit,
        "loops": {b.name: b.loop for b in backends},
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _num(v: float) -> str:
    if v != v:  # nan
        return "nan"
    a = abs(v)
    if a >= 1000:
        return f"{v:,.0f}"
    if a >= 100:
        return f"{v:.0f}"
    if a >= 10:
        return f"{v:.1f}"
    if a >= 1:
        return f"{v:.2f}"
    return f"{v:.3f}"


def table(rows: list[dict[str, Any]], baseline: str, notes: dict[str, list[str]],
          show_range: bool = True, absent: dict[tuple[str, str, str], str] | None = None,
          scenarios: list[str] | None = None, backends: list[str] | None = None) -> str:
    """One block per scenario; a row per (case, backend); metrics as columns.

    ``absent`` maps (scenario, case, backend) to why a figure is missing
    ("missing: pip install ..."); those rows appear in the table, with the
    reason in their first cell, so a missing backend cannot go unnoticed."""
    absent = absent or {}
    out: list[str] = []
    by_scen: dict[str, list[dict[str, Any]]] = {}
    for sc in scenarios or []:
        by_scen.setdefault(sc, [])
    for r in rows:
        by_scen.setdefault(r["scenario"], []).append(r)
    for sc, _case, _be in absent:
        by_scen.setdefault(sc, [])
    order = {b: i for i, b in enumerate(backends or [])}
    for scen, rs in by_scen.items():
        metrics: list[str] = []
        for r in rs:
            if r["metric"] not in metrics:
                metrics.append(r["metric"])
        if not metrics:
            metrics = ["result"]
        keyed: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
        for r in rs:
            keyed.setdefault((r["case"], r["backend"]), {})[r["metric"]] = r
        for (sc, case, be) in absent:
            if sc == scen:
                keyed.setdefault((case, be), {})
        cases = list(dict.fromkeys(c for c, _ in keyed))
        items = sorted(keyed.items(), key=lambda kv: (cases.index(kv[0][0]) if scen != "bulk1" else 0,
                                                      order.get(kv[0][1], 99)))
        if scen == "bulk1":  # by backend, message sizes ascending (insertion order) within
            items = sorted(keyed.items(), key=lambda kv: order.get(kv[0][1], 99))
        cells: list[list[str]] = []
        for (case, be), ms in items:
            row = [case, be]
            why = absent.get((scen, case, be))
            if why is not None and not ms:
                row.append(why)
                row.extend("" for _ in metrics[1:])
                cells.append(row)
                continue
            for m in metrics:
                r = ms.get(m)  # type: ignore[assignment]
                if r is None:
                    row.append("-")
                    continue
                s = _num(r["median"])
                if show_range and r["n"] > 1:
                    s += f" [{_num(r['min'])}..{_num(r['max'])}]"
                if r["ratio"] is not None:
                    s += f" x{r['ratio']:.2f}"
                row.append(s)
            cells.append(row)
        head = ["case", "backend", *metrics]
        widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(head)]
        out.append(f"== {scen} ==")
        out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=False)))
        out.append("  ".join("-" * w for w in widths))
        last_case = None
        for c in cells:
            if scen != "bulk1" and last_case is not None and c[0] != last_case:
                pass
            last_case = c[0]
            out.append("  ".join(v.ljust(w) for v, w in zip(c, widths, strict=False)))
        out.append("")
    out.append(f"median [min..max] over measured rounds; xN = ratio to {baseline} median "
               "from this run (higher is better for MB/s and streams/s, lower for the rest)")
    for be, ns in notes.items():
        for n in ns:
            out.append(f"note: {be}: {n}")
    missing = sorted({k[2]: v for k, v in absent.items() if v.startswith("missing")}.items())
    if missing:
        out.append("")
        out.append(f"MISSING BACKENDS ({len(missing)}): their rows above say 'missing'; "
                   "ratios and comparisons to them are absent from this run")
        for be, why in missing:
            out.append(f"  {be}: {why}")
    return "\n".join(out)


def write_json(path: str, payload: dict[str, Any]) -> None:
    with open(path, "w") as f:
        json.dump(payload, f, indent=1, default=str)


def plots(outdir: str, rows: list[dict[str, Any]], samples: dict[str, dict[str, list[float]]]) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    bulk = [r for r in rows if r["scenario"] == "bulk1" and r["metric"] == "MB/s"]
    if bulk:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        series: dict[str, list[tuple[int, float, float, float]]] = {}
        for r in bulk:
            size = _parse_size(r["case"].split("=", 1)[1])
            series.setdefault(r["backend"], []).append((size, r["median"], r["min"], r["max"]))
        colors = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        markers = "os^vD<>phX*"
        for idx, (be, pts) in enumerate(series.items()):
            pts.sort()
            xs = [p[0] for p in pts]
            ys = [p[1] for p in pts]
            lo = [p[1] - p[2] for p in pts]
            hi = [p[3] - p[1] for p in pts]
            style = "--" if be in ("iperf3", "memcpy") else "-"
            ax.errorbar(xs, ys, yerr=[lo, hi], label=be, marker=markers[idx % len(markers)], ms=4,
                        ls=style, capsize=2, color=colors[idx % len(colors)])
        ax.set_xscale("log", base=2)
        ticks = sorted({p[0] for pts in series.values() for p in pts})
        ax.set_xticks(ticks, [_fmt(t) for t in ticks])
        ax.set_yscale("log")
        ax.set_xlabel("message size (bytes)")
        ax.set_ylabel("throughput (MB/s, median, min..max)")
        ax.set_title("bulk, one stream")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        p = os.path.join(outdir, "throughput_vs_msgsize.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    rtt = samples.get("rtt_us", {})
    if rtt:
        fig, ax = plt.subplots(figsize=(9, 5.5))
        colors = plt.get_cmap("tab20").colors  # type: ignore[attr-defined]
        for idx, (be, raw_lat) in enumerate(rtt.items()):
            lat = sorted(raw_lat)
            if not lat:
                continue
            n = len(lat)
            ax.plot(lat, [(i + 1) / n for i in range(n)], label=be, drawstyle="steps-post",
                    color=colors[idx % len(colors)], ls="-" if idx < 10 else "--")
        ax.set_xscale("log")
        ax.set_xlabel("64-byte round trip (microseconds)")
        ax.set_ylabel("CDF")
        ax.set_title("round-trip latency CDF")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, ncol=2)
        fig.tight_layout()
        p = os.path.join(outdir, "latency_cdf.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        written.append(p)
    return written


def _parse_size(s: str) -> int:
    for unit, mul in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10), ("B", 1)):
        if s.endswith(unit):
            return int(s[: -len(unit)]) * mul
    return int(s)


def _fmt(n: int) -> str:
    for unit, div in (("MiB", 1 << 20), ("KiB", 1 << 10)):
        if n >= div and n % div == 0:
            return f"{n // div}{unit}"
    return f"{n}B"
