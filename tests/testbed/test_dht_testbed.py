"""The multi-host DHT testbed (issue 11, section 4): 20 hosts, 40 +- 10 ms, 1% loss.

Twenty network namespaces on one bridge (``fastp2p.testing.testbed``), one
fastp2p host process in each (TCP, Noise, yamux, gossipsub, the DHT in server
mode). Every host's link delays what it sends by 40 ms +- 10 ms (netem,
uniform jitter) and drops 1% of it, so each direction of every host-to-host
path crosses one such hop (RTT about 80 ms). All hosts bootstrap from host 0.

The DHT's bucket size is 6 here instead of 20: with k = 20 and 20 hosts every
provider record would be stored on every host and every lookup answered from
the local store, measuring nothing (the 1000-node simulation in tests/sim
uses k = 20).

- ``find_peer`` and ``find_providers`` from every host: success rate, median
  and p99 latency, hops (figures printed, and written as JSON to
  ``$FASTP2P_TESTBED_FIGURES`` when set);
- a file shared on one host is fetched on another from the providers the
  DHT names, and verified;
- gossipsub messages from three publishers reach all 20 subscribers;
- js-libp2p kad-dht peers on the same links look up fastp2p hosts (the js row);
- hosts that vanish mid-lookup (link black-holed, process SIGKILLed) do not
  stall queries beyond their timeout.

netem needs the kernel's ``sch_netem``: hosts without it (this project's dev
box) skip with the reason; ``ci/testbed_vm.sh`` runs this file in one boot of
a VM whose kernel has it (``FASTP2P_TESTBED=1``). Every namespace, link and
process is removed at the end, also on failure (``test_teardown_leaves_nothing``
checks it).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import json
import os
import queue
import random
import statistics
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from fastp2p.testing.netns import unavailable
from fastp2p.testing.testbed import Testbed, Worker, WorkerError

N = 20
DELAY_MS, JITTER_MS, LOSS_PCT = 40, 10, 1
RPC_TIMEOUT, QUERY_TIMEOUT = 10.0, 60.0


def _skip_reason() -> str | None:
    reason = unavailable(netem=True)
    if reason is not None:
        return reason
    if os.environ.get("FASTP2P_TESTBED") != "1":
        return ("the 20-host DHT testbed runs in one VM boot (ci/testbed_vm.sh); "
                "set FASTP2P_TESTBED=1 to run it on this host")
    return None


_reason = _skip_reason()
pytestmark = [
    pytest.mark.skipif(_reason is not None, reason=f"DHT testbed unavailable: {_reason}"),
    pytest.mark.timeout(900),
]

FIGURES: dict[str, Any] = {}


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, timeout=30).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()}


def _config() -> Any:
    from fastp2p.config import DhtConfig, HostConfig, NoiseConfig

    # generous connection timeouts: in the emulated VM a Noise handshake costs seconds of CPU
    return HostConfig(data_paths=("tcp",), noise=NoiseConfig(handshake_timeout=60.0),
                      dial_timeout=60.0, negotiation_timeout=60.0,
                      dht=DhtConfig(enabled=True, mode="server", k=6, alpha=3,
                                    rpc_timeout=RPC_TIMEOUT, query_timeout=QUERY_TIMEOUT))


def _gather(calls: list[tuple[Worker, str, dict[str, Any]]], timeout: float) -> list[dict[str, Any] | Exception]:
    """Start every call at once (each in its own worker), then collect the replies in order."""
    rids = [(w, w.start(op, timeout=timeout, **args)) for w, op, args in calls]
    out: list[dict[str, Any] | Exception] = []
    for w, rid in rids:
        try:
            out.append(w.result(rid, timeout + 15))
        except (WorkerError, TimeoutError) as exc:
            out.append(exc)
    return out


def _summary(ok: list[dict[str, Any]], total: int) -> dict[str, Any]:
    secs = sorted(r["seconds"] * 1000 for r in ok)
    hops = [r["hops"] for r in ok if "hops" in r]
    rpcs = [r["rpcs"] for r in ok]
    p99 = secs[min(len(secs) - 1, int(round(0.99 * (len(secs) - 1))))] if secs else None
    return {
        "lookups": total, "ok": len(ok), "success": len(ok) / max(1, total),
        "median_ms": statistics.median(secs) if secs else None, "p99_ms": p99,
        "max_ms": secs[-1] if secs else None,
        "hops_median": statistics.median(hops) if hops else None,
        "hops_max": max(hops) if hops else None,
        "rpcs_mean": statistics.fmean(rpcs) if rpcs else None,
    }


def _record(name: str, fig: dict[str, Any]) -> None:
    FIGURES[name] = fig
    print(f"\n{name}: " + ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in fig.items()))
    path = os.environ.get("FASTP2P_TESTBED_FIGURES")
    if path:
        Path(path).write_text(json.dumps(FIGURES, indent=1))


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    t0 = time.monotonic()
    with Testbed(N, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_pct=LOSS_PCT, config=_config(),
                 start_timeout=300) as tb:
        qd = subprocess.run(["tc", "-n", tb.workers[0].node.ns, "qdisc", "show", "dev", "eth0"],
                            capture_output=True, text=True, timeout=30).stdout
        assert "netem" in qd and "loss 1%" in qd, qd
        started = time.monotonic() - t0
        print(f"\n{N} hosts started in {started:.1f} s", flush=True)
        # everyone bootstraps from host 0, five at a time: each bootstrap looks up its
        # own id and refreshes its buckets, and earlier hosts add later ones as they
        # connect (identify), so no extra refresh round is needed
        boot = tb.workers[0].addr
        for i in range(1, N, 5):
            wave = tb.workers[i : i + 5]
            res = _gather([(w, "bootstrap", {"peers": [boot]}) for w in wave], 180)
            bad = [r for r in res if isinstance(r, Exception)]
            assert not bad, bad
        print(f"bootstrapped at {time.monotonic() - t0:.1f} s", flush=True)
        res = _gather([(w, "table", {}) for w in tb.workers], 60)
        tables = [r["table"] for r in res if not isinstance(r, Exception)]
        assert len(tables) == N, res
        _record("testbed", {"hosts": N, "delay_ms": DELAY_MS, "jitter_ms": JITTER_MS, "loss_pct": LOSS_PCT,
                            "k": 6, "alpha": 3, "start_s": round(started, 1),
                            "ready_s": round(time.monotonic() - t0, 1), "table_min": min(tables),
                            "table_median": statistics.median(tables)})
        yield tb


def test_find_peer_from_every_host(testbed: Testbed) -> None:
    ws = testbed.workers
    rng = random.Random(11)
    results: list[tuple[Worker, dict[str, Any] | Exception]] = []
    for _ in range(5):  # five rounds: every host looks up one random other host at once
        calls = [(w, "find_peer", {"peer": rng.choice([x for x in ws if x is not w]).peer_id}) for w in ws]
        for (w, _op, _a), r in zip(calls, _gather(calls, QUERY_TIMEOUT), strict=True):
            results.append((w, r))
    ok = [r for _w, r in results if not isinstance(r, Exception)]
    _record("find_peer", _summary(ok, len(results)))
    failed = [(w.node.index, r) for w, r in results if isinstance(r, Exception)]
    assert not failed, failed
    assert all(r["addrs"] for r in ok)


def test_find_providers_from_every_host(testbed: Testbed) -> None:
    ws = testbed.workers
    keys = {}
    for i in (2, 7, 11, 16, 19):
        key = "1220" + hashlib.sha256(f"testbed-key-{i}".encode()).hexdigest()
        r = ws[i].call("provide", key=key, timeout=QUERY_TIMEOUT)
        assert r["peers"] >= 1, r
        keys[key] = ws[i]
    results: list[tuple[Worker, Worker, dict[str, Any] | Exception]] = []
    for key, provider in keys.items():
        calls = [(w, "find_providers", {"key": key, "limit": 1}) for w in ws if w is not provider]
        for (w, _op, _a), r in zip(calls, _gather(calls, QUERY_TIMEOUT), strict=True):
            results.append((w, provider, r))
    ok = [r for _w, p, r in results if not isinstance(r, Exception) and r["providers"] == [p.peer_id]]
    fig = _summary(ok, len(results))
    fig["answered_locally"] = sum(1 for r in ok if r["rpcs"] == 0)
    del fig["hops_median"], fig["hops_max"]
    _record("find_providers", fig)
    failed = [(w.node.index, r) for w, p, r in results
              if isinstance(r, Exception) or r["providers"] != [p.peer_id]]
    assert not failed, failed


def test_file_shared_on_one_host_is_fetched_on_another_via_dht(testbed: Testbed, tmp_path: Path) -> None:
    src = tmp_path / "shared.bin"
    data = random.Random(5).randbytes(1 << 20)
    src.write_bytes(data)
    sharer, fetcher = testbed.workers[4], testbed.workers[13]
    cid = sharer.call("share", path=str(src), timeout=60)["cid"]
    dest = tmp_path / "fetched.bin"
    r = fetcher.call("fetch_via_dht", cid=cid, dest=str(dest), timeout=120)
    assert sharer.peer_id in r["providers"], r
    assert r["used"] == [sharer.peer_id], r
    assert hashlib.sha256(dest.read_bytes()).digest() == hashlib.sha256(data).digest()
    _record("file_via_dht", {"bytes": len(data), "seconds": r["seconds"]})


def test_gossipsub_reaches_every_subscriber(testbed: Testbed) -> None:
    ws = testbed.workers
    topic = "testbed-topic"
    for r in _gather([(w, "subscribe", {"topic": topic}) for w in ws], 30):
        assert not isinstance(r, Exception), r
    time.sleep(3.0)  # a few heartbeats: meshes form over the DHT's connections
    sent: dict[str, Worker] = {}
    for i in (0, 9, 17):
        for j in range(3):
            msg = f"from-{i}-{j}"
            ws[i].call("publish", topic=topic, data=msg, timeout=30)
            sent[msg] = ws[i]
    deadline = time.monotonic() + 60
    missing: dict[int, set[str]] = {}
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        missing = {}
        for w in ws:
            got = set(w.call("received", topic=topic, timeout=30)["messages"])
            # a publisher's own messages are not delivered to its own subscription
            want = {m for m, publisher in sent.items() if publisher is not w}
            if want - got:
                missing[w.node.index] = want - got
        if not missing:
            break
        time.sleep(0.5)
    assert not missing, missing
    _record("gossipsub", {"subscribers": len(ws), "messages": len(sent),
                          "all_delivered_within_s": round(time.monotonic() - t0, 2)})


JS_PEERS = 3


class _JsDhtPeer:
    """js-libp2p's kad-dht (tests/interop/js/dht_peer.mjs) in one testbed namespace, driven by JSON lines."""

    def __init__(self, node: Any, k: int) -> None:
        from tests.interop.dht_harness import JS_DHT_PEER

        self.node = node
        self.proc = node.popen(["node", str(JS_DHT_PEER), "--listen", f"/ip4/{node.ip}/tcp/4001",
                                "--k", str(k), "--alpha", "3"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.events: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._ids = itertools.count(1)
        self.peer_id = ""
        # a thread reads the lines (select() on a buffered text pipe misses buffered ones)
        threading.Thread(target=self._pump, daemon=True, name=f"js-dht-{node.index}").start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            with contextlib.suppress(ValueError):
                self.events.put(json.loads(line))
        self.events.put(None)

    def _next(self, deadline: float) -> dict[str, Any]:
        try:
            ev = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise TimeoutError(f"js peer in {self.node.ns}: no answer in time") from None
        if ev is None:
            # stdout's EOF can come before the exit: wait for it, so the error says
            # how the process ended (a signal, e.g. -9 from the guest's OOM killer)
            try:
                rc: int | None = self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                rc = None
            err = self.proc.stderr.read() if self.proc.stderr and rc is not None else ""
            raise WorkerError(f"js peer in {self.node.ns} exited (rc {rc}): {err[-2000:]}")
        return ev

    def wait_listening(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while (ev := self._next(deadline)).get("event") != "listening":
            pass
        self.peer_id = ev["peer_id"]

    def send(self, cmd: str, **fields: Any) -> int:
        cid = next(self._ids)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, "id": cid, **fields}) + "\n")
        self.proc.stdin.flush()
        return cid

    def result(self, cid: int, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ev = self._next(deadline)
            if ev.get("id") == cid:
                if ev.get("event") == "error":
                    raise WorkerError(f"js peer: {ev.get('msg')}")
                return ev


def test_js_libp2p_peers_look_up_fastp2p_hosts(testbed: Testbed) -> None:
    """js-libp2p's kad-dht (k = 6, alpha = 3, like the fastp2p hosts) on the same shaped
    links joins the testbed through host 0 and looks up random fastp2p hosts: the js
    row next to fastp2p's lookup latency (timed from here, the command's round trip
    through the js process's stdin/stdout included)."""
    from tests.interop.dht_harness import missing_dht

    reason = missing_dht("js")
    assert reason is None, f"the testbed's js peers need js-libp2p: {reason} (ci/setup_interop.sh)"
    peers: list[_JsDhtPeer] = []
    try:
        t0 = time.monotonic()
        for _ in range(JS_PEERS):
            node = testbed.lab.add_node(delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_pct=LOSS_PCT,
                                        egress_only=True)
            peers.append(_JsDhtPeer(node, k=6))
        for p in peers:  # Node.js starts slowly under emulation
            p.wait_listening(300)
        started = time.monotonic() - t0
        boot = testbed.workers[0].addr
        # Three Node.js processes and twenty hosts in a TCG guest: identify and the DHT's
        # topology can take well over the harness's default 10 s to fill a table
        # (CI saw one run at 0 after 10 s, the same code passing on the rerun).
        for p, cid in [(p, p.send("bootstrap", addrs=[boot], wait_s=90)) for p in peers]:
            assert p.result(cid, 180)["size"] > 0
        rng = random.Random(23)
        ws = testbed.workers
        secs: list[float] = []
        failed: list[str] = []
        retried: list[str] = []
        for _ in range(5):  # five rounds: every js peer looks up one random fastp2p host at once
            calls = []
            for p in peers:
                target = rng.choice(ws)
                calls.append((p, target, time.monotonic(), p.send("find_peer", peer_id=target.peer_id)))
            for p, target, ts, cid in calls:
                for attempt in (1, 2):
                    try:
                        r = p.result(cid, QUERY_TIMEOUT)
                        assert r["peer_id"] == target.peer_id and any(
                            target.node.ip in a for a in r["addrs"]), r
                        if attempt == 1:
                            secs.append(time.monotonic() - ts)
                        break
                    except (WorkerError, TimeoutError) as exc:
                        # js-libp2p's findPeer ends NotFound when no closerPeers list of
                        # its one query names the target; over these lossy links that hit
                        # 1 of 15 lookups in 1 of ~6 CI runs since the FIND_NODE fix
                        # (8fceeaf). A user retries: so does this test, once, and the row
                        # reports first-try lookups and retries apart.
                        if attempt == 1 and "NotFoundError" in str(exc):
                            retried.append(f"{p.node.ns} -> {target.node.index}")
                            cid = p.send("find_peer", peer_id=target.peer_id)
                            continue
                        failed.append(f"{p.node.ns} -> {target.node.index}: {exc}")
        ms = sorted(s * 1000 for s in secs)
        total = 5 * len(peers)
        _record("js_find_peer", {
            "js_peers": JS_PEERS, "start_s": round(started, 1), "lookups": total, "ok": len(secs),
            "retried": len(retried), "failed_after_retry": len(failed),
            "success": len(secs) / max(1, total),
            "median_ms": statistics.median(ms) if ms else None,
            "p99_ms": ms[min(len(ms) - 1, int(round(0.99 * (len(ms) - 1))))] if ms else None,
            "max_ms": ms[-1] if ms else None})
        assert not failed, failed
    finally:
        for p in peers:
            with contextlib.suppress(OSError, ValueError):
                if p.proc.stdin:
                    p.proc.stdin.close()
        for p in peers:
            try:
                p.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.proc.kill()
                p.proc.wait(timeout=20)


def test_hosts_killed_mid_lookup_do_not_stall_queries(testbed: Testbed) -> None:
    """Runs last: it removes three hosts from the shared testbed."""
    ws = testbed.workers
    rng = random.Random(3)
    victims = [ws[5], ws[8], ws[14]]
    alive = [w for w in ws if w not in victims]
    seekers = rng.sample(alive[1:], 8)
    calls: list[tuple[Worker, str, dict[str, Any]]] = []
    for s in seekers:
        target = rng.choice([w for w in alive if w is not s])
        calls.append((s, "find_peer", {"peer": target.peer_id}))
    calls.append((alive[1], "find_peer", {"peer": victims[0].peer_id}))
    t0 = time.monotonic()
    rids = [(w, w.start(op, timeout=QUERY_TIMEOUT + 30, **a)) for w, op, a in calls]
    time.sleep(0.05)
    for v in victims:
        # vanish without a FIN or RST: black-hole the link, then kill the process
        v.node.shape(loss_pct=100)
        v.kill()
    results: list[dict[str, Any] | Exception] = []
    for w, rid in rids:
        try:
            results.append(w.result(rid, QUERY_TIMEOUT + 45))
        except WorkerError as exc:
            results.append(exc)
    elapsed = time.monotonic() - t0
    # a lookup ends by its own query timeout at the latest; never stuck waiting for a dead host
    assert elapsed <= QUERY_TIMEOUT + 10, elapsed
    for (_w, _op, a), r in zip(calls[:-1], results[:-1], strict=True):
        assert not isinstance(r, Exception), (a, r)
    last = results[-1]  # the vanished host: stale addresses or "not found", but an answer
    assert isinstance(last, dict) or getattr(last, "kind", "") == "PeerNotFoundError", last
    # the DHT keeps answering afterwards, around the holes
    after = _gather([(s, "find_peer", {"peer": rng.choice([w for w in alive if w is not s]).peer_id})
                     for s in seekers], QUERY_TIMEOUT)
    bad = [r for r in after if isinstance(r, Exception)]
    assert not bad, bad
    _record("kill_mid_lookup", {"victims": len(victims), "lookups": len(calls),
                                "all_answered_within_s": round(elapsed, 2),
                                "rpc_timeout_s": RPC_TIMEOUT, "query_timeout_s": QUERY_TIMEOUT})


def test_teardown_leaves_nothing() -> None:
    before = _namespaces()
    tb = Testbed(3, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_pct=LOSS_PCT, config=_config())
    try:
        names = {tb.lab.switch, *(w.node.ns for w in tb.workers)}
        assert names <= _namespaces()
        procs = [w.proc for w in tb.workers]
        # each worker sees its namespace as ip netns exec would: sockets and /sys alike
        ifs = tb.workers[0].call("interfaces", timeout=30)
        assert ifs["sys"] == ifs["kernel"] == ["eth0", "lo"], ifs
        assert tb.workers[1].call("bootstrap", peers=[tb.workers[0].addr], timeout=60)["table"] >= 1
    finally:
        tb.close()
    assert not (names & _namespaces())
    assert _namespaces() <= before | set()
    assert all(not p.is_alive() for p in procs)

