"""What this machine and build support, and why not: ``fastp2p doctor`` and ``--version``.

Each check returns a :class:`Check`: a name, a status (``ok``, ``no`` or
``info``), what was found, and -- when something is missing -- why and how to
fix it. Checks never raise; a check that fails unexpectedly reports the
exception as its reason.

Example:

    >>> from fastp2p.doctor import run_checks
    >>> names = [c.name for c in run_checks()]
    >>> "native core" in names and "shared memory" in names
    True
"""

from __future__ import annotations

import importlib.util
import os
import resource
import select
import shutil
import socket
import ssl
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Literal

__all__ = ["Check", "run_checks", "openssl_version", "version_lines", "format_checks",
           "check_wakeup", "measure_wakeup"]

Status = Literal["ok", "no", "info"]


@dataclass(frozen=True)
class Check:
    """One line of ``fastp2p doctor``."""

    name: str
    status: Status
    detail: str
    why_not: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _accel() -> Any:
    from fastp2p import _accel

    return _accel


def openssl_version() -> tuple[str, str]:
    """(version, source): the libcrypto the native AEAD runs with, else Python's ``ssl``.

    ``source`` is ``"native aead"`` when the version came from
    ``fastp2p._native.aead.openssl_version()`` (the library fastp2p's own
    ChaCha20-Poly1305 uses, bundled in a wheel); otherwise it is
    ``ssl.OPENSSL_VERSION`` (Python's own OpenSSL, which the pure build does
    not use for frames either: it uses ``cryptography``) and says so.
    """
    try:
        if _accel().HAVE_NATIVE:
            from fastp2p._native import aead

            return str(aead.openssl_version()), "native aead"
    except (ImportError, AttributeError):
        pass
    return ssl.OPENSSL_VERSION, "Python's ssl module; the native core is not loaded"


def _native_status() -> tuple[bool, str]:
    try:
        acc = _accel()
    except ImportError as exc:
        return False, str(exc)
    if acc.HAVE_NATIVE:
        return True, ""
    if os.environ.get("FASTP2P_NO_EXTENSIONS", "") not in ("", "0"):
        return False, "FASTP2P_NO_EXTENSIONS is set: the pure-Python twins run"
    return False, str(acc.NATIVE_IMPORT_ERROR or "the native modules are missing")


def _verbs_status() -> tuple[bool, str]:
    try:
        acc = _accel()
    except ImportError as exc:
        return False, str(exc)
    if acc.HAVE_VERBS:
        return True, ""
    if not acc.HAVE_NATIVE:
        return False, "needs the native core"
    err = acc.VERBS_IMPORT_ERROR
    if err is not None and "No module named" not in str(err):
        return False, (
            f"the verbs module is present but could not be loaded ({err}); install rdma-core's "
            "libibverbs (apt-get install libibverbs1 ibverbs-providers)"
        )
    return False, (
        "this build has no verbs module (no rdma-core headers at build time: apt-get install "
        "libibverbs-dev, rebuild with FASTP2P_WITH_VERBS=1)"
    )


def version_lines() -> list[str]:
    """What ``fastp2p --version`` prints: version, native core, verbs, OpenSSL."""
    from fastp2p._version import __version__

    native, why = _native_status()
    verbs, vwhy = _verbs_status()
    ver, src = openssl_version()
    return [
        f"fastp2p {__version__}",
        f"native core: {'loaded' if native else 'not loaded (' + why + ')'}",
        f"verbs: {'loaded' if verbs else 'not loaded (' + vwhy + ')'}",
        f"OpenSSL: {ver} (from {src})",
    ]


# -- checks -------------------------------------------------------------------------------


def check_native() -> Check:
    ok, why = _native_status()
    if ok:
        return Check("native core", "ok", "C kernels loaded (fastp2p._native)")
    return Check("native core", "no", "pure-Python twins", why)


def check_openssl() -> Check:
    ver, src = openssl_version()
    detail = f"{ver} (from {src})"
    try:
        if _accel().HAVE_NATIVE:
            from fastp2p._native import aead

            # fastp2p's own kernels where the CPU has them (csrc/fp_gcm.c: VAES;
            # csrc/fp_chacha.c: AVX2, short frames)
            detail += (f"; AES-256-GCM runs on {aead.aesgcm_impl()}, "
                       f"ChaCha20-Poly1305 on {aead.chacha_impl()}")
    except (ImportError, AttributeError):
        pass
    return Check("OpenSSL", "info", detail)


