"""What a library adds to each round trip, with and without the sleep.

A 64-byte round trip on a host whose CPUs go idle is mostly the kernel and the
hypervisor waking them (twice per round trip), so the ``rtt`` rows' ratio
mixes the library's own work with that wake-up. The busy-polling variants
(``<backend>-busypoll``, the same poller and budget on both sides, raw TCP's
included) never sleep: the difference between a library's polling row and the
raw baseline's polling row is the library's work per round trip alone. Beside
it, the same difference between the sleeping rows: what is above the polling
difference comes with the sleep and the wake-up.
"""

from __future__ import annotations

from typing import Any

from .backends.fastp2p_tcp import BUSYPOLL

METRIC = "p50 us"


def work_gaps(rows: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """One entry per ``rtt`` case and backend that has a polling twin, where the
    baseline has one too: the p50 differences to the baseline, polling and
    sleeping (microseconds)."""
    p50: dict[tuple[str, str], float] = {
        (r["case"], r["backend"]): r["median"]
        for r in rows if r["scenario"] == "rtt" and r["metric"] == METRIC}
    out = []
    for (case, b), sleeping in sorted(p50.items()):
        base, base_poll = p50.get((case, baseline)), p50.get((case, f"{baseline}-{BUSYPOLL}"))
        polling = p50.get((case, f"{b}-{BUSYPOLL}"))
        if b == baseline or base is None or base_poll is None or polling is None:
            continue
        out.append({"case": case, "backend": b, "baseline": baseline,
                    "polling_us": polling, "baseline_polling_us": base_poll,
                    "sleeping_us": sleeping, "baseline_sleeping_us": base,
                    "work_us": polling - base_poll, "sleeping_gap_us": sleeping - base})
    return out


def describe(g: dict[str, Any]) -> str:
    """One note line for a :func:`work_gaps` entry."""
    b, base = g["backend"], g["baseline"]
    work, gap = g["work_us"], g["sleeping_gap_us"]
    line = (f"rtt {g['case']} p50, what {b} adds per round trip to {base}: "
            f"{work:.1f} us with both sides polling ({b}-{BUSYPOLL} {g['polling_us']:.1f} "
            f"against {base}-{BUSYPOLL} {g['baseline_polling_us']:.1f} us: its work), "
            f"{gap:.1f} us sleeping ({g['sleeping_us']:.1f} against {g['baseline_sleeping_us']:.1f} us)")
    if gap > work >= 0:
        line += f": {gap - work:.1f} us of it come with the sleep and wake-up"
    else:  # polling lost time: its cores were shared (other processes, a noisy VM)
        line += ": the polling rows ran slower than expected, so no split (were the cores shared?)"
    return line


def describe_machine(sleeping_us: float, polling_us: float) -> str:
    """The note on this machine's wake-up cost (``fastp2p doctor --latency``'s figures)."""
    return (f"rtt: on this machine a 64-byte round trip between two plain Python processes takes "
            f"{sleeping_us:.1f} us with both sleeping and {polling_us:.1f} us with both polling "
            f"(fastp2p doctor --latency): about {max(sleeping_us - polling_us, 0):.0f} us of a "
            "sleeping round trip here is waking CPUs, which every backend below pays (and code "
            "that touches more memory per message pays more, its caches cold after the sleep)")
