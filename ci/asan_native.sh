#!/usr/bin/env bash
# The Cython extensions under AddressSanitizer: the recycled frame blocks, buffer
# exports and pooled memory of fastp2p/_native/ are where a use-after-free would hide.
#
#   1. copy the working tree (tracked + untracked, not ignored) to a temp folder,
#   2. build the extensions in place there with gcc -fsanitize=address (CFLAGS/LDFLAGS;
#      verbs left out), never touching the repository's own build,
#   3. run tests/native there with libasan preloaded into the (uninstrumented) python,
#      ASAN_OPTIONS=detect_leaks=0 (CPython's own allocations are not ours to judge),
#      abort_on_error=1 so any ASan report fails the run,
#   4. record the counts as the gated "asan" suite (ci/summary.py record asan).
#
# Env: PYTHON (python3), FASTP2P_CI_OUT (results; no record without it), ASAN_KEEP=1 keeps
# the temp tree, ASAN_PYTEST_ARGS (extra pytest args, e.g. "-k frame").
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
start=$(date +%s)
W=$(mktemp -d "${TMPDIR:-/tmp}/fastp2p-asan.XXXXXX")
cleanup() { [[ "${ASAN_KEEP:-0}" == 1 ]] && echo "asan_native: kept $W" || rm -rf "$W"; }
trap cleanup EXIT

record() {  # passed failed skipped errors rc detail
    if [[ -n "${FASTP2P_CI_OUT:-}" ]]; then
        "$PY" ci/summary.py record asan --passed "$1" --failed "$2" --skipped "$3" --errors "$4" \
            --rc "$5" --seconds "$(( $(date +%s) - start ))" --detail "$6"
    fi
}

libasan=$(gcc -print-file-name=libasan.so 2>/dev/null)
if [[ -z "$libasan" || ! -e "$libasan" ]]; then
    echo "asan_native: gcc has no libasan.so (apt-get install gcc): failed"
    echo "0 passed, 1 failed"
    record 0 1 0 0 1 "no libasan"
    exit 1
fi

git ls-files -z --cached --others --exclude-standard \
    | grep -zv '^tests/interop/js/node_modules/' \
    | xargs -0 tar -cf - --ignore-failed-read 2>/dev/null | tar -xf - -C "$W"
cd "$W"
export CC=${CC:-gcc}
# setup.py build_ext runs in $PY itself (no isolated build env, unlike pip install):
# the build-system requirements (Cython) must be there; pyproject.toml names them.
if ! "$PY" -c 'import Cython, setuptools' >/dev/null 2>&1; then
    mapfile -t reqs < <("$PY" -c 'import tomllib; print("\n".join(tomllib.load(open("pyproject.toml", "rb"))["build-system"]["requires"]))')
    echo "asan_native: installing the build requirements into $PY: ${reqs[*]}"
    if ! "$PY" -m pip install -q --disable-pip-version-check "${reqs[@]}" >"$W/pip.log" 2>&1; then
        tail -20 "$W/pip.log"
        echo "asan_native: could not install the build requirements"
        echo "0 passed, 1 failed"
        record 0 1 0 0 1 "build requirements not installable"
        exit 1
    fi
fi
echo "asan_native: building the extensions with ASan in $W"
b0=$(date +%s)
if ! CFLAGS="-fsanitize=address -fno-omit-frame-pointer -g" LDFLAGS="-fsanitize=address" \
        FASTP2P_WITH_VERBS=0 "$PY" setup.py -q build_ext --inplace -j "$(nproc)" >"$W/build.log" 2>&1; then
    tail -40 "$W/build.log"
    echo "asan_native: build failed"
    echo "0 passed, 1 failed"
    record 0 1 0 0 1 "ASan build failed"
    exit 1
fi
echo "asan_native: built in $(( $(date +%s) - b0 )) s"
for so in fastp2p/_native/*.so; do
    syms=$(nm -D "$so" 2>/dev/null)
    [[ "$syms" == *__asan_* ]] || { echo "asan_native: $so is not instrumented"; exit 1; }
done

xml="$W/asan.xml"
# shellcheck disable=SC2086
LD_PRELOAD="$libasan" ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:print_summary=1" \
    PYTHONPATH="$W" "$PY" -m pytest -q -p no:cacheprovider --junitxml="$xml" -o junit_family=xunit2 \
    ${ASAN_PYTEST_ARGS:-} tests/native \
    --override-ini="addopts=--strict-markers" \
    -W "ignore::pytest.PytestUnraisableExceptionWarning" 2>&1 | tee "$W/pytest.log" | tail -15
rc=${PIPESTATUS[0]}
# the instrumented build really was the one imported
LD_PRELOAD="$libasan" ASAN_OPTIONS=detect_leaks=0 PYTHONPATH="$W" "$PY" -c \
    "import fastp2p._native.frame as f, sys; sys.exit(0 if f.__file__.startswith('$W') else 1)" \
    || { echo "asan_native: tests did not import the ASan build"; rc=1; }

read -r passed failed skipped errors < <(cd "$ROOT" && "$PY" - "$xml" <<'EOF'
import sys, importlib.util
spec = importlib.util.spec_from_file_location("summary", "ci/summary.py")
m = importlib.util.module_from_spec(spec); sys.modules["summary"] = m; spec.loader.exec_module(m)
try:
    r = m.parse_junit(__import__("pathlib").Path(sys.argv[1]))
    print(r["passed"], r["failed"], r["skipped"], r["errors"])
except Exception:
    print(0, 0, 0, 1)
EOF
)
detail="tests/native with gcc ASan extensions"
if grep -q "ERROR: AddressSanitizer" "$W/pytest.log"; then
    detail="$detail; ASan report: $(grep -m1 'ERROR: AddressSanitizer' "$W/pytest.log")"
    failed=$(( failed + 1 ))
fi
[[ $rc -ne 0 && $rc -ne 1 ]] && errors=$(( errors + 1 ))  # a crash (ASan abort) or usage error
echo "$passed passed, $(( failed + errors )) failed, $skipped skipped ($(( $(date +%s) - start )) s)"
record "$passed" "$failed" "$skipped" "$errors" "$rc" "$detail"
[[ $rc -eq 0 && $failed -eq 0 && $errors -eq 0 ]]
