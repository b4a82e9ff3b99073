#!/usr/bin/env bash
# The suites that need a kernel the host may not have, in ONE boot of the
# ../shared/rdma-vm QEMU guest (Soft-RoCE rxe0, the host's files visible):
#
#   rdma     python -m pytest -m rdma tests/rdma (real kernel verbs on rxe0)
#   testbed  python -m pytest tests/testbed (20 DHT hosts, 40 +- 10 ms, 1% loss: sch_netem,
#            sch_tbf, bridge, extracted from the cached guest kernel .deb and insmod'ed)
#
#   bash ci/vm_tests.sh rdma testbed      both, one boot (CI: ci/test.sh)
#   bash ci/vm_tests.sh rdma              what ci/rdma_tests.sh runs
#   bash ci/vm_tests.sh testbed           what ci/testbed_vm.sh runs
#
# Each suite writes <out>/<suite>.xml (JUnit) and its counts through ci/summary.py record.
# A suite FAILS when its run failed, when no test passed, or when any test was skipped
# (inside the VM a skip means the device, netem or namespaces are missing: it must not
# look green). One boot instead of two saves the guest's boot and setup (~40 s under TCG).
#
# Env: RDMA_VM_DIR (default ../shared/rdma-vm), PYTHON (python3), FASTP2P_CI_OUT
#      (default build/ci-results; under the repository: the VM writes it through the
#      read-write share of the working directory), VM_TESTS_TIMEOUT_S (1800),
#      TESTBED_K (a pytest -k expression for the testbed), TESTBED_PYTEST_ARGS (extra
#      pytest arguments for it, e.g. -x)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VM=${RDMA_VM_DIR:-$ROOT/../shared/rdma-vm}
CACHE=${RDMA_VM_CACHE:-/var/tmp/rdma-vm}
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')   # the real interpreter, not a shim
OUT=${FASTP2P_CI_OUT:-$ROOT/build/ci-results}
mkdir -p "$OUT"
(( $# > 0 )) || { echo "usage: ci/vm_tests.sh rdma|testbed ..." >&2; exit 2; }
SUITES=("$@")
want() { [[ " ${SUITES[*]} " == *" $1 "* ]]; }
for s in "${SUITES[@]}"; do
    [[ "$s" == rdma || "$s" == testbed ]] || { echo "vm_tests: unknown suite $s" >&2; exit 2; }
    rm -f "$OUT/$s.xml" "$OUT/$s.vmrc"
done
FIG="$OUT/testbed-figures.json"
rm -f "$FIG"

if [[ $(id -u) -eq 0 ]]; then "$VM/setup.sh"; else "$VM/setup.sh" --no-apt; fi
if want rdma; then
    "$PY" -c 'import fastp2p._native.verbs' || {
        echo "vm_tests: fastp2p was built without the verbs module (apt-get install libibverbs-dev; FASTP2P_WITH_VERBS=1)" >&2
        exit 1
    }
fi
MODS=$(mktemp -d "${TMPDIR:-/tmp}/vm-tests-mods.XXXXXX")
trap 'rm -rf "$MODS"' EXIT
KDIR=""
if want testbed; then
    deb=$(ls "$CACHE"/dl/linux-image-*.deb | head -n 1)
    # llc, stp before bridge (its dependencies); the qdiscs have none
    dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$MODS" --wildcards \
        '*/net/llc/llc.ko' '*/net/802/stp.ko' '*/net/bridge/bridge.ko' \
        '*/net/sched/sch_netem.ko' '*/net/sched/sch_tbf.ko'
    KDIR=$(dirname "$(dirname "$(find "$MODS" -name sch_netem.ko)")")  # .../kernel/net
    [[ -f "$KDIR/bridge/bridge.ko" ]] || { echo "vm_tests: modules missing in $deb" >&2; exit 1; }
    # the DHT's refresh-key table (deterministic; ~7e5 SHA-256): seconds here, a minute emulated
    "$PY" -c 'import sys; from fastp2p.testing.testbed import dump_prefix_table as d; d(sys.argv[1])' \
        "$MODS/kad-prefix-table.bin"
fi

# The guest runs each suite's pytest and leaves its exit code in <out>/<suite>.vmrc:
# one suite failing must not keep the other from running.
# shellcheck disable=SC2016
GUEST='set -u
if [[ -n "$TESTBED_KDIR" ]]; then
    for m in llc/llc 802/stp bridge/bridge sched/sch_netem sched/sch_tbf; do
        insmod "$TESTBED_KDIR/$m.ko" 2>/dev/null || grep -q "^$(basename $m) " /proc/modules \
            || { echo "vm_tests: insmod $m failed" >&2; exit 1; }
    done
fi
for s in $VM_SUITES; do
    case $s in
    rdma)
        "$VM_PY" -m pytest -m rdma tests/rdma -p no:cacheprovider -q -rs --timeout 900 \
            --junitxml="$VM_OUT/rdma.xml" -o junit_family=xunit2 ;;
    testbed)
        FASTP2P_TESTBED=1 "$VM_PY" -m pytest tests/testbed \
            tests/integration/test_netns_lab.py::test_netem_shaping_or_the_reason_it_is_missing \
            -p no:cacheprovider -q -rs -s --timeout 900 \
            --junitxml="$VM_OUT/testbed.xml" -o junit_family=xunit2 \
            ${TESTBED_K:+-k "$TESTBED_K"} ${TESTBED_PYTEST_ARGS:-} ;;
    esac
    echo $? > "$VM_OUT/$s.vmrc"
