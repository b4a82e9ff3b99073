"""``python -m fastp2p.benchsuite.samehost.worker <backend> server|client <params-json>``."""

from __future__ import annotations

import json
import sys

from .backends import get_backend
from .proc import run_worker


def main() -> int:
    name, role = sys.argv[1], sys.argv[2]
    params = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    b = get_backend(name)
    return run_worker(role, lambda: b.make_server(params), lambda: b.make_client(params))


if __name__ == "__main__":
    sys.exit(main())
