"""mDNS peer discovery driver: multicast UDP around :class:`fastp2p.proto.mdns.MdnsState`.

One IPv4 UDP socket bound to ``0.0.0.0:5353`` and (``MdnsConfig.ipv6``, where
the machine has IPv6) one IPv6 socket bound to ``[::]:5353``, both with
``SO_REUSEADDR`` and ``SO_REUSEPORT`` (other responders on this machine, e.g.
Avahi or a js-libp2p node, keep working), joined to ``224.0.0.251`` and
``ff02::fb`` on every interface that is up, multicast-capable and not loopback
(or on ``MdnsConfig.interfaces``). Joins name the interface by index
(``ip_mreqn``, ``ipv6_mreq``) and each multicast datagram is sent once per
joined interface and family (``IP_MULTICAST_IF``, the IPv6 scope id), so no
multicast route is needed. The interface list is re-read at every query, so
interfaces that come up later are joined then. Both families carry the same
answer (all our addresses); js-libp2p's ``@libp2p/mdns`` uses IPv4 only.

The host's listen addresses are announced with wildcards (``0.0.0.0``,
``::``) expanded to the interfaces' addresses. Discoveries go to the
callback the Host passes (peerstore, ``host.on_peer_discovered``) and, with
``MdnsConfig.auto_dial``, are dialled. Everything is released by
:meth:`Mdns.close` (a goodbye is multicast first, RFC 6762 section 10.1).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from fastp2p.errors import P2PError
from fastp2p.metrics import MetricFamily
from fastp2p.multiaddr import Multiaddr
from fastp2p.peerstore import PeerInfo
from fastp2p.proto.mdns import MDNS_GROUP_V4, MDNS_GROUP_V6, Discovery, MdnsState, Send

if TYPE_CHECKING:
    from fastp2p.config import MdnsConfig
    from fastp2p.peer import PeerID
    from fastp2p.services.base import ServiceHost

__all__ = ["Mdns", "multicast_interfaces", "interface_addresses"]

log = logging.getLogger("fastp2p.mdns")

_IFF_UP, _IFF_LOOPBACK, _IFF_MULTICAST = 0x1, 0x8, 0x1000
_SIOCGIFADDR = 0x8915
MAX_DATAGRAMS_PER_WAKEUP = 64  # then yield to the loop (a flood cannot starve it)
RECV_SIZE = 9000 + 1  # one more than the largest mDNS message, so larger ones are seen as such
MAX_DIALS = 16  # concurrent auto-dials


def _flags(name: str) -> int:
    try:
        with open(f"/sys/class/net/{name}/flags") as f:
            return int(f.read().strip(), 16)
    except (OSError, ValueError):
        return 0


def multicast_interfaces(names: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """``(index, name)`` of the interfaces to join: ``names`` if given (those that
    exist), else every one that is up, multicast-capable and not loopback (Linux)."""
    try:
        all_ifs = socket.if_nameindex()
    except OSError:
        return []
    if names:
        return [(i, n) for i, n in all_ifs if n in names]
    out = []
    for i, n in all_ifs:
        fl = _flags(n)
        if fl & _IFF_UP and fl & _IFF_MULTICAST and not fl & _IFF_LOOPBACK:
            out.append((i, n))
    return out


def _ipv4_of(name: str) -> str | None:
    try:
        import fcntl
    except ImportError:
        return None
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            res = fcntl.ioctl(s.fileno(), _SIOCGIFADDR, struct.pack("256s", name.encode()[:15]))
        except OSError:
            return None
    return socket.inet_ntoa(res[20:24])


def _ipv6_addrs() -> list[tuple[str, str]]:
    """(address, interface) of global-scope IPv6 addresses, from /proc/net/if_inet6."""
    out = []
    try:
        with open("/proc/net/if_inet6") as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 6 and parts[3] == "00":  # scope global
                    raw = bytes.fromhex(parts[0])
                    out.append((socket.inet_ntop(socket.AF_INET6, raw), parts[5]))
    except OSError:
        pass
    return out


def interface_addresses() -> tuple[list[str], list[str]]:
    """IPv4 and IPv6 addresses of the up, non-loopback interfaces (what ``0.0.0.0``/``::`` mean)."""
    v4, v6 = [], []
    for _, name in multicast_interfaces():
        ip = _ipv4_of(name)
        if ip is not None:
            v4.append(ip)
    up = {n for _, n in multicast_interfaces()}
    v6 = [a for a, n in _ipv6_addrs() if n in up]
    return v4, v6


def expand_wildcards(addrs: list[Multiaddr],
                     local: tuple[list[str], list[str]] | None = None) -> list[Multiaddr]:
    """``addrs`` with ``/ip4/0.0.0.0`` and ``/ip6/::`` replaced by this machine's
    addresses (``local``: :func:`interface_addresses`, read when None)."""
    out: list[Multiaddr] = []
    v4: list[str] | None = None
    v6: list[str] = []
    for a in addrs:
        text = str(a)
        if text.startswith(("/ip4/0.0.0.0/", "/ip6/::/")):
            if v4 is None:
                v4, v6 = local if local is not None else interface_addresses()
            if text.startswith("/ip4/"):
                out += [Multiaddr(f"/ip4/{ip}/" + text[len("/ip4/0.0.0.0/"):]) for ip in v4]
            else:
                out += [Multiaddr(f"/ip6/{ip}/" + text[len("/ip6/::/"):]) for ip in v6]
        else:
            out.append(a)
    return out


class Mdns:
    """The mDNS service of one host (``HostConfig.mdns``)."""

    def __init__(self, host: ServiceHost, config: MdnsConfig,
                 on_discovery: Callable[[PeerID, list[Multiaddr]], None]) -> None:
        self.host = host
        self.config = config
        self._on_discovery = on_discovery
        self.state = MdnsState(host.peer_id, time.monotonic(), service=config.service_name,
                               peer_name=config.peer_name, interval=config.interval, ttl=config.ttl,
                               port=config.port, max_peers=config.max_peers,
                               loopback=config.loopback)
        #: one socket per address family (AF_INET always, AF_INET6 with ``config.ipv6``)
        self._socks: dict[int, socket.socket] = {}
        #: per family: interface index -> name of the interfaces whose group we joined
        self._joined: dict[int, dict[int, str]] = {}
        #: this machine's addresses (for wildcard listen addresses), re-read at each query
        self._local: tuple[list[str], list[str]] = ([], [])
        self._task: asyncio.Task[Any] | None = None
        self._wake = asyncio.Event()
        self._dials: set[PeerID] = set()
        self._closed = False
        #: datagrams received / malformed / sent (tests and logs)
        self.received = 0
        self.malformed = 0
        self.sent = 0

    # -- lifecycle --------------------------------------------------------------------

    async def start(self) -> None:
        """Open the sockets, join the groups, start querying.

        Raises:
            OSError: the IPv4 socket cannot bind the mDNS port. (An IPv6 one
                that cannot is logged and left out.)
        """
        loop = asyncio.get_running_loop()
        self._socks[socket.AF_INET] = self._open(socket.AF_INET)
        if self.config.ipv6 and socket.has_ipv6:
            try:
                self._socks[socket.AF_INET6] = self._open(socket.AF_INET6)
            except OSError as exc:
                log.info("mDNS: no IPv6 (%s); IPv4 only", exc)
        self._refresh_interfaces()
        for fam, sock in self._socks.items():
            loop.add_reader(sock.fileno(), self._on_readable, fam)
        self._task = self.host.spawn(self._run())
        registry = getattr(self.host, "metrics_registry", None)
        if registry is not None:
            registry.add_collector(self._collect)
        log.info("mDNS on port %s, interfaces %s, as %s", self.config.port,
                 ", ".join(self.interfaces) or "none", self.state.instance)
        self._update_addrs()
        if not self.state.addrs:
            log.warning("mDNS: no address to announce (loopback ones are left out; listen on "
                        "0.0.0.0 or a LAN address); discovering others only")

    def _open(self, family: int) -> socket.socket:
        sock = socket.socket(family, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if hasattr(socket, "SO_REUSEPORT"):
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 255)
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
                sock.bind(("", self.config.port))
            else:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_HOPS, 255)
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_LOOP, 1)
                sock.bind(("::", self.config.port))
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        return sock

    def close(self) -> None:
        """Say goodbye, close the sockets, stop the timer task. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._socks:
            with contextlib.suppress(P2PError, OSError):
                self._update_addrs()
                bye = self.state.goodbye()
                if bye is not None:
                    self._send(bye)
        for sock in self._socks.values():
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(sock.fileno())
            sock.close()
        self._socks.clear()
        if self._task is not None:
            self._task.cancel()
        registry = getattr(self.host, "metrics_registry", None)
        if registry is not None:
            registry.remove_collector(self._collect)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` ran (every socket is closed then)."""
        return self._closed and not self._socks

    def _collect(self) -> list[MetricFamily]:
        st = self.state
        return [
            MetricFamily("fastp2p_mdns_datagrams_total", "counter",
                         "mDNS datagrams by what happened to them.", ("kind",),
                         {("received",): self.received, ("malformed",): self.malformed,
                          ("sent",): self.sent, ("rate_limited",): st.rate_limited}),
            MetricFamily("fastp2p_mdns_peers", "gauge", "Peers mDNS currently knows (not expired).",
                         (), {(): len(st.peers())}),
        ]

    @property
    def interfaces(self) -> list[str]:
        """Names of the interfaces joined (in either family)."""
        return list(dict.fromkeys(n for j in self._joined.values() for n in j.values()))

    def joined(self, family: int) -> list[str]:
        """Names of the interfaces whose group of ``family`` (``socket.AF_INET[6]``) we joined."""
        return list(self._joined.get(family, {}).values())

    # -- sockets ----------------------------------------------------------------------

    def _refresh_interfaces(self) -> None:
        self._local = interface_addresses()
        current = dict(multicast_interfaces(tuple(self.config.interfaces)))
        for fam, sock in self._socks.items():
            joined = self._joined.setdefault(fam, {})
            for idx in [i for i in joined if i not in current]:
                del joined[idx]  # gone: the kernel dropped the membership with it
            for idx, name in current.items():
                if idx in joined:
                    continue
                if fam == socket.AF_INET:
                    level, opt = socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP
                    req = struct.pack("4s4si", socket.inet_aton(MDNS_GROUP_V4), b"\0\0\0\0", idx)
                else:
                    level, opt = socket.IPPROTO_IPV6, socket.IPV6_JOIN_GROUP
                    req = struct.pack("16sI", socket.inet_pton(socket.AF_INET6, MDNS_GROUP_V6), idx)
                try:
                    sock.setsockopt(level, opt, req)
                except OSError as exc:
                    if exc.errno != errno.EADDRINUSE:  # EADDRINUSE: already a member
                        log.debug("mDNS: cannot join the group on %s (%s): %s", name, fam, exc)
                        continue
                joined[idx] = name

    def _send(self, msg: Send, reply_to: Any = None) -> None:
        """Multicast ``msg`` on every joined interface of every family, or send it
        to its ``dest`` (``reply_to``: the sender's full address, for IPv6 scopes)."""
        try:
            if msg.dest is not None:
                to = self._socks.get(socket.AF_INET6 if ":" in msg.dest[0] else socket.AF_INET)
                if to is not None:
                    to.sendto(msg.data, reply_to if reply_to is not None else msg.dest)
                    self.sent += 1
                return
            for fam, sock in self._socks.items():
                for idx in list(self._joined.get(fam, {})):
                    if fam == socket.AF_INET:
                        sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF,
                                        struct.pack("4s4si", b"\0\0\0\0", b"\0\0\0\0", idx))
                        sock.sendto(msg.data, (MDNS_GROUP_V4, self.config.port))
                    else:
                        sock.sendto(msg.data, (MDNS_GROUP_V6, self.config.port, 0, idx))
                    self.sent += 1
        except OSError as exc:  # full buffer, interface gone or unaddressed: the next query retries
            log.debug("mDNS send failed: %s", exc)

    def _update_addrs(self) -> None:
        # wildcards expand to the addresses read at the last query (no syscalls per datagram)
        self.state.set_addrs(expand_wildcards(list(self.host.addrs), self._local))

    def _on_readable(self, family: int) -> None:
        sock = self._socks.get(family)
        if sock is None:
            return
        updated = False
        for _ in range(MAX_DATAGRAMS_PER_WAKEUP):
            try:
                data, src = sock.recvfrom(RECV_SIZE)
            except (BlockingIOError, InterruptedError):
                break
            except OSError as exc:
                log.debug("mDNS recv failed: %s", exc)
                break
            self.received += 1
            if not updated:
                self._update_addrs()
                updated = True
            try:
                sends, found = self.state.receive(data, (src[0], src[1]), time.monotonic())
            except P2PError as exc:  # DnsError (the fuzz tests allow no other kind)
                self.malformed += 1
                log.debug("mDNS: malformed datagram from %s: %s", src, exc)
                continue
            for s in sends:
                self._send(s, src if s.dest is not None else None)
            for d in found:
                self._discovered(d)
        self._wake.set()  # a held-back answer may now be due

    # -- discoveries ------------------------------------------------------------------

    def _discovered(self, d: Discovery) -> None:
        log.info("mDNS discovered %s at %s", d.peer_id, " ".join(map(str, d.addrs)))
        self._on_discovery(d.peer_id, list(d.addrs))
        if (self.config.auto_dial and d.peer_id not in self._dials and len(self._dials) < MAX_DIALS
                and self.host.connection(d.peer_id) is None):
            self._dials.add(d.peer_id)
            self.host.spawn(self._dial(d))

    async def _dial(self, d: Discovery) -> None:
        try:
            await self.host.connect(PeerInfo(d.peer_id, d.addrs))
        except (P2PError, OSError, TimeoutError) as exc:
            log.info("mDNS: dialling %s failed: %s", d.peer_id, exc)
        finally:
            self._dials.discard(d.peer_id)

    async def _run(self) -> None:
        while not self._closed:
            now = time.monotonic()
            before = self.state.queries_sent
            self._update_addrs()
            for s in self.state.poll(now):
                if self.state.queries_sent != before:
                    self._refresh_interfaces()  # once per query: join interfaces that came up
                    before = self.state.queries_sent
                self._send(s)
            delay = max(0.0, self.state.next_deadline() - time.monotonic())
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()

