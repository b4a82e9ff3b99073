"""fastp2p.testing.netns: labs build, shape, connect and always clean up."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fastp2p.testing.netns import NetnsLab, unavailable

_reason = unavailable(shaping=True)
pytestmark = pytest.mark.skipif(_reason is not None, reason=f"netns lab unavailable: {_reason}")

_ECHO_SERVER = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 5000)); s.listen(1); print("up", flush=True)
c, _ = s.accept(); c.sendall(c.recv(100).upper()); c.close()
"""
_ECHO_CLIENT = """
import socket, sys
c = socket.create_connection((sys.argv[1], 5000), timeout=10); c.sendall(b"hello"); print(c.recv(100).decode())
"""


def _namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.split()}


def test_nodes_talk_over_the_switch_and_everything_is_removed() -> None:
    before = _namespaces()
    with NetnsLab() as lab:
        a = lab.add_node(rate_mbit=50)
        b = lab.add_node()
        assert (a.ip, b.ip) == ("10.77.0.1", "10.77.0.2")
        assert _namespaces() - before == {lab.switch, a.ns, b.ns}
        qd = subprocess.run(["tc", "-n", a.ns, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True)
        assert "tbf" in qd.stdout and "50Mbit" in qd.stdout
        srv = a.popen([sys.executable, "-c", _ECHO_SERVER, a.ip], stdout=subprocess.PIPE, text=True)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        r = b.run([sys.executable, "-c", _ECHO_CLIENT, a.ip], capture_output=True, text=True, timeout=30)
        assert r.stdout.strip() == "HELLO", r.stderr
        slow = b.popen([sys.executable, "-c", "import time; time.sleep(600)"])
    assert _namespaces() == before
    assert slow.poll() is not None and srv.poll() is not None


def test_cleanup_on_failure_and_stale_labs_removed() -> None:
    before = _namespaces()
    with pytest.raises(RuntimeError, match="boom"):
        with NetnsLab() as lab:
            lab.add_node()
            raise RuntimeError("boom")
    assert _namespaces() == before
    # a lab whose process died: its namespaces are removed by the next lab
    stale = "fastp2p-lab-999999999-dead00-sw"
    subprocess.run(["ip", "netns", "add", stale], check=True)
    try:
        with NetnsLab():
            assert stale not in _namespaces()
    finally:
        subprocess.run(["ip", "netns", "del", stale], capture_output=True)
    assert _namespaces() == before


def test_netem_shaping_or_the_reason_it_is_missing() -> None:
    """Where sch_netem exists, delay/jitter/loss land on the link; elsewhere the reason says so."""
    reason = unavailable(netem=True)
    if reason is not None:
        assert "no sch_netem" in reason and "ci/testbed_vm.sh" in reason, reason
        with NetnsLab() as lab:
            with pytest.raises(RuntimeError, match="netem"):
                lab.add_node(delay_ms=40, jitter_ms=10, loss_pct=1)
        return
    with NetnsLab() as lab:
        a = lab.add_node(delay_ms=40, jitter_ms=10, loss_pct=1, egress_only=True)
        out = subprocess.run(["tc", "-n", a.ns, "qdisc", "show", "dev", "eth0"], capture_output=True, text=True)
        assert "netem" in out.stdout and "delay 40ms  10ms" in out.stdout and "loss 1%" in out.stdout
        sw = subprocess.run(["tc", "-n", lab.switch, "qdisc", "show", "dev", f"v{a.index}"],
                            capture_output=True, text=True)
        assert "netem" not in sw.stdout  # egress_only: the switch side is not shaped
        with pytest.raises(ValueError, match="jitter_ms needs delay_ms"):
            a.shape(jitter_ms=5)
