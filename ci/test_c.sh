#!/usr/bin/env bash
# C unit tests for csrc/ under AddressSanitizer + UndefinedBehaviorSanitizer.
#
# Every csrc/tests/test_*.c is a test program (its own main) linked against an
# archive of every csrc/fp_*.c plus -lcrypto, so a new test or a new kernel file
# is built without editing this script; the archive means a test pulls in only
# the kernels it uses (a test of the frame codec needs no libibverbs). A source
# may ask for more link flags with a line
#     // ci-ldflags: -lfoo
# (a kernel's flags go on every link, after -Wl,--as-needed).
# Each binary counts as one test (a kernel that does not compile counts as one
# failed test); all run even when one fails. Ends with the
# line "N passed, M failed" and, when FASTP2P_CI_OUT is set, records the counts
# for ci/summary.py (suite "c").
#
# Env: CC (default cc), SAN (sanitizer flags), C_TEST_TIMEOUT (seconds per binary, 300).
set -uo pipefail
cd "$(dirname "$0")/.."

CC=${CC:-cc}
SAN=${SAN:--fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer}
CFLAGS="-std=c11 -g -O1 -Wall -Wextra -Werror -Icsrc $SAN"
# objects and binaries in a private folder per run: concurrent runs cannot clobber each other
mkdir -p build
OBJ="$(mktemp -d "$PWD/build/c-tests.XXXXXX")"
BIN="$OBJ"
trap 'rm -rf "$OBJ"' EXIT
start=$(date +%s)

ldflags_of() {  # "// ci-ldflags: ..." lines of the given files
    sed -n 's|^[[:space:]]*//[[:space:]]*ci-ldflags:[[:space:]]*||p' "$@" 2>/dev/null | tr '\n' ' '
}

record() {  # passed failed rc detail
    if [[ -n "${FASTP2P_CI_OUT:-}" ]]; then
        "${PYTHON:-python3}" ci/summary.py record c --passed "$1" --failed "$2" --rc "$3" \
            --seconds "$(( $(date +%s) - start ))" --detail "$4"
    fi
}

shopt -s nullglob
kernels=(csrc/fp_*.c)
tests=(csrc/tests/test_*.c)
if [[ ${#tests[@]} -eq 0 ]]; then
    echo "ci/test_c.sh: no csrc/tests/test_*.c found"
    echo "0 passed, 0 failed"
    record 0 0 0 "no C test sources"
    exit 1
fi

passed=0
failed=0
failed_names=()
# each kernel once into an object; one that does not compile counts as a failed
# test and is left out of the links (tests that need it then fail to link)
objs=()
for k in "${kernels[@]}"; do
    o="$OBJ/$(basename "${k%.c}").o"
    # shellcheck disable=SC2086
    if $CC $CFLAGS -c -o "$o" "$k"; then
        objs+=("$o")
    else
        echo "ci/test_c.sh: FAIL compile $k"
        failed=$((failed + 1))
        failed_names+=("compile:$(basename "$k")")
    fi
done
lib="$OBJ/libfp.a"
rm -f "$lib"
[[ ${#objs[@]} -gt 0 ]] && ar rcs "$lib" "${objs[@]}"
libs="-lcrypto -Wl,--as-needed $(ldflags_of "${kernels[@]}")"

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
for t in "${tests[@]}"; do
    name="$(basename "${t%.c}")"
    bin="$BIN/$name.bin"
    t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    if $CC $CFLAGS -o "$bin" "$t" ${objs[@]:+"$lib"} $libs $(ldflags_of "$t") \
        && timeout "${C_TEST_TIMEOUT:-300}" "$bin"; then
        passed=$((passed + 1))
        awk -v n="$name" -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "ci/test_c.sh: PASS %s (%.1fs)\n", n, b - a }'
    else
        failed=$((failed + 1))
        failed_names+=("$name")
        echo "ci/test_c.sh: FAIL $name"
    fi
done

echo "$passed passed, $failed failed"
record "$passed" "$failed" "$(( failed > 0 ))" "${failed_names[*]:+failed: ${failed_names[*]}}"
[[ $failed -eq 0 ]]