done'

t0=$(date +%s)
set +e
TESTBED_KDIR="$KDIR" VM_SUITES="${SUITES[*]}" VM_PY="$PY" VM_OUT="$OUT" \
FASTP2P_KAD_PREFIX_TABLE="$MODS/kad-prefix-table.bin" FASTP2P_TESTBED_FIGURES="$FIG" \
TESTBED_K="${TESTBED_K:-}" TESTBED_PYTEST_ARGS="${TESTBED_PYTEST_ARGS:-}" \
"$VM/run.sh" --timeout "${VM_TESTS_TIMEOUT_S:-1800}" --smp 2 --mem 4096 -- \
    /bin/bash -c "$GUEST" vm-tests-guest
vmrc=$?
set -e
secs=$(( $(date +%s) - t0 ))

fail=0
for s in "${SUITES[@]}"; do
    rc=$(cat "$OUT/$s.vmrc" 2>/dev/null || echo "$vmrc")   # no file: the VM died first
    [[ "$rc" == 0 && "$vmrc" != 0 ]] && rc=$vmrc
    read -r passed failed skipped errors < <("$PY" ci/summary.py junit-counts "$OUT/$s.xml")
    echo "vm_tests $s: ${passed} passed, ${failed} failed, ${skipped} skipped, ${errors} errors (pytest exit ${rc}, VM exit ${vmrc}, boot total ${secs} s)"
    [[ "$s" == testbed && -f "$FIG" ]] && echo "vm_tests: figures in $FIG" && cat "$FIG"
    case $s in
        rdma) detail="Soft-RoCE VM (rxe0)" ;;
        testbed) detail="netem VM (sch_netem)" ;;
    esac
    (( ${#SUITES[@]} > 1 )) && detail="$detail, one boot with ${SUITES[*]}"
    "$PY" ci/summary.py record "$s" --passed "$passed" --failed "$failed" --skipped "$skipped" \
        --errors "$errors" --seconds "$secs" --rc "$rc" --detail "$detail" || true
    if (( rc != 0 || failed > 0 || errors > 0 )); then fail=1
    elif (( passed == 0 )); then echo "vm_tests: no $s test ran" >&2; fail=1
    elif (( skipped > 0 )); then echo "vm_tests: ${skipped} $s tests skipped inside the VM" >&2; fail=1
    fi
done
exit "$fail"
