"""libp2p mDNS peer discovery (``_p2p._udp.local``), as a sans-IO state machine.

What it does (specs/libp2p-mdns.md, RFC 6762):

- **Query**: at start and then every ``interval`` seconds, a question
  ``<service> PTR`` to the multicast group.
- **Answer**: to a question for ``<service> PTR`` (or ANY), the answer
  ``<service> PTR <peer-name>.<service>`` with, as additional records, a TXT
  record of ``dnsaddr=<multiaddr>/p2p/<id>`` strings, an SRV record for the
  first TCP port and the A/AAAA records of ``<peer-name>.p2p.local``. The
  direct questions the spec's "Gotchas" list (SRV/TXT of the instance,
  A/AAAA of the host name) and the DNS-SD meta query are answered too. A
  peer answers its own queries (others listen passively). Multicast answers
  are sent at most once a second (RFC 6762 section 6); one asked for sooner
  is sent when that second is over, not dropped. A query from a port other
  than the mDNS port is a "legacy unicast" one (RFC 6762 section 6.7): it is
  answered to its sender only, echoing its id and question, with TTL 10.
  Direct-question and legacy answers are rate-limited together
  (:data:`DIRECT_ANSWER_RATE`), so a query flood cannot make us a traffic source.
- **Discover**: every response (from the mDNS port) whose answers or
  additionals hold ``<service> PTR <instance>`` and TXT records of that
  instance with ``dnsaddr=`` strings yields a :class:`Discovery` (peer id and
  addresses without ``/p2p``), unless it is our own. A peer is reported again
  only when its addresses change or after its record expired (TTL); a TTL of
  0 ("goodbye") forgets it. Loopback and unspecified addresses are neither
  sent nor accepted (the spec's "Issues").

State is bounded: at most ``max_peers`` peers are remembered (the least
recently heard is forgotten first), ``MAX_ADDRS`` addresses per peer.
Malformed datagrams raise :class:`~fastp2p.errors.DnsError` from
:meth:`MdnsState.receive` and change nothing.

The driver (``fastp2p/services/mdns.py``) feeds datagrams to :meth:`receive`,
calls :meth:`poll` at :meth:`next_deadline`, and sends every :class:`Send`.
"""

from __future__ import annotations

import ipaddress
import secrets
import string
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass

from fastp2p.errors import DnsError, MultiaddrError
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID
from fastp2p.proto import dns

__all__ = [
    "SERVICE_NAME", "META_QUERY", "HOST_DOMAIN", "MDNS_PORT", "MDNS_GROUP_V4", "MDNS_GROUP_V6",
    "DEFAULT_INTERVAL", "DEFAULT_TTL", "Discovery", "Send", "MdnsState", "random_peer_name",
    "query_message", "parse_response",
]

SERVICE_NAME = "_p2p._udp.local"
META_QUERY = "_services._dns-sd._udp.local"
HOST_DOMAIN = "p2p.local"
MDNS_PORT = 5353
MDNS_GROUP_V4 = "224.0.0.251"
MDNS_GROUP_V6 = "ff02::fb"
DEFAULT_INTERVAL = 10.0  # js-libp2p @libp2p/mdns
DEFAULT_TTL = 120  # RFC 6762 section 10: records with host names or addresses
LEGACY_TTL = 10  # RFC 6762 section 6.7
MIN_MULTICAST_GAP = 1.0  # RFC 6762 section 6: one multicast of a record per second
#: direct-question and legacy unicast answers: a burst of this many, then this many a second
#: (a legacy answer goes to whatever source address the query claims: no amplifier)
DIRECT_ANSWER_RATE = 10.0
MAX_ADDRS = 32  # addresses kept per discovered peer
MAX_ANNOUNCED = 16  # addresses we put in one answer (keeps it well inside one datagram)
PEER_NAME_LEN = 32
DNSADDR = b"dnsaddr="


def random_peer_name() -> str:
    """A fresh peer name: 32 random lower-case letters and digits (the spec's advice)."""
    alphabet = string.ascii_lowercase + string.digits
    return "".join(secrets.choice(alphabet) for _ in range(PEER_NAME_LEN))


@dataclass(frozen=True, slots=True)
class Discovery:
    """A peer heard on the LAN: its id and the addresses it announced (without ``/p2p``)."""

    peer_id: PeerID
    addrs: tuple[Multiaddr, ...]
    #: the smallest TTL of the PTR and TXT records it came from (0: a goodbye)
    ttl: int = DEFAULT_TTL


@dataclass(frozen=True, slots=True)
class Send:
    """A datagram to send: to the multicast group (``dest`` None) or to ``dest``."""

    data: bytes
    dest: tuple[str, int] | None = None


