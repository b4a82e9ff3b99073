"""Harness for the reference peers: py-libp2p (``py_peer.py``) and js-libp2p (``js/peer.mjs``).

Each reference peer is a child process speaking JSON lines on stdout (see the docstring of
``py_peer.py``). :class:`PeerProcess` starts one under asyncio, reads its events with
bounded waits and always kills it on exit. Both peers need ``ci/setup_interop.sh`` to
have been run (a venv at ``.venv-interop`` and ``tests/interop/js/node_modules``).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any, TypeVar

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
VENV_PY = Path(os.environ.get("FASTP2P_INTEROP_PY", REPO / ".venv-interop" / "bin" / "python"))
PY_PEER = HERE / "py_peer.py"
JS_DIR = HERE / "js"
JS_PEER = JS_DIR / "peer.mjs"

KINDS = ("py", "js")
MUXERS = ("yamux", "mplex")
MUXER_IDS = {"yamux": "/yamux/1.0.0", "mplex": "/mplex/6.7.0"}
AGENT_PREFIX = {"py": "py-libp2p/", "js": "js-libp2p/"}

SETUP_HINT = "run ci/setup_interop.sh"


def missing(kind: str, js_package: str = "libp2p") -> str | None:
    """Why the reference peer ``kind`` cannot run here, or None when it can.

    ``js_package``: the npm package (under tests/interop/js/node_modules) the js
    peer needs besides libp2p itself, e.g. ``"@libp2p/gossipsub"``.
    """
    if kind == "py":
        if not VENV_PY.exists():
            return f"py-libp2p venv missing ({VENV_PY}): {SETUP_HINT}"
        lib = next(VENV_PY.parent.parent.glob("lib/python3*/site-packages/libp2p"), None)
        if lib is None:
            return f"libp2p not installed in {VENV_PY.parent.parent}: {SETUP_HINT}"
        return None
    if kind == "js":
        if shutil.which("node") is None:
            return "node not on PATH (js-libp2p needs Node >= 20)"
        for pkg in dict.fromkeys(("libp2p", js_package)):
            if not (JS_DIR / "node_modules" / pkg).is_dir():
                return f"{pkg} not installed in {JS_DIR / 'node_modules'}: {SETUP_HINT}"
        return None
    raise ValueError(kind)


def command(kind: str, *args: str, py_script: Path = PY_PEER, js_script: Path = JS_PEER) -> list[str]:
    """The command line of reference peer ``kind`` running ``py_script``/``js_script``."""
    if kind == "py":
        return [str(VENV_PY), str(py_script), *args]
    if kind == "js":
        return [shutil.which("node") or "node", str(js_script), *args]
    raise ValueError(kind)


class PeerError(AssertionError):
    """The reference peer reported an error, died, or did not say what we waited for."""


class PeerProcess:
    """One running reference peer. Use :func:`spawn`; never construct directly."""

    def __init__(self, kind: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.kind = kind
        self.proc = proc
        self.events: list[dict[str, Any]] = []
        self._stderr_path = stderr_path
        self._taken: dict[str, int] = {}
        self.listening: dict[str, Any] = {}

    @property
    def addr(self) -> str:
        """The first dialable listen address (with ``/p2p/<id>``)."""
        return self.listening["addrs"][0]

    @property
    def peer_id(self) -> str:
        return self.listening["peer_id"]

    # ----------------------------------------------------------------- reading
    async def _read_event(self) -> dict[str, Any] | None:
        assert self.proc.stdout is not None
        while True:
            line = await self.proc.stdout.readline()
            if not line:
                return None
            line = line.strip()
            if not line:
                continue
            try:
                ev = json.loads(line)
            except ValueError:
                # Not ours: keep it for the failure message, go on.
                self.events.append({"event": "_stdout", "line": line.decode(errors="replace")})
                continue
            self.events.append(ev)
            return ev

    async def next_event(
        self, name: str, timeout: float = 30.0, *, allow_error: bool = False
    ) -> dict[str, Any]:
        """Return the first event called ``name`` not returned by an earlier call.

        Events of different names may arrive in any order; each name has its own cursor.
        Raises PeerError if the peer reports ``error`` (unless ``allow_error``), exits
        first, or ``timeout`` seconds pass.
        """
        try:
            async with asyncio.timeout(timeout):
                while True:
                    taken = self._taken.get(name, 0)
                    matches = [e for e in self.events if e.get("event") == name]
                    if len(matches) > taken:
                        self._taken[name] = taken + 1
                        return matches[taken]
                    errors = self.find("error")
                    if errors and not allow_error:
                        raise PeerError(
                            f"{self.kind} peer reported error while waiting for {name!r}: {errors[0].get('msg')}\n{self.diagnostics()}"
                        )
                    if await self._read_event() is None:
                        rc = await self.proc.wait()
                        raise PeerError(
                            f"{self.kind} peer exited (rc={rc}) before {name!r}\n{self.diagnostics()}"
                        )
        except TimeoutError:
            raise PeerError(
                f"{self.kind} peer: no {name!r} event within {timeout}s\n{self.diagnostics()}"
            ) from None

    async def wait_exit(self, timeout: float = 60.0) -> int:
        """Read every remaining event until the process exits; return its exit code."""
        try:
            async with asyncio.timeout(timeout):
                while await self._read_event() is not None:
                    pass
                return await self.proc.wait()
        except TimeoutError:
            raise PeerError(
                f"{self.kind} peer did not exit within {timeout}s\n{self.diagnostics()}"
            ) from None

    async def drain(self, seconds: float) -> None:
        """Collect whatever events arrive during ``seconds`` (no error on silence)."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                while await self._read_event() is not None:
                    pass

    def find(self, name: str, **match: Any) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e.get("event") == name and all(e.get(k) == v for k, v in match.items())
        ]

    # ----------------------------------------------------------------- misc
    def stderr_tail(self, n: int = 4000) -> str:
        try:
            return self._stderr_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def diagnostics(self) -> str:
        evs = "\n".join(json.dumps(e)[:400] for e in self.events[-20:])
        return f"--- {self.kind} peer events ---\n{evs}\n--- {self.kind} peer stderr (tail) ---\n{self.stderr_tail()}"

    async def kill(self) -> None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGKILL)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10):
                await self.proc.wait()


