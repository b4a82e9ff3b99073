#!/usr/bin/env bash
# The whole test job: install fastp2p (native build) with its test dependencies,
# set up the independent reference peers (py-libp2p, js-libp2p), then run the
# suite twice (native kernels, then FASTP2P_NO_EXTENSIONS=1 pure twins), the C
# unit tests under sanitizers, a fuzz smoke and the bench smoke.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== install fastp2p[test] (native build) and the bench baselines"
"$PY" -m pip install -q --disable-pip-version-check -e ".[test]" -r bench/requirements.txt
if ! command -v iperf3 >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  # the bench's loopback ceiling; the bench notes its absence otherwise
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iperf3) >/dev/null 2>&1 \
    || echo "iperf3 could not be installed; the bench will note it"
fi

echo "== reference peers for interop tests"
bash ci/setup_interop.sh

echo "== pytest (native kernels)"
"$PY" -m pytest -q -p no:cacheprovider tests

echo "== pytest (pure-Python twins, FASTP2P_NO_EXTENSIONS=1)"
FASTP2P_NO_EXTENSIONS=1 "$PY" -m pytest -q -p no:cacheprovider tests

if [ -f ci/test_c.sh ]; then
  echo "== C unit tests (ASan/UBSan)"
  bash ci/test_c.sh
fi
if [ -f ci/fuzz_smoke.sh ]; then
  echo "== fuzz smoke"
  FUZZ_SECONDS=${FUZZ_SECONDS:-10} bash ci/fuzz_smoke.sh
fi
if [ -f ci/bench_smoke.sh ]; then
  echo "== bench smoke (numbers not gated)"
  bash ci/bench_smoke.sh
fi
echo "== all green"
