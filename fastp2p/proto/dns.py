"""DNS message codec (RFC 1035 wire format, the subset mDNS uses), sans-IO.

Encodes and decodes whole messages: header, questions and resource records.
Record data is typed for A, AAAA, PTR, TXT and SRV; any other type keeps its
raw bytes. The decoder is strict and bounded, since every datagram on the
multicast group is untrusted input:

- a message is at most :data:`MAX_MESSAGE` bytes (RFC 6762 section 17);
- at most :data:`MAX_RECORDS` questions plus records in all;
- names are at most 255 octets, labels 63; a compression pointer must point
  strictly before the pointer itself (so no loop is possible) and a name
  follows at most :data:`MAX_POINTERS` of them;
- every record's data must be consumed exactly by its type's parser, and
  nothing may follow the last record.

Anything else raises :class:`~fastp2p.errors.DnsError`.

Names are ``str`` in presentation form without the trailing dot
(``_p2p._udp.local``). Labels are UTF-8 (RFC 6762 section 16); a ``.`` or
``\\`` inside a label is escaped with a backslash. Compare names with
:func:`name_eq` (DNS names are ASCII case-insensitive).

The mDNS bits ride in the class fields (RFC 6762 sections 5.4 and 10.2): the
top bit of a question's class asks for a unicast response
(:attr:`Question.unicast`), the top bit of a record's class is "cache flush"
(:attr:`Record.cache_flush`).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from fastp2p.errors import DnsError

__all__ = [
    "TYPE_A", "TYPE_PTR", "TYPE_TXT", "TYPE_AAAA", "TYPE_SRV", "TYPE_ANY", "CLASS_IN",
    "FLAG_QR", "FLAG_AA", "MAX_MESSAGE", "MAX_RECORDS", "MAX_POINTERS", "MAX_NAME",
    "Srv", "Question", "Record", "Message", "encode", "decode", "name_eq", "normalize_name",
]

TYPE_A = 1
TYPE_PTR = 12
TYPE_TXT = 16
TYPE_AAAA = 28
TYPE_SRV = 33
TYPE_ANY = 255
CLASS_IN = 1
_CLASS_TOP = 0x8000  # unicast-response (questions) / cache-flush (records)

FLAG_QR = 0x8000  # a response
FLAG_AA = 0x0400  # authoritative answer (every mDNS response sets it)
_OPCODE_MASK = 0x7800
_RCODE_MASK = 0x000F

MAX_MESSAGE = 9000  # RFC 6762 section 17: no mDNS message is larger
MAX_RECORDS = 256  # questions + answers + authorities + additionals
MAX_POINTERS = 32  # compression pointers followed in one name
MAX_NAME = 255  # octets of a name on the wire (RFC 1035 section 3.1)
MAX_LABEL = 63
MAX_TXT_STRING = 255

_HEADER = struct.Struct("!HHHHHH")
_RR_FIXED = struct.Struct("!HHIH")
_Q_FIXED = struct.Struct("!HH")
_SRV_FIXED = struct.Struct("!HHH")


@dataclass(frozen=True, slots=True)
class Srv:
    """SRV record data (RFC 2782)."""

    priority: int
    weight: int
    port: int
    target: str


#: A: the IPv4 address (str); AAAA: the IPv6 address (str); PTR: the target name;
#: TXT: the character strings; SRV: :class:`Srv`; any other type: raw bytes.
RData = str | tuple[bytes, ...] | Srv | bytes


@dataclass(frozen=True, slots=True)
class Question:
    """One question: a name, a type and (for mDNS) whether a unicast reply is wanted."""

    name: str
    type: int
    klass: int = CLASS_IN
    unicast: bool = False


@dataclass(frozen=True, slots=True)
class Record:
    """One resource record."""

    name: str
    type: int
    data: RData
    ttl: int = 120
    klass: int = CLASS_IN
    cache_flush: bool = False


@dataclass(frozen=True, slots=True)
class Message:
    """A whole DNS message."""

    id: int = 0
    flags: int = 0
    questions: tuple[Question, ...] = ()
    answers: tuple[Record, ...] = ()
    authorities: tuple[Record, ...] = ()
    additionals: tuple[Record, ...] = ()

    @property
    def is_response(self) -> bool:
        return bool(self.flags & FLAG_QR)

    @property
    def opcode(self) -> int:
        return (self.flags & _OPCODE_MASK) >> 11

    @property
    def rcode(self) -> int:
        return self.flags & _RCODE_MASK

    def records(self) -> tuple[Record, ...]:
        """Answers, authorities and additionals, in that order."""
        return self.answers + self.authorities + self.additionals


# -- names ------------------------------------------------------------------------------


def _split(name: str) -> list[bytes]:
    """Presentation-form name -> wire labels (``\\.`` and ``\\\\`` unescaped)."""
    if name in ("", "."):
        return []
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    labels: list[bytes] = []
    cur: list[str] = []
    i = 0
    while i < len(name):
        c = name[i]
        if c == "\\" and i + 1 < len(name):
            cur.append(name[i + 1])
            i += 2
            continue
        if c == ".":
            labels.append("".join(cur).encode())
            cur = []
        else:
            cur.append(c)
        i += 1
    labels.append("".join(cur).encode())
    for lab in labels:
        if not lab or len(lab) > MAX_LABEL:
            raise DnsError(f"bad label length {len(lab)} in name {name!r}")
    if sum(len(lab) + 1 for lab in labels) + 1 > MAX_NAME:
        raise DnsError(f"name longer than {MAX_NAME} octets: {name!r}")
    return labels


def _join(labels: list[bytes]) -> str:
    out = []
    for lab in labels:
        try:
            text = lab.decode()
        except UnicodeDecodeError as exc:
            raise DnsError("a name label is not UTF-8") from exc
        out.append(text.replace("\\", "\\\\").replace(".", "\\."))
    return ".".join(out)


def normalize_name(name: str) -> str:
    """``name`` lower-cased (ASCII only, RFC 4343) without a trailing dot."""
    if name.endswith(".") and not name.endswith("\\."):
        name = name[:-1]
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in name)


def name_eq(a: str, b: str) -> bool:
    """Whether two names are the same DNS name."""
    return normalize_name(a) == normalize_name(b)


# -- encoding ---------------------------------------------------------------------------


class _Writer:
    def __init__(self) -> None:
        self.buf = bytearray()
        self._suffixes: dict[tuple[bytes, ...], int] = {}

    def name(self, name: str) -> None:
        labels = _split(name)
        for i in range(len(labels)):
            # Exact bytes, not DNS's case-insensitive match: a pointer must give back the
            # very spelling (libp2p peer-name labels are random mixed-case strings).
            key = tuple(labels[i:])
            at = self._suffixes.get(key)
            if at is not None:
                self.buf += struct.pack("!H", 0xC000 | at)
                return
            if len(self.buf) < 0x4000:  # pointers reach 14 bits
                self._suffixes[key] = len(self.buf)
            self.buf.append(len(labels[i]))
            self.buf += labels[i]
        self.buf.append(0)

    def record(self, r: Record) -> None:
        self.name(r.name)
        klass = (r.klass & 0x7FFF) | (_CLASS_TOP if r.cache_flush else 0)
        at = len(self.buf)
        self.buf += _RR_FIXED.pack(r.type, klass, r.ttl & 0xFFFFFFFF, 0)
        start = len(self.buf)
        self._rdata(r)
        rdlen = len(self.buf) - start
        if rdlen > 0xFFFF:
            raise DnsError("record data longer than 65535 bytes")
        struct.pack_into("!H", self.buf, at + 8, rdlen)

    def _rdata(self, r: Record) -> None:
        d = r.data
        if r.type == TYPE_A and isinstance(d, str):
            self.buf += ipaddress.IPv4Address(d).packed
        elif r.type == TYPE_AAAA and isinstance(d, str):
            self.buf += ipaddress.IPv6Address(d).packed
        elif r.type == TYPE_PTR and isinstance(d, str):
            self.name(d)
        elif r.type == TYPE_TXT and isinstance(d, tuple):
            if not d:
                self.buf.append(0)  # RFC 6763 section 6.1: never empty
            for s in d:
                if len(s) > MAX_TXT_STRING:
                    raise DnsError(f"TXT string longer than {MAX_TXT_STRING} bytes")
                self.buf.append(len(s))
                self.buf += s
        elif r.type == TYPE_SRV and isinstance(d, Srv):
            self.buf += _SRV_FIXED.pack(d.priority, d.weight, d.port)
            self.name(d.target)  # RFC 2782 forbids compression here; RFC 6762 18.14 allows it
        elif isinstance(d, bytes):
            self.buf += d
        else:
            raise DnsError(f"record data {type(d).__name__} does not fit type {r.type}")


def encode(msg: Message) -> bytes:
    """The wire form of ``msg`` (names compressed)."""
    w = _Writer()
    w.buf += _HEADER.pack(msg.id, msg.flags, len(msg.questions), len(msg.answers),
                          len(msg.authorities), len(msg.additionals))
    for q in msg.questions:
        w.name(q.name)
        w.buf += _Q_FIXED.pack(q.type, (q.klass & 0x7FFF) | (_CLASS_TOP if q.unicast else 0))
    for section in (msg.answers, msg.authorities, msg.additionals):
        for r in section:
            w.record(r)
    return bytes(w.buf)


# -- decoding ---------------------------------------------------------------------------


def _read_name(buf: bytes, pos: int, end: int) -> tuple[str, int]:
    """The name at ``pos``, and the offset after it (after the first pointer, if any).

    ``end`` bounds the uncompressed part (a record's data end); pointers may
    reach anywhere before themselves in the message.
    """
    labels: list[bytes] = []
    wire_len = 1
    after: int | None = None
    hops = 0
    while True:
        if pos >= end:
            raise DnsError("name runs past its end")
        n = buf[pos]
        if n == 0:
            pos += 1
            break
        kind = n & 0xC0
        if kind == 0xC0:
            if pos + 1 >= end:
                raise DnsError("truncated compression pointer")
            target = ((n & 0x3F) << 8) | buf[pos + 1]
            if target >= pos:
                raise DnsError("compression pointer does not point backwards")
            hops += 1
            if hops > MAX_POINTERS:
                raise DnsError(f"more than {MAX_POINTERS} compression pointers in a name")
            if after is None:
                after = pos + 2
            pos = target
            end = len(buf)  # the pointed-to name may lie anywhere before
            continue
        if kind != 0:
            raise DnsError(f"unsupported label type 0x{kind:02x}")
        if pos + 1 + n > end:
            raise DnsError("label runs past its end")
        wire_len += n + 1
        if wire_len > MAX_NAME:
            raise DnsError(f"name longer than {MAX_NAME} octets")
        labels.append(bytes(buf[pos + 1 : pos + 1 + n]))
        pos += 1 + n
    return _join(labels), (pos if after is None else after)


def _read_rdata(buf: bytes, rtype: int, pos: int, end: int) -> RData:
    if rtype == TYPE_A:
        if end - pos != 4:
            raise DnsError(f"A record data is {end - pos} bytes, not 4")
        return str(ipaddress.IPv4Address(buf[pos:end]))
    if rtype == TYPE_AAAA:
        if end - pos != 16:
            raise DnsError(f"AAAA record data is {end - pos} bytes, not 16")
        return str(ipaddress.IPv6Address(buf[pos:end]))
    if rtype == TYPE_PTR:
        name, p = _read_name(buf, pos, end)
        if p != end:
            raise DnsError("PTR record data longer than its name")
        return name
    if rtype == TYPE_SRV:
        if end - pos < _SRV_FIXED.size + 1:
            raise DnsError("SRV record data too short")
        prio, weight, port = _SRV_FIXED.unpack_from(buf, pos)
        target, p = _read_name(buf, pos + _SRV_FIXED.size, end)
        if p != end:
            raise DnsError("SRV record data longer than its target")
        return Srv(prio, weight, port, target)
    if rtype == TYPE_TXT:
        strings: list[bytes] = []
        while pos < end:
            n = buf[pos]
            if pos + 1 + n > end:
                raise DnsError("TXT string runs past the record")
            strings.append(bytes(buf[pos + 1 : pos + 1 + n]))
            pos += 1 + n
        return tuple(strings)
    return bytes(buf[pos:end])


def decode(data: bytes | bytearray | memoryview) -> Message:
    """Parse one DNS message.

    Raises:
        DnsError: the message is malformed, too large or has too many records.
    """
    buf = bytes(data)
    if len(buf) > MAX_MESSAGE:
        raise DnsError(f"message of {len(buf)} bytes exceeds {MAX_MESSAGE}")
    if len(buf) < _HEADER.size:
        raise DnsError("message shorter than the 12-byte header")
    mid, flags, qd, an, ns, ar = _HEADER.unpack_from(buf, 0)
    if qd + an + ns + ar > MAX_RECORDS:
        raise DnsError(f"{qd + an + ns + ar} questions and records exceed {MAX_RECORDS}")
    pos = _HEADER.size
    questions = []
    for _ in range(qd):
        name, pos = _read_name(buf, pos, len(buf))
        if pos + _Q_FIXED.size > len(buf):
            raise DnsError("truncated question")
        qtype, qclass = _Q_FIXED.unpack_from(buf, pos)
        pos += _Q_FIXED.size
        questions.append(Question(name, qtype, qclass & 0x7FFF, bool(qclass & _CLASS_TOP)))
    sections: list[list[Record]] = [[], [], []]
    for section, count in zip(sections, (an, ns, ar), strict=True):
        for _ in range(count):
            name, pos = _read_name(buf, pos, len(buf))
            if pos + _RR_FIXED.size > len(buf):
                raise DnsError("truncated resource record")
            rtype, rclass, ttl, rdlen = _RR_FIXED.unpack_from(buf, pos)
            pos += _RR_FIXED.size
            end = pos + rdlen
            if end > len(buf):
                raise DnsError("record data runs past the message")
            rdata = _read_rdata(buf, rtype, pos, end)
            pos = end
            section.append(Record(name, rtype, rdata, ttl, rclass & 0x7FFF, bool(rclass & _CLASS_TOP)))
    if pos != len(buf):
        raise DnsError(f"{len(buf) - pos} bytes after the last record")
    return Message(mid, flags, tuple(questions), tuple(sections[0]), tuple(sections[1]),
                   tuple(sections[2]))

