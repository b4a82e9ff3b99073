"""Network-namespace labs for tests: hosts on a private switch, with shaped links.

A :class:`NetnsLab` creates, all inside namespaces it owns (the root
namespace is never touched):

- a *switch* namespace holding a Linux bridge ``br0``;
- one namespace per node, joined to the bridge by a veth pair (``eth0`` in
  the node, ``v<N>`` on the switch), addressed ``10.77.0.<N>/24``;
- optionally ``tc`` shaping on a node's link: a token-bucket rate, and
  delay, jitter and loss with ``netem`` (the ``sch_netem`` kernel module;
  :meth:`Node.shape` raises ``RuntimeError`` where it is missing, and
  ``unavailable(netem=True)`` says so). Shaping applies to both directions
  of the link, or with ``egress_only`` to what the node sends (then a path
  between two shaped nodes crosses the shaping once per direction).

Processes run inside a node with :meth:`Node.popen`. Everything (processes,
namespaces, and with them every veth and the bridge) is removed by
:meth:`NetnsLab.close`, which the context manager calls also on failure;
namespaces left behind by a lab whose process died are removed by the next
lab. Traffic stays between addresses inside the lab's namespaces.

Needs root (``CAP_NET_ADMIN``/``CAP_SYS_ADMIN``), ``ip`` with ``netns``
support and, for shaping, ``tc`` (iproute2) with the ``tbf``/``netem``
qdiscs. Hosts without ``sch_netem`` run netem labs in a VM:
``ci/testbed_vm.sh``. :func:`unavailable` returns the reason a lab cannot run here (for
``pytest.skip``) or None.

Example::

    with NetnsLab() as lab:
        a = lab.add_node(rate_mbit=100)
        b = lab.add_node()
        srv = a.popen([sys.executable, "-m", "fastp2p", "listen", "--addr", f"/ip4/{a.ip}/tcp/4001"])
        ...
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["NetnsLab", "Node", "unavailable", "SUBNET"]

SUBNET = "10.77.0"
_PREFIX = "fastp2p-lab-"


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def unavailable(*, shaping: bool = True, netem: bool = False) -> str | None:
    """Why a lab cannot run on this machine, or None when it can.

    ``shaping``: tc with the tbf qdisc (rate); ``netem``: also the netem qdisc
    (delay, jitter, loss), which needs the kernel's ``sch_netem`` module.
    """
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "network namespaces need Linux"
    if os.geteuid() != 0:
        return "network namespaces need root (CAP_NET_ADMIN and CAP_SYS_ADMIN)"
    if shutil.which("ip") is None:
        return "the ip command (iproute2) is not installed"
    if (shaping or netem) and shutil.which("tc") is None:
        return "the tc command (iproute2) is not installed"
    probe = f"{_PREFIX}probe-{os.getpid()}-{uuid.uuid4().hex[:6]}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0:
        return f"ip netns add failed: {r.stderr.strip() or r.returncode}"
    try:
        r = _ip("-n", probe, "link", "add", "v0", "type", "veth", "peer", "name", "v1", check=False)
        if r.returncode != 0:
            return f"cannot create veth pairs: {r.stderr.strip()}"
        if shaping:
            t = subprocess.run(
                ["tc", "-n", probe, "qdisc", "add", "dev", "v0", "root", "tbf", "rate", "100mbit",
                 "burst", "64kb", "latency", "50ms"],
                capture_output=True, text=True, timeout=30,
            )
            if t.returncode != 0:
                return f"tc cannot add a tbf qdisc: {t.stderr.strip()}"
        if netem:
            t = subprocess.run(
                ["tc", "-n", probe, "qdisc", "add", "dev", "v1", "root", "netem", "delay", "1ms",
                 "1ms", "loss", "1%"],
                capture_output=True, text=True, timeout=30,
            )
            if t.returncode != 0:
                return (f"no sch_netem: this kernel cannot add a netem qdisc (delay/jitter/loss) "
                        f"({t.stderr.strip() or t.returncode}); ci/testbed_vm.sh runs netem labs in a VM")
    finally:
        _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Node:
    """One host of a lab: its namespace, address and processes."""

    lab: NetnsLab
    index: int
    ns: str
    ip: str
    procs: list[subprocess.Popen[Any]] = field(default_factory=list)

    def popen(self, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` inside this node's namespace (``ip netns exec``).

        The process is killed by :meth:`NetnsLab.close` if still running.
        """
        p: subprocess.Popen[Any] = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], **kw)
        self.procs.append(p)
        return p

    def run(self, argv: Sequence[str], **kw: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` inside the namespace to completion."""
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], **kw)

    def shape(self, *, rate_mbit: float | None = None, delay_ms: float | None = None,
              jitter_ms: float | None = None, loss_pct: float | None = None,
              egress_only: bool = False) -> None:
        """Shape this node's link (replaces earlier shaping).

        Both directions, or with ``egress_only`` only what the node sends.
        ``delay_ms``/``jitter_ms``/``loss_pct`` need netem; ``loss_pct=100``
        black-holes the link (a host that vanished without closing anything).
        """
        self.lab._shape(self, rate_mbit, delay_ms, jitter_ms, loss_pct, egress_only)

    def kill(self) -> None:
        """SIGKILL every process started in this node and close its pipes."""
        for p in self.procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGKILL)
        for p in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            for pipe in (p.stdin, p.stdout, p.stderr):
                if pipe is not None:
                    with contextlib.suppress(OSError):
                        pipe.close()


class NetnsLab:
    """A private switched network of namespaces; use as a context manager."""

    def __init__(self) -> None:
        reason = unavailable(shaping=False)
        if reason is not None:
            raise RuntimeError(f"network namespaces unavailable: {reason}")
        self.id = f"{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.switch = f"{_PREFIX}{self.id}-sw"
        self.nodes: list[Node] = []
        self._namespaces: list[str] = []
        self._closed = False
        _remove_stale()
        try:
            self._add_ns(self.switch)
            self._ipn(self.switch, "link", "add", "br0", "type", "bridge")
            self._ipn(self.switch, "link", "set", "br0", "up")
        except BaseException:
            self.close()
            raise

    # -- building ---------------------------------------------------------------------

    def _ipn(self, ns: str, *args: str) -> None:
        r = _ip("-n", ns, *args, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ip -n {ns} {' '.join(args)}: {r.stderr.strip()}")

    def _add_ns(self, name: str) -> None:
        r = _ip("netns", "add", name, check=False)
        if r.returncode != 0:
            raise RuntimeError(f"ip netns add {name}: {r.stderr.strip()}")
        self._namespaces.append(name)
        self._ipn(name, "link", "set", "lo", "up")

    def add_node(self, *, rate_mbit: float | None = None, delay_ms: float | None = None,
                 jitter_ms: float | None = None, loss_pct: float | None = None,
                 egress_only: bool = False) -> Node:
        """A new namespace on the switch, addressed ``10.77.0.<index>``."""
        index = len(self.nodes) + 1
        if index > 250:
            raise ValueError("a lab holds at most 250 nodes")
        ns = f"{_PREFIX}{self.id}-n{index}"
        self._add_ns(ns)
        self._ipn(self.switch, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0",
                  "netns", ns)
        self._ipn(self.switch, "link", "set", f"v{index}", "master", "br0")
        self._ipn(self.switch, "link", "set", f"v{index}", "up")
        ip = f"{SUBNET}.{index}"
        self._ipn(ns, "addr", "add", f"{ip}/24", "dev", "eth0")
        self._ipn(ns, "link", "set", "eth0", "up")
        node = Node(self, index, ns, ip)
        self.nodes.append(node)
        if rate_mbit or delay_ms or jitter_ms or loss_pct:
            node.shape(rate_mbit=rate_mbit, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                       egress_only=egress_only)
        return node

    def _shape(self, node: Node, rate_mbit: float | None, delay_ms: float | None,
               jitter_ms: float | None, loss_pct: float | None, egress_only: bool = False) -> None:
        if jitter_ms and not delay_ms:
            raise ValueError("jitter_ms needs delay_ms (netem varies the delay by the jitter)")
        links = [(node.ns, "eth0"), (self.switch, f"v{node.index}")]
        for ns, dev in links[:1] if egress_only else links:
            subprocess.run(["tc", "-n", ns, "qdisc", "del", "dev", dev, "root"],
                           capture_output=True, timeout=30)
            parent = ["root"]
            if delay_ms or loss_pct:
                # netem's own rate, not a tbf child: one qdisc shapes all of it
                netem = ["netem"]
                if delay_ms:
                    netem += ["delay", f"{delay_ms}ms"]
                    if jitter_ms:
                        netem += [f"{jitter_ms}ms"]
                if loss_pct:
                    netem += ["loss", f"{loss_pct}%"]
                if rate_mbit:
                    netem += ["rate", f"{rate_mbit}mbit"]
                cmd = ["tc", "-n", ns, "qdisc", "add", "dev", dev, "root", "handle", "1:", *netem]
            elif rate_mbit:
                # burst: at least one timer tick's worth of bytes at this rate
                burst = max(64 * 1024, int(rate_mbit * 1e6 / 8 / 250))
                cmd = ["tc", "-n", ns, "qdisc", "add", "dev", dev, *parent, "tbf",
                       "rate", f"{rate_mbit}mbit", "burst", str(burst), "latency", "100ms"]
            else:
                continue
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)}: {r.stderr.strip()}")

    # -- teardown ---------------------------------------------------------------------

    def close(self) -> None:
        """Kill every process, delete every namespace (and so every link). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for node in self.nodes:
            node.kill()
        for ns in reversed(self._namespaces):
            _ip("netns", "del", ns, check=False)
        self._namespaces.clear()

    def __enter__(self) -> NetnsLab:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _remove_stale() -> None:
    """Delete namespaces of labs whose process no longer exists."""
    r = _ip("netns", "list", check=False)
    for line in r.stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(_PREFIX):
            continue
        rest = name[len(_PREFIX):]
        pid_s = rest.split("-", 1)[0]
        if not pid_s.isdigit():
            continue
        pid = int(pid_s)
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            _ip("netns", "del", name, check=False)
        except PermissionError:
            pass
