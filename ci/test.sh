#!/usr/bin/env bash
# The whole test job, from a fresh Debian/Ubuntu machine (as root) or a dev box:
#   1. system packages it needs, only those missing (ci/install_system_deps.sh)
#   2. Node.js >= 20 for js-libp2p (ci/setup_node.sh)
#   3. fastp2p[test] (native build) + the bench baselines into the python in use
#      (a venv .venv-ci when that python is Debian's externally managed one)
#   4. the reference peers: py-libp2p venv, js-libp2p node_modules (ci/setup_interop.sh)
#   5. pytest, native kernels: one run per suite (ci/summary.py owns the split:
#      unit, proto, native, integration, hostile, conformance, interop, shm)
#   6. pytest, pure-Python twins (FASTP2P_NO_EXTENSIONS=1): the suites summary.py names
#      for it once more (all but interop, netns, dask)
#   7. C unit tests under ASan/UBSan, 8. fuzz smoke (libFuzzer, committed corpora and
#      dictionaries), 8b. tests/native against ASan-built extensions, 9. bench smoke
#   10. ci/summary.py report: the per-suite table and the gate. The job FAILS when a
#       required suite did not run, ran zero tests, failed, or (interop, conformance,
#       hostile) skipped a test.
#
# Env:
#   FASTP2P_CI_OPTOUT="interop,rdma"  suites that do not gate this run (printed loudly);
#                                     opting out of interop also skips step 4
#   FASTP2P_CI_RUNSLOW=1              also run tests marked slow
#   FASTP2P_CI_RDMA=1|0               run the RDMA suite in the Soft-RoCE VM (ci/vm_tests.sh;
#                                     default 1 as root), rdma is then required
#   FASTP2P_CI_TESTBED=1|0            run the 20-host DHT testbed under netem in the same VM
#                                     boot (default 1 as root), testbed is then required
#   FASTP2P_CI_OUT=DIR                results (default build/ci-results)
#   FUZZ_SECONDS (10), CI_TIME_BUDGET (seconds, 1200), PYTHON (python3)
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"

PY=${PYTHON:-python3}
export FASTP2P_CI_OUT=${FASTP2P_CI_OUT:-$ROOT/build/ci-results}
BUDGET=${CI_TIME_BUDGET:-1200}
T_START=$(date +%s)
STEP_NAMES=()
STEP_SECS=()
_step_name=""
_step_t0=0

now() { date +%s; }
step_end() {
    if [[ -n "$_step_name" ]]; then
        local dt=$(( $(now) - _step_t0 ))
        STEP_NAMES+=("$_step_name")
        STEP_SECS+=("$dt")
        printf '== [%4ds / %ds budget] %s took %ds\n' "$(( $(now) - T_START ))" "$BUDGET" "$_step_name" "$dt"
    fi
    _step_name=""
}
step() {
    step_end
    _step_name="$1"
    _step_t0=$(now)
    printf '\n== [%4ds] %s\n' "$(( $(now) - T_START ))" "$1"
}
optout() {  # is suite $1 opted out?
    local list=",${FASTP2P_CI_OPTOUT:-},"
    list="${list//[[:space:]]/,}"
    [[ "$list" == *",$1,"* ]]
}

rm -rf "$FASTP2P_CI_OUT"
mkdir -p "$FASTP2P_CI_OUT"

# As root (CI) the network-namespace testbed runs and must not skip.
if [[ -z "${FASTP2P_CI_NETNS:-}" ]]; then
    if [[ $(id -u) -eq 0 ]] && ! optout netns; then FASTP2P_CI_NETNS=1; else FASTP2P_CI_NETNS=0; fi
fi
export FASTP2P_CI_NETNS


step "system packages"
PYTHON="$PY" bash ci/install_system_deps.sh
"$PY" ci/summary.py optouts >/dev/null  # unknown suite names fail now, not after the run

if ! optout interop; then
    step "Node.js >= 20"
    # shellcheck source=ci/setup_node.sh
    . ci/setup_node.sh
fi

step "install fastp2p[test] (native build) and the bench baselines"
if [[ -f "$("$PY" -c 'import sysconfig; print(sysconfig.get_path("stdlib"))')/EXTERNALLY-MANAGED" ]] \
        && [[ "$("$PY" -c 'import sys; print(sys.prefix == sys.base_prefix)')" == True ]]; then
    # Debian's own python refuses pip installs (PEP 668): work in a venv of it
    [[ -x .venv-ci/bin/python ]] || "$PY" -m venv .venv-ci
    PY="$ROOT/.venv-ci/bin/python"
    echo "using a venv of the system python: $PY"
fi
export PYTHON="$PY"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test,dask]" -r bench/requirements.txt
"$PY" -c 'import fastp2p, fastp2p._accel as a; print("fastp2p", fastp2p.__version__, "native:", a.HAVE_NATIVE)'

