"""Baselines that live outside this environment: the py-libp2p venv.

py-libp2p and its 66 pinned dependencies go into a venv of their own (they would
clash with the project's: trio, a different ``cryptography``...). The bench's
py-libp2p workers run with that venv's interpreter. Where the interpreter is
looked for, first hit wins:

1. ``$FASTP2P_BENCH_PYLIBP2P_PYTHON``;
2. ``.venv-interop/bin/python`` in the current directory or the repository
   checkout this package runs from (made by ``ci/setup_interop.sh``);
3. the venv ``fastp2p bench --setup-baselines`` makes (default
   ``$XDG_CACHE_HOME/fastp2p/bench-pylibp2p``, i.e. ``~/.cache/...``).

``PYLIBP2P_PINS`` is a copy of ``tests/interop/requirements.txt`` (the wheel does
not ship ``tests/``); ``ci/bench_smoke.sh`` fails when the two differ.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import venv

_HERE = os.path.dirname(os.path.abspath(__file__))
_REPO = os.path.dirname(os.path.dirname(_HERE))

PYLIBP2P_VERSION = "0.8.1"
PYLIBP2P_PINS: tuple[str, ...] = (
    "aioquic==1.7.2",
    "anyio==4.16.0",
    "async-generator==1.10",
    "attrs==26.1.0",
    "base58==2.1.1",
    "blake3==1.0.11",
    "cbor2==6.2.1",
    "certifi==2026.10.18",
    "cffi==2.1.1",
    "charset-normalizer==3.5.2",
    "coincurve==21.0.0",
    "cryptography==50.0.2",
    "dnspython==2.9.2",
    "fastecdsa==2.3.2",
    "grpcio==1.85.1",
    "h11==0.16.0",
    "httpcore==1.0.9",
    "httpx==0.28.1",
    "idna==3.20",
    "ifaddr==0.2.0",
    "importlib_metadata==10.2.0",
    "lazy-importer==0.1.0",
    "libp2p==0.8.1",
    "lru-dict==1.4.1",
    "miniupnpc==2.3.3",
    "mmh3==5.3.1",
    "morphys==1.0",
    "multiaddr==0.2.0",
    "mypy-protobuf==5.1.0",
    "mypy_extensions==1.2.0",
    "netaddr==1.3.0",
    "noiseprotocol==0.3.1",
    "outcome==1.3.0.post0",
    "packaging==26.3",
    "prometheus_client==0.26.0",
    "protobuf==6.33.6",
    "psutil==7.2.2",
    "py-cid==0.5.0",
    "py-multibase==2.0.0",
    "py-multicodec==1.0.0",
    "py-multihash==3.0.0",
    "pycparser==3.12",
    "pycryptodome==4.4.0",
    "pylsqpack==1.0.0",
    "PyNaCl==1.6.2",
    "pyOpenSSL==26.4.0",
    "python-baseconv==1.2.2",
    "requests==2.34.2",
    "rpcudp==5.0.1",
    "service-identity==26.1.0",
    "six==1.17.0",
    "sniffio==1.3.1",
    "sortedcontainers==2.4.0",
    "trio==0.35.0",
    "trio-typing==0.10.0",
    "trio-websocket==0.12.2",
    "types-protobuf==7.35.1.20260906",
    "types-requests==2.33.0.20261030",
    "typing_extensions==4.16.0",
    "u-msgpack-python==2.8.0",
    "urllib3==2.8.0",
    "varint==1.0.2",
    "wsproto==1.3.2",
    "zeroconf==0.150.5",
    "zipp==4.1.2",
)


def default_venv() -> str:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(cache, "fastp2p", "bench-pylibp2p")


def pylibp2p_python() -> str:
    """The interpreter holding py-libp2p (may not exist: check ``os.path.exists``)."""
    env = os.environ.get("FASTP2P_BENCH_PYLIBP2P_PYTHON")
    if env:
        return env
    for base in (os.getcwd(), _REPO):
        p = os.path.join(base, ".venv-interop", "bin", "python")
        if os.path.exists(p):
            return p
    return os.path.join(default_venv(), "bin", "python")


def _probe(py: str) -> str | None:
    """py-libp2p's version in that interpreter, or None."""
    try:
        out = subprocess.run(
            [py, "-c", "import importlib.metadata as m, libp2p, trio; print(m.version('libp2p'))"],
            capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _have(mod: str) -> bool:
    try:
        __import__(mod)
    except ImportError:
        return False
    return True


def status_lines() -> list[str]:
    """One line per optional baseline: present, or the command that brings it."""
    extra = 'pip install "fastp2p[bench]"'
    lines = []
    for mod, what in (("uvloop", "uvloop rows"), ("zmq", "pyzmq rows"), ("numpy", "memcpy limit"),
                      ("matplotlib", "plots")):
        lines.append(f"  {what:14s} {'ok' if _have(mod) else 'missing: ' + extra}")
    lines.append(f"  {'iperf3 limit':14s} "
                 f"{'ok' if shutil.which('iperf3') else 'missing: apt-get install iperf3 (or your OS package)'}")
    py = pylibp2p_python()
    v = _probe(py) if os.path.exists(py) else None
    lines.append(f"  {'py-libp2p rows':14s} "
                 + (f"ok: py-libp2p {v} in {py}" if v else "missing: fastp2p bench --setup-baselines"))
    return lines


def _pip(cmd: list[str]) -> int:
    """Run pip, passing its output on except local-index noise ("Location ... is ignored")."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    for line in proc.stdout:
        if not (line.startswith("WARNING: Location ") and " is ignored" in line):
            sys.stdout.write(line)
    return proc.wait()


def setup_baselines(venv_dir: str | None = None, force: bool = False) -> int:
    """Create the py-libp2p venv (pinned) and report the other baselines."""
    target = venv_dir or default_venv()
    py = os.path.join(target, "bin", "python")
    have = _probe(py) if os.path.exists(py) and not force else None
    if have == PYLIBP2P_VERSION:
        print(f"py-libp2p {have} already installed in {target}")
    else:
        print(f"creating {target} (python {sys.version.split()[0]}) and installing py-libp2p "
              f"{PYLIBP2P_VERSION} with {len(PYLIBP2P_PINS)} pinned packages ...", flush=True)
        if not os.path.exists(py):
            venv.EnvBuilder(with_pip=True, clear=False).create(target)
        cmd = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check", *PYLIBP2P_PINS]
        rc = _pip(cmd)
        if rc or _probe(py) is None:
            print("py-libp2p install failed. fastecdsa (a dependency) builds from source: it needs a C "
                  "compiler, the Python headers and GMP (Debian/Ubuntu: apt-get install "
                  "build-essential python3-dev libgmp-dev)", file=sys.stderr)
            return 1
        print(f"py-libp2p {_probe(py)} installed in {target}")
    found = pylibp2p_python()
    if os.path.realpath(found) != os.path.realpath(py):
        print(f"note: the bench uses {found} first (FASTP2P_BENCH_PYLIBP2P_PYTHON or .venv-interop); "
              f"set FASTP2P_BENCH_PYLIBP2P_PYTHON={py} to use this one")
    print("baselines:")
    print("\n".join(status_lines()))
    return 0
