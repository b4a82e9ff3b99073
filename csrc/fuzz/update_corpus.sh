#!/usr/bin/env bash
# Grow and minimise the committed seed corpora csrc/fuzz/corpus/<harness>/ (clang + libFuzzer):
#   hand-built seeds (make_seeds.py) + the committed corpus
#   -> FUZZ_SECONDS (default 60) of libFuzzer per harness, with csrc/fuzz/<harness>.dict
#   -> -merge=1 (keeps only inputs that add coverage) into a fresh folder
#   -> replaces csrc/fuzz/corpus/<harness>/ (review and commit the result)
# Env: FUZZ_SECONDS, FUZZ_ONLY="fuzz_frame ...", FUZZ_MAX_LEN (default 4096)
set -euo pipefail
cd "$(dirname "$0")/../.."
SECS=${FUZZ_SECONDS:-60}
MAX_LEN=${FUZZ_MAX_LEN:-4096}
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
"${PYTHON:-python3}" csrc/fuzz/make_seeds.py "$W/seeds" >/dev/null
KF="-std=c11 -g -O1 -Icsrc -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined"
HF="-std=c11 -g -O1 -Icsrc -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
objs=()
for k in csrc/fp_*.c; do
    # shellcheck disable=SC2086
    clang $KF -c -o "$W/$(basename "${k%.c}").o" "$k" && objs+=("$W/$(basename "${k%.c}").o")
done
ar rcs "$W/libfp.a" "${objs[@]}"
kl=$(sed -n 's|^[[:space:]]*//[[:space:]]*ci-ldflags:[[:space:]]*||p' csrc/fp_*.c | tr '\n' ' ')
for src in csrc/fuzz/fuzz_*.c; do
    h=$(basename "${src%.c}")
    [[ -n "${FUZZ_ONLY:-}" && " $FUZZ_ONLY " != *" $h "* ]] && continue
    # shellcheck disable=SC2086
    clang $HF -o "$W/$h" "$src" "$W/libfp.a" -lcrypto -Wl,--as-needed $kl
    committed=csrc/fuzz/corpus/$h
    mkdir -p "$committed" "$W/grown-$h" "$W/new-$h" "$W/seeds/$h"
    dict=()
    [[ -f csrc/fuzz/$h.dict ]] && dict=("-dict=csrc/fuzz/$h.dict")
    "$W/$h" -max_total_time="$SECS" -max_len="$MAX_LEN" -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="$W/" "$W/grown-$h" "$W/seeds/$h" "$committed" >"$W/$h.log" 2>&1 \
        || { tail -30 "$W/$h.log"; echo "$h: CRASH (see above)"; exit 1; }
    execs=$(sed -n 's/^stat::number_of_executed_units:[[:space:]]*//p' "$W/$h.log" | tail -1)
    "$W/$h" -merge=1 -max_len="$MAX_LEN" "$W/new-$h" "$committed" "$W/seeds/$h" "$W/grown-$h" \
        >"$W/$h.merge.log" 2>&1
    rm -rf "$committed"
    mv "$W/new-$h" "$committed"
    echo "$h: ${execs:-?} execs in ${SECS}s; corpus $(find "$committed" -type f | wc -l) files, $(du -sk "$committed" | cut -f1) KiB"
done
