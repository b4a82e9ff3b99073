"""py-libp2p 0.8.1 (TCP + Noise + yamux|mplex, trio) in its own interpreter.

Workers run ``pylibp2p_worker.py`` with the interpreter of the py-libp2p venv
(see :mod:`fastp2p.benchsuite.baselines` for where it is looked for;
``fastp2p bench --setup-baselines`` makes one).

``pylibp2p-yamux`` / ``pylibp2p-mplex`` run with
``ConnectionConfig(max_connections_per_peer=1)`` on their hosts, which removes
the dialer's 250 ms happy-eyeballs wait for a second connection to the same
peer; every ratio to py-libp2p uses these. ``pylibp2p-yamux-default`` keeps the
library defaults and runs the ``connect`` scenario only, to show what a user
gets out of the box.
"""

from __future__ import annotations

import os
from typing import Any

from ..baselines import _probe, pylibp2p_python
from .base import Backend

_HERE = os.path.dirname(os.path.abspath(__file__))


def _venv_python() -> str:  # kept for callers of the old name
    return pylibp2p_python()


class PyLibp2p(Backend):
    loop = "trio"
    idle_conns_cap = 100  # every idle connection needs its own py-libp2p host (trio tasks)
    idle_streams_cap = 250  # py-libp2p 0.8.1 blocks (no error) opening a 257th concurrent stream

    def __init__(self, muxer: str, config: str = "tuned") -> None:
        self.muxer = muxer
        self.config = config
        if config == "tuned":
            self.name = f"pylibp2p-{muxer}"
            self.title = f"py-libp2p TCP + Noise + {muxer} (trio), max_connections_per_peer=1"
            self.config_note = ("hosts use ConnectionConfig(max_connections_per_peer=1): "
                                "no 250 ms happy-eyeballs wait per dial")
        else:
            self.name = f"pylibp2p-{muxer}-default"
            self.title = f"py-libp2p TCP + Noise + {muxer} (trio), library defaults (connect only)"
            self.config_note = ("library defaults (max_connections_per_peer=3): every dial waits "
                                "250 ms for a second connection; connect scenario only")
        self._version: str | None = None

    def python(self) -> str:
        return pylibp2p_python()

    def available(self) -> str | None:
        py = self.python()
        if not os.path.exists(py):
            return "py-libp2p venv not found: fastp2p bench --setup-baselines"
        v = _probe(py)
        if v is None:
            return f"py-libp2p not importable in {py}: fastp2p bench --setup-baselines"
        self._version = v
        return None

    def supports(self, scenario: str) -> str | None:
        if self.config != "tuned" and scenario != "connect":
            return "library-default variant: connect only"
        return None

    def versions(self) -> dict[str, str]:
        return {"py-libp2p": self._version or "?"}

    def worker_cmd(self, role: str) -> list[str]:
        return [self.python(), os.path.join(_HERE, "pylibp2p_worker.py"), self.muxer, role,
                self.config]

    def worker_env(self) -> dict[str, Any]:
        return {"PYTHONUNBUFFERED": "1"}
