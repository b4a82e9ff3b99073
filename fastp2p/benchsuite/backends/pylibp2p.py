"""py-libp2p 0.8.1 (TCP + Noise + yamux|mplex, trio) in its own interpreter.

The interop venv (``.venv-interop``, made by ``ci/setup_interop.sh``) holds
py-libp2p; workers run ``pylibp2p_worker.py`` with that venv's python. Set
``FASTP2P_BENCH_PYLIBP2P_PYTHON`` to point at another interpreter.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any

from .base import Backend

_HERE = os.path.dirname(os.path.abspath(__file__))


def _venv_python() -> str:
    env = os.environ.get("FASTP2P_BENCH_PYLIBP2P_PYTHON")
    if env:
        return env
    root = os.path.dirname(os.path.dirname(os.path.dirname(_HERE)))
    for base in (os.getcwd(), root):
        p = os.path.join(base, ".venv-interop", "bin", "python")
        if os.path.exists(p):
            return p
    return os.path.join(os.getcwd(), ".venv-interop", "bin", "python")


class PyLibp2p(Backend):
    loop = "trio"
    idle_conns_cap = 100  # ~250 ms per py-libp2p dial here: 1000 would take minutes
    idle_streams_cap = 250  # py-libp2p 0.8.1 blocks (no error) opening a 257th concurrent stream

    def __init__(self, muxer: str) -> None:
        self.muxer = muxer
        self.name = f"pylibp2p-{muxer}"
        self.title = f"py-libp2p TCP + Noise + {muxer} (trio)"
        self._version: str | None = None

    def python(self) -> str:
        return _venv_python()

    def available(self) -> str | None:
        py = self.python()
        if not os.path.exists(py):
            return f"py-libp2p venv missing ({py}); run ci/setup_interop.sh"
        try:
            out = subprocess.run(
                [py, "-c", "import importlib.metadata as m, libp2p, trio; print(m.version('libp2p'))"],
                capture_output=True, text=True, timeout=60,
            )
        except Exception as e:  # noqa: BLE001
            return f"py-libp2p venv unusable: {e}"
        if out.returncode:
            return f"py-libp2p not importable in {py}: {out.stderr.strip().splitlines()[-1:]}"
        self._version = out.stdout.strip()
        return None

    def versions(self) -> dict[str, str]:
        return {"py-libp2p": self._version or "?"}

    def worker_cmd(self, role: str) -> list[str]:
        return [self.python(), os.path.join(_HERE, "pylibp2p_worker.py"), self.muxer, role]

    def worker_env(self) -> dict[str, Any]:
        return {"PYTHONUNBUFFERED": "1"}
