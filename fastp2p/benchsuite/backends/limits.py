"""Upper limits: iperf3 on loopback and single-core memcpy (numpy).

Both answer only the bulk scenarios, through the same :class:`Session` calls.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
from typing import Any

from .. import wire
from ..workerproc import BenchError
from .base import Backend, Session


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class _Iperf3Session(Session):
    def __init__(self, exe: str) -> None:
        self.exe = exe
        self.port = _free_port()
        self.proc = subprocess.Popen([exe, "-s", "-p", str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # wait for the listener
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                time.sleep(0.1)  # iperf3 -s treats that probe as a failed test; let it reset
                break
            except OSError:
                time.sleep(0.05)

    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        if op != "bulk":
            raise BenchError("iperf3 answers bulk only")
        total, msg, streams = args["total"], args["msg_size"], args["streams"]
        cmd = [self.exe, "-c", "127.0.0.1", "-p", str(self.port), "-n", str(total),
               "-l", str(msg), "-P", str(streams), "-J"]
        for attempt in range(3):
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
            try:
                js = json.loads(p.stdout)
            except ValueError:
                js = {"error": p.stderr or p.stdout}
            if "error" not in js:
                break
            time.sleep(0.2 * (attempt + 1))
        else:
            raise BenchError(f"iperf3: {js.get('error')}")
        end = js["end"]
        rcv = end["sum_received"]
        secs = float(rcv["seconds"]) or 1e-9
        cpu = end.get("cpu_utilization_percent", {})
        return {"result": {"seconds": secs, "bytes": int(rcv["bytes"]),
                           "server_cpu": cpu.get("remote_total", 0.0) * secs / 100},
                "cpu": cpu.get("host_total", 0.0) * secs / 100, "rss0": 0, "rss1": 0}

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        return {"cpu": 0.0, "rss": 0, "idle": 0}

    def close(self) -> None:
        self.proc.kill()
        self.proc.wait()


class Iperf3(Backend):
    name = "iperf3"
    title = "iperf3 TCP on loopback (limit)"
    kind = "limit"
    loop = "C"

    def available(self) -> str | None:
        return None if shutil.which("iperf3") else "iperf3 not installed: apt-get install iperf3"

    def supports(self, scenario: str) -> str | None:
        return None if scenario in ("bulk1", "bulk8") else "limit: bulk only"

    def versions(self) -> dict[str, str]:
        try:
            out = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout
            return {"iperf3": out.split()[1]}
        except Exception:  # noqa: BLE001
            return {}

    def open_session(self, start_timeout: float = 60.0) -> Session:
        return _Iperf3Session(shutil.which("iperf3") or "iperf3")


class _MemcpySession(Session):
    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        import numpy as np

        total, msg = args["total"], args["msg_size"]
        src = np.ones(msg, dtype=np.uint8)
        dst = np.empty(msg, dtype=np.uint8)  # the preallocated "receive buffer"
        n = max(1, total // msg)
        np.copyto(dst, src)
        c0 = wire.cpu_seconds()
        t0 = time.perf_counter()
        for _ in range(n):
            np.copyto(dst, src)
        dt = time.perf_counter() - t0
        return {"result": {"seconds": dt, "bytes": n * msg, "server_cpu": 0.0},
                "cpu": wire.cpu_seconds() - c0, "rss0": 0, "rss1": 0}

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        return {"cpu": 0.0, "rss": 0, "idle": 0}


class Memcpy(Backend):
    name = "memcpy"
    title = "single-core memcpy, numpy copyto into a preallocated buffer (limit)"
    kind = "limit"
    loop = "C"

    def available(self) -> str | None:
        try:
            import numpy  # noqa: F401
        except ImportError:
            return 'numpy not installed: pip install "fastp2p[bench]"'
        return None

    def supports(self, scenario: str) -> str | None:
        return None if scenario == "bulk1" else "limit: single-stream bulk only"

    def versions(self) -> dict[str, str]:
        import numpy

        return {"numpy": numpy.__version__}

    def open_session(self, start_timeout: float = 60.0) -> Session:
        return _MemcpySession()
