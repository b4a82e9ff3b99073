#!/usr/bin/env bash
# Benchmark smoke test: runs the end-to-end suite in --quick mode (< 60 s).
# Numbers are NOT gated; this checks that every backend and scenario still runs
# and that the table, JSON and plots are produced.
#
# Fails when a backend errors (unless BENCH_SMOKE_ALLOW_ERRORS=1), when a backend
# is missing (unless BENCH_SMOKE_ALLOW_MISSING=1: ci/test.sh sets it when interop
# is opted out, since the py-libp2p venv is then not made), or when the py-libp2p
# pins embedded in fastp2p/benchsuite/baselines.py (for `fastp2p bench
# --setup-baselines` from a wheel) differ from tests/interop/requirements.txt.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python}"
OUT="${BENCH_OUT:-bench/results/smoke-$(date +%Y%m%d-%H%M%S)}"

"$PY" - <<'PYEOF'
import sys
from fastp2p.benchsuite.baselines import PYLIBP2P_PINS
want = [l.strip() for l in open("tests/interop/requirements.txt")
        if l.strip() and not l.lstrip().startswith("#")]
if list(PYLIBP2P_PINS) != want:
    print("bench smoke: PYLIBP2P_PINS in fastp2p/benchsuite/baselines.py differ from "
          "tests/interop/requirements.txt: copy the pins over", file=sys.stderr)
    sys.exit(1)
PYEOF

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
missing = res.get("missing", {})
for b, why in missing.items():
    print(f"bench missing: {b}: {why}", file=sys.stderr)
print(f"bench smoke: {len(rows)} figures, {len(errors)} errors, {len(missing)} missing backends, "
      f"{res['elapsed_s']:.0f}s, results in {out}")
bad = (errors and not os.environ.get("BENCH_SMOKE_ALLOW_ERRORS")) or \
      (missing and not os.environ.get("BENCH_SMOKE_ALLOW_MISSING"))
sys.exit(1 if bad else 0)
PYEOF
