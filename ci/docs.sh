#!/usr/bin/env bash
# Build the documentation (docs/, Sphinx + autodoc + napoleon) with warnings as
# errors, then run every example in it (the doctest builder: the pages'
# doctest/testcode blocks and the >>> examples of the docstrings autodoc pulls
# in). Output in build/docs/{html,doctest}. Needs ".[docs]" installed.
#
# Env: PYTHON (python3), DOCS_OUT (build/docs)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
OUT=${DOCS_OUT:-build/docs}

if ! "$PY" -c 'import sphinx, prometheus_client' 2>/dev/null; then
    "$PY" -m pip install -q --disable-pip-version-check "sphinx>=7" "prometheus-client>=0.17"
fi
if ! "$PY" -c 'import fastp2p' 2>/dev/null; then
    # the extensions are not built in place: document (and run the examples) on the pure twins
    echo "== docs: native core not importable here; using FASTP2P_NO_EXTENSIONS=1"
    export FASTP2P_NO_EXTENSIONS=1
fi
rm -rf "$OUT"
echo "== docs: html (sphinx-build -W)"
"$PY" -m sphinx -W --keep-going -q -b html docs "$OUT/html"
echo "== docs: doctest (the examples in the pages and docstrings)"
"$PY" -m sphinx -W --keep-going -q -b doctest docs "$OUT/doctest"
tail -n 5 "$OUT/doctest/output.txt"
echo "== docs: built in $OUT/html"
