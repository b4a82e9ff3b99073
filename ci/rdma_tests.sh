#!/usr/bin/env bash
# RDMA tests on a real verbs device: the Soft-RoCE VM of ../shared/rdma-vm.
#
#   1. rdma-vm/setup.sh (idempotent; root: apt-get + builds the guest kernel cache)
#   2. ONE guest boot: python -m pytest -m rdma tests/rdma with JUnit output
#   3. counts from the JUnit file; ci/summary.py record rdma (when present)
#
# The job FAILS when the run failed, when no RDMA test passed, or when any RDMA
# test was skipped (inside the VM a skip means the device or the build is
# missing, so a green run must not hide it).
#
# Env: RDMA_VM_DIR (default ../shared/rdma-vm), PYTHON (python3), FASTP2P_CI_OUT
#      (default build/ci-results; must be under the repository: the VM writes it
#      through the read-write share of the working directory), RDMA_VM_TIMEOUT_S (1800)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VM=${RDMA_VM_DIR:-$ROOT/../shared/rdma-vm}
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')   # the real interpreter, not a shim
OUT=${FASTP2P_CI_OUT:-$ROOT/build/ci-results}
mkdir -p "$OUT"
XML="$OUT/rdma.xml"
rm -f "$XML"

"$VM/setup.sh"
"$PY" -c 'import fastp2p._native.verbs' || {
    echo "rdma_tests: fastp2p was built without the verbs module (apt-get install libibverbs-dev; FASTP2P_WITH_VERBS=1)" >&2
    exit 1
}

t0=$(date +%s)
set +e
"$VM/run.sh" --timeout "${RDMA_VM_TIMEOUT_S:-1800}" -- \
    "$PY" -m pytest -m rdma tests/rdma -p no:cacheprovider -q -rs --timeout 900 \
    --junitxml="$XML" -o junit_family=xunit2
rc=$?
set -e
secs=$(( $(date +%s) - t0 ))

read -r passed failed skipped errors < <("$PY" ci/summary.py junit-counts "$XML")
echo "rdma_tests: ${passed} passed, ${failed} failed, ${skipped} skipped, ${errors} errors in ${secs} s (VM exit code ${rc})"
if [[ -f ci/summary.py ]]; then
    "$PY" ci/summary.py record rdma --passed "$passed" --failed "$failed" --skipped "$skipped" \
        --errors "$errors" --seconds "$secs" --rc "$rc" --detail "Soft-RoCE VM (rxe0), one boot" || true
fi
if (( rc != 0 || failed > 0 || errors > 0 )); then exit 1; fi
if (( passed == 0 )); then echo "rdma_tests: no RDMA test ran" >&2; exit 1; fi
if (( skipped > 0 )); then echo "rdma_tests: ${skipped} RDMA tests skipped inside the VM" >&2; exit 1; fi
