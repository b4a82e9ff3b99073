"""The bench's encrypted ceiling: openssl's single-core cipher speed and the formula."""

from __future__ import annotations

import os
import shutil

import pytest

from fastp2p.benchsuite import ceiling

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl CLI on PATH")


def test_openssl_speed_is_parsed() -> None:
    bps = ceiling.cipher_speed("chacha20-poly1305", seconds=1)
    assert bps is not None and 1e7 < bps < 1e12
    assert ceiling.cipher_speed("no-such-cipher-xyz", seconds=1) is None


def test_ceiling_formula_and_shares() -> None:
    rows = [
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "cpu s/GB", "median": 0.25},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-yamux", "metric": "MB/s", "median": 1000.0},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "MB/s", "median": 5000.0},
    ]
    out = ceiling.ceilings(rows, "tcp-uvloop-proto")
    assert {c["cipher"] for c in out} <= set(ceiling.CIPHERS) and out
    for c in out:
        cores = min(2, os.cpu_count() or 1)
        want = cores / (0.25e-9 + 2.0 / (c["cipher_GBps"] * 1e9)) / 1e6
        assert c["ceiling_MBps"] == pytest.approx(want)
        assert set(c["shares"]) == {"fastp2p-yamux"}  # the raw baseline is not "secured"
        assert c["shares"]["fastp2p-yamux"] == pytest.approx(1000.0 / want)
        assert "encrypted ceiling" in ceiling.describe(c)
    assert ceiling.ceilings(rows, "missing-baseline") == []


def test_a_backend_counts_against_the_cipher_it_negotiated_with_each_sides_load() -> None:
    rows = [
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "cpu s/GB", "median": 0.25},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-yamux", "metric": "MB/s", "median": 1000.0},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "py-libp2p", "metric": "MB/s", "median": 100.0},
    ]

    def rec(backend: str, cipher: str | None, cli: float, srv: float, measured: bool = True) -> dict:
        m = {"_seconds": 2.0, "_cli_cpu": cli, "_srv_cpu": srv, "_cipher": cipher}
        return {"round": 1, "measured": measured, "scenario": "bulk1", "case": "msg=1MiB",
                "backend": backend, "metrics": m}

    records = [
        rec("fastp2p-yamux", "AESGCM", 2.0, 1.5),
        rec("fastp2p-yamux", "AESGCM", 1.9, 1.7),
        rec("fastp2p-yamux", "AESGCM", 1.96, 1.6),
        rec("fastp2p-yamux", "AESGCM", 0.1, 0.1, measured=False),  # warm-up: not counted
        rec("py-libp2p", "ChaChaPoly", 1.0, 0.5),
    ]
    out = {c["cipher"]: c for c in ceiling.ceilings(rows, "tcp-uvloop-proto", records)}
    if "AESGCM" in out:
        assert set(out["AESGCM"]["shares"]) == {"fastp2p-yamux"}
        assert out["AESGCM"]["busy"]["fastp2p-yamux"] == pytest.approx((0.98, 0.8))
        assert "fastp2p-yamux x" in ceiling.describe(out["AESGCM"])
        assert "(writer 98%, reader 80% of a core)" in ceiling.describe(out["AESGCM"])
    if "ChaChaPoly" in out:
        assert set(out["ChaChaPoly"]["shares"]) == {"py-libp2p"}  # not the AES-GCM backend
        assert out["ChaChaPoly"]["busy"]["py-libp2p"] == pytest.approx((0.5, 0.25))
    assert out


def test_the_event_loop_threads_load_is_shown_beside_the_process_total() -> None:
    """A process with pool threads can sit under a core while its loop thread is
    saturated: the note names both, and leaves the loop out where a worker could not say."""
    rows = [
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "cpu s/GB", "median": 0.25},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-yamux", "metric": "MB/s", "median": 1000.0},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-mplex", "metric": "MB/s", "median": 900.0},
    ]
    m = {"_seconds": 2.0, "_cli_cpu": 2.7, "_srv_cpu": 5.0, "_cli_main_cpu": 1.98, "_srv_main_cpu": 1.2}
    nan = {"_seconds": 2.0, "_cli_cpu": 1.0, "_srv_cpu": 1.0, "_cli_main_cpu": float("nan"), "_srv_main_cpu": 1.0}
    records = [{"measured": True, "scenario": "bulk1", "case": "msg=1MiB", "backend": b, "metrics": mm}
               for b, mm in (("fastp2p-yamux", m), ("fastp2p-mplex", nan))]
    for c in ceiling.ceilings(rows, "tcp-uvloop-proto", records):
        assert c["busy"]["fastp2p-yamux"] == pytest.approx((1.35, 2.5, 0.99, 0.6))
        line = ceiling.describe(c)
        assert "fastp2p-yamux x" in line and "(writer 135%, reader 250% of a core; their event-loop threads 99%, 60%)" in line
        assert "fastp2p-mplex x" in line and "(writer 50%, reader 50% of a core)" in line


