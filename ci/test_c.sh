#!/usr/bin/env bash
# C unit tests for csrc/ under AddressSanitizer + UndefinedBehaviorSanitizer.
set -euo pipefail
cd "$(dirname "$0")/.."

CC=${CC:-cc}
SAN=${SAN:--fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer}
CFLAGS="-std=c11 -g -O1 -Wall -Wextra -Werror -Icsrc $SAN"
OUT=csrc/tests

# shellcheck disable=SC2086
$CC $CFLAGS -o $OUT/test_frame.bin csrc/tests/test_frame.c csrc/fp_frame.c
# shellcheck disable=SC2086
$CC $CFLAGS -o $OUT/test_aead.bin csrc/tests/test_aead.c csrc/fp_aead.c csrc/fp_pool.c -lcrypto

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
"$OUT/test_frame.bin"
"$OUT/test_aead.bin"
echo "ci/test_c.sh: all C tests passed"
