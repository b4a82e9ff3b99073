#!/usr/bin/env bash
# Install the reference libp2p peers used by tests/interop:
#   - py-libp2p 0.8.1 into its own venv, .venv-interop (pins in tests/interop/requirements.txt)
#   - js-libp2p 3.x into tests/interop/js/node_modules (npm ci from the committed lockfile)
# Idempotent: each part is skipped when what is installed already matches its pins.
#
# Env:
#   PYTHON=python3            interpreter the venv is made from (the project's python3)
#   INTEROP_VENV=.venv-interop
#   INTEROP_SKIP_PY=1 / INTEROP_SKIP_JS=1   skip a part (its tests then skip with a reason)
#   INTEROP_FORCE=1           reinstall even when up to date
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python3}"
VENV="${INTEROP_VENV:-$ROOT/.venv-interop}"
REQS="$ROOT/tests/interop/requirements.txt"
JS_DIR="$ROOT/tests/interop/js"
STAMP_PY="$VENV/.interop-requirements.sha256"
STAMP_JS="$JS_DIR/node_modules/.interop-lock.sha256"

say() { printf '[setup_interop] %s\n' "$*"; }
sha() { sha256sum "$1" | cut -d' ' -f1; }
start=$(date +%s)

# ----------------------------------------------------------------------------- py-libp2p
if [[ "${INTEROP_SKIP_PY:-0}" != 1 ]]; then
    # fastecdsa (a py-libp2p dependency) ships no manylinux wheel: it builds against GMP.
    if ! dpkg -s libgmp-dev >/dev/null 2>&1 || ! command -v cc >/dev/null 2>&1; then
        if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            say "installing system packages: libgmp-dev build-essential"
            apt-get update -qq >/dev/null
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                libgmp-dev build-essential >/dev/null
        else
            say "WARNING: libgmp-dev or a C compiler is missing and apt-get is unavailable; fastecdsa may fail to build"
        fi
    fi

    want="$(sha "$REQS")"
    if [[ "${INTEROP_FORCE:-0}" != 1 && -x "$VENV/bin/python" && -f "$STAMP_PY" && "$(cat "$STAMP_PY")" == "$want" ]]; then
        say "py-libp2p venv up to date: $VENV"
    else
        if [[ ! -x "$VENV/bin/python" ]]; then
            say "creating venv $VENV with $("$PYTHON" -c 'import sys; print(sys.executable, sys.version.split()[0])')"
            "$PYTHON" -m venv "$VENV"
        fi
        say "installing py-libp2p and its pinned dependencies ($(grep -c '==' "$REQS") packages) into $VENV"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS" 2>&1 \
            | { grep -v "^WARNING: Location .* is ignored" || true; }
        "$VENV/bin/python" -c 'import libp2p, sys; print("[setup_interop] py-libp2p", libp2p.__version__, "on python", sys.version.split()[0])'
        echo "$want" > "$STAMP_PY"
    fi
fi

# ----------------------------------------------------------------------------- js-libp2p
if [[ "${INTEROP_SKIP_JS:-0}" != 1 ]]; then
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        say "ERROR: node/npm not found (js-libp2p 3.x needs Node >= 20); set INTEROP_SKIP_JS=1 to skip"
        exit 1
    fi
    node_major="$(node -p 'process.versions.node.split(".")[0]')"
    if (( node_major < 20 )); then
        say "ERROR: node $(node --version) is too old for js-libp2p 3.x (need >= 20)"
        exit 1
    fi
    want="$(sha "$JS_DIR/package-lock.json")"
    if [[ "${INTEROP_FORCE:-0}" != 1 && -f "$STAMP_JS" && "$(cat "$STAMP_JS")" == "$want" ]]; then
        say "js-libp2p node_modules up to date: $JS_DIR/node_modules"
    else
        say "npm ci in $JS_DIR (node $(node --version))"
        (cd "$JS_DIR" && npm ci --no-audit --no-fund --loglevel=error 2>&1 \
            | { grep -v 'Unknown user config' || true; })
        say "js-libp2p $(node -p "require('$JS_DIR/node_modules/libp2p/package.json').version")"
        echo "$want" > "$STAMP_JS"
    fi
fi

say "done in $(( $(date +%s) - start ))s"
