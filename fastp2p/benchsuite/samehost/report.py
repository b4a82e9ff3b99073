"""Terminal table and JSON of the same-host suite."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from typing import Any

from .backends import Backend
from .runner import METRICS, REFERENCES


def machine_info(backends: list[Backend]) -> dict[str, Any]:
    try:  # the TCP suite's collector (CPU, governor, git commit, versions)
        from ..report import machine_info as base_info

        info = base_info(backends)  # type: ignore[arg-type]
    except Exception:  # noqa: BLE001 - fall back to the essentials
        cpu = "?"
        try:
            with open("/proc/cpuinfo") as f:
                cpu = next((ln.split(":", 1)[1].strip() for ln in f
                            if ln.startswith("model name")), "?")
        except OSError:
            pass
        info = {"cpu_model": cpu, "cpu_count": os.cpu_count(), "kernel": platform.release(),
                "python": sys.version.split()[0], "versions": {},
                "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    vers = info.setdefault("versions", {})
    for b in backends:
        try:
            if b.available() is None:
                vers.update(b.versions())
        except Exception:  # noqa: BLE001
            pass
    info["loops"] = None
    try:
        info["cpu_affinity_set"] = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        pass
    info["pinning"] = ("off (FASTP2P_SAMEHOST_NO_PIN)" if os.environ.get("FASTP2P_SAMEHOST_NO_PIN")
                       else "ucx_perftest (taskset), iceoryx2 and memcpy: server side on the first allowed CPU, client side on the second; pyzmq and fastp2p unpinned (event-driven, scheduled by the kernel)")
    return info


def _num(v: float) -> str:
    if v != v:
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


def _cell(m: dict[str, Any] | None) -> str:
    if not m:
        return "-"
    s = _num(m["median"])
    if m["n"] > 1:
        s += f" [{_num(m['min'])}..{_num(m['max'])}]"
    return s


def table(rows: list[dict[str, Any]]) -> str:
    out: list[str] = []
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["scenario"], []).append(r)
    for scen, rs in by.items():
        metrics = [m for m in METRICS if any(m in r["metrics"] for r in rs)]
        if not metrics:
            metrics = ["GB/s"] if scen == "bulk" else []
        ratios = [lbl for lbl, _, _ in REFERENCES.get(scen, [])
                  if any(lbl in r["ratios"] for r in rs)]
        head = ["case", "backend"] + metrics + ratios + ["note"]
        cells: list[list[str]] = []
        for r in rs:
            if r["cell"] and not r["metrics"]:
                row = [r["case"], r["backend"], r["cell"]] + [""] * (len(metrics) + len(ratios))
                cells.append(row[: len(head) - 1] + [""])
                continue
            row = [r["case"], r["backend"]]
            row += [_cell(r["metrics"].get(m)) for m in metrics]
            row += [f"{r['ratios'][lbl]:.2f}" if lbl in r["ratios"] else "" for lbl in ratios]
            note = "; ".join(r["notes"])
            if r["cell"]:
                note = (note + "; " if note else "") + r["cell"]
            row.append(note)
            cells.append(row)
        # a long "missing: ..." text spans the metric columns: width from the others
        widths = [len(h) for h in head]
        for row in cells:
            for i, c in enumerate(row):
                spans = i == 2 and len(row) > 3 and all(x == "" for x in row[3:])
                if not spans and i < len(head) - 1:
                    widths[i] = max(widths[i], len(c))
        out.append(f"== {scen} ==")
        out.append("  ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)).rstrip())
        for row in cells:
            if len(row) > 3 and all(x == "" for x in row[3:]):
                out.append("  ".join([row[0].ljust(widths[0]), row[1].ljust(widths[1]), row[2]]))
            else:
                out.append("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
        out.append("")
    return "\n".join(out)


def targets_text(targets: list[dict[str, Any]]) -> str:
    lines = ["== targets (reported, not asserted) =="]
    for t in targets:
        v = "n/a (no figure)" if t["value"] is None else _num(t["value"])
        met = {True: "met", False: "NOT met", None: ""}[t["met"]]
        lines.append(f"  {t['target']:48s} {v:>16s}  goal {t['goal']:8s} {met}")
    return "\n".join(lines)


def legend(backends: list[Backend]) -> str:
    lines = ["== backends =="]
    for b in backends:
        lines.append(f"  {b.name:12s} {b.how}")
    lines.append("  ratios: value / reference value for the same case (for us and ms: > 1 is slower;"
                 " for GB/s: > 1 is faster); cells: median [min..max] over measured rounds")
    return "\n".join(lines)


def write_json(path: str, doc: dict[str, Any]) -> None:
    d = os.path.dirname(os.path.abspath(path))
    os.makedirs(d, exist_ok=True)
    with open(path, "w") as f:
        json.dump(doc, f, indent=2, default=str)
        f.write("\n")
