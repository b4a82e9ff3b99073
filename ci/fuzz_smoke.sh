#!/usr/bin/env bash
# Fuzz smoke of every C harness: csrc/fuzz/fuzz_*.c, each linked against an
# archive of every csrc/fp_*.c (instrumented) and -lcrypto, so new harnesses and
# kernels are picked up without editing this script and a harness pulls in only
# the kernels it uses (a source may add "// ci-ldflags: -lfoo"; a kernel's flags
# go on every link after -Wl,--as-needed). A kernel that does not compile fails
# every harness.
#
#   clang with libFuzzer -> coverage-guided libFuzzer + ASan/UBSan. Seeds: the committed
#                           corpus csrc/fuzz/corpus/<harness>/ when it exists (read only;
#                           new inputs go to a scratch corpus outside the tree, or to
#                           FUZZ_CORPUS_OUT/<harness>/ when set), dictionary
#                           csrc/fuzz/<harness>.dict when it exists.
#   gcc only             -> csrc/fuzz/driver.c random-input driver under ASan/UBSan
#   neither              -> every harness counts as failed (CI installs clang)
#
# Binaries and logs go to a fresh folder under ${TMPDIR:-/tmp}/fastp2p-fuzz/ per run,
# removed after a clean run and kept (with the crash inputs) after a failure. Each harness is one test. Ends with "N passed, M failed" and, when FASTP2P_CI_OUT
# is set, records the counts (and libFuzzer's executions per harness) for
# ci/summary.py (suite "fuzz").
#
# Env: FUZZ_SECONDS per harness (default 20; ci/test.sh uses 10), FUZZ_JOBS harnesses run at
#      once (default: the CPU count), FUZZ_MODE=libfuzzer|driver
#      (force one), FUZZ_MAX_LEN (default 4096), FUZZ_CORPUS_OUT, FUZZ_ONLY="fuzz_frame ...",
#      FUZZ_REQUIRE_LIBFUZZER=1 (fail instead of falling back to the gcc driver; ci/test.sh
#      sets it when it runs as root, i.e. when it could install clang itself)
set -uo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${FUZZ_SECONDS:-20}
MAX_LEN=${FUZZ_MAX_LEN:-4096}
OUT=csrc/fuzz
SCRATCH=${TMPDIR:-/tmp}/fastp2p-fuzz      # scratch corpora, kept between runs
mkdir -p "$SCRATCH"
WORK="$(mktemp -d "$SCRATCH/run.XXXXXX")"  # this run's binaries and logs
start=$(date +%s)

ldflags_of() {
    sed -n 's|^[[:space:]]*//[[:space:]]*ci-ldflags:[[:space:]]*||p' "$@" 2>/dev/null | tr '\n' ' '
}
record() {  # passed failed rc detail
    if [[ -n "${FASTP2P_CI_OUT:-}" ]]; then
        "${PYTHON:-python3}" ci/summary.py record fuzz --passed "$1" --failed "$2" --rc "$3" \
            --seconds "$(( $(date +%s) - start ))" --detail "$4"
    fi
}

shopt -s nullglob
kernels=(csrc/fp_*.c)
harnesses=()
for f in "$OUT"/fuzz_*.c; do
    h="$(basename "${f%.c}")"
    if [[ -z "${FUZZ_ONLY:-}" || " $FUZZ_ONLY " == *" $h "* ]]; then
        harnesses+=("$h")
    fi
