"""mDNS discovery across network namespaces: real multicast on one bridge segment.

Each node is a namespace on the lab's bridge (``fastp2p.testing.netns``) running
``fastp2p listen --mdns`` (port 5353, group 224.0.0.251, the stock settings) or
js-libp2p with ``@libp2p/mdns`` 12.0.32 (``tests/interop/js/mdns_peer.mjs``):

- three fastp2p nodes find each other; the one with ``--mdns-dial`` connects to
  and pings both; discovery latency (process start to discovery) is printed;
- js-libp2p discovers a fastp2p node by mDNS and dials and pings it, while the
  fastp2p node discovers the js node;
- a fastp2p node discovers a js-libp2p node by mDNS and connects and pings it,
  the js node sees the inbound connection and identifies it.

A node gets a multicast route (``224.0.0.0/4 dev eth0``), as on any LAN: the js
peer sends through the routing table (fastp2p itself names the interface).
Needs root and ``ip netns``; skipped with the reason elsewhere. The js cases
also need Node.js and ``ci/setup_interop.sh`` (skipped with the reason).
"""

from __future__ import annotations

import json
import os
import pathlib
import queue
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from fastp2p.testing.netns import NetnsLab, Node, unavailable
from tests.interop.peers import JS_DIR, missing

ROOT = pathlib.Path(__file__).resolve().parents[2]
JS_MDNS = JS_DIR / "mdns_peer.mjs"

_reason = unavailable(shaping=False)
pytestmark = [
    pytest.mark.skipif(_reason is not None, reason=f"netns lab unavailable: {_reason}"),
    pytest.mark.timeout(120),
]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}


class Proc:
    """A process in a node whose stdout lines are read by a thread into a queue."""

    def __init__(self, node: Node, argv: list[str]) -> None:
        self.p = node.popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env())
        self.lines: queue.Queue[tuple[float, str]] = queue.Queue()
        self.seen: list[str] = []
        #: JSON events read but not yet returned by wait_for, with their arrival times
        self.pending: list[tuple[float, dict[str, Any]]] = []
        #: arrival time (test clock) of the last line returned by line()
        self.last_at = 0.0
        self.started = 0.0
        self._t = threading.Thread(target=self._pump, daemon=True)
        self._t.start()

    def _pump(self) -> None:
        assert self.p.stdout is not None
        for line in self.p.stdout:
            self.lines.put((time.monotonic(), line.rstrip("\n")))

    def line(self, timeout: float) -> str:
        try:
            self.last_at, text = self.lines.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            raise AssertionError(f"no output within {timeout} s; so far {self.seen}; "
                                 f"exited {self.p.poll()}") from None
        self.seen.append(text)
        return text

    def wait_for(self, pred: Callable[[dict[str, Any]], bool], timeout: float) -> dict[str, Any]:
        """The first event (earlier unmatched ones included) ``pred`` accepts; its
        arrival time is in ``ev["_at"]``."""
        for k, (at, ev) in enumerate(self.pending):
            if pred(ev):
                del self.pending[k]
                return {**ev, "_at": at}
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"not seen within {timeout} s; got {self.seen}")
            text = self.line(left)
            if text.startswith("{"):
                ev = json.loads(text)
                if pred(ev):
                    return {**ev, "_at": self.last_at}
                self.pending.append((self.last_at, ev))

    def stop(self) -> str:
        """SIGTERM, wait, and return stderr's tail."""
        if self.p.poll() is None:
            self.p.terminate()
        try:
            _, err = self.p.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self.p.kill()
            _, err = self.p.communicate(timeout=10)
        self._t.join(5)
        return err[-3000:] if err else ""


def _fastp2p(node: Node, *extra: str, port: int = 4001, wildcard: bool = False) -> tuple[Proc, str]:
    """A ``fastp2p listen --mdns`` process (on ``0.0.0.0`` with ``wildcard``); its
    ``started`` is when it printed its address (mDNS is running by then)."""
    ip = "0.0.0.0" if wildcard else node.ip
    proc = Proc(node, [sys.executable, "-m", "fastp2p", "listen", "--mdns", "--addr",
                       f"/ip4/{ip}/tcp/{port}", "--data-path", "tcp", *extra])
    addr = proc.line(30)
    proc.started = proc.last_at
    assert addr.startswith(f"/ip4/{ip}/tcp/{port}/p2p/"), addr
    return proc, addr.rsplit("/", 1)[1]


