"""``fastp2p demo``: local peers in separate processes connect, ping, share and fetch a file.

The orchestrator (this process) starts one seeding peer and one (or two)
fetching peers as child processes, each a full fastp2p Host on loopback. They
talk libp2p: TCP, multistream-select, Noise XX, yamux or mplex, identify, ping
and content-addressed file sharing (``host.files``: a chunk manifest whose
CIDv1 names the file, announced on the ``fastp2p/files/1.0.0`` pubsub topic,
fetched from every provider at once with each chunk verified). Children
report progress as JSON lines on stdout; the orchestrator prints a summary
and exits 0 only if every step succeeded (including the SHA-256 check of
every chunk of every fetched copy). With ``--peers 3`` the third peer fetches
from the first two in parallel.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from typing import Any

from fastp2p.cli import MUXERS, _run
from fastp2p.transport.upgrader import NOISE_PROTOCOL_ID

__all__ = ["run_demo"]


def _emit(**event: Any) -> None:
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


def _loop_name() -> str:
    return type(asyncio.get_running_loop()).__module__.split(".")[0]


# -- child roles ---------------------------------------------------------------------


def _host_config(muxer: str, data_path: str) -> Any:
    from fastp2p.cli import DATA_PATHS
    from fastp2p.config import HostConfig

    return HostConfig(muxers=(muxer,), data_paths=DATA_PATHS[data_path])


async def _seed(path: str, muxer: str, data_path: str) -> int:
    from fastp2p import HAVE_NATIVE
    from fastp2p.host import Host

    async with Host(listen=["/ip4/127.0.0.1/tcp/0"], config=_host_config(muxer, data_path)) as host:
        info = await host.files.share(path)
        _emit(
            event="ready",
            peer_id=str(host.peer_id),
            addrs=[str(a) for a in host.full_addrs],
            cid=info.cid,
            size=info.size,
            native=HAVE_NATIVE,
            loop=_loop_name(),
        )
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


async def _fetch(
    addrs: list[str], cid: str, out: str, muxer: str, serve: bool, data_path: str
) -> int:
    from fastp2p.host import Host

    listen = ["/ip4/127.0.0.1/tcp/0"] if serve else []
    async with Host(listen=listen, config=_host_config(muxer, data_path)) as host:
        t0 = time.perf_counter()
        peer = await host.connect(addrs[0])
        connect_s = time.perf_counter() - t0
        conn = host.connection(peer)
        assert conn is not None
        rec = host.peerstore.get(peer)
        _emit(
            event="connected",
            peer_id=str(host.peer_id),
            remote=str(peer),
            security=NOISE_PROTOCOL_ID,
            muxer=conn.muxer,
            data_path=conn.data_path,
            data_path_reason=conn.data_path_reason,
            remote_protocols=rec.protocols if rec else [],
            remote_agent=rec.agent_version if rec else None,
            connect_ms=connect_s * 1000,
        )
        rtts = [await host.ping(peer) for _ in range(5)]
        _emit(event="ping", rtt_ms=sorted(rtts)[len(rtts) // 2] * 1000)
        for other in addrs[1:]:
            await host.connect(other)
        last = [0.0]

        def progress(got: int, size: int) -> None:
            now = time.perf_counter()
            if now - last[0] >= 0.1 or got == size:
                last[0] = now
                _emit(event="progress", got=got, size=size)

        # Providers: those announced on the topic and the peers just dialled.
        res = await host.files.fetch(cid, out, progress=progress)
        _emit(
            event="fetched",
            size=res.size,
            seconds=res.seconds,
            cid=res.cid,
            verified=True,
            data_path=conn.data_path,
            providers={str(p): n for p, n in res.bytes_per_provider.items()},
        )
        if serve:
            await host.files.share(out)
            _emit(event="ready", peer_id=str(host.peer_id), addrs=[str(a) for a in host.full_addrs])
            await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    return 0


_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Ask Linux to SIGKILL this child when the orchestrator dies, however it dies
    (a SIGKILLed orchestrator runs no cleanup; an orphaned fetcher would run on)."""
    import ctypes
    import signal

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    if os.getppid() == 1:  # the orchestrator died before prctl took effect
        os._exit(1)


