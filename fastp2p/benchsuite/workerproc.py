"""A bench worker process driven over JSON lines on stdin/stdout (both bench suites use it)."""

from __future__ import annotations

import json
import queue
import subprocess
import threading
import time
from typing import Any


class BenchError(RuntimeError):
    """A benchmark could not be measured (a worker failed, hung or went away)."""


class Worker:
    """One worker process: JSON commands in, JSON events out, a tail of its stderr kept."""

    def __init__(self, cmd: list[str], env: dict[str, str], name: str) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=env,
        )
        self.q: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.err_tail: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()
        threading.Thread(target=self._read_err, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            try:
                self.q.put(json.loads(line))
            except ValueError:
                pass
        self.q.put(None)

    def _read_err(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.err_tail.append(line.rstrip())
            del self.err_tail[:-30]

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(obj) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError) as e:
            raise BenchError(f"{self.name} worker is gone: {self.tail()}") from e

    def recv(self, timeout: float) -> dict[str, Any]:
        try:
            msg = self.q.get(timeout=timeout)
        except queue.Empty:
            raise BenchError(f"{self.name} worker: no answer within {timeout:.0f}s") from None
        if msg is None:
            time.sleep(0.05)
            raise BenchError(f"{self.name} worker exited: {self.tail()}")
        if msg.get("event") == "error":
            raise BenchError(f"{self.name}: {msg.get('error')}\n{msg.get('trace', '')[-1500:]}")
        return msg

    def tail(self) -> str:
        return " | ".join(self.err_tail[-6:])

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=3)
            except Exception:  # noqa: BLE001
                pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            try:
                if f:
                    f.close()
            except Exception:  # noqa: BLE001
                pass
