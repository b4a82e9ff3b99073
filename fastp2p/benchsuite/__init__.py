"""End-to-end benchmark suite (``python -m bench.run`` / ``fastp2p bench``).

Lives inside the package so it also works from an installed wheel; ``bench/``
in the repository holds thin wrappers. See ``bench/README.md``.
"""

from __future__ import annotations


def main(argv: list[str] | None = None) -> int:
    from .cli import main as _main

    return _main(argv)


__all__ = ["main"]