def _js(node: Node, *extra: str, port: int = 4002) -> tuple[Proc, str]:
    proc = Proc(node, [shutil.which("node") or "node", str(JS_MDNS), "--listen", f"/ip4/{node.ip}/tcp/{port}", "--timeout", "100",
                       *extra])
    ev = json.loads(proc.line(60))
    assert ev["event"] == "listening", ev
    proc.started = proc.last_at
    return proc, ev["peer_id"]


@pytest.fixture
def lab() -> Iterator[NetnsLab]:
    with NetnsLab() as lab:
        yield lab


def _node(lab: NetnsLab) -> Node:
    node = lab.add_node()
    # a LAN's multicast route (js sends by the routing table; fastp2p names the interface)
    r = node.run(["ip", "route", "add", "224.0.0.0/4", "dev", "eth0"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return node


def test_three_fastp2p_nodes_discover_each_other(lab: NetnsLab) -> None:
    nodes = [_node(lab) for _ in range(3)]
    # fastp2p doctor tells the truth about the node: eth0 can take the group
    r = nodes[0].run([sys.executable, "-m", "fastp2p", "doctor", "--json"], capture_output=True,
                     text=True, env=_env(), timeout=60)
    checks = {c["name"]: c for c in json.loads(r.stdout)}
    mc = checks["multicast (mDNS)"]
    assert mc["status"] == "ok" and "eth0" in mc["detail"], mc
    procs: list[Proc] = []
    try:
        ids = []
        for i, node in enumerate(nodes):
            # default query interval (10 s): discovery must come from the start-up
            # query and the answers, not from a fast re-query
            # the last one listens on 0.0.0.0: it must announce eth0's address
            p, pid = _fastp2p(node, *(["--mdns-dial"] if i == 0 else []), wildcard=i == 2)
            procs.append(p)
            ids.append(pid)
        latencies = []
        for i, p in enumerate(procs):
            want = {pid for j, pid in enumerate(ids) if j != i}
            got: dict[str, dict[str, Any]] = {}
            while set(got) != want:
                ev = p.wait_for(lambda e: e.get("event") == "mdns:discovered", 15)
                assert ev["peer_id"] in want, ev  # never itself
                j = ids.index(ev["peer_id"])
                assert ev["addrs"] == [f"/ip4/{nodes[j].ip}/tcp/4001"], ev
                got[ev["peer_id"]] = ev
            # latency: from the later of the two nodes' start to the discovery
            latencies += [e["_at"] - max(p.started, procs[ids.index(k)].started)
                          for k, e in got.items()]
        # the first node dialled and pinged both others
        connected = set()
        while connected != set(ids[1:]):
            ev = procs[0].wait_for(lambda e: e.get("event") in ("mdns:connected", "mdns:dial_failed"), 15)
            assert ev["event"] == "mdns:connected" and ev["rtt_ms"] > 0, ev
            connected.add(ev["peer_id"])
        print(f"\nmDNS discovery latency (later node up -> discovered), 3 nodes x 2 peers: "
              f"median {statistics.median(latencies):.3f} s, max {max(latencies):.3f} s, "
              f"all {[round(x, 3) for x in sorted(latencies)]}")
        assert max(latencies) < 10.0  # found before the second query (interval 10 s)
    finally:
        errs = [p.stop() for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.p.returncode == 0, err


def _need_js() -> None:
    why = missing("js")
    if why is not None:
        pytest.skip(f"js-libp2p peer unavailable: {why}")


def test_js_discovers_and_dials_fastp2p(lab: NetnsLab) -> None:
    _need_js()
    a, b = _node(lab), _node(lab)
    fp, fp_id = _fastp2p(a)
    js, js_id = _js(b, "--dial", "--interval-ms", "10000")
    try:
        ev = js.wait_for(lambda e: e["event"] in ("discovered", "error"), 15)
        assert ev["event"] == "discovered" and ev["peer_id"] == fp_id, ev
        assert f"/ip4/{a.ip}/tcp/4001" in ev["addrs"], ev
        ping = js.wait_for(lambda e: e["event"] in ("ping", "dial_error", "error"), 15)
        assert ping["event"] == "ping" and ping["peer_id"] == fp_id, ping
        # and the fastp2p node found the js one
        found = fp.wait_for(lambda e: e.get("event") == "mdns:discovered", 15)
        assert found["peer_id"] == js_id and found["addrs"] == [f"/ip4/{b.ip}/tcp/4002"], found
        print(f"\njs-libp2p (fastp2p up first) discovered fastp2p {ev['_at'] - js.started:.3f} s after "
              f"it was up, pinged it after {ping['_at'] - js.started:.3f} s; fastp2p discovered js "
              f"{found['_at'] - js.started:.3f} s after js was up")
    finally:
        err_js, err_fp = js.stop(), fp.stop()
    assert fp.p.returncode == 0, err_fp
    assert js.p.returncode == 0, err_js


def test_fastp2p_discovers_and_dials_js(lab: NetnsLab) -> None:
    _need_js()
    a, b = _node(lab), _node(lab)
    js, js_id = _js(b, "--interval-ms", "10000")
    fp, fp_id = _fastp2p(a, "--mdns-dial")
    try:
        found = fp.wait_for(lambda e: e.get("event") == "mdns:discovered", 15)
        assert found["peer_id"] == js_id and found["addrs"] == [f"/ip4/{b.ip}/tcp/4002"], found
        conn = fp.wait_for(lambda e: e.get("event") in ("mdns:connected", "mdns:dial_failed"), 15)
        assert conn["event"] == "mdns:connected" and conn["peer_id"] == js_id and conn["rtt_ms"] > 0, conn
        inbound = js.wait_for(lambda e: e["event"] == "connection", 15)
        assert (inbound["peer_id"], inbound["direction"]) == (fp_id, "inbound"), inbound
        ident = js.wait_for(lambda e: e["event"] == "identify", 15)
        assert ident["peer_id"] == fp_id and ident["agent_version"].startswith("fastp2p/"), ident
        print(f"\nfastp2p (js up first) discovered js-libp2p {found['_at'] - fp.started:.3f} s after "
              f"it was up, connected and pinged ({conn['rtt_ms']} ms) after "
              f"{conn['_at'] - fp.started:.3f} s")
    finally:
        err_fp, err_js = fp.stop(), js.stop()
    assert fp.p.returncode == 0, err_fp
    assert js.p.returncode == 0, err_js


def test_ipv6_only_nodes_discover_each_other(lab: NetnsLab) -> None:
    """Nodes without IPv4 on eth0 find each other through ff02::fb (fastp2p only:
    js-libp2p's mDNS is IPv4-only)."""
    nodes = [lab.add_node() for _ in range(2)]
    ips = []
    for n in nodes:
        ip6 = f"fd77::{n.index}"
        for cmd in (["ip", "-4", "addr", "flush", "dev", "eth0"],
                    ["ip", "-6", "addr", "add", f"{ip6}/64", "dev", "eth0", "nodad"]):
            r = n.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                pytest.skip(f"no IPv6 in the lab's namespaces: {' '.join(cmd)}: {r.stderr.strip()}")
        ips.append(ip6)
    procs = []
    try:
        ids = []
        for n, ip6 in zip(nodes, ips, strict=True):
            p = Proc(n, [sys.executable, "-m", "fastp2p", "listen", "--mdns", "--mdns-dial",
                         "--addr", f"/ip6/{ip6}/tcp/4001", "--data-path", "tcp"])
            procs.append(p)
            addr = p.line(30)
            assert addr.startswith(f"/ip6/{ip6}/tcp/4001/p2p/"), addr
            ids.append(addr.rsplit("/", 1)[1])
        for i, p in enumerate(procs):
            other = 1 - i
            ev = p.wait_for(lambda e: e.get("event") == "mdns:discovered", 15)
            assert ev["peer_id"] == ids[other] and ev["addrs"] == [f"/ip6/{ips[other]}/tcp/4001"], ev
            conn = p.wait_for(lambda e: e.get("event") in ("mdns:connected", "mdns:dial_failed"), 15)
            assert conn["event"] == "mdns:connected", conn
    finally:
        errs = [p.stop() for p in procs]
    for p, err in zip(procs, errs, strict=True):
        assert p.p.returncode == 0, err
