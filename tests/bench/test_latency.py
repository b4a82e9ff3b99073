"""The bench's round-trip note: a library's work per round trip (both sides
polling) beside its difference sleeping."""

from __future__ import annotations

from fastp2p.benchsuite import latency


def _row(backend: str, p50: float, case: str = "64B", metric: str = "p50 us") -> dict[str, object]:
    return {"scenario": "rtt", "case": case, "backend": backend, "metric": metric, "median": p50}


def test_the_work_is_the_polling_difference_and_the_sleeping_one_is_beside_it() -> None:
    rows = [_row("tcp-uvloop-proto", 66.0), _row("tcp-uvloop-proto-busypoll", 14.0),
            _row("fastp2p-yamux", 80.5), _row("fastp2p-yamux-busypoll", 17.25),
            _row("fastp2p-yamux", 125.0, metric="p99 us"),  # other metrics are not read
            {"scenario": "bulk1", "case": "64B", "backend": "fastp2p-yamux", "metric": "p50 us",
             "median": 1.0}]
    (g,) = latency.work_gaps(rows, "tcp-uvloop-proto")
    assert g["backend"] == "fastp2p-yamux" and g["case"] == "64B"
    assert g["work_us"] == 3.25 and g["sleeping_gap_us"] == 14.5
    line = latency.describe(g)
    assert "3.2 us with both sides polling" in line and "14.5 us sleeping" in line
    assert "fastp2p-yamux-busypoll 17.2" in line and "tcp-uvloop-proto-busypoll 14.0" in line
    assert "11.2 us of it come with the sleep and wake-up" in line


def test_no_split_when_polling_lost_time() -> None:
    # polling rows slower than the sleeping ones: cores shared with other work
    rows = [_row("tcp-uvloop-proto", 22.0), _row("tcp-uvloop-proto-busypoll", 219.0),
            _row("fastp2p-yamux", 42.0), _row("fastp2p-yamux-busypoll", 252.0)]
    (g,) = latency.work_gaps(rows, "tcp-uvloop-proto")
    line = latency.describe(g)
    assert "come with the sleep" not in line and "no split" in line


def test_no_entry_without_both_polling_twins() -> None:
    # a backend without its polling row, and a run without the baseline's
    rows = [_row("tcp-uvloop-proto", 66.0), _row("tcp-uvloop-proto-busypoll", 14.0),
            _row("fastp2p-mplex", 81.0)]
    assert latency.work_gaps(rows, "tcp-uvloop-proto") == []
    rows = [_row("tcp-uvloop-proto", 66.0), _row("fastp2p-yamux", 80.0), _row("fastp2p-yamux-busypoll", 17.0)]
    assert latency.work_gaps(rows, "tcp-uvloop-proto") == []


def test_the_machine_note_gives_the_wakeup_share() -> None:
    line = latency.describe_machine(60.0, 6.5)
    assert "60.0 us with both sleeping" in line and "6.5 us with both polling" in line
    assert "about 54 us of a sleeping round trip" in line
    assert "about 0 us" in latency.describe_machine(5.0, 6.0)  # never negative
