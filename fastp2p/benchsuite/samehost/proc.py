"""Worker processes and the coordinator's handle on them.

Every measured side runs in its own spawned process
(``python -m fastp2p.benchsuite.samehost.worker <backend> <role> <params>``).
Workers talk JSON lines with the coordinator: stdout is moved to a private fd so
that library prints land on stderr.

* server: ``make_server().serve(ready)`` blocks in the main thread; a daemon
  thread answers ``{"cmd": "usage"}`` (RSS) and ``{"cmd": "quit"}``.
* client: each ``{"cmd": "run", "op": name, "args": {...}}`` calls
  ``client.<name>(**args)`` and answers with its result.
"""

from __future__ import annotations

import json
import os
import struct
import sys
import threading
import traceback
from collections.abc import Callable
from typing import Any

from ..wire import cpu_seconds, raise_nofile, rss_bytes, run_exit_hooks
from ..workerproc import Worker

# Bench header on every bench stream / first message:  op u8 | pad | a u32 | b u64
HEADER = struct.Struct("!BxxxIQ")
HDR_LEN = HEADER.size  # 16
OP_BULK, OP_ECHO, OP_RR, OP_GRANT, OP_IDLE = 1, 2, 3, 4, 5
ACK = b"K"

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
SRC_BYTES = 64 * MiB  # senders cycle through slices of one 64 MiB numpy array


def pack(op: int, a: int = 0, b: int = 0) -> bytes:
    return HEADER.pack(op, a, b)


def unpack(buf: Any) -> tuple[int, int, int]:
    op, a, b = HEADER.unpack(bytes(buf[:HDR_LEN]))
    return int(op), int(a), int(b)


def mem_breakdown() -> dict[str, int]:
    """RSS split from /proc/self/status (bytes): anon, file, shmem."""
    out = {"rss": rss_bytes()}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                k, _, v = line.partition(":")
                if k in ("RssAnon", "RssFile", "RssShmem"):
                    out[k[3:].lower()] = int(v.split()[0]) * 1024
    except OSError:
        pass
    return out


def source_array(nbytes: int = SRC_BYTES) -> Any:
    """The sender's data: a numpy array (pages touched) that writes slice."""
    import numpy as np

    a = np.arange(nbytes, dtype=np.uint8)
    return a


def dest_array(nbytes: int) -> Any:
    """The receiver's preallocated destination, pages touched before timing."""
    import numpy as np

    a = np.empty(nbytes, dtype=np.uint8)
    a.fill(0)
    return a


def pin_cpu(which: int) -> None:
    """Pin this process to one CPU of the allowed set (server 0, client 1)."""
    if os.environ.get("FASTP2P_SAMEHOST_NO_PIN"):
        return
    try:
        cpus = sorted(os.sched_getaffinity(0))
        if len(cpus) >= 2:
            os.sched_setaffinity(0, {cpus[which % len(cpus)]})
    except (AttributeError, OSError):
        pass


class _Out:
    def __init__(self) -> None:
        fd = os.dup(1)
        os.dup2(2, 1)
        sys.stdout = sys.stderr
        self._f = os.fdopen(fd, "w", buffering=1)
        self._lock = threading.Lock()

    def send(self, obj: dict[str, Any]) -> None:
        line = json.dumps(obj)
        with self._lock:
            self._f.write(line + "\n")
            self._f.flush()


def run_worker(role: str, make_server: Callable[[], Any], make_client: Callable[[], Any]) -> int:
    raise_nofile()
    out = _Out()
    if role == "server":
        def ctl() -> None:
            for line in sys.stdin:
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("cmd") == "usage":
                    out.send({"event": "usage", "cpu": cpu_seconds(), **mem_breakdown()})
                elif msg.get("cmd") == "quit":
                    break
            run_exit_hooks()
            os._exit(0)

        def ready(addr: str, **extra: Any) -> None:
            out.send({"event": "ready", "addr": addr, "pid": os.getpid(), **extra})
            threading.Thread(target=ctl, daemon=True, name="samehost-ctl").start()

        try:
            make_server().serve(ready)
        except BaseException as e:  # noqa: BLE001
            out.send({"event": "error", "error": f"{type(e).__name__}: {e}",
                      "trace": traceback.format_exc()})
            run_exit_hooks()
            os._exit(1)
        run_exit_hooks()
        os._exit(0)

    try:
        client = make_client()
    except BaseException as e:  # noqa: BLE001
        out.send({"event": "error", "error": f"{type(e).__name__}: {e}",
                  "trace": traceback.format_exc()})
        os._exit(1)
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
            out.send({"event": "usage", "cpu": cpu_seconds(), **mem_breakdown()})
            continue
        try:
            res = getattr(client, msg["op"])(**msg.get("args", {}))
        except BaseException as e:  # noqa: BLE001
            out.send({"event": "error", "error": f"{type(e).__name__}: {e}",
                      "trace": traceback.format_exc()})
            continue
        out.send({"event": "result", "result": res or {}})
    try:
        client.shutdown()
    except Exception:  # noqa: BLE001
        pass
    run_exit_hooks()
    os._exit(0)


def worker_env() -> dict[str, str]:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    env = dict(os.environ)
    pp = env.get("PYTHONPATH", "")
    env["PYTHONPATH"] = root + (os.pathsep + pp if pp else "")
    env["PYTHONUNBUFFERED"] = "1"
    return env


class Session:
    """A server worker (optional) and a client worker for one (round, backend)."""

    def __init__(self, backend_name: str, params: dict[str, Any], server: bool = True,
                 start_timeout: float = 60.0) -> None:
        env = worker_env()
        base = [sys.executable, "-m", "fastp2p.benchsuite.samehost.worker", backend_name]
        p = json.dumps(params)
        self.server: Worker | None = None
        self.client: Worker | None = None
        self.addr = ""
        self.ready: dict[str, Any] = {}
        try:
            if server:
                self.server = Worker(base + ["server", p], env, f"{backend_name}/server")
                self.ready = self.server.recv(start_timeout)
                self.addr = self.ready["addr"]
            self.client = Worker(base + ["client", p], env, f"{backend_name}/client")
            self.client.recv(start_timeout)
        except BaseException:
            self.close()
            raise

    def call(self, op: str, timeout: float, **args: Any) -> dict[str, Any]:
        assert self.client is not None
        if self.server is not None:
            args.setdefault("addr", self.addr)
        self.client.send({"cmd": "run", "op": op, "args": args})
        return dict(self.client.recv(timeout)["result"])

    def server_usage(self, timeout: float = 10.0) -> dict[str, Any]:
        if self.server is None:
            return {}
        self.server.send({"cmd": "usage"})
        return self.server.recv(timeout)

    def close(self) -> None:
        if self.client is not None:
            self.client.kill()
        if self.server is not None:
            self.server.kill()
