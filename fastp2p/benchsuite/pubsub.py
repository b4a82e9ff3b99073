"""Pubsub bench: fastp2p vs js-libp2p (@libp2p/gossipsub) vs py-libp2p GossipSub, same run.

    python -m fastp2p.benchsuite.pubsub [--messages N] [--size 1024] [--subscribers 1 10] [--json PATH]

For each implementation and each fan-out (1 publisher -> 1 subscriber, then
1 -> 10), every peer is its own process on loopback (TCP, Noise, yamux,
StrictSign): the subscribers dial the publisher, everyone waits until the
publisher sees them all and one heartbeat has passed, then the publisher
publishes N messages of ``--size`` bytes back to back (each awaited, as the
library's API allows), stamping the wall-clock send time into the payload.
Reported per run:

- delivered msgs/s: messages received by all subscribers together divided by
  the time from the first publish to the last receive;
- p50/p99 publish-to-receive latency over every delivered message;
- delivered: how many of the N x subscribers arrived.

The js and py peers are ``tests/interop/js/pubsub_peer.mjs`` and
``tests/interop/py_pubsub_peer.py`` (installed by ``ci/setup_interop.sh``);
an implementation that is not installed is reported as missing, not failed.
py-libp2p's per-topic rate limiter is off in its peer (it would cap it at 10 msg/s).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
INTEROP = REPO / "tests" / "interop"
TOPIC = "bench"


def _venv_python() -> Path:
    env = os.environ.get("FASTP2P_INTEROP_PY") or os.environ.get("FASTP2P_BENCH_PYLIBP2P_PYTHON")
    return Path(env) if env else REPO / ".venv-interop" / "bin" / "python"


def command(kind: str) -> list[str] | str:
    """The command line of one peer, or why it cannot run."""
    if kind == "fastp2p":
        return [sys.executable, "-m", "fastp2p.benchsuite.pubsub_peer"]
    if kind == "js":
        node = shutil.which("node")
        script = INTEROP / "js" / "pubsub_peer.mjs"
        if node is None:
            return "node not on PATH"
        if not (INTEROP / "js" / "node_modules" / "@libp2p" / "gossipsub").is_dir():
            return "js-libp2p/@libp2p/gossipsub not installed (ci/setup_interop.sh)"
        return [node, str(script)]
    if kind == "py":
        py = _venv_python()
        if not py.exists():
            return f"py-libp2p venv missing ({py}; ci/setup_interop.sh)"
        return [str(py), str(INTEROP / "py_pubsub_peer.py")]
    raise ValueError(kind)


class Proc:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.events: list[dict[str, Any]] = []

    async def send(self, cmd: str, **fields: Any) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps({"cmd": cmd, **fields}) + "\n").encode())
        await self.proc.stdin.drain()

    async def wait(self, name: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        async with asyncio.timeout(timeout):
            while True:
                line = await self.proc.stdout.readline()
                if not line:
                    raise RuntimeError(f"peer exited before {name!r}")
                with contextlib.suppress(ValueError):
                    ev = json.loads(line)
                    if ev.get("event") == "error":
                        raise RuntimeError(f"peer error: {ev.get('msg')}")
                    if ev.get("event") == name:
                        return ev


@contextlib.asynccontextmanager
async def spawn(cmd: list[str], *args: str) -> Any:
    env = dict(os.environ)
    if "fastp2p.benchsuite" not in " ".join(cmd):
        env.pop("PYTHONPATH", None)
    env.setdefault("NODE_NO_WARNINGS", "1")
    err = tempfile.TemporaryFile()
    proc = await asyncio.create_subprocess_exec(
        *cmd, *args, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=err, env=env, limit=1 << 24,
    )
    p = Proc(proc)
    try:
        p.listening = await p.wait("listening", 60)  # type: ignore[attr-defined]
        yield p
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        err.close()


async def run_one(kind: str, subscribers: int, messages: int, size: int) -> dict[str, Any]:
    cmd = command(kind)
    if isinstance(cmd, str):
        return {"impl": kind, "subscribers": subscribers, "missing": cmd}
    async with contextlib.AsyncExitStack() as stack:
        pub = await stack.enter_async_context(spawn(cmd, "--topic", TOPIC))
        addr = pub.listening["addrs"][0]
        subs = []
        for _ in range(subscribers):
            subs.append(await stack.enter_async_context(spawn(cmd, "--topic", TOPIC, "--dial", addr)))
        for s in subs:
            await s.wait("connected", 60)
        await pub.send("wait_peers", topic=TOPIC, n=subscribers)
        await pub.wait("peers", 60)
        await asyncio.sleep(2.5)  # heartbeats on every side: meshes formed
        for s in subs:
            await s.send("quiet")
            await s.wait("quiet", 30)
        await pub.send("bench_publish", topic=TOPIC, n=messages, size=size)
        done = await pub.wait("bench_published", 600)
        deadline = time.monotonic() + 60
        stats: list[dict[str, Any]] = []
        while True:
            stats = []
            for s in subs:
                await s.send("stats")
                stats.append(await s.wait("stats", 30))
            if all(st["received"] >= messages for st in stats) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.25)
        received = sum(st["received"] for st in stats)
        last = max((st["last_ms"] or 0.0) for st in stats)
        seconds = max(1e-9, (last - done["start_ms"]) / 1000)
        p50 = sorted(st["p50_ms"] for st in stats if st["p50_ms"] is not None)
        p99 = [st["p99_ms"] for st in stats if st["p99_ms"] is not None]
        return {
            "impl": kind,
            "subscribers": subscribers,
            "messages": messages,
            "size": size,
            "delivered": received,
            "expected": messages * subscribers,
            "msgs_per_s": received / seconds,
            "publish_s": (done["end_ms"] - done["start_ms"]) / 1000,
            "p50_ms": p50[len(p50) // 2] if p50 else None,
            "p99_ms": max(p99) if p99 else None,
        }


def _fmt(v: Any, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else "-"


def report(rows: list[dict[str, Any]]) -> str:
    out = [f"{'impl':8} {'subs':>4} {'delivered':>12} {'msgs/s':>10} {'p50 ms':>9} {'p99 ms':>9}"]
    for r in rows:
        if "missing" in r:
            out.append(f"{r['impl']:8} {r['subscribers']:>4}  missing: {r['missing']}")
            continue
        out.append(
            f"{r['impl']:8} {r['subscribers']:>4} {r['delivered']:>6}/{r['expected']:<5} "
            f"{_fmt(r['msgs_per_s'], '10.0f')} {_fmt(r['p50_ms'], '9.2f')} {_fmt(r['p99_ms'], '9.2f')}"
        )
    by = {(r["impl"], r["subscribers"]): r for r in rows if "missing" not in r}
    for subs in sorted({r["subscribers"] for r in rows}):
        f = by.get(("fastp2p", subs))
        if f is None:
            continue
        for other in ("js", "py"):
            o = by.get((other, subs))
            if o is None or not o["msgs_per_s"]:
                continue
            lat = (
                f" p50 latency {o['p50_ms'] / f['p50_ms']:.1f}x lower"
                if f["p50_ms"] and o["p50_ms"]
                else ""
            )
            out.append(
                f"1->{subs}: fastp2p / {other}: {f['msgs_per_s'] / o['msgs_per_s']:.2f}x msgs/s;{lat}"
            )
    return "\n".join(out)


async def amain(args: argparse.Namespace) -> int:
    rows = []
    for subs in args.subscribers:
        for kind in args.impl:
            try:
                rows.append(await run_one(kind, subs, args.messages, args.size))
            except Exception as exc:  # a broken baseline must not hide the others
                rows.append({"impl": kind, "subscribers": subs, "missing": f"failed: {exc!r}"})
            print(report(rows[-1:]).splitlines()[-1], flush=True)
    print()
    print(report(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m fastp2p.benchsuite.pubsub", description=__doc__.split("\n")[0])
    p.add_argument("--messages", type=int, default=2000)
    p.add_argument("--size", type=int, default=1024)
    p.add_argument("--subscribers", type=int, nargs="+", default=[1, 10])
    p.add_argument("--impl", nargs="+", default=["fastp2p", "js", "py"], choices=["fastp2p", "js", "py"])
    p.add_argument("--json", help="write the rows as JSON here")
    return asyncio.run(amain(p.parse_args(argv)))


if __name__ == "__main__":
    sys.exit(main())
