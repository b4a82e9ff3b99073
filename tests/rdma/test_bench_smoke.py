"""``python -m fastp2p.benchsuite.rdma --quick`` runs end to end (numbers not gated)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.rdma


def test_rdma_bench_quick_round() -> None:
    from fastp2p.benchsuite import rdma as bench

    res = bench.run(quick=True, rounds=1)
    table = bench.table(res)
    assert "ib_write_bw" in table and "stream over RDMA" in table
    assert res["fastp2p WRITE 64 KiB"] > 0 and res["rdma host"]["stream_MBps"] > 0
