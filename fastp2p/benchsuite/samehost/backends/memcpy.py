"""Single-core memcpy (numpy ``copyto``) into a preallocated, pre-faulted buffer.

The upper limit of any one-copy path on this machine. Runs in its own spawned
process (no server side).

* bulk: the 1 GiB (``--quick``: smaller) destination filled in 64 KiB / 1 MiB
  chunks from a 64 MiB source, like the transports; plus one single 1 GiB copy.
* putget: one 64 MiB ``copyto`` between two preallocated arrays (the reference
  for ``conn.put`` / ``conn.get``; the same number shows under put and get).
"""

from __future__ import annotations

import time
from typing import Any

from ..proc import SRC_BYTES, dest_array, pin_cpu, source_array
from . import Backend, default_cases, fmt_size


class Memcpy(Backend):
    name = "memcpy"
    title = "single-core memcpy (numpy copyto)"
    how = "numpy.copyto into a preallocated, pre-faulted array, one core, own process"
    install = "pip install numpy"
    uses_server = False

    def available(self) -> str | None:
        try:
            import numpy  # noqa: F401
        except ImportError:
            return f"missing: {self.install}"
        return None

    def supports(self, scenario: str) -> bool:
        return scenario in ("bulk", "putget")

    def versions(self) -> dict[str, str]:
        import numpy

        return {"numpy": numpy.__version__}

    def cases(self, scenario: str, P: Any) -> list[tuple[str, Any]]:
        c = default_cases(scenario, P)
        if scenario == "bulk":
            c.append((f"{fmt_size(P.bulk_total)} x1", P.bulk_total))
        return c

    def measure(self, sess: Any, scenario: str, arg: Any, P: Any) -> dict[str, Any]:
        if scenario == "bulk":
            r = sess.call("bulk", P.op_timeout, total=P.bulk_total, msg_size=arg)
            return {"GB/s": r["bytes"] / r["seconds"] / 1e9}
        r = sess.call("copy", P.op_timeout, size=arg, reps=P.putget_reps)
        g = r["gbps"]
        return {"put GB/s": g, "get GB/s": g}

    def make_client(self, params: dict[str, Any]) -> Any:
        return _Client(params)


class _Client:
    def __init__(self, params: dict[str, Any]) -> None:
        pin_cpu(1)
        self.total = int(params["bulk_total"])
        self.dst = dest_array(self.total)
        self.src = source_array(min(SRC_BYTES, self.total))

    def bulk(self, total: int, msg_size: int) -> dict[str, Any]:
        import numpy as np

        dst, src = self.dst[:total], self.src
        if msg_size >= total:  # one copy of the whole buffer
            big = source_array(total) if len(src) < total else src[:total]
            t0 = time.perf_counter()
            np.copyto(dst, big)
            return {"seconds": time.perf_counter() - t0, "bytes": total}
        ns = len(src)
        t0 = time.perf_counter()
        for off in range(0, total, msg_size):
            s = off % ns
            np.copyto(dst[off:off + msg_size], src[s:s + msg_size])
        return {"seconds": time.perf_counter() - t0, "bytes": total}

    def copy(self, size: int, reps: int) -> dict[str, Any]:
        import statistics

        import numpy as np

        a = dest_array(size)
        a[:] = 1
        b = dest_array(size)
        np.copyto(b, a)
        ts = []
        for _ in range(reps):
            t0 = time.perf_counter()
            np.copyto(b, a)
            ts.append(time.perf_counter() - t0)
        return {"gbps": size / statistics.median(ts) / 1e9}