def _child_main(argv: list[str]) -> int:
    _die_with_parent()
    p = argparse.ArgumentParser(prog="fastp2p.demo")
    sub = p.add_subparsers(dest="role", required=True)
    s = sub.add_parser("seed")
    s.add_argument("--file", required=True)
    s.add_argument("--muxer", required=True)
    s.add_argument("--data-path", default="auto")
    f = sub.add_parser("fetch")
    f.add_argument("--addr", required=True, action="append")
    f.add_argument("--cid", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--muxer", required=True)
    f.add_argument("--serve", action="store_true")
    f.add_argument("--data-path", default="auto")
    a = p.parse_args(argv)
    try:
        if a.role == "seed":
            return _run(_seed(a.file, a.muxer, a.data_path))
        return _run(_fetch(a.addr, a.cid, a.out, a.muxer, a.serve, a.data_path))
    except Exception as exc:  # reported to the orchestrator, which decides the exit code
        _emit(event="error", error=f"{type(exc).__name__}: {exc}")
        return 1


# -- orchestrator ------------------------------------------------------------------------


class _Child:
    def __init__(self, name: str, args: list[str]) -> None:
        self.name = name
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "fastp2p.demo", *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self._buf = b""

    def _readline(self, deadline: float) -> bytes:
        """One line of the child's stdout, or TimeoutError at ``deadline``."""
        import select

        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError(f"{self.name}: no answer in time")
            data = os.read(fd, 65536)
            if not data:
                line, self._buf = self._buf, b""
                return line
            self._buf += data
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def next_event(self, want: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._readline(deadline)
            except TimeoutError:
                raise TimeoutError(f"{self.name}: no {want!r} within {timeout} s") from None
            if not line:
                raise RuntimeError(f"{self.name} exited (code {self.proc.wait()}) before {want!r}")
            ev: dict[str, Any] = json.loads(line)
            if ev.get("event") == "error":
                raise RuntimeError(f"{self.name}: {ev['error']}")
            if ev.get("event") == want:
                return ev
            if ev.get("event") == "progress" and self.on_progress is not None:
                self.on_progress(ev["got"], ev["size"])

    on_progress: Any = None

    def stop(self, graceful: bool = True) -> None:
        """End the child: EOF on stdin lets it close its host; killed if it does not
        exit within 10 s, or at once when ``graceful`` is false (a failed demo)."""
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(10 if graceful else 0.001)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def _bar(label: str, got: int, size: int, t0: float, enabled: bool) -> None:
    if not enabled:
        return
    width = 30
    frac = got / size if size else 1.0
    filled = int(width * frac)
    rate = got / max(time.perf_counter() - t0, 1e-9) / 1e6
    sys.stderr.write(
        f"\r  {label} [{'#' * filled}{'.' * (width - filled)}] {frac * 100:5.1f}% "
        f"{got / 1e6:8.1f} MB {rate:8.1f} MB/s"
    )
    if got >= size:
        sys.stderr.write("\n")
    sys.stderr.flush()


def _make_file(path: str, size: int) -> None:
    chunk = 4 << 20
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo; returns the process exit code."""
    from fastp2p import HAVE_NATIVE

    muxer = MUXERS[args.muxer]
    show = not args.no_progress and sys.stderr.isatty()
    tmp = tempfile.mkdtemp(prefix="fastp2p-demo-")
    children: list[_Child] = []
    ok = False
    old_term = signal.getsignal(signal.SIGTERM)
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (a test's timeout, a supervisor) unwinds through ``finally`` below,
        # so the children are killed rather than orphaned.
        signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        if args.file:
            src = os.path.abspath(args.file)
            if not os.path.isfile(src):
                print(f"fastp2p demo: error: no such file: {args.file}", file=sys.stderr)
                return 2
        else:
            src = os.path.join(tmp, "shared.bin")
            print(f"generating {args.size / 1e6:.1f} MB of random data ...", flush=True)
            _make_file(src, args.size)

        dp = getattr(args, "data_path", "auto")
        seed = _Child("peer A", ["seed", "--file", src, "--muxer", muxer, "--data-path", dp])
        children.append(seed)
        ready = seed.next_event("ready")
        cid = ready["cid"]
        size = int(ready["size"])
        print(f"peer A  {ready['peer_id']}  listening on {ready['addrs'][0]}")
        print(f"        sharing {size} bytes as {cid}")
        print("        (CIDv1 of a manifest of SHA-256 chunk hashes, announced on fastp2p/files/1.0.0)")

        summaries = []
        sources = [ready["addrs"][0]]
        names_by_id = {ready["peer_id"]: "peer A"}
        names = ["peer B", "peer C"][: args.peers - 1]
        for i, name in enumerate(names):
            out = os.path.join(tmp, f"fetched-{i}.bin")
            serve = i + 1 < len(names)
            child = _Child(
                name,
                ["fetch", *[x for s in sources for x in ("--addr", s)], "--cid", cid, "--out", out]
                + ["--muxer", muxer]
                + ["--data-path", dp]
                + (["--serve"] if serve else []),
            )
            children.append(child)
            conn = child.next_event("connected")
            names_by_id[conn["peer_id"]] = name
            print(f"{name}  {conn['peer_id']}  connected to {conn['remote']}")
            print(
                f"        secured with Noise XX (ChaCha20-Poly1305), muxer {conn['muxer']}, "
                f"set-up {conn['connect_ms']:.2f} ms"
            )
            path = conn["data_path"]
            why = f" ({conn['data_path_reason']})" if conn.get("data_path_reason") else ""
            label = "shared memory" if path == "shm" else "TCP loopback"
            print(f"        data path: {path} = {label}{why}")
            print(f"        remote protocols: {', '.join(conn['remote_protocols'])}")
            ping = child.next_event("ping")
            print(f"        ping rtt {ping['rtt_ms'] * 1000:.0f} us")
            t0 = time.perf_counter()
            child.on_progress = lambda got, sz, n=name, t=t0: _bar(n, got, sz, t, show)
            fetched = child.next_event("fetched", timeout=600)
            mbps = fetched["size"] / fetched["seconds"] / 1e6
            frm = ", ".join(
                f"{names_by_id.get(p, p)} {n / 1e6:.1f} MB" for p, n in fetched["providers"].items()
            )
            print(
                f"        fetched {fetched['size']} bytes in {fetched['seconds']:.3f} s "
                f"= {mbps:.1f} MB/s ({mbps * 8 / 1000:.2f} Gbit/s) over {fetched['data_path']} "
                f"from {frm}, sha256 verified (every chunk and the manifest CID)"
            )
            if fetched["cid"] != cid or os.path.getsize(out) != size:
                print(f"fastp2p demo: error: {name} copy does not match", file=sys.stderr)
                return 1
            summaries.append((name, fetched, ping))
            if serve:
                sources.insert(0, child.next_event("ready")["addrs"][0])

        print("\nsummary")
        kernel = "native C (OpenSSL EVP)" if HAVE_NATIVE else "pure Python (cryptography)"
        print(f"  connection: TCP loopback + Noise XX, AEAD sealing in {kernel}, {muxer}")
        for name, fetched, ping in summaries:
            print(
                f"  {name}: data path {fetched['data_path']}, rtt {ping['rtt_ms'] * 1000:.0f} us, "
                f"{fetched['size'] / fetched['seconds'] / 1e6:.1f} MB/s, verified"
            )
        print("demo OK")
        ok = True
        return 0
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"\nfastp2p demo: error: {exc}", file=sys.stderr)
        return 1
    finally:
        for c in reversed(children):
            c.stop(graceful=ok)
        shutil.rmtree(tmp, ignore_errors=True)
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, old_term)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


if __name__ == "__main__":
    sys.exit(_child_main(sys.argv[1:]))
