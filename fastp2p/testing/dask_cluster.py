"""A Dask cluster in separate processes (``dask scheduler`` / ``dask worker`` CLIs).

Used by the Dask integration tests and ``bench/dask_bench.py``; needs ``fastp2p[dask]``.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path


class ProcessCluster:
    """A scheduler and ``n_workers`` workers (1 thread each, no nanny), each its own process.

    ``protocol`` is the scheme everybody listens on (``fastp2p``, ``tcp``, ``tls``);
    ``env`` adds environment (e.g. ``DASK_DISTRIBUTED__COMM__FASTP2P__DATA_PATHS``);
    ``extra_args`` go to every CLI (e.g. the TLS certificate options).
    """

    def __init__(
        self,
        protocol: str = "fastp2p",
        n_workers: int = 2,
        *,
        env: dict[str, str] | None = None,
        extra_args: Sequence[str] = (),
        host: str = "127.0.0.1",
    ) -> None:
        self.protocol = protocol
        self.n_workers = n_workers
        # the repository root, so functions of tests/ and bench/ modules unpickle on workers
        root = str(Path(__file__).resolve().parents[2])
        pypath = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
        self.env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1", "PYTHONPATH": pypath}
        self.extra_args = list(extra_args)
        self.host = host
        self._tmp = tempfile.TemporaryDirectory(prefix="fastp2p-dask-")
        self.dir = Path(self._tmp.name)
        self.scheduler_file = str(self.dir / "scheduler.json")
        self.scheduler: subprocess.Popen[bytes] | None = None
        self.workers: dict[str, subprocess.Popen[bytes]] = {}

    def _spawn(self, name: str, args: list[str]) -> subprocess.Popen[bytes]:
        log = open(self.dir / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process
        return subprocess.Popen(
            [sys.executable, "-m", "dask", *args, *self.extra_args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=self.env,
            cwd=str(self.dir),
            start_new_session=True,
        )

    def log(self, name: str) -> str:
        with contextlib.suppress(OSError):
            return (self.dir / f"{name}.log").read_text(errors="replace")
        return ""

    @property
    def address(self) -> str:
        return str(json.loads(Path(self.scheduler_file).read_text())["address"])

    def start(self, timeout: float = 60) -> ProcessCluster:
        self.scheduler = self._spawn(
            "scheduler",
            ["scheduler", "--protocol", self.protocol, "--host", self.host, "--port", "0",
             "--no-dashboard", "--scheduler-file", self.scheduler_file],
        )
        deadline = time.monotonic() + timeout
        while not os.path.exists(self.scheduler_file):
            if self.scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("scheduler did not start:\n" + self.log("scheduler"))
            time.sleep(0.1)
        for i in range(self.n_workers):
            self.start_worker(f"w{i}")
        return self

    def start_worker(self, name: str) -> None:
        self.workers[name] = self._spawn(
            name,
            ["worker", "--scheduler-file", self.scheduler_file, "--protocol", self.protocol,
             "--host", self.host, "--nthreads", "1", "--no-nanny", "--no-dashboard",
             "--name", name, "--memory-limit", "0"],
        )

    def kill_worker(self, name: str) -> None:
        p = self.workers[name]
        os.kill(p.pid, signal.SIGKILL)
        p.wait(10)

    def stop(self) -> None:
        procs = [*self.workers.values(), *([self.scheduler] if self.scheduler else [])]
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p.pid, signal.SIGTERM)
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(10)
        self._tmp.cleanup()

    def __enter__(self) -> ProcessCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def process_cluster(*args: object, **kwargs: object) -> Iterator[ProcessCluster]:
    c = ProcessCluster(*args, **kwargs)  # type: ignore[arg-type]
    try:
        yield c.start()
    finally:
        c.stop()