def check_parallel_crypto() -> Check:
    """Whether large writes and reads are sealed/opened on the C pool by default."""
    from fastp2p.config import NoiseConfig, _usable_cpus

    cfg = NoiseConfig()
    threads = cfg.seal_threads()
    if not _accel().HAVE_NATIVE:
        return Check("parallel seal/open", "no", "serial", "pure-Python build: no C pool")
    if threads:
        return Check("parallel seal/open", "ok",
                     f"{threads} pool threads (C, GIL released) for writes of "
                     f">= {cfg.parallel_seal_min >> 10} KiB and reads of >= "
                     f"{cfg.parallel_open_min >> 10} KiB; {_usable_cpus()} usable CPUs")
    return Check("parallel seal/open", "info",
                 f"off by default: {_usable_cpus()} usable CPUs (on from 4; "
                 "NoiseConfig(parallel_seal=True) forces it)")


def check_uvloop() -> Check:
    if importlib.util.find_spec("uvloop") is None:
        return Check("uvloop", "no", "asyncio's default loop is used",
                     'not installed: pip install "fastp2p[fast]"')
    import uvloop

    return Check("uvloop", "ok", f"uvloop {getattr(uvloop, '__version__', '?')}")


def check_verbs() -> Check:
    ok, why = _verbs_status()
    if not ok:
        return Check("RDMA verbs", "no", "no RDMA data path", why)
    try:
        from fastp2p import rdma
    except ImportError as exc:  # pragma: no cover - depends on the tree
        return Check("RDMA verbs", "no", "verbs module loaded", f"fastp2p.rdma unavailable: {exc}")
    devs = rdma.devices()
    names = ", ".join(d["name"] for d in devs) or "none"
    usable, rwhy = rdma.available()
    if usable:
        return Check("RDMA verbs", "ok", f"devices: {names}")
    return Check("RDMA verbs", "no", f"devices: {names}", rwhy)


def check_hugepages() -> Check:
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            total = int(f.read().strip() or 0)
    except OSError as exc:
        return Check("huge pages", "no", "unknown", f"cannot read /proc/sys/vm/nr_hugepages: {exc}")
    free, size_kb = None, None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("HugePages_Free:"):
                    free = int(line.split()[1])
                elif line.startswith("Hugepagesize:"):
                    size_kb = int(line.split()[1])
    except OSError:
        pass
    size = f"{size_kb // 1024} MiB" if size_kb else "?"
    if total <= 0:
        return Check("huge pages", "no", f"0 reserved (page size {size})",
                     "host.alloc(..., hugepages=True) falls back to normal pages; reserve some: "
                     "echo 512 > /proc/sys/vm/nr_hugepages (as root)")
    return Check("huge pages", "ok", f"{total} reserved, {free if free is not None else '?'} free, {size} each")


def check_memlock() -> Check:
    soft, hard = resource.getrlimit(resource.RLIMIT_MEMLOCK)

    def fmt(v: int) -> str:
        return "unlimited" if v == resource.RLIM_INFINITY else f"{v // 1024} KiB"

    detail = f"soft {fmt(soft)}, hard {fmt(hard)}"
    try:
        from fastp2p.rdma import memlock_problem
    except ImportError:  # pragma: no cover
        return Check("RLIMIT_MEMLOCK", "info", detail)
    problem = memlock_problem()
    if problem is None:
        extra = "" if soft == resource.RLIM_INFINITY else " (enough for RDMA, or CAP_IPC_LOCK held)"
        return Check("RLIMIT_MEMLOCK", "ok", detail + extra)
    return Check("RLIMIT_MEMLOCK", "no", detail, problem)


