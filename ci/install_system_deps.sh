#!/usr/bin/env bash
# System packages the whole CI job needs, installed only when missing (dpkg -s),
# with one `apt-get update` at most. Debian/Ubuntu, as root. Idempotent and fast
# when everything is already there (no apt call at all).
#
#   build-essential          C compiler for the extensions, the C tests, the gcc fuzz driver
#   python3-dev              only when the python in use has no Python.h
#   python3-venv python3-pip only when the python in use has no ensurepip (Debian's python3)
#   libssl-dev               OpenSSL headers (ChaCha20-Poly1305 kernels)
#   libgmp-dev               fastecdsa, a py-libp2p dependency (interop peer), builds against it
#   clang + libclang-rt-N-dev  libFuzzer for ci/fuzz_smoke.sh (the runtime is only a
#                            Recommends of clang, so it is named explicitly)
#   iperf3                   the bench's loopback ceiling
#   libibverbs-dev rdma-core the verbs headers for a future RDMA build (harmless without a NIC)
#   nodejs npm               only when no node/npm is on PATH; ci/setup_node.sh then makes
#                            sure node is >= 20 (Debian 12 ships 18)
#
# Env: PYTHON (the interpreter CI uses), CI_APT_EXTRA="pkg ..." (more packages),
#      CI_SKIP_APT=1 (never call apt: report what is missing and go on).
set -euo pipefail

PY="${PYTHON:-python3}"
say() { printf '[system-deps] %s\n' "$*"; }
have_pkg() { dpkg -s "$1" >/dev/null 2>&1; }

if ! command -v dpkg >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    say "no dpkg/apt-get here: install by hand a C compiler, Python and OpenSSL headers, clang, iperf3, Node.js >= 20 and npm"
    exit 0
fi

want=(build-essential libssl-dev libgmp-dev clang iperf3 libibverbs-dev rdma-core pkg-config ca-certificates)
# shellcheck disable=SC2206
want+=(${CI_APT_EXTRA:-})

# Python headers for the python actually in use (pyenv or a venv may have its own);
# no python at all (a bare machine): python3-dev and python3-venv bring Debian's
if ! "$PY" - 2>/dev/null <<'EOF'
import os, sys, sysconfig
sys.exit(0 if os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")) else 1)
EOF
then
    want+=(python3-dev)
fi
# Debian's python3 has no venv/pip until python3-venv (ci/test.sh makes .venv-ci
# when the python in use is Debian's externally managed one)
if ! "$PY" -c 'import ensurepip' >/dev/null 2>&1; then
    want+=(python3-venv python3-pip)
fi

# Node.js: anything on PATH is kept (ci/setup_node.sh checks its version and, if
# it is older than 20, brings node 20 from the npm registry); with no node at
# all, Debian's nodejs + npm are the bootstrap for that.
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    want+=(nodejs npm)
fi

missing=()
for p in "${want[@]}"; do
    have_pkg "$p" || missing+=("$p")
done

# libFuzzer's runtime: libclang-rt-<major>-dev (a Recommends of clang only)
clang_major() {
    if command -v clang >/dev/null 2>&1; then
        clang --version | sed -n 's/.*clang version \([0-9]*\).*/\1/p' | head -1
    else
        apt-cache depends clang 2>/dev/null | sed -n 's/.*Depends: clang-\([0-9][0-9]*\)$/\1/p' | head -1
    fi
}

apt_install() {
    export DEBIAN_FRONTEND=noninteractive
    if [[ -z "${_APT_UPDATED:-}" ]]; then
        say "apt-get update"
        apt-get -o DPkg::Lock::Timeout=300 update -qq >/dev/null
        _APT_UPDATED=1
    fi
    say "apt-get install $*"
    apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@" >/dev/null
}

if [[ ${#missing[@]} -eq 0 ]]; then
    say "all present: ${want[*]}"
else
    if [[ "${CI_SKIP_APT:-0}" == 1 || $(id -u) -ne 0 ]]; then
        say "WARNING: missing packages (not root or CI_SKIP_APT=1, not installing): ${missing[*]}"
    else
        apt_install "${missing[@]}"
    fi
fi

# libFuzzer runtime, checked by linking a probe (the package name depends on clang's version)
if command -v clang >/dev/null 2>&1; then
    probe_dir="$(mktemp -d)"
    trap 'rm -rf "$probe_dir"' EXIT
    echo 'int LLVMFuzzerTestOneInput(const unsigned char *d, unsigned long n) { (void)d; (void)n; return 0; }' \
        > "$probe_dir/p.c"
    if ! clang -fsanitize=fuzzer,address -o "$probe_dir/p" "$probe_dir/p.c" >/dev/null 2>&1; then
        v="$(clang_major)"
        if [[ -n "$v" && $(id -u) -eq 0 && "${CI_SKIP_APT:-0}" != 1 ]] && apt-cache show "libclang-rt-$v-dev" >/dev/null 2>&1; then
            apt_install "libclang-rt-$v-dev"
        fi
        if ! clang -fsanitize=fuzzer,address -o "$probe_dir/p" "$probe_dir/p.c" >/dev/null 2>&1; then
            say "WARNING: clang cannot link -fsanitize=fuzzer (libclang-rt-$v-dev missing?): fuzz smoke falls back to the gcc driver"
        fi
    fi
fi

say "compiler: $(cc --version | head -1); clang: $(command -v clang >/dev/null && clang --version | head -1 || echo none)"
say "openssl headers: $( [[ -f /usr/include/openssl/evp.h ]] && echo yes || echo MISSING ); iperf3: $(command -v iperf3 || echo none)"
