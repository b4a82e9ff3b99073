#!/usr/bin/env bash
# The netem testbed (tests/testbed: 20 DHT hosts, 40 +- 10 ms, 1% loss) in ONE boot of
# the ../shared/rdma-vm VM, because it needs sch_netem and the host kernel may lack it.
#
#   1. rdma-vm/setup.sh (idempotent; root: builds the guest kernel cache)
#   2. sch_netem, sch_tbf, bridge (with stp, llc) extracted from the cached kernel .deb
#      into a temp dir (the VM sees the host's files), insmod'ed inside the guest
#   3. python -m pytest tests/testbed with JUnit output (FASTP2P_TESTBED=1)
#   4. counts from the JUnit file; ci/summary.py record testbed
#
# The job FAILS when the run failed, when no test passed, or when any test was skipped
# (inside the VM a skip means netem or namespaces are missing: it must not look green).
#
# Env: RDMA_VM_DIR (default ../shared/rdma-vm), PYTHON (python3), FASTP2P_CI_OUT
#      (default build/ci-results; under the repository: the VM writes it through the
#      read-write share of the working directory), TESTBED_VM_TIMEOUT_S (900),
#      TESTBED_K (a pytest -k expression), TESTBED_PYTEST_ARGS (extra pytest arguments, e.g. -x)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
VM=${RDMA_VM_DIR:-$ROOT/../shared/rdma-vm}
CACHE=${RDMA_VM_CACHE:-/var/tmp/rdma-vm}
PY=$("${PYTHON:-python3}" -c 'import sys; print(sys.executable)')   # the real interpreter, not a shim
OUT=${FASTP2P_CI_OUT:-$ROOT/build/ci-results}
mkdir -p "$OUT"
XML="$OUT/testbed.xml"
FIG="$OUT/testbed-figures.json"
rm -f "$XML" "$FIG"

if [[ $(id -u) -eq 0 ]]; then "$VM/setup.sh"; else "$VM/setup.sh" --no-apt; fi
deb=$(ls "$CACHE"/dl/linux-image-*.deb | head -n 1)
MODS=$(mktemp -d "${TMPDIR:-/tmp}/testbed-mods.XXXXXX")
trap 'rm -rf "$MODS"' EXIT
# llc, stp before bridge (its dependencies); the qdiscs have none
dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$MODS" --wildcards \
    '*/net/llc/llc.ko' '*/net/802/stp.ko' '*/net/bridge/bridge.ko' \
    '*/net/sched/sch_netem.ko' '*/net/sched/sch_tbf.ko'
KDIR=$(dirname "$(dirname "$(find "$MODS" -name sch_netem.ko)")")  # .../kernel/net
[[ -f "$KDIR/bridge/bridge.ko" ]] || { echo "testbed_vm: modules missing in $deb" >&2; exit 1; }
# the DHT's refresh-key table (deterministic; ~7e5 SHA-256): seconds here, a minute emulated
"$PY" -c 'import sys; from fastp2p.testing.testbed import dump_prefix_table as d; d(sys.argv[1])' \
    "$MODS/kad-prefix-table.bin"

# shellcheck disable=SC2016
GUEST='set -e
for m in llc/llc 802/stp bridge/bridge sched/sch_netem sched/sch_tbf; do
    insmod "$TESTBED_KDIR/$m.ko" 2>/dev/null || grep -q "^$(basename $m) " /proc/modules \
        || { echo "testbed_vm: insmod $m failed" >&2; exit 1; }
done
exec "$@"'

t0=$(date +%s)
set +e
# shellcheck disable=SC2086
TESTBED_KDIR="$KDIR" FASTP2P_TESTBED=1 FASTP2P_KAD_PREFIX_TABLE="$MODS/kad-prefix-table.bin" FASTP2P_TESTBED_FIGURES="$FIG" \
"$VM/run.sh" --timeout "${TESTBED_VM_TIMEOUT_S:-900}" --smp 2 --mem 4096 -- \
    /bin/bash -c "$GUEST" testbed-guest \
    "$PY" -m pytest tests/testbed \
    tests/integration/test_netns_lab.py::test_netem_shaping_or_the_reason_it_is_missing -p no:cacheprovider -q -rs -s --timeout 900 \
    --junitxml="$XML" -o junit_family=xunit2 ${TESTBED_K:+-k "$TESTBED_K"} ${TESTBED_PYTEST_ARGS:-}
rc=$?
set -e
secs=$(( $(date +%s) - t0 ))

read -r passed failed skipped errors < <("$PY" ci/summary.py junit-counts "$XML")
echo "testbed_vm: ${passed} passed, ${failed} failed, ${skipped} skipped, ${errors} errors in ${secs} s (VM exit code ${rc})"
[[ -f "$FIG" ]] && echo "testbed_vm: figures in $FIG" && cat "$FIG"
if [[ -f ci/summary.py ]]; then
    "$PY" ci/summary.py record testbed --passed "$passed" --failed "$failed" --skipped "$skipped" \
        --errors "$errors" --seconds "$secs" --rc "$rc" --detail "netem VM (sch_netem), one boot" || true
fi
if (( rc != 0 || failed > 0 || errors > 0 )); then exit 1; fi
if (( passed == 0 )); then echo "testbed_vm: no testbed test ran" >&2; exit 1; fi
if (( skipped > 0 )); then echo "testbed_vm: ${skipped} testbed tests skipped inside the VM" >&2; exit 1; fi
