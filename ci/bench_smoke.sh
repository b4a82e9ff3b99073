#!/usr/bin/env bash
# Benchmark smoke test: runs the end-to-end suite in --quick mode (< 60 s).
# Numbers are NOT gated; this checks that every backend and scenario still runs
# and that the table, JSON and plots are produced. Unavailable optional backends
# (py-libp2p venv, iperf3, fastp2p before Host exists) are skipped with a note.
# A backend that errors fails the script unless BENCH_SMOKE_ALLOW_ERRORS=1.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${BENCH_OUT:-bench/results/smoke-$(date +%Y%m%d-%H%M%S)}"
"$PY" -m bench.run --quick --no-progress --out "$OUT" "$@"
"$PY" - "$OUT" <<'PYEOF'
import json, os, sys
out = sys.argv[1]
res = json.load(open(os.path.join(out, "results.json")))
rows = res["summary"]
assert rows, "no results at all"
base = res["baseline"]
assert any(r["backend"] == base for r in rows), f"baseline {base} produced no numbers"
errors = [f"{b}: {n}" for b, ns in res["notes"].items() for n in ns if ": error:" in n]
for e in errors:
    print("bench error:", e, file=sys.stderr)
print(f"bench smoke: {len(rows)} figures, {len(errors)} errors, "
      f"{res['elapsed_s']:.0f}s, results in {out}")
sys.exit(1 if errors and not os.environ.get("BENCH_SMOKE_ALLOW_ERRORS") else 0)
PYEOF
