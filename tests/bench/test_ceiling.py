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
