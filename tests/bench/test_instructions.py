"""The instruction-count harness (fastp2p.benchsuite.instructions)."""

from __future__ import annotations

import os
import shutil

import pytest

from fastp2p.benchsuite import instructions


@pytest.mark.parametrize("op", list(instructions.OPS))
@pytest.mark.parametrize("backend", instructions.BACKENDS)
def test_workloads_run(backend: str, op: str, capsys: pytest.CaptureFixture[str]) -> None:
    # what valgrind runs, briefly and without it: the workloads must not rot
    instructions.run_workload(backend, op, 20 if op == "rtt" else 30)
    # a fastp2p workload names its AEAD code (valgrind may run other code than a CPU)
    said = [ln for ln in capsys.readouterr().err.splitlines()
            if ln.startswith("fastp2p-instructions-aead: ")]
    if backend == instructions.RAW:
        assert not said
    else:
        assert said == ["fastp2p-instructions-aead: " + instructions.aead_impls()]


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind not on PATH")
@pytest.mark.skipif(os.environ.get("FASTP2P_NO_EXTENSIONS") == "1",
                    reason="counts raw uvloop only: nothing of the pure twins to check (native pass runs it)")
def test_instructions_per_round_trip_are_counted() -> None:
    per = instructions.measure(instructions.RAW, "rtt", 50, 250)
    # a uvloop echo round trip is thousands of instructions, not zero, not millions
    assert 5_000 < per < 500_000
