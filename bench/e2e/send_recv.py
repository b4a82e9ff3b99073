"""``python -m bench.e2e.send_recv`` == ``python -m bench.run`` (DESIGN.md 5.10 name)."""

from __future__ import annotations

import sys

from fastp2p.benchsuite.cli import main

if __name__ == "__main__":
    sys.exit(main())