if optout interop; then
    echo "== interop opted out: reference peers not set up"
else
    step "reference peers for interop tests"
    bash ci/setup_interop.sh
fi

runslow=()
[[ "${FASTP2P_CI_RUNSLOW:-0}" == 1 ]] && runslow=(--runslow)

for suite in $("$PY" ci/summary.py list --kind pytest --native-pass); do
    step "pytest suite $suite (native kernels)"
    "$PY" ci/summary.py run "$suite" -- "${runslow[@]}"
done

step "pytest suite pure (pure-Python twins, FASTP2P_NO_EXTENSIONS=1)"
"$PY" ci/summary.py run pure -- "${runslow[@]}"

step "C unit tests (ASan/UBSan)"
bash ci/test_c.sh || true  # counted by the gate

step "fuzz smoke"
# as root the job installed clang itself: a fallback to the gcc driver would be a silent downgrade
req_lf=0
[[ $(id -u) -eq 0 ]] && req_lf=1
FUZZ_SECONDS=${FUZZ_SECONDS:-10} FUZZ_REQUIRE_LIBFUZZER=${FUZZ_REQUIRE_LIBFUZZER:-$req_lf} \
    bash ci/fuzz_smoke.sh || true  # counted by the gate

step "Cython extensions built with ASan, tests/native (ci/asan_native.sh)"
bash ci/asan_native.sh || true  # counted by the gate (suite asan)

# As root (CI) the QEMU guest of ../shared/rdma-vm can run: the RDMA suite (Soft-RoCE)
# and the netem testbed run there, in one boot, and are required unless opted out
# (FASTP2P_CI_OPTOUT=rdma / testbed or FASTP2P_CI_RDMA=0 / FASTP2P_CI_TESTBED=0).
if [[ -z "${FASTP2P_CI_RDMA:-}" ]]; then
    if [[ $(id -u) -eq 0 ]] && ! optout rdma; then FASTP2P_CI_RDMA=1; else FASTP2P_CI_RDMA=0; fi
fi
if [[ -z "${FASTP2P_CI_TESTBED:-}" ]]; then
    if [[ $(id -u) -eq 0 ]] && ! optout testbed; then FASTP2P_CI_TESTBED=1; else FASTP2P_CI_TESTBED=0; fi
fi
export FASTP2P_CI_RDMA FASTP2P_CI_TESTBED
vm_suites=()
[[ "${FASTP2P_CI_RDMA}" == 1 ]] && vm_suites+=(rdma)
[[ "${FASTP2P_CI_TESTBED}" == 1 ]] && vm_suites+=(testbed)
if (( ${#vm_suites[@]} )); then
    # required when asked for (ci/summary.py: required="env:FASTP2P_CI_RDMA" / "..._TESTBED")
    step "VM suites: ${vm_suites[*]} (one boot of the Soft-RoCE/netem guest, ci/vm_tests.sh)"
    bash ci/vm_tests.sh "${vm_suites[@]}" || true  # records their counts; the gate judges them
fi

step "bench smoke (numbers not gated)"
b0=$(now)
allow_missing=""
optout interop && allow_missing=1  # no py-libp2p venv then
if BENCH_SMOKE_ALLOW_MISSING="${BENCH_SMOKE_ALLOW_MISSING:-$allow_missing}" bash ci/bench_smoke.sh; then
    brc=0
else
    brc=$?
fi
"$PY" ci/summary.py record bench-smoke --passed $(( brc == 0 )) --failed $(( brc != 0 )) \
    --rc "$brc" --seconds "$(( $(now) - b0 ))"

step "wheel smoke (sdist + manylinux wheel installed with no compiler; demo)"
w0=$(now)
if PYTHON="$PY" bash ci/wheel_smoke.sh; then wrc=0; else wrc=$?; fi
"$PY" ci/summary.py record wheel --passed $(( wrc == 0 )) --failed $(( wrc != 0 )) \
    --rc "$wrc" --seconds "$(( $(now) - w0 ))"

step "docs (sphinx-build -W, doctest builder)"
d0=$(now)
if PYTHON="$PY" bash ci/docs.sh; then drc=0; else drc=$?; fi
"$PY" ci/summary.py record docs --passed $(( drc == 0 )) --failed $(( drc != 0 )) \
    --rc "$drc" --seconds "$(( $(now) - d0 ))"
step_end

echo
echo "== time per step (budget ${BUDGET}s)"
for i in "${!STEP_NAMES[@]}"; do
    printf '  %5ds  %s\n' "${STEP_SECS[$i]}" "${STEP_NAMES[$i]}"
done
total=$(( $(now) - T_START ))
printf '  %5ds  total%s\n' "$total" "$( (( total > BUDGET )) && echo "  OVER THE ${BUDGET}s BUDGET" )"

"$PY" ci/summary.py report
