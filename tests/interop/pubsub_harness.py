"""Start the pubsub reference peers (``js/pubsub_peer.mjs``, ``py_pubsub_peer.py``) and drive them.

Same JSON-lines conventions as :mod:`peers` (whose :class:`PeerProcess` reads the
events); commands go to the child's stdin as JSON lines.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

from .peers import HERE, JS_DIR, PeerProcess, missing, spawn

PY_PUBSUB_PEER = HERE / "py_pubsub_peer.py"
JS_PUBSUB_PEER = JS_DIR / "pubsub_peer.mjs"


def missing_pubsub(kind: str) -> str | None:
    """Why the pubsub reference peer ``kind`` cannot run here, or None."""
    return missing(kind, "@libp2p/gossipsub")


class PubsubPeer(PeerProcess):
    """A pubsub reference peer; ``send`` writes one command."""

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()

    def messages(self, topic: str | None = None) -> list[dict[str, Any]]:
        return [e for e in self.events if e.get("event") == "message" and (topic is None or e.get("topic") == topic)]


@contextlib.asynccontextmanager
async def spawn_pubsub(kind: str, *args: str, start_timeout: float = 60.0) -> AsyncIterator[PubsubPeer]:
    """Start a pubsub reference peer; wait for ``listening``; always kill it on exit."""
    async with spawn(
        kind, *args, start_timeout=start_timeout, py_script=PY_PUBSUB_PEER, js_script=JS_PUBSUB_PEER,
        js_package="@libp2p/gossipsub", cls=PubsubPeer, stdin=True, limit=16 * 1024 * 1024,
    ) as peer:
        yield peer