def _ip_of(addr: Multiaddr) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    for proto, value in addr.items():
        if proto in ("ip4", "ip6") and value is not None:
            return ipaddress.ip_address(value.split("%", 1)[0])
        break
    return None


def _announceable(addr: Multiaddr, loopback: bool = False) -> bool:
    ip = _ip_of(addr)
    if ip is None:  # a /dns* name may still resolve on the LAN; /unix and the like never do
        return addr.protocols()[:1] in (["dns"], ["dns4"], ["dns6"])
    if ip.is_loopback:
        return loopback
    if ip.version == 6 and ip.is_link_local:
        return False  # fe80::/10 needs the receiver's zone; a bare one is not dialable
    return not (ip.is_unspecified or ip.is_multicast)


def query_message(service: str = SERVICE_NAME) -> dns.Message:
    """The "find all peers" query."""
    return dns.Message(questions=(dns.Question(service, dns.TYPE_PTR),))


def parse_response(msg: dns.Message, service: str = SERVICE_NAME, *,
                   loopback: bool = False) -> list[Discovery]:
    """Every peer a response announces, with its addresses (loopback ones dropped
    unless ``loopback``).

    An instance whose TXT strings carry no usable ``dnsaddr=`` with a ``/p2p/``
    id is skipped; addresses naming another peer than the instance's first one
    are dropped.
    """
    records = msg.answers + msg.additionals
    ptr_ttl: dict[str, int] = {}
    for r in records:
        if r.type == dns.TYPE_PTR and isinstance(r.data, str) and dns.name_eq(r.name, service):
            inst = dns.normalize_name(r.data)
            ptr_ttl[inst] = min(r.ttl, ptr_ttl.get(inst, r.ttl))
    out: list[Discovery] = []
    seen: set[PeerID] = set()
    for inst, ttl in ptr_ttl.items():
        peer: PeerID | None = None
        addrs: list[Multiaddr] = []
        for r in records:
            if r.type != dns.TYPE_TXT or not isinstance(r.data, tuple):
                continue
            if dns.normalize_name(r.name) != inst:
                continue
            ttl = min(ttl, r.ttl)
            for s in r.data:
                if not s.startswith(DNSADDR):
                    continue
                try:
                    ma = Multiaddr(s[len(DNSADDR):].decode())
                    pid = ma.peer_id()
                except (MultiaddrError, UnicodeDecodeError, ValueError):
                    continue
                if pid is None:
                    continue
                if peer is None:
                    peer = pid
                if pid != peer:
                    continue
                bare = ma.without_peer_id()
                if _announceable(bare, loopback) and bare not in addrs and len(addrs) < MAX_ADDRS:
                    addrs.append(bare)
        if peer is not None and addrs and peer not in seen:
            seen.add(peer)
            out.append(Discovery(peer, tuple(addrs), ttl))
    return out


@dataclass(slots=True)
class _Known:
    addrs: tuple[Multiaddr, ...]
    expires: float


