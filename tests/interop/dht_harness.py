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
from collections.abc import AsyncIterator
from typing import Any

from .peers import HERE, JS_DIR, PeerError, PeerProcess, missing, spawn

PY_DHT_PEER = HERE / "py_dht_peer.py"
JS_DHT_PEER = JS_DIR / "dht_peer.mjs"


def missing_dht(kind: str) -> str | None:
    """Why the dht reference peer ``kind`` cannot run here, or None."""
    return missing(kind, "@libp2p/kad-dht")


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
    async with spawn(
        kind, *args, start_timeout=start_timeout, py_script=PY_DHT_PEER, js_script=JS_DHT_PEER,
        js_package="@libp2p/kad-dht", cls=DhtPeer, stdin=True, limit=16 * 1024 * 1024,
    ) as peer:
        yield peer
