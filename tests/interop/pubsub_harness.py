"""Start the pubsub reference peers (``js/pubsub_peer.mjs``, ``py_pubsub_peer.py``) and drive them.

Same JSON-lines conventions as :mod:`peers` (whose :class:`PeerProcess` reads the
events); commands go to the child's stdin as JSON lines.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from .peers import HERE, JS_DIR, VENV_PY, PeerProcess, missing

PY_PUBSUB_PEER = HERE / "py_pubsub_peer.py"
JS_PUBSUB_PEER = JS_DIR / "pubsub_peer.mjs"


def missing_pubsub(kind: str) -> str | None:
    """Why the pubsub reference peer ``kind`` cannot run here, or None."""
    reason = missing(kind)
    if reason:
        return reason
    if kind == "js" and not (JS_DIR / "node_modules" / "@libp2p" / "gossipsub").is_dir():
        return "@libp2p/gossipsub not installed in tests/interop/js: run ci/setup_interop.sh"
    return None


def pubsub_command(kind: str, *args: str) -> list[str]:
    if kind == "py":
        return [str(VENV_PY), str(PY_PUBSUB_PEER), *args]
    if kind == "js":
        return [shutil.which("node") or "node", str(JS_PUBSUB_PEER), *args]
    raise ValueError(kind)


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
    reason = missing_pubsub(kind)
    if reason:
        raise RuntimeError(reason)
    fd, name = tempfile.mkstemp(prefix=f"interop-pubsub-{kind}-", suffix=".stderr")
    stderr_path = Path(name)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)
    env.setdefault("NODE_NO_WARNINGS", "1")
    try:
        proc = await asyncio.create_subprocess_exec(
            *pubsub_command(kind, *args),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=fd,
            env=env,
            limit=16 * 1024 * 1024,
        )
    finally:
        os.close(fd)
    peer = PubsubPeer(kind, proc, stderr_path)
    try:
        peer.listening = await peer.next_event("listening", timeout=start_timeout)
        yield peer
    finally:
        await peer.kill()
        with contextlib.suppress(OSError):
            stderr_path.unlink()