class MdnsState:
    """One host's mDNS responder and querier (sans-IO; times are the caller's clock).

    Args:
        peer_id: this host's id (its own announcements are ignored).
        now: the current time; the first query is due at once.
        service: the DNS-SD service name (``_p2p._udp.local``; pnet uses ``_p2p-X._udp.local``).
        peer_name: the instance label; random (32 characters) when None.
        interval: seconds between queries.
        ttl: TTL of our records, and how long a discovery stays fresh when an
            answer's own TTL is larger.
        port: the mDNS port (queries from any other port are "legacy unicast").
        max_peers: discovered peers remembered at once.
        loopback: announce and accept loopback addresses too (peers on one
            machine only, e.g. tests; the spec leaves them out).
    """

    def __init__(self, peer_id: PeerID, now: float, *, service: str = SERVICE_NAME,
                 peer_name: str | None = None, interval: float = DEFAULT_INTERVAL,
                 ttl: int = DEFAULT_TTL, port: int = MDNS_PORT, max_peers: int = 1024,
                 loopback: bool = False) -> None:
        if interval <= 0 or max_peers < 1 or not 0 < ttl < 2**31:
            raise ValueError("MdnsState: interval > 0, max_peers >= 1, 0 < ttl < 2**31")
        self.peer_id = peer_id
        self.service = service
        self.peer_name = peer_name or random_peer_name()
        if not 0 < len(self.peer_name.encode()) <= dns.MAX_LABEL or "." in self.peer_name:
            raise ValueError("peer_name must be one DNS label (1..63 bytes, no dot)")
        self.instance = f"{self.peer_name}.{service}"
        self.hostname = f"{self.peer_name}.{HOST_DOMAIN}"
        self.interval = interval
        self.ttl = ttl
        self.port = port
        self.max_peers = max_peers
        self.loopback = loopback
        self._addrs: tuple[Multiaddr, ...] = ()
        self._next_query = now
        self._last_multicast_answer = float("-inf")
        self._answer_due: float | None = None
        self._peers: OrderedDict[PeerID, _Known] = OrderedDict()
        self._tokens = DIRECT_ANSWER_RATE
        self._tokens_at = now
        #: counters (for metrics and tests)
        self.queries_sent = 0
        self.answers_sent = 0
        self.malformed = 0
        self.rate_limited = 0

    # -- our addresses ----------------------------------------------------------------

    def set_addrs(self, addrs: Iterable[Multiaddr]) -> None:
        """The addresses to announce (listen addresses, wildcards already expanded)."""
        out: list[Multiaddr] = []
        for a in addrs:
            bare = a.without_peer_id()
            if _announceable(bare, self.loopback) and bare not in out:
                out.append(bare)
        self._addrs = tuple(out[:MAX_ANNOUNCED])

    @property
    def addrs(self) -> tuple[Multiaddr, ...]:
        return self._addrs

    def peers(self) -> dict[PeerID, tuple[Multiaddr, ...]]:
        """The peers currently known (not expired at the last call)."""
        return {p: k.addrs for p, k in self._peers.items()}

    # -- timers -----------------------------------------------------------------------

    def next_deadline(self) -> float:
        """When :meth:`poll` next has something to do."""
        t = self._next_query
        if self._answer_due is not None:
            t = min(t, self._answer_due)
        if self._peers:
            t = min(t, min(k.expires for k in self._peers.values()))
        return t

    def poll(self, now: float) -> list[Send]:
        """Send what is due (a query, a held-back answer); forget expired peers."""
        out: list[Send] = []
        if now >= self._next_query:
            self._next_query = now + self.interval
            self.queries_sent += 1
            out.append(Send(dns.encode(query_message(self.service))))
        if self._answer_due is not None and now >= self._answer_due:
            self._answer_due = None
            msg = self._multicast_answer(now)
            if msg is not None:
                out.append(msg)
        for p in [p for p, k in self._peers.items() if k.expires <= now]:
            del self._peers[p]
        return out

    # -- datagrams --------------------------------------------------------------------

    def receive(self, data: bytes, src: tuple[str, int], now: float) -> tuple[list[Send], list[Discovery]]:
        """Handle one datagram from ``src``; what to send and whom we discovered.

        Raises:
            DnsError: the datagram is not a well-formed DNS message.
        """
        try:
            msg = dns.decode(data)
        except DnsError:
            self.malformed += 1
            raise
        if msg.opcode != 0 or msg.rcode != 0:
            return [], []  # RFC 6762 section 18.3 / 18.11: silently ignored
        if msg.is_response:
            if src[1] != self.port:
                return [], []  # RFC 6762 section 11: not a multicast DNS response
            return [], self._on_response(msg, now)
        return self._on_query(msg, src, now), []

    def _on_response(self, msg: dns.Message, now: float) -> list[Discovery]:
        found = []
        for d in parse_response(msg, self.service, loopback=self.loopback):
            if d.peer_id == self.peer_id:
                continue
            if d.ttl == 0:  # goodbye (RFC 6762 section 10.1)
                self._peers.pop(d.peer_id, None)
                continue
            known = self._peers.get(d.peer_id)
            expires = now + min(d.ttl, self.ttl)
            if known is not None:
                self._peers.move_to_end(d.peer_id)
                known.expires = max(known.expires, expires)
                if set(d.addrs) <= set(known.addrs):
                    continue
                known.addrs = tuple(dict.fromkeys(known.addrs + d.addrs))[:MAX_ADDRS]
                found.append(Discovery(d.peer_id, known.addrs))
                continue
            self._peers[d.peer_id] = _Known(d.addrs, expires)
            while len(self._peers) > self.max_peers:
                self._peers.popitem(last=False)
            found.append(d)
        return found

    def _on_query(self, msg: dns.Message, src: tuple[str, int], now: float) -> list[Send]:
        if not self._addrs:
            return []
        answers: list[dns.Record] = []
        full = False  # the whole "find all peers" answer was asked for
        for q in msg.questions:
            qt, name = q.type, q.name
            if dns.name_eq(name, self.service) and qt in (dns.TYPE_PTR, dns.TYPE_ANY):
                full = True
            elif dns.name_eq(name, META_QUERY) and qt in (dns.TYPE_PTR, dns.TYPE_ANY):
                answers.append(dns.Record(META_QUERY, dns.TYPE_PTR, self.service, self.ttl))
            elif dns.name_eq(name, self.instance):
                answers += [r for r in self._instance_records()
                            if qt == dns.TYPE_ANY or r.type == qt]
            elif dns.name_eq(name, self.hostname):
                answers += [r for r in self._address_records() if qt == dns.TYPE_ANY or r.type == qt]
        if not full and not answers:
            return []
        legacy = src[1] != self.port
        if legacy or not full:
            self._tokens = min(DIRECT_ANSWER_RATE,
                               self._tokens + (now - self._tokens_at) * DIRECT_ANSWER_RATE)
            self._tokens_at = now
            if self._tokens < 1.0:
                self.rate_limited += 1
                return []
            self._tokens -= 1.0
        if legacy:
            return [self._legacy_answer(msg, full, answers, src)]
        if not full:
            return [Send(dns.encode(dns.Message(flags=dns.FLAG_QR | dns.FLAG_AA,
                                                answers=tuple(answers))))]
        if now - self._last_multicast_answer < MIN_MULTICAST_GAP:
            if self._answer_due is None:
                self._answer_due = self._last_multicast_answer + MIN_MULTICAST_GAP
            return []
        msg_out = self._multicast_answer(now)
        return [msg_out] if msg_out is not None else []

    # -- building answers -------------------------------------------------------------

    def _ptr(self) -> dns.Record:
        return dns.Record(self.service, dns.TYPE_PTR, self.instance, self.ttl)

    def _instance_records(self) -> list[dns.Record]:
        strings = []
        for a in self._addrs:
            s = DNSADDR + str(a.with_peer_id(self.peer_id)).encode()
            if len(s) <= dns.MAX_TXT_STRING:
                strings.append(s)
        recs = [dns.Record(self.instance, dns.TYPE_TXT, tuple(strings), self.ttl, cache_flush=True)]
        port = next((int(v) for a in self._addrs for p, v in a.items() if p == "tcp" and v), None)
        if port is not None:
            recs.append(dns.Record(self.instance, dns.TYPE_SRV, dns.Srv(0, 0, port, self.hostname),
                                   self.ttl, cache_flush=True))
        return recs

    def _address_records(self) -> list[dns.Record]:
        recs = []
        for ip in dict.fromkeys(_ip_of(a) for a in self._addrs):
            if ip is None:
                continue
            rtype = dns.TYPE_A if ip.version == 4 else dns.TYPE_AAAA
            recs.append(dns.Record(self.hostname, rtype, str(ip), self.ttl, cache_flush=True))
        return recs

    def full_answer(self) -> dns.Message:
        """The "find all peers" response: PTR answer, TXT/SRV/A/AAAA additionals."""
        return dns.Message(
            flags=dns.FLAG_QR | dns.FLAG_AA,
            answers=(self._ptr(),),
            additionals=tuple(self._instance_records() + self._address_records()),
        )

    def goodbye(self) -> Send | None:
        """The TTL-0 announcement to send when closing (RFC 6762 section 10.1), if any."""
        if not self._addrs:
            return None
        return Send(dns.encode(dns.Message(
            flags=dns.FLAG_QR | dns.FLAG_AA,
            answers=(dns.Record(self.service, dns.TYPE_PTR, self.instance, 0),),
            additionals=tuple(dns.Record(r.name, r.type, r.data, 0, r.klass, r.cache_flush)
                              for r in self._instance_records()),
        )))

    def _multicast_answer(self, now: float) -> Send | None:
        if not self._addrs:
            return None
        self._last_multicast_answer = now
        self.answers_sent += 1
        return Send(dns.encode(self.full_answer()))

    def _legacy_answer(self, query: dns.Message, full: bool, answers: list[dns.Record],
                       src: tuple[str, int]) -> Send:
        recs = ([self._ptr()] if full else []) + answers
        extra = self._instance_records() + self._address_records() if full else []

        def short(r: dns.Record) -> dns.Record:
            # legacy resolvers do not know the cache-flush bit (RFC 6762 section 6.7)
            return dns.Record(r.name, r.type, r.data, min(r.ttl, LEGACY_TTL), r.klass, False)

        self.answers_sent += 1
        return Send(dns.encode(dns.Message(
            id=query.id, flags=dns.FLAG_QR | dns.FLAG_AA, questions=query.questions,
            answers=tuple(short(r) for r in recs), additionals=tuple(short(r) for r in extra),
        )), src)