done
if [[ ${#harnesses[@]} -eq 0 ]]; then
    echo "fuzz_smoke: no csrc/fuzz/fuzz_*.c harnesses"
    echo "0 passed, 0 failed"
    record 0 0 1 "no harnesses"
    exit 1
fi

probe="$WORK/probe.c"
echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' > "$probe"
mode=${FUZZ_MODE:-}
if [[ -z "$mode" ]]; then
    if command -v clang >/dev/null 2>&1 && clang -fsanitize=fuzzer,address -o "$WORK/probe" "$probe" >/dev/null 2>&1; then
        mode=libfuzzer
    elif command -v gcc >/dev/null 2>&1 && echo 'int main(void){return 0;}' \
            | gcc -fsanitize=address,undefined -x c - -o "$WORK/probe" 2>/dev/null; then
        mode=driver
    else
        echo "fuzz_smoke: no clang with libFuzzer and no gcc with ASan/UBSan: every harness fails"
        echo "0 passed, ${#harnesses[@]} failed"
        record 0 "${#harnesses[@]}" 1 "no fuzzing compiler"
        exit 1
    fi
fi
if [[ "${FUZZ_REQUIRE_LIBFUZZER:-0}" == 1 && "$mode" != libfuzzer ]]; then
    echo "fuzz_smoke: FUZZ_REQUIRE_LIBFUZZER=1 but clang cannot build libFuzzer targets (mode=$mode): every harness fails"
    echo "0 passed, ${#harnesses[@]} failed"
    record 0 "${#harnesses[@]}" 1 "libFuzzer required, mode=$mode"
    exit 1
fi
if [[ "$mode" == libfuzzer ]]; then CC=clang; else CC=${FUZZ_CC:-gcc}; fi
echo "fuzz_smoke: mode=$mode compiler=$CC ${SECONDS_PER}s per harness: ${harnesses[*]}"

libs="-lcrypto -Wl,--as-needed $(ldflags_of "${kernels[@]}")"
passed=0
failed=0
notes=()
# the kernels once, instrumented like the harnesses, into an archive
if [[ "$mode" == libfuzzer ]]; then
    KFLAGS="-std=c11 -g -O1 -Icsrc -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
    HFLAGS="-std=c11 -g -O1 -Icsrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
else
    KFLAGS="-std=c11 -g -O1 -Icsrc -fsanitize=address,undefined -fno-sanitize-recover=undefined"
    HFLAGS="$KFLAGS"
fi
objs=()
kernel_errors=()
for k in "${kernels[@]}"; do
    o="$WORK/$(basename "${k%.c}").o"
    # shellcheck disable=SC2086
    if $CC $KFLAGS -c -o "$o" "$k"; then
        objs+=("$o")
    else
        kernel_errors+=("$(basename "$k")")
    fi
done
lib="$WORK/libfp.a"
[[ ${#objs[@]} -gt 0 ]] && ar rcs "$lib" "${objs[@]}"
if [[ ${#kernel_errors[@]} -gt 0 ]]; then
    echo "fuzz_smoke: kernels that do not compile: ${kernel_errors[*]}: every harness fails"
    echo "0 passed, ${#harnesses[@]} failed"
    record 0 "${#harnesses[@]}" 1 "mode=$mode; kernels do not compile: ${kernel_errors[*]}"
    exit 1
fi
# Build every harness, then run them JOBS at a time (one per CPU: each libFuzzer run is
# single-threaded, so on 2 cores two harnesses fuzz for the same wall time as one).
JOBS=${FUZZ_JOBS:-$(nproc 2>/dev/null || echo 1)}
built=()
for h in "${harnesses[@]}"; do
    src="$OUT/$h.c"
    bin="$WORK/$h.bin"
    if [[ "$mode" == libfuzzer ]]; then
        # shellcheck disable=SC2086
        $CC $HFLAGS -o "$bin" "$src" ${objs[@]:+"$lib"} $libs $(ldflags_of "$src") && built+=("$h")
    else
        # shellcheck disable=SC2086
        $CC $HFLAGS -o "$bin" "$src" "$OUT/driver.c" ${objs[@]:+"$lib"} $libs $(ldflags_of "$src") && built+=("$h")
    fi
done
run_one() {  # harness -> $WORK/<h>.log, and $WORK/<h>.ok when it passed
    local h=$1 bin="$WORK/$1.bin" log="$WORK/$1.log"
    if [[ "$mode" == libfuzzer ]]; then
        local corpus="${FUZZ_CORPUS_OUT:+$FUZZ_CORPUS_OUT/$h}"
        corpus="${corpus:-$SCRATCH/corpus-$h}"  # outside the tree unless asked
        mkdir -p "$corpus" "$WORK/artifacts-$h"
        local seeds=() dict=()
        [[ -d "$OUT/corpus/$h" ]] && seeds+=("$OUT/corpus/$h")
        [[ -f "$OUT/$h.dict" ]] && dict+=("-dict=$OUT/$h.dict")
        echo "${seeds[*]:-none}" > "$WORK/$h.seeds"
        "$bin" -max_total_time="$SECONDS_PER" -max_len="$MAX_LEN" -print_final_stats=1 \
            -artifact_prefix="$WORK/artifacts-$h/" "${dict[@]}" "$corpus" "${seeds[@]}" >"$log" 2>&1 \
            && touch "$WORK/$h.ok"
    else
        ASAN_OPTIONS=abort_on_error=1 "$bin" "$SECONDS_PER" >"$log" 2>&1 && touch "$WORK/$h.ok"
    fi
    return 0
}
running=0
for h in "${built[@]}"; do
    if (( running >= JOBS )); then wait -n || true; running=$((running - 1)); fi
    run_one "$h" &
    running=$((running + 1))
done
wait
for h in "${harnesses[@]}"; do
    log="$WORK/$h.log"
    if [[ -f "$log" ]]; then
        if [[ "$mode" == libfuzzer ]]; then
            execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$log" | tail -1)
            cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
            notes+=("$h: ${execs:-?} execs, ${cov:-cov: ?}, seeds: $(cat "$WORK/$h.seeds" 2>/dev/null || echo none)")
        else
            notes+=("$h: $(tail -1 "$log")")
        fi
    fi
    if [[ -f "$WORK/$h.ok" ]]; then
        passed=$((passed + 1))
        echo "fuzz_smoke: PASS ${notes[-1]}"
    else
        failed=$((failed + 1))
        echo "fuzz_smoke: FAIL $h (log: $log)"
        [[ -f "$log" ]] && tail -40 "$log"
        notes+=("$h: FAILED")
    fi
done

echo "$passed passed, $failed failed"
record "$passed" "$failed" "$(( failed > 0 ))" "mode=$mode; $(IFS=';'; echo "${notes[*]}")"
if [[ $failed -eq 0 ]]; then
    rm -rf "$WORK"
else
    echo "fuzz_smoke: logs, binaries and crash inputs kept in $WORK"
fi
[[ $failed -eq 0 ]]