def check_netns() -> Check:
    if not os.path.exists("/proc/self/ns/net"):
        return Check("network namespaces", "no", "unsupported", "/proc/self/ns/net is missing (not Linux?)")
    ip = shutil.which("ip") or next(
        (p for p in ("/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip") if os.path.exists(p)), None
    )
    if ip is None:
        return Check("network namespaces", "no", "kernel supports them",
                     "the `ip` tool is missing (apt-get install iproute2)")
    try:
        r = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return Check("network namespaces", "no", "kernel supports them", f"`ip netns list` failed: {exc}")
    if r.returncode != 0:
        return Check("network namespaces", "no", "kernel supports them",
                     f"`ip netns list` failed: {r.stderr.strip() or r.returncode}")
    if os.geteuid() != 0:
        return Check("network namespaces", "no", "`ip netns` can list",
                     "creating namespaces (`ip netns add`) needs root or CAP_SYS_ADMIN")
    n = len([ln for ln in r.stdout.splitlines() if ln.strip()])
    return Check("network namespaces", "ok", f"`ip netns` usable as root ({n} existing)")


def _multicast_interfaces() -> list[tuple[int, str]]:
    from fastp2p.services.mdns import multicast_interfaces

    return multicast_interfaces()


def check_multicast() -> Check:
    # the same interfaces and the same per-interface join (ip_mreqn by index, no
    # multicast route needed) as the mDNS driver, fastp2p.services.mdns
    ifaces = _multicast_interfaces()
    if not ifaces:
        return Check("multicast (mDNS)", "no", "no up, multicast-capable, non-loopback interface",
                     "mDNS discovery (224.0.0.251:5353) cannot reach other hosts")
    joined, failed = [], []
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        for idx, name in ifaces:
            mreqn = struct.pack("4s4si", socket.inet_aton("224.0.0.251"), b"\0\0\0\0", idx)
            try:
                s.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, mreqn)
                joined.append(name)
            except OSError as exc:
                failed.append(f"{name}: {exc}")
    finally:
        s.close()
    if not joined:
        return Check("multicast (mDNS)", "no", f"interfaces: {', '.join(n for _, n in ifaces)}",
                     f"joining 224.0.0.251 failed ({'; '.join(failed)})")
    return Check("multicast (mDNS)", "ok",
                 f"HostConfig.mdns can join 224.0.0.251 on {', '.join(joined)}")


def check_shm() -> Check:
    try:
        from fastp2p.transport import shm
    except ImportError as exc:
        return Check("shared memory", "no", "TCP only between local peers", str(exc))
    ok, why = shm.available()
    if ok:
        return Check("shared memory", "ok", "same-host peers upgrade to /fastp2p/shm/1.0.0")
    return Check("shared memory", "no", "TCP only between local peers", why)


#: the echo process of ``check_wakeup``: 64-byte messages back over the socket it
#: inherits, waiting in ``recv`` (argv "sleep") or spinning on a non-blocking one
#: for up to the budget before it waits (argv "poll"), until the parent closes
_ECHO = """
import socket, sys, time
s = socket.socket(fileno=int(sys.argv[1]))
poll, budget = sys.argv[2] == "poll", int(sys.argv[3]) * 1000
while True:
    if poll:
        end = time.monotonic_ns() + budget
        while True:
            try:
                m = s.recv(64, socket.MSG_DONTWAIT)
                break
            except BlockingIOError:
                if time.monotonic_ns() >= end:
                    m = s.recv(64)
                    break
    else:
        m = s.recv(64)
    if not m:
        break
    s.sendall(m)
"""

#: the spin budget of ``check_wakeup``'s polling half (the bench's -busypoll rows')
_WAKE_POLL_US = 200
#: how long an answer, and the echo process's end, may take before the check fails
_WAKE_TIMEOUT_S = 10.0


