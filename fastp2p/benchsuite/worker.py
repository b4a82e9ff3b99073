"""Worker entry point: ``python -m fastp2p.benchsuite.worker <backend> server|client``."""

from __future__ import annotations

import sys

from . import wire
from .backends import get_backend


def main() -> int:
    name, role = sys.argv[1], sys.argv[2]
    b = get_backend(name)
    return wire.run_worker(role, b.make_server, b.make_client)


if __name__ == "__main__":
    sys.exit(main())
