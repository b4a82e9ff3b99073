"""mDNS discovery inside one bridge segment of the testbed (issue 11, section 4).

Five namespaces on one bridge, links shaped like the DHT testbed (40 +- 10 ms,
1% loss; netem, so this runs where ``tests/testbed/test_dht_testbed.py`` runs:
``ci/testbed_vm.sh``). Four are testbed workers with ``HostConfig(mdns=...)``,
listening on their bridge address; the fifth runs the real CLI,
``fastp2p listen --mdns``. Every host must discover every other one (the CLI
prints an ``mdns:discovered`` line per peer), with its bridge address.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fastp2p.testing.testbed import Testbed

from .test_dht_testbed import DELAY_MS, JITTER_MS, LOSS_PCT, _reason

pytestmark = [
    pytest.mark.skipif(_reason is not None, reason=f"DHT testbed unavailable: {_reason}"),
    pytest.mark.timeout(600),
]

ROOT = Path(__file__).resolve().parents[2]
INTERVAL = 2.0


def test_mdns_discovery_in_one_bridge_segment() -> None:
    from fastp2p.config import HostConfig, MdnsConfig, NoiseConfig

    cfg = HostConfig(data_paths=("tcp",), noise=NoiseConfig(handshake_timeout=60.0),
                     mdns=MdnsConfig(interval=INTERVAL))
    with Testbed(4, delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_pct=LOSS_PCT, config=cfg,
                 start_timeout=300) as tb:
        node = tb.lab.add_node(delay_ms=DELAY_MS, jitter_ms=JITTER_MS, loss_pct=LOSS_PCT, egress_only=True)
        env = {**os.environ, "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        cli = node.popen([sys.executable, "-m", "fastp2p", "listen", "--mdns", "--mdns-interval", str(INTERVAL),
                          "--data-path", "tcp", "--addr", f"/ip4/{node.ip}/tcp/4001", "--timeout", "500"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        assert cli.stdout is not None
        # A thread reads the CLI's lines: select() on a buffered text pipe misses lines
        # that an earlier readline() already pulled into Python's buffer (it did: the
        # CLI "found" 1 of 4 peers while the other lines sat unread in that buffer).
        lines: queue.Queue[str] = queue.Queue()

        def pump() -> None:
            assert cli.stdout is not None
            for ln in cli.stdout:
                lines.put(ln)
            lines.put("")

        threading.Thread(target=pump, daemon=True, name="cli-stdout").start()
        cli_pid = ""
        cli_found: dict[str, list[str]] = {}
        workers = {w.peer_id: w for w in tb.workers}
        found: dict[str, dict[str, list[str]]] = {}
        t0 = time.monotonic()
        deadline = t0 + 300
        while time.monotonic() < deadline:
            try:
                line: str | None = lines.get(timeout=1.0)
            except queue.Empty:
                line = None
            while line is not None:
                assert line, f"fastp2p listen --mdns exited: {cli.stderr.read() if cli.poll() is not None else ''}"
                if line.startswith("/ip4/") and "/p2p/" in line:
                    cli_pid = line.strip().rsplit("/p2p/", 1)[1]
                elif line.startswith("{"):
                    ev = json.loads(line)
                    if ev.get("event") == "mdns:discovered":
                        cli_found[ev["peer_id"]] = ev["addrs"]
                try:
                    line = lines.get_nowait()
                except queue.Empty:
                    line = None
            found = {pid: w.call("discovered", timeout=30)["peers"] for pid, w in workers.items()}
            everyone = set(workers) | ({cli_pid} if cli_pid else set())
            if cli_pid and set(cli_found) >= set(workers) and all(
                set(f) >= everyone - {pid} for pid, f in found.items()
            ):
                break
        elapsed = time.monotonic() - t0
        assert cli_pid, "the CLI printed no listen address"
        assert set(cli_found) >= set(workers), (cli_found, {workers[p].node.index: sorted(f) for p, f in found.items()})
        for pid, f in found.items():
            assert set(f) >= set(workers) - {pid} | {cli_pid}, (workers[pid].node.index, f)
        # each peer was found with its address on the bridge
        for pid, w in workers.items():
            assert any(f"/ip4/{w.node.ip}/tcp/4001" in a for a in cli_found[pid]), cli_found[pid]
        print(f"\nmDNS: 5 hosts found each other within {elapsed:.1f} s (query interval {INTERVAL} s)")