def _round_trips(poll: bool, rounds: int) -> list[float]:
    """``rounds`` 64-byte round trips to a fresh echo process, in microseconds."""
    a, b = socket.socketpair()
    try:
        child = subprocess.Popen(
            [sys.executable, "-c", _ECHO, str(b.fileno()), "poll" if poll else "sleep",
             str(_WAKE_POLL_US)], pass_fds=(b.fileno(),))
    except BaseException:
        a.close()
        raise
    finally:
        b.close()
    # Waits go through poll(2), as an event loop's do (and so that a stuck child
    # fails the check); not through a socket timeout, which would make
    # every recv, the polling ones included, sleep in poll(2) first.
    waiter = select.poll()
    waiter.register(a, select.POLLIN)
    msg = bytes(64)
    out = []
    try:
        for i in range(rounds + rounds // 5):  # the first fifth: warm-up, discarded
            t0 = time.perf_counter_ns()
            a.sendall(msg)
            got = 0
            while got < 64:
                end = time.perf_counter_ns() + _WAKE_POLL_US * 1000 if poll else 0
                while True:
                    try:
                        k = len(a.recv(64 - got, socket.MSG_DONTWAIT))
                        break
                    except BlockingIOError:
                        if time.perf_counter_ns() >= end and not waiter.poll(_WAKE_TIMEOUT_S * 1000):
                            raise TimeoutError(f"the echo process did not answer in {_WAKE_TIMEOUT_S} s") \
                                from None
                if not k:
                    raise ConnectionError("the echo process ended")
                got += k
            if i >= rounds // 5:
                out.append((time.perf_counter_ns() - t0) / 1000)
    finally:
        a.close()  # (the child reads EOF and ends)
        try:
            child.wait(timeout=_WAKE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    return out


def measure_wakeup(rounds: int = 2000) -> tuple[float, float]:
    """p50 of 64-byte round trips to another process, both sides sleeping and both
    polling (microseconds, to 0.1): what :func:`check_wakeup` reports."""
    sleeping = sorted(_round_trips(False, rounds))
    polling = sorted(_round_trips(True, rounds))
    return round(sleeping[len(sleeping) // 2], 1), round(polling[len(polling) // 2], 1)


def check_wakeup(rounds: int = 2000) -> Check:
    """How much of a round trip between two processes here is waking a sleeping CPU.

    Measures 64-byte round trips over a socketpair to a child process twice: with
    both sides sleeping in the kernel until a message comes (what an event loop
    does by default), then with both polling a non-blocking ``recv`` for up to
    200 us first (what ``HostConfig.busy_poll_us`` does). Their
    difference is what busy polling can save on this machine; it costs a busy
    core while request/response traffic flows. Takes about a second; not part of
    :func:`run_checks` (``fastp2p doctor --latency``). As every check, it never
    raises: a measurement that fails (a stuck echo process) is a ``no``.
    """
    try:
        s50, p50 = measure_wakeup(rounds)
    except Exception as exc:  # (as run_checks: a doctor reports, it does not crash)
        return Check("wake-up latency", "no", "not measured", f"{type(exc).__name__}: {exc}")
    detail = (f"64-byte round trip to another process: {s50:.1f} us sleeping, {p50:.1f} us "
              f"polling (p50 of {rounds})")
    if s50 >= 2 * p50 and s50 - p50 >= 10:
        detail += (f"; waking a sleeping CPU is most of it here: busy polling "
                   f"(HostConfig(busy_poll_us={_WAKE_POLL_US})) can save about {s50 - p50:.0f} us "
                   "a round trip, for a core kept busy while request/response traffic flows")
    else:
        detail += "; waking is cheap here: busy polling would save little"
    return Check("wake-up latency", "info", detail)


CHECKS: tuple[Callable[[], Check], ...] = (
    check_native,
    check_openssl,
    check_parallel_crypto,
    check_uvloop,
    check_shm,
    check_verbs,
    check_hugepages,
    check_memlock,
    check_netns,
    check_multicast,
)


def run_checks() -> list[Check]:
    """Run every check; one that raises becomes a ``no`` with the exception as reason."""
    out = []
    for fn in CHECKS:
        try:
            out.append(fn())
        except Exception as exc:  # a doctor must not crash on an odd machine
            name = fn.__name__.removeprefix("check_")
            out.append(Check(name, "no", "check failed", f"{type(exc).__name__}: {exc}"))
    return out


def format_checks(checks: list[Check]) -> str:
    """The text report: one line per check, a ``why:`` line under each ``no``."""
    width = max(len(c.name) for c in checks)
    lines = []
    for c in checks:
        lines.append(f"{c.status:<4} {c.name:<{width}}  {c.detail}")
        if c.why_not:
            lines.append(f"     {'':<{width}}  why: {c.why_not}")
    return "\n".join(lines)
