#!/usr/bin/env bash
# Short fuzz smoke of every C decoder (csrc/fuzz/*.c).
#   clang present  -> libFuzzer with -fsanitize=fuzzer,address,undefined
#   gcc only       -> csrc/fuzz/driver.c random-input driver under ASan/UBSan
#   neither        -> skip with a message (exit 0)
# FUZZ_SECONDS (default 20) per harness. In CI, install clang first, e.g.
#   sudo apt-get install -y clang
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER=${FUZZ_SECONDS:-20}
HARNESSES=(fuzz_frame fuzz_varint)
SRCS="csrc/fp_frame.c csrc/fp_aead.c"
OUT=csrc/fuzz

if command -v clang >/dev/null 2>&1; then
    mode=libfuzzer
    CC=clang
elif command -v gcc >/dev/null 2>&1 && echo 'int main(void){return 0;}' \
        | gcc -fsanitize=address,undefined -x c - -o /tmp/fp_san_probe.$$ 2>/dev/null; then
    rm -f /tmp/fp_san_probe.$$
    mode=driver
    CC=gcc
else
    echo "fuzz_smoke: SKIPPED: no clang (libFuzzer) and no gcc with ASan/UBSan support"
    exit 0
fi
echo "fuzz_smoke: mode=$mode compiler=$CC ${SECONDS_PER}s per harness"

for h in "${HARNESSES[@]}"; do
    bin=$OUT/$h.bin
    if [ "$mode" = libfuzzer ]; then
        # shellcheck disable=SC2086
        $CC -std=c11 -g -O1 -Icsrc -fsanitize=fuzzer,address,undefined \
            -o "$bin" "$OUT/$h.c" $SRCS -lcrypto
        corpus=${TMPDIR:-/tmp}/fastp2p_corpus_$h  # outside the tree
        mkdir -p "$corpus"
        "$bin" -max_total_time="$SECONDS_PER" -max_len=4096 "$corpus"
    else
        # shellcheck disable=SC2086
        $CC -std=c11 -g -O1 -Icsrc -fsanitize=address,undefined -fno-sanitize-recover=undefined \
            -o "$bin" "$OUT/$h.c" "$OUT/driver.c" $SRCS -lcrypto
        ASAN_OPTIONS=abort_on_error=1 "$bin" "$SECONDS_PER"
    fi
done
echo "fuzz_smoke: all harnesses ran clean"
