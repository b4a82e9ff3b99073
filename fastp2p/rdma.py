"""RDMA support in this process: what exists, and why not.

``available() -> (bool, reason)`` says whether the RDMA data path can be used
here; when it cannot, ``reason`` names the cause and the fix:

- fastp2p was built without the verbs module (no rdma-core headers),
- libibverbs finds no device,
- no port is ACTIVE,
- a RoCE port has no RoCE v2 GID (its netdev has no IP address),
- ``RLIMIT_MEMLOCK`` is below what the path pins (and the process lacks
  CAP_IPC_LOCK).

``devices()`` lists devices with their ports and GIDs. ``open_device()``
returns the process-wide :class:`RdmaDevice` (context, protection domain,
chosen port, GID, MTU) that every RDMA connection of the process shares; the
protection domain caches registrations of ``MemoryRegion`` objects (lazily, once per
region, never per message).

``FASTP2P_RDMA_DEVICE`` (a device name, e.g. ``rxe0``) picks the device;
``FASTP2P_RDMA_PORT`` the port (default: the first active one).

Trying it on an ordinary Linux machine (Soft-RoCE, no RDMA NIC)::

    apt-get install libibverbs-dev rdma-core ibverbs-providers   # headers + rxe provider
    FASTP2P_WITH_VERBS=1 pip install -e .                         # builds fastp2p._native.verbs
    modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0  # needs a kernel with rdma_rxe
    ulimit -l unlimited                                           # or run as root
    python -c "import fastp2p.rdma as r; print(r.available())"

Two hosts then upgrade their connections by themselves (``HostConfig.data_paths``
defaults to ``("rdma", "shm", "tcp")``); peers on one host keep shared memory
unless ``RdmaConfig(same_host="rdma")``. ``conn.data_path`` says which path a
connection uses and ``conn.data_path_reason`` why not a faster one. Where the
kernel has no rdma_rxe (containers, this project's sandbox), the QEMU guest of
``../shared/rdma-vm`` provides one: ``ci/rdma_tests.sh`` runs the RDMA tests there
and ``python -m fastp2p.benchsuite.rdma`` benchmarks against perftest.
"""

from __future__ import annotations

import atexit
import os
import resource
import threading
from typing import Any

from fastp2p import _accel
from fastp2p.errors import RDMAError, TransportUnavailableError
from fastp2p.rdma_errors import (
    CompletionError,
    FlushError,
    LocalProtectionError,
    RemoteAccessError,
    RemoteOperationError,
    RetryExceededError,
    RNRRetryExceededError,
    completion_error,
)

__all__ = [
    "available",
    "devices",
    "open_device",
    "RdmaDevice",
    "MIN_MEMLOCK",
    "CompletionError",
    "FlushError",
    "LocalProtectionError",
    "RemoteAccessError",
    "RemoteOperationError",
    "RetryExceededError",
    "RNRRetryExceededError",
    "completion_error",
]

#: Bytes one RDMA connection pins at least (receive + send slabs, defaults) with margin.
MIN_MEMLOCK = 32 * 1024 * 1024

_MEMLOCK_FIX = (
    "raise it: `ulimit -l unlimited` in the shell, LimitMEMLOCK=infinity in a systemd "
    "unit, `--ulimit memlock=-1:-1` for docker, or `* - memlock unlimited` in "
    "/etc/security/limits.conf"
)


def _verbs() -> Any:
    from fastp2p._native import verbs

    return verbs


def _has_ipc_lock() -> bool:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << 14))
    except (OSError, ValueError, IndexError):
        pass
    return False


def memlock_problem(need: int = MIN_MEMLOCK) -> str | None:
    """Why RLIMIT_MEMLOCK is too low to pin ``need`` bytes (with the fix), or None."""
    soft, _hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= need or _has_ipc_lock():
        return None
    return f"RLIMIT_MEMLOCK is {soft} bytes, below the {need} bytes RDMA pins; {_MEMLOCK_FIX}"


def devices() -> list[dict[str, Any]]:
    """Every RDMA device with its ports: state, MTU, link layer and GIDs.

    Empty when fastp2p has no verbs module or libibverbs sees no device.
    """
    if not _accel.HAVE_VERBS:
        return []
    v = _verbs()
    out = []
    for name in v.devices():
        try:
            with v.Context(name) as ctx:
                dev = ctx.query_device()
                ports = []
                for port in range(1, dev["phys_port_cnt"] + 1):
                    pa = ctx.query_port(port)
                    try:
                        gids = ctx.gids(port)
                    except RDMAError:
                        gids = []
                    ports.append({"port": port, **pa, "gids": gids})
                out.append({"name": name, "device": dev, "ports": ports})
        except RDMAError as exc:
            out.append({"name": name, "error": str(exc), "ports": []})
    return out


