"""Same-host benchmark suite: fastp2p's shared-memory data path side by side
with what a user would pick instead on one machine.

``python -m fastp2p.benchsuite.samehost [--quick] [--json PATH]``

Backends (each side in its own spawned process, interleaved per round):
single-core memcpy, UCX ``ucx_perftest`` with ``UCX_TLS=sm,self``, iceoryx2
(Python binding, loaned samples), pyzmq ``ipc://`` PAIR, fastp2p over TCP
loopback and fastp2p over its shared-memory data path. See ``bench/samehost.md``.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)


__all__ = ["main"]
