"""Bench wire protocol and worker control loop.

Standard library only and free of relative imports: the py-libp2p worker runs
under another interpreter (``.venv-interop``) and imports this file as a
top-level module.

Every bench connection/stream starts with a 16-byte header::

    op (u8) | flags (u8) | reserved (u16) | a (u32) | b (u64)       big endian

========  ==========================  =================================
op        a                           b
========  ==========================  =================================
BULK      receive-buffer/message size total bytes that follow; the
                                      receiver replies one byte ``K``
ECHO      message size                unused; echo until EOF
RR        request size                response size; one exchange, then
                                      the server closes its side
IDLE      unused                      unused; hold until EOF
========  ==========================  =================================

Workers talk to the coordinator with JSON lines on stdin/stdout (stdout is
moved to a private fd; library prints go to stderr).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import resource
import struct
import sys
import threading
import time
import traceback
from collections.abc import Callable
from typing import Any

HEADER = struct.Struct("!BBHIQ")
HDR_LEN = HEADER.size  # 16
OP_BULK, OP_ECHO, OP_RR, OP_IDLE = 1, 2, 3, 4
ACK = b"K"
PROTOCOL_ID = "/fastp2p-bench/1.0.0"
ZERO_COPY_MIN = 64 * 1024  # pyzmq: copy=False at and above this message size

_PAGE = os.sysconf("SC_PAGE_SIZE")

# Server-side counters, reported with every "usage" reply.
SERVER_STATS: dict[str, int] = {"idle": 0, "conns": 0}
_stats_lock = threading.Lock()


def stat_add(key: str, n: int = 1) -> None:
    with _stats_lock:
        SERVER_STATS[key] = SERVER_STATS.get(key, 0) + n


def pack(op: int, a: int = 0, b: int = 0) -> bytes:
    return HEADER.pack(op, 0, 0, a, b)


def unpack(buf: bytes | bytearray | memoryview) -> tuple[int, int, int]:
    op, _f, _r, a, b = HEADER.unpack(bytes(buf[:HDR_LEN]))
    return op, a, b


def rss_bytes() -> int:
    """Resident set size from /proc/self/statm (no psutil)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * _PAGE
    except OSError:  # not Linux: peak RSS is the best we have
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def cpu_seconds() -> float:
    """User + system CPU of this process, all threads."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def main_thread_cpu_seconds() -> float:
    """CPU seconds of this process's main thread alone: the event loop's, where
    the backends run one. With helper threads (a seal pool, a driver thread) the
    process total can stay under a core while the loop thread is saturated."""
    try:
        clk = time.pthread_getcpuclockid(threading.main_thread().ident or 0)
        return time.clock_gettime(clk)
    except (AttributeError, OSError):  # not POSIX: say nothing rather than guess
        return float("nan")


def usage() -> dict[str, Any]:
    return {"cpu": cpu_seconds(), "main_cpu": main_thread_cpu_seconds(), "rss": rss_bytes(),
            **SERVER_STATS}


#: run by a server worker just before it exits (it leaves by os._exit, which skips
#: atexit): remove what it made outside the process, such as ipc socket files
EXIT_HOOKS: list[Callable[[], None]] = []


def run_exit_hooks() -> None:
    """Run the cleanups a worker registered (it leaves with ``os._exit``, which skips atexit)."""
    for fn in EXIT_HOOKS:
        try:
            fn()
        except Exception:  # noqa: BLE001 - leaving anyway
            pass


def unlink_at_exit(path: str) -> None:
    """Remove the file ``path`` (an ipc socket) when the worker exits (EXIT_HOOKS)."""
    EXIT_HOOKS.append(functools.partial(_unlink, path))


def _unlink(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def raise_nofile() -> None:
    try:
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = hard if hard != resource.RLIM_INFINITY else 65536
        if soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    except (ValueError, OSError):
        pass


def percentile(sorted_vals: list[float], q: float) -> float:
    if not sorted_vals:
        return float("nan")
    k = (len(sorted_vals) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (k - lo)


class _Out:
    """JSON-lines writer on a private dup of the original stdout."""

    def __init__(self) -> None:
        fd = os.dup(1)
        os.dup2(2, 1)  # anything printed by libraries lands on stderr
        sys.stdout = sys.stderr
        self._f = os.fdopen(fd, "w", buffering=1)
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def run_worker(role: str, make_server: Callable[[], Any], make_client: Callable[[], Any]) -> int:
    """Control loop shared by every worker.

    server: ``make_server().serve(ready)`` blocks in the main thread; a daemon
    thread answers ``usage``/``quit`` from stdin.
    client: ``make_client()`` object; each ``{"cmd": "run", "op": name, "args": {...}}``
    calls ``client.<name>(**args)`` and replies with the result plus this
    process's CPU seconds and RSS before/after.
    """
    raise_nofile()
    out = _Out()

    if role == "server":
        srv = make_server()

        def ctl() -> None:
            for line in sys.stdin:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("cmd") == "usage":
                    out.send({"event": "usage", **usage()})
                elif msg.get("cmd") == "quit":
                    break
            run_exit_hooks()
            os._exit(0)  # stdin closed or quit: leave without teardown

        def ready(addr: str) -> None:
            out.send({"event": "ready", "addr": addr, "pid": os.getpid()})
            threading.Thread(target=ctl, daemon=True, name="bench-ctl").start()

        try:
            srv.serve(ready)
        except BaseException as e:  # noqa: BLE001
            out.send({"event": "error", "error": f"{type(e).__name__}: {e}",
                      "trace": traceback.format_exc()})
            run_exit_hooks()
            os._exit(1)
        run_exit_hooks()
        os._exit(0)

    client = make_client()
    out.send({"event": "ready", "pid": os.getpid()})
    for line in sys.stdin:
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        cmd = msg.get("cmd")
        if cmd == "quit":
            break
        if cmd == "usage":
            out.send({"event": "usage", **usage()})
            continue
        if cmd != "run":
            out.send({"event": "error", "error": f"unknown cmd {cmd!r}"})
            continue
        op = msg["op"]
        c0, m0, r0, t0 = cpu_seconds(), main_thread_cpu_seconds(), rss_bytes(), time.perf_counter()
        try:
            res = getattr(client, op)(**msg.get("args", {}))
        except BaseException as e:  # noqa: BLE001
            out.send({"event": "error", "error": f"{type(e).__name__}: {e}",
                      "trace": traceback.format_exc()})
            continue
        out.send({"event": "result", "result": res or {}, "cpu": cpu_seconds() - c0,
                  "main_cpu": main_thread_cpu_seconds() - m0,
                  "rss0": r0, "rss1": rss_bytes(), "wall": time.perf_counter() - t0})
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001
        pass
    os._exit(0)