_P = TypeVar("_P", bound="PeerProcess")


@contextlib.asynccontextmanager
async def spawn(
    kind: str,
    *args: str,
    start_timeout: float = 30.0,
    py_script: Path = PY_PEER,
    js_script: Path = JS_PEER,
    js_package: str = "libp2p",
    cls: type[_P] = PeerProcess,  # type: ignore[assignment]
    stdin: bool = False,
    limit: int = 1 << 20,
) -> AsyncIterator[_P]:
    """Start reference peer ``kind`` with CLI ``args``; wait for its ``listening`` event.

    The ``listening`` event is available as ``peer.listening``. The child is killed on exit.
    ``py_script``/``js_script`` pick the peer program (the echo/ping peer by default),
    ``cls`` the PeerProcess subclass that drives it, ``stdin`` whether it reads
    commands from a pipe, ``limit`` the longest stdout line accepted.
    """
    reason = missing(kind, js_package)
    if reason:
        raise RuntimeError(reason)
    fd, name = tempfile.mkstemp(prefix=f"interop-{kind}-{Path(py_script if kind == 'py' else js_script).stem}-", suffix=".stderr")
    stderr_path = Path(name)
    env = dict(os.environ)
    env.pop("PYTHONPATH", None)  # the venv must not see our tree's packages
    env.setdefault("NODE_NO_WARNINGS", "1")
    try:
        proc = await asyncio.create_subprocess_exec(
            *command(kind, *args, py_script=py_script, js_script=js_script),
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=fd,
            cwd=str(JS_DIR if kind == "js" else HERE),
            env=env,
            limit=limit,
        )
    finally:
        os.close(fd)
    peer = cls(kind, proc, stderr_path)
    try:
        peer.listening = await peer.next_event("listening", timeout=start_timeout)
        yield peer
    finally:
        await peer.kill()
        with contextlib.suppress(OSError):
            stderr_path.unlink()