def _pick_port(ctx: Any, want: int | None) -> tuple[int, str]:
    nports = ctx.query_device()["phys_port_cnt"]
    ports = [want] if want else list(range(1, nports + 1))
    for port in ports:
        if ctx.query_port(port)["active"]:
            return port, ""
    return 0, f"RDMA device {ctx.name}: no ACTIVE port (link down, or its netdev is down)"


def available(device: str | None = None) -> tuple[bool, str]:
    """Whether this process can use the RDMA data path, and why not (with the fix)."""
    if not _accel.HAVE_VERBS:
        imp = _accel.VERBS_IMPORT_ERROR
        if _accel.HAVE_NATIVE is False:
            return False, "RDMA needs the native core (FASTP2P_NO_EXTENSIONS is set)"
        return False, (
            "fastp2p was built without RDMA verbs support (no rdma-core headers at build time: "
            "apt-get install libibverbs-dev, then rebuild with FASTP2P_WITH_VERBS=1)"
            + (f"; import error: {imp}" if imp and "No module named" not in str(imp) else "")
        )
    v = _verbs()
    try:
        names = v.devices()
    except RDMAError as exc:
        return False, f"libibverbs cannot list devices: {exc}"
    device = device or os.environ.get("FASTP2P_RDMA_DEVICE") or None
    if not names:
        return False, (
            "no RDMA device (libibverbs found none: no RDMA NIC or provider library, or a kernel "
            "without rdma_rxe/siw; for Soft-RoCE: `modprobe rdma_rxe; rdma link add rxe0 type rxe "
            "netdev eth0`, see ci/setup_soft_roce.sh)"
        )
    if device is not None and device not in names:
        return False, f"RDMA device {device!r} not found (have: {', '.join(names)})"
    try:
        with v.Context(device or names[0]) as ctx:
            port, why = _pick_port(ctx, _env_port())
            if not port:
                return False, why
            try:
                ctx.pick_gid(port)
            except RDMAError as exc:
                return False, str(exc)
    except RDMAError as exc:
        return False, f"cannot open RDMA device: {exc}"
    mem = memlock_problem()
    if mem is not None:
        return False, mem
    return True, ""


def _env_port() -> int | None:
    p = os.environ.get("FASTP2P_RDMA_PORT")
    return int(p) if p else None


class RdmaDevice:
    """One opened device shared by the process: context, PD, port, GID, MTU."""

    def __init__(self, name: str | None = None) -> None:
        v = _verbs()
        names = v.devices()
        if not names:
            raise TransportUnavailableError(available()[1])
        self.ctx = v.Context(name or names[0])
        try:
            self.name: str = self.ctx.name
            self.port, why = _pick_port(self.ctx, _env_port())
            if not self.port:
                raise TransportUnavailableError(why)
            self.gid_index, self.gid, self.roce = self.ctx.pick_gid(self.port)
            pa = self.ctx.query_port(self.port)
            self.mtu: int = pa["active_mtu"]
            self.lid: int = pa["lid"]
            self.attrs = self.ctx.query_device()
            self.max_rd_atomic = max(1, min(16, self.attrs["max_qp_rd_atom"]))
            self.pd = self.ctx.alloc_pd()
        except BaseException:
            self.ctx.close()
            raise
        self.sgid_index = self.gid_index if self.roce or self.lid == 0 else -1

    def registration(self, region: Any) -> Any:
        """The cached local registration of ``region`` (lazy, once per region)."""
        return self.pd.registration(region)

    def close(self) -> None:
        self.ctx.close()

    def __repr__(self) -> str:
        return f"<RdmaDevice {self.name} port {self.port} gid[{self.gid_index}]>"


_devices: dict[str | None, RdmaDevice] = {}
_lock = threading.Lock()


def open_device(name: str | None = None) -> RdmaDevice:
    """The process-wide :class:`RdmaDevice` for ``name`` (opened on first use).

    Raises:
        TransportUnavailableError: no verbs module, no device or no active port.
        RDMAError: a verbs call failed.
    """
    if not _accel.HAVE_VERBS:
        raise TransportUnavailableError(available()[1])
    name = name or os.environ.get("FASTP2P_RDMA_DEVICE") or None
    with _lock:
        dev = _devices.get(name)
        if dev is None or dev.ctx.closed:
            dev = _devices[name] = RdmaDevice(name)
        return dev


@atexit.register
def _close_devices() -> None:
    for dev in list(_devices.values()):
        try:
            dev.close()
        except Exception:  # noqa: BLE001 - best effort at exit
            pass
    _devices.clear()
