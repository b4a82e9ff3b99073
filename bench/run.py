"""Suite entry point: ``python -m bench.run [--quick] [--scenarios ...] [--backends ...] [--out DIR]``.

Thin wrapper: the harness lives in ``fastp2p.benchsuite`` so ``fastp2p bench``
works from an installed wheel too.
"""

from __future__ import annotations

import os
import sys

if __package__ in (None, ""):  # ``python bench/run.py``
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main(argv: list[str] | None = None) -> int:
    from fastp2p.benchsuite.cli import main as _main

    return _main(argv)


if __name__ == "__main__":
    sys.exit(main())