def test_main_thread_cpu_counts_the_main_thread_only() -> None:
    import threading
    import time

    from fastp2p.benchsuite import wire

    def spin(secs: float) -> None:
        end = time.thread_time() + secs
        while time.thread_time() < end:
            pass

    m0, c0 = wire.main_thread_cpu_seconds(), wire.cpu_seconds()
    t = threading.Thread(target=spin, args=(0.3,))
    t.start()
    t.join()
    m1, c1 = wire.main_thread_cpu_seconds(), wire.cpu_seconds()
    assert c1 - c0 >= 0.25  # the helper's spin counts in the process total
    assert m1 - m0 < 0.15  # ... and not in the main thread's
    spin(0.2)
    assert wire.main_thread_cpu_seconds() - m1 >= 0.18


def test_a_faster_fastp2p_kernel_raises_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    """The ceiling is set by the fastest implementation of the cipher on the machine;
    the share against openssl speed alone is kept beside it."""
    monkeypatch.setattr(ceiling, "cipher_speed", lambda evp, **kw: 4e9)
    monkeypatch.setattr(ceiling, "kernel_speed", lambda name, **kw: 12e9 if name == "AESGCM" else 4.2e9)
    rows = [
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "cpu s/GB", "median": 0.25},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-yamux", "metric": "MB/s", "median": 2000.0},
    ]
    out = {c["cipher"]: c for c in ceiling.ceilings(rows, "tcp-uvloop-proto")}
    aes, chacha = out["AESGCM"], out["ChaChaPoly"]
    assert aes["cipher_source"] == "fastp2p kernel" and aes["cipher_GBps"] == pytest.approx(12.0)
    cores = min(2, os.cpu_count() or 1)
    assert aes["ceiling_MBps"] == pytest.approx(cores / (0.25e-9 + 2.0 / 12e9) / 1e6)
    assert aes["ceiling_openssl_MBps"] == pytest.approx(cores / (0.25e-9 + 2.0 / 4e9) / 1e6)
    assert aes["shares"]["fastp2p-yamux"] < aes["shares_openssl"]["fastp2p-yamux"]
    assert "fastp2p kernel" in ceiling.describe(aes) and "against openssl speed's 4.00 GB/s" in ceiling.describe(aes)
    # within 10% of openssl speed: openssl speed stays the yardstick
    assert chacha["cipher_source"] == "openssl speed" and chacha["cipher_GBps"] == pytest.approx(4.0)
    assert "against openssl speed" not in ceiling.describe(chacha)


def test_the_loop_thread_bound_comes_from_the_raw_baselines_threads() -> None:
    """Each side's loop thread does its raw TCP work plus its cipher's: the lower
    of the writer's and the reader's bound is what a stream without a pool can reach."""
    rows = [
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "tcp-uvloop-proto", "metric": "cpu s/GB", "median": 0.3},
        {"scenario": "bulk1", "case": "msg=1MiB", "backend": "fastp2p-yamux", "metric": "MB/s", "median": 2000.0},
    ]

    def raw(w: float, r: float, measured: bool = True) -> dict:
        m = {"_seconds": 1.0, "_bytes": 1e9, "_cli_cpu": w, "_srv_cpu": r, "_cli_main_cpu": w,
             "_srv_main_cpu": r}
        return {"measured": measured, "scenario": "bulk1", "case": "msg=1MiB",
                "backend": "tcp-uvloop-proto", "metrics": m}

    records = [raw(0.2, 0.1), raw(0.22, 0.12), raw(0.18, 0.08), raw(9.0, 9.0, measured=False)]
    out = ceiling.ceilings(rows, "tcp-uvloop-proto", records)
    assert out
    for c in out:
        per_byte = 1.0 / (c["cipher_GBps"] * 1e9)
        wb, rb = c["loop_bound_MBps"]
        assert wb == pytest.approx(1.0 / (0.2e-9 + per_byte) / 1e6)
        assert rb == pytest.approx(1.0 / (0.1e-9 + per_byte) / 1e6)
        assert c["loop_shares"]["fastp2p-yamux"] == pytest.approx(2000.0 / min(wb, rb))
        assert f"writer {wb:.0f}, reader {rb:.0f} MB/s: fastp2p-yamux x" in ceiling.describe(c)
    # without the baseline's thread figures there is no bound (older results)
    bare = ceiling.ceilings(rows, "tcp-uvloop-proto", [])
    assert bare and all("loop_bound_MBps" not in c for c in bare)
    assert all("one loop thread" not in ceiling.describe(c) for c in bare)
