"""Start the DHT reference peers (``js/dht_peer.mjs``, ``py_dht_peer.py``) and drive them.

Same JSON-lines conventions as :mod:`peers`; ``await peer.call(cmd, **fields)``
sends one command and returns its ``result`` event (raising ``PeerError`` on
its ``error`` event).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .peers import HERE, JS_DIR, VENV_PY, PeerError, PeerProcess, missing

PY_DHT_PEER = HERE / "py_dht_peer.py"
JS_DHT_PEER = JS_DIR / "dht_peer.mjs"


def missing_dht(kind: str) -> str | None:
    """Why the DHT reference peer ``kind`` cannot run here, or None."""
    reason = missing(kind)
    if reason:
        return reason
    if kind == "js" and not (JS_DIR / "node_modules" / "@libp2p" / "kad-dht").is_dir():
        return "@libp2p/kad-dht not installed in tests/interop/js: run ci/setup_interop.sh"
    return None


def dht_command(kind: str, *args: str) -> list[str]:
    if kind == "py":
        return [str(VENV_PY), str(PY_DHT_PEER), *args]
    if kind == "js":
        return [shutil.which("node") or "node", str(JS_DHT_PEER), *args]
    raise ValueError(kind)


class DhtPeer(PeerProcess):
    """A DHT reference peer."""

    _ids = itertools.count(1)

    async def call(self, cmd: str, timeout: float = 60.0, **fields: Any) -> dict[str, Any]:
        cid = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, "id": cid, **fields}) + "\n").encode())
        await self.proc.stdin.drain()
        try:
            async with asyncio.timeout(timeout):
                while True:
                    for e in self.events:
                        if e.get("id") == cid and e.get("event") in ("result", "error"):
                            if e["event"] == "error":
                                raise PeerError(f"{self.kind} {cmd}: {e.get('msg')}")
                            return e
                    if await self._read_event() is None:
                        raise PeerError(f"{self.kind} peer exited during {cmd}\n{self.diagnostics()}")
        except TimeoutError:
            raise PeerError(f"{self.kind} {cmd}: no answer within {timeout}s\n{self.diagnostics()}") from None


@contextlib.asynccontextmanager
async def spawn_dht(kind: str, *args: str, start_timeout: float = 60.0) -> AsyncIterator[DhtPeer]:
    """Start a DHT reference peer; wait for ``listening``; always kill it on exit."""
    reason = missing_dht(kind)
    if reason:
        raise RuntimeError(reason)
    fd, name = tempfile.mkstemp(prefix=f"interop-dht-{kind}-", suffix=".stderr")
    stderr_path = Path(name)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("NODE_NO_WARNINGS", "1")
    try:
        proc = await asyncio.create_subprocess_exec(
            *dht_command(kind, *args), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=fd, env=env, limit=16 * 1024 * 1024,
        )
    finally:
        os.close(fd)
    peer = DhtPeer(kind, proc, stderr_path)
    try:
        peer.listening = await peer.next_event("listening", timeout=start_timeout)
        yield peer
    finally:
        await peer.kill()
        with contextlib.suppress(OSError):
            stderr_path.unlink()
