"""UCX ``ucx_perftest`` over shared memory, run the way UCX users run it.

The binary ships in the ``libucx-cu12`` wheel (``site-packages/libucx/bin``)
with its libraries in ``libucx/lib`` (set as ``LD_LIBRARY_PATH``); a system
``ucx_perftest`` on ``PATH`` is used when the wheel is absent. Per measurement:

    UCX_TLS=sm,self taskset -c 0 ucx_perftest -p PORT                       # server
    UCX_TLS=sm,self taskset -c 1 ucx_perftest 127.0.0.1 -p PORT -t tag_bw -s 1048576 -n N -w W

``sm`` selects UCX's shared-memory transports (posix/sysv mm rings, CMA for
rendezvous). ``tag_bw`` prints MB/s with MB = 2^20 bytes (converted to GB/s =
10^9 B/s here). ``tag_lat`` prints one-way latency (half the ping-pong round
trip); it is doubled here to compare with the other backends' round trips, and
run twice (``-R 50`` and ``-R 99``) for the two percentiles. The receiver
posts into one message-sized buffer (cache resident), not into a 1 GiB
destination: a favourable condition for UCX, noted in the report.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from typing import Any

from . import Backend

TLS = "sm,self"


def _find() -> tuple[str, str | None] | None:
    """(ucx_perftest path, lib dir or None)."""
    spec = importlib.util.find_spec("libucx")
    if spec is not None and spec.submodule_search_locations:
        root = list(spec.submodule_search_locations)[0]
        exe = os.path.join(root, "bin", "ucx_perftest")
        if os.path.isfile(exe):
            return exe, os.path.join(root, "lib")
    which = shutil.which("ucx_perftest")
    return (which, None) if which else None


def _env(libdir: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if libdir:
        ld = env.get("LD_LIBRARY_PATH", "")
        env["LD_LIBRARY_PATH"] = libdir + (os.pathsep + ld if ld else "")
    env.update({"UCX_TLS": TLS, "UCX_LOG_LEVEL": "error", "UCX_WARN_UNUSED_ENV_VARS": "n",
                "UCX_MEMTYPE_CACHE": "n"})
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _taskset(cpu_index: int) -> list[str]:
    ts = shutil.which("taskset")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = []
    if not ts or len(cpus) < 2 or os.environ.get("FASTP2P_SAMEHOST_NO_PIN"):
        return []
    return [ts, "-c", str(cpus[cpu_index])]


class UcxPerftest(Backend):
    name = "ucx-sm"
    title = "UCX ucx_perftest, UCX_TLS=sm,self"
    how = ("ucx_perftest server (taskset -c 0) + client (taskset -c 1) -t tag_bw/tag_lat, "
           "UCX_TLS=sm,self, binary from the libucx-cu12 wheel")
    install = "pip install libucx-cu12"
    uses_server = False

    def __init__(self) -> None:
        self._why: str | None | bool = False  # False: not checked yet

    def available(self) -> str | None:
        if self._why is not False:
            return self._why  # type: ignore[return-value]
        found = _find()
        if found is None:
            self._why = f"missing: {self.install}"
            return self._why
        exe, libdir = found
        info = os.path.join(os.path.dirname(exe), "ucx_info")
        try:
            p = subprocess.run([info if os.path.exists(info) else exe, "-v" if os.path.exists(info)
                                else "-h"], capture_output=True, text=True, timeout=20,
                               env=_env(libdir))
            ok = p.returncode == 0 or "Usage" in (p.stdout + p.stderr)
            self._why = None if ok else f"cannot run: {(p.stderr or p.stdout).strip()[-200:]}"
        except (OSError, subprocess.SubprocessError) as e:
            self._why = f"cannot run: {e}"
        return self._why

    def versions(self) -> dict[str, str]:
        out: dict[str, str] = {}
        try:
            from importlib.metadata import version

            out["libucx-cu12"] = version("libucx-cu12")
        except Exception:  # noqa: BLE001
            pass
        return out

    def open(self, P: Any) -> Any:
        found = _find()
        assert found is not None
        return _UcxSession(*found)

    def measure(self, sess: Any, scenario: str, arg: Any, P: Any) -> dict[str, Any]:
        if scenario == "bulk":
            n = max(1, P.bulk_total // arg)
            w = max(1, min(n // 10, 1000))
            r = sess.run(["-t", "tag_bw", "-s", str(arg), "-n", str(n), "-w", str(w)],
                         P.op_timeout)
            return {"GB/s": r["bw_mib"] * (1 << 20) / 1e9}
        if scenario == "rtt":
            args = ["-t", "tag_lat", "-s", str(arg), "-n", str(P.rtt_n),
                    "-w", str(P.rtt_warmup)]
            r50 = sess.run(args + ["-R", "50"], P.op_timeout)
            r99 = sess.run(args + ["-R", "99"], P.op_timeout)
            return {"p50 us": 2 * r50["pct"], "p99 us": 2 * r99["pct"],
                    "note": "2x ucx_perftest one-way latency"}
        raise ValueError(scenario)


class _UcxSession:
    def __init__(self, exe: str, libdir: str | None) -> None:
        self.exe, self.env = exe, _env(libdir)

    def run(self, args: list[str], timeout: float) -> dict[str, float]:
        last = ""
        for _attempt in range(30):
            port = _free_port()
            srv = subprocess.Popen(_taskset(0) + [self.exe, "-p", str(port)],
                                   stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                   env=self.env)
            try:
                time.sleep(0.15)
                p = subprocess.run(_taskset(1) + [self.exe, "127.0.0.1", "-p", str(port)] + args,
                                   capture_output=True, text=True, timeout=timeout, env=self.env)
                out = p.stdout + p.stderr
                for line in out.splitlines():
                    if line.strip().startswith("Final:"):
                        f = line.split()
                        # Final: iters pct avg overall bw_avg bw_overall rate_avg rate_overall
                        return {"pct": float(f[2]), "avg": float(f[3]),
                                "bw_mib": float(f[6]), "rate": float(f[8])}
                last = out.strip()[-300:]
                if "connect() failed" not in out:
                    break
            finally:
                try:
                    srv.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    srv.kill()
                    srv.wait()
                if srv.stdout:
                    srv.stdout.close()
        raise RuntimeError(f"ucx_perftest failed: {last}")

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        return {}

    def close(self) -> None:
        pass
