"""Multiaddr parsing and formatting (specs/multiaddr.md, multiaddr-protocols.csv).

Rules
-----
- Text form ``(/<name>[/<value>])+``; binary form ``(<code uvarint><value>)+``
  where a variable-size value carries a uvarint length prefix. Codes and sizes
  come from multiaddr-protocols.csv.
- ``str()`` output is canonical: ``p2p`` (never ``ipfs``) with a base58btc peer
  id, compressed IPv6, decimal ports. Text input may use ``ipfs``, a CIDv1 peer
  id and one trailing ``/``.
- Values that can hold ``/`` (``unix``, ``http-path``) are percent-escaped on
  output (multiformats/multiaddr PR #174). On input ``/unix/<v>`` whose first
  segment contains ``%`` is one percent-escaped segment; without ``%`` the
  legacy go-multiaddr rule applies: the rest of the address is the path and a
  leading ``/`` is prepended (``/unix/tmp/s.sock`` is the path ``/tmp/s.sock``).
- String values (``dns*``, ``sni``, ``ip6zone``) must be non-empty UTF-8
  without ``/`` in both forms, so every accepted binary address has a text
  form that parses back to the same bytes.
- Every malformed input raises ``MultiaddrError`` naming the component index
  and, through ``offset``, the character (text) or byte (binary) position.

Theory of operation
-------------------
A ``Multiaddr`` holds its binary form plus the decoded component tuple; both
are computed once at construction, so every accessor is a cheap read and the
object is immutable and hashable by its bytes.
"""

from __future__ import annotations

import ipaddress
import re
import urllib.parse
from collections.abc import Callable
from typing import NamedTuple, TypeVar

from fastp2p.errors import InvalidKeyError, MultiaddrError, VarintError
from fastp2p.multibase import multibase_decode, multibase_encode, multihash_decode
from fastp2p.peer import PeerID
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

__all__ = ["Multiaddr", "Protocol", "PROTOCOLS", "protocol_by_name", "protocol_by_code"]

VAR = -1  # size marker of length-prefixed values


class Protocol(NamedTuple):
    """One multiaddr protocol: ``size`` in bits, or ``VAR`` for length-prefixed values."""

    code: int
    size: int
    name: str
    to_bytes: Callable[[str], bytes] | None
    to_text: Callable[[bytes], str] | None
    path: bool = False


# -- value codecs (raise ValueError with the reason) ----------------------------

_DIGITS = re.compile(r"[0-9]{1,20}\Z")
_PCT = re.compile(r"(?:[^%]|%[0-9A-Fa-f]{2})*\Z", re.S)
# RFC 3986 pchar without "/": unreserved, sub-delims, ":" and "@".
_PATH_SAFE = "-._~!$&'()*+,;=:@"


def _uint_codec(nbytes: int, what: str) -> tuple[Callable[[str], bytes], Callable[[bytes], str]]:
    limit = (1 << (8 * nbytes)) - 1

    def to_bytes(text: str) -> bytes:
        if not _DIGITS.match(text):
            raise ValueError(f"{what} {text!r} is not a decimal number")
        n = int(text)
        if n > limit:
            raise ValueError(f"{what} {n} out of range 0..{limit}")
        return n.to_bytes(nbytes, "big")

    def to_text(value: bytes) -> str:
        return str(int.from_bytes(value, "big"))

    return to_bytes, to_text


_port_stb, _port_bts = _uint_codec(2, "port")
_cidr_stb, _cidr_bts = _uint_codec(1, "CIDR mask")
_u64_stb, _u64_bts = _uint_codec(8, "memory address")


def _ip4_stb(text: str) -> bytes:
    try:
        return ipaddress.IPv4Address(text).packed
    except ValueError as exc:
        raise ValueError(f"bad ip4 address {text!r}") from exc


def _ip4_bts(value: bytes) -> str:
    return str(ipaddress.IPv4Address(value))


def _ip6_stb(text: str) -> bytes:
    if "%" in text:
        raise ValueError(f"bad ip6 address {text!r}: zones go in /ip6zone")
    try:
        return ipaddress.IPv6Address(text).packed
    except ValueError as exc:
        raise ValueError(f"bad ip6 address {text!r}") from exc


def _ip6_bts(value: bytes) -> str:
    return ipaddress.IPv6Address(value).compressed


def _str_stb(text: str) -> bytes:
    if not text:
        raise ValueError("empty value")
    return text.encode("utf-8")


def _str_bts(value: bytes) -> str:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"value is not UTF-8: {exc}") from exc
    if not text:
        raise ValueError("empty value")
    if "/" in text:
        raise ValueError("value contains '/'")
    return text


def _p2p_stb(text: str) -> bytes:
    try:
        return PeerID.from_string(text).to_bytes()
    except InvalidKeyError as exc:
        raise ValueError(f"bad peer id: {exc}") from exc


def _p2p_bts(value: bytes) -> str:
    try:
        return PeerID.from_bytes(value).to_base58()
    except InvalidKeyError as exc:
        raise ValueError(f"bad peer id: {exc}") from exc


def _pct_stb(text: str) -> bytes:
    if not _PCT.match(text):
        raise ValueError(f"bad percent-escape in {text!r}")
    value = urllib.parse.unquote_to_bytes(text)
    if not value:
        raise ValueError("empty value")
    return value


def _pct_bts(value: bytes) -> str:
    if not value:
        raise ValueError("empty value")
    return urllib.parse.quote_from_bytes(value, safe=_PATH_SAFE)


def _unix_bts(value: bytes) -> str:
    text = _pct_bts(value)
    if "%" not in text:
        # Without a "%" the parser would apply the legacy rest-of-path rule.
        text = f"%{value[0]:02X}" + urllib.parse.quote_from_bytes(
            value[1:], safe=_PATH_SAFE
        )
    return text


def _certhash_stb(text: str) -> bytes:
    value = multibase_decode(text)
    multihash_decode(value)
    return value


def _certhash_bts(value: bytes) -> str:
    multihash_decode(value)
    return multibase_encode(value, "base64url")


_S = (_str_stb, _str_bts)

PROTOCOLS: tuple[Protocol, ...] = (
    Protocol(4, 32, "ip4", _ip4_stb, _ip4_bts),
    Protocol(6, 16, "tcp", _port_stb, _port_bts),
    Protocol(273, 16, "udp", _port_stb, _port_bts),
    Protocol(33, 16, "dccp", _port_stb, _port_bts),
    Protocol(41, 128, "ip6", _ip6_stb, _ip6_bts),
    Protocol(42, VAR, "ip6zone", *_S),
    Protocol(43, 8, "ipcidr", _cidr_stb, _cidr_bts),
    Protocol(53, VAR, "dns", *_S),
    Protocol(54, VAR, "dns4", *_S),
    Protocol(55, VAR, "dns6", *_S),
    Protocol(56, VAR, "dnsaddr", *_S),
    Protocol(132, 16, "sctp", _port_stb, _port_bts),
    Protocol(301, 0, "udt", None, None),
    Protocol(302, 0, "utp", None, None),
    Protocol(400, VAR, "unix", _pct_stb, _unix_bts, path=True),
    Protocol(421, VAR, "p2p", _p2p_stb, _p2p_bts),
    Protocol(448, 0, "tls", None, None),
    Protocol(449, VAR, "sni", *_S),
    Protocol(454, 0, "noise", None, None),
    Protocol(460, 0, "quic", None, None),
    Protocol(461, 0, "quic-v1", None, None),
    Protocol(465, 0, "webtransport", None, None),
    Protocol(466, VAR, "certhash", _certhash_stb, _certhash_bts),
    Protocol(480, 0, "http", None, None),
    Protocol(481, VAR, "http-path", _pct_stb, _pct_bts),
    Protocol(443, 0, "https", None, None),
    Protocol(477, 0, "ws", None, None),
    Protocol(478, 0, "wss", None, None),
    Protocol(479, 0, "p2p-websocket-star", None, None),
    Protocol(277, 0, "p2p-stardust", None, None),
    Protocol(275, 0, "p2p-webrtc-star", None, None),
    Protocol(276, 0, "p2p-webrtc-direct", None, None),
    Protocol(280, 0, "webrtc-direct", None, None),
    Protocol(281, 0, "webrtc", None, None),
    Protocol(290, 0, "p2p-circuit", None, None),
    # The CSV marks /memory variable; go- and rust-libp2p encode it as a u64, as here.
    Protocol(777, 64, "memory", _u64_stb, _u64_bts),
)

_BY_CODE: dict[int, Protocol] = {p.code: p for p in PROTOCOLS}
_BY_NAME: dict[str, Protocol] = {p.name: p for p in PROTOCOLS}
_BY_NAME["ipfs"] = _BY_CODE[421]  # backwards-compatible alias of p2p (input only)
_P2P = 421
_HOST_PROTOCOLS = ("ip4", "ip6", "dns", "dns4", "dns6")


def protocol_by_name(name: str) -> Protocol | None:
    """The protocol called ``name`` (``ipfs`` is ``p2p``), or None."""
    return _BY_NAME.get(name)


def protocol_by_code(code: int) -> Protocol | None:
    """The protocol with multicodec ``code``, or None."""
    return _BY_CODE.get(code)


class _Component(NamedTuple):
    proto: Protocol
    value: bytes  # binary value, without the length prefix
    text: str | None  # text value; None for zero-size protocols

    def encode(self) -> bytes:
        head = uvarint_encode(self.proto.code)
        if self.proto.size == VAR:
            return head + uvarint_encode(len(self.value)) + self.value
        return head + self.value


# -- parsing ---------------------------------------------------------------------


# Parsed forms of recently seen addresses (text or binary): a connect parses the
# same few (the dialled address, identify's listen and observed addresses) every
# time, ~20-40 us each. Components are immutable, so instances may share them.
_PARSED: dict[str | bytes, tuple[bytes, tuple[_Component, ...]]] = {}
_PARSED_MAX = 4096


_T = TypeVar("_T")
_K = TypeVar("_K")


def _bounded_put(cache: dict[_K, _T], key: _K, value: _T, limit: int) -> _T:
    """Store ``value``; a full cache starts over (the working set refills it at once)."""
    if len(cache) >= limit:
        cache.clear()
    cache[key] = value
    return value


def _remember(key: str | bytes, value: tuple[bytes, tuple[_Component, ...]]) -> tuple[bytes, tuple[_Component, ...]]:
    return _bounded_put(_PARSED, key, value, _PARSED_MAX)


def _parse_text(text: str) -> tuple[_Component, ...]:
    if text in ("", "/"):
        return ()
    if text[0] != "/":
        raise MultiaddrError("multiaddr must begin with '/'", offset=0)
    parts = text[1:].split("/")
    if parts[-1] == "":
        parts.pop()  # one trailing slash is tolerated
    out: list[_Component] = []
    pos = 1  # character offset of parts[i]
    i = 0
    while i < len(parts):
        index = len(out)
        name = parts[i]
        name_pos = pos
        pos += len(name) + 1
        i += 1
        if not name:
            raise MultiaddrError(f"component {index}: empty protocol name", offset=name_pos)
        proto = _BY_NAME.get(name)
        if proto is None:
            raise MultiaddrError(f"component {index}: unknown protocol {name!r}", offset=name_pos)
        if proto.size == 0:
            out.append(_Component(proto, b"", None))
            continue
        if i >= len(parts) or parts[i] == "":
            raise MultiaddrError(
                f"component {index} ({name}): missing value",
                offset=pos if i < len(parts) else len(text),
            )
        value_pos = pos
        value_text = parts[i]
        i += 1
        if proto.path and "%" not in value_text:
            # Legacy go-multiaddr rule: /unix swallows the rest of the address.
            value_text = "/" + "/".join(parts[i - 1 :])
            i = len(parts)
            try:
                value = value_text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise MultiaddrError(
                    f"component {index} ({name}): {exc}", offset=value_pos
                ) from exc
        else:
            assert proto.to_bytes is not None
            try:
                value = proto.to_bytes(value_text)
            except (ValueError, UnicodeEncodeError) as exc:
                raise MultiaddrError(
                    f"component {index} ({name}): {exc}", offset=value_pos
                ) from exc
        pos = value_pos + len(value_text) + 1
        out.append(_component_from_value(proto, value, index, value_pos))
    return tuple(out)


#: host text -> its first component (one per peer address, not per connection)
_HOST_COMPONENTS: dict[str, _Component] = {}


def _host_component(host: str) -> _Component:
    """``/ip4|ip6|dns/<host>`` as a component (``from_host_port``'s first half)."""
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        family = "dns"
    else:
        family = "ip4" if ip.version == 4 else "ip6"
        host = ip.compressed
    if not host or "/" in host:
        raise MultiaddrError(f"bad host {host!r}")
    parts = _parse_text(f"/{family}/{host}")
    return parts[0]


def _component_from_value(proto: Protocol, value: bytes, index: int, offset: int) -> _Component:
    if proto.size == VAR:
        pass
    elif len(value) * 8 != proto.size:
        raise MultiaddrError(
            f"component {index} ({proto.name}): value must be {proto.size // 8} bytes, got {len(value)}",
            offset=offset,
        )
    if proto.size == 0:
        return _Component(proto, b"", None)
    assert proto.to_text is not None
    try:
        text = proto.to_text(value)
    except ValueError as exc:
        raise MultiaddrError(f"component {index} ({proto.name}): {exc}", offset=offset) from exc
    return _Component(proto, value, text)


def _read_uvarint(buf: bytes, pos: int, index: int, what: str) -> tuple[int, int]:
    try:
        r = uvarint_decode(buf, pos)
    except VarintError as exc:
        raise MultiaddrError(f"component {index}: bad {what} varint: {exc}", offset=pos) from exc
    if r is None:
        raise MultiaddrError(f"component {index}: truncated {what} varint", offset=pos)
    return r


def _parse_bytes(buf: bytes) -> tuple[_Component, ...]:
    out: list[_Component] = []
    pos = 0
    end = len(buf)
    while pos < end:
        index = len(out)
        start = pos
        code, pos = _read_uvarint(buf, pos, index, "protocol code")
        proto = _BY_CODE.get(code)
        if proto is None:
            raise MultiaddrError(f"component {index}: unknown protocol code {code}", offset=start)
        if proto.size == VAR:
            length, pos = _read_uvarint(buf, pos, index, f"{proto.name} length")
        else:
            length = proto.size // 8
        if length > end - pos:
            raise MultiaddrError(
                f"component {index} ({proto.name}): truncated value, need {length} bytes, "
                f"have {end - pos}",
                offset=pos,
            )
        value = buf[pos : pos + length]
        out.append(_component_from_value(proto, value, index, pos))
        pos += length
    return tuple(out)


# -- the public type -----------------------------------------------------------------


class Multiaddr:
    """An immutable, hashable multiaddr; equality is on the binary form.

    ``Multiaddr(x)`` accepts text (``str``), the binary form (bytes-like) or
    another ``Multiaddr``.

    Raises:
        MultiaddrError: malformed input (the message names the component and
            ``offset`` the character or byte position).
        TypeError: ``x`` has another type.
    """

    __slots__ = ("_bytes", "_parts")
    _bytes: bytes
    _parts: tuple[_Component, ...]

    def __init__(self, addr: str | bytes | bytearray | memoryview | Multiaddr) -> None:
        if isinstance(addr, Multiaddr):
            raw, parts = addr._bytes, addr._parts
        elif isinstance(addr, str):
            hit = _PARSED.get(addr)
            if hit is None:
                parts = _parse_text(addr)
                hit = _remember(addr, (b"".join(c.encode() for c in parts), parts))
            raw, parts = hit
        elif isinstance(addr, (bytes, bytearray, memoryview)):
            raw = bytes(addr)
            hit = _PARSED.get(raw)
            if hit is None:
                hit = _remember(raw, (raw, _parse_bytes(raw)))
            parts = hit[1]
        else:
            raise TypeError(f"cannot make a Multiaddr from {type(addr).__name__}")
        object.__setattr__(self, "_bytes", raw)
        object.__setattr__(self, "_parts", parts)

    @classmethod
    def _from_parts(cls, parts: tuple[_Component, ...]) -> Multiaddr:
        self = cls.__new__(cls)
        object.__setattr__(self, "_bytes", b"".join(c.encode() for c in parts))
        object.__setattr__(self, "_parts", parts)
        return self

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError("Multiaddr is immutable")

    def __reduce__(self) -> tuple[type[Multiaddr], tuple[bytes]]:
        return (type(self), (self._bytes,))

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Multiaddr:
        """Parse the binary form.

        Raises:
            MultiaddrError: malformed input.
        """
        return cls(bytes(data))

    def to_bytes(self) -> bytes:
        """The binary form."""
        return self._bytes

    def __bytes__(self) -> bytes:
        return self._bytes

    def __str__(self) -> str:
        if not self._parts:
            return "/"
        out: list[str] = []
        for c in self._parts:
            out.append("/" + c.proto.name)
            if c.text is not None:
                out.append("/" + c.text)
        return "".join(out)

    def __repr__(self) -> str:
        return f"Multiaddr({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Multiaddr):
            return NotImplemented
        return self._bytes == other._bytes

    def __hash__(self) -> int:
        return hash(self._bytes)

    def __len__(self) -> int:
        """Number of components."""
        return len(self._parts)

    def __bool__(self) -> bool:
        return bool(self._parts)

    def protocols(self) -> list[str]:
        """Protocol names in order, e.g. ``['ip4', 'tcp', 'p2p']``."""
        return [c.proto.name for c in self._parts]

    def items(self) -> list[tuple[str, str | None]]:
        """``(protocol name, text value)`` pairs; the value is None for zero-size protocols."""
        return [(c.proto.name, c.text) for c in self._parts]

    def value_for(self, name: str) -> str | None:
        """Text value of the first ``name`` component (``""`` for a zero-size protocol
        that is present); None when absent. ``ipfs`` is treated as ``p2p``."""
        proto = _BY_NAME.get(name)
        if proto is None:
            return None
        for c in self._parts:
            if c.proto.code == proto.code:
                return "" if c.text is None else c.text
        return None

    def encapsulate(self, other: Multiaddr | str | bytes) -> Multiaddr:
        """``self`` followed by ``other``."""
        return Multiaddr._from_parts(self._parts + Multiaddr(other)._parts)

    def decapsulate(self, what: Multiaddr | str | bytes) -> Multiaddr:
        """Remove the last occurrence of ``what`` and everything after it.

        ``what`` is a multiaddr (text starting with ``/``, bytes or a
        ``Multiaddr``), matched on whole components, or a protocol name such
        as ``"p2p"`` or ``"/p2p"``. Returns ``self`` unchanged when there is no match.

        Raises:
            MultiaddrError: ``what`` is malformed or names an unknown protocol.
        """
        parts = self._parts
        if isinstance(what, str) and what.count("/") <= 1 and what.strip("/") in _BY_NAME:
            what = what.strip("/")  # "/udp" as js-multiaddr writes it: a bare name
        if isinstance(what, str) and not what.startswith("/"):
            proto = _BY_NAME.get(what)
            if proto is None:
                raise MultiaddrError(f"unknown protocol {what!r}")
            for i in range(len(parts) - 1, -1, -1):
                if parts[i].proto.code == proto.code:
                    return Multiaddr._from_parts(parts[:i])
            return self
        sub = Multiaddr(what)._parts
        if not sub:
            return self
        key = [(c.proto.code, c.value) for c in parts]
        sub_key = [(c.proto.code, c.value) for c in sub]
        for i in range(len(parts) - len(sub), -1, -1):
            if key[i : i + len(sub)] == sub_key:
                return Multiaddr._from_parts(parts[:i])
        return self

    def peer_id(self) -> PeerID | None:
        """The PeerID of a trailing ``/p2p/<id>`` component, or None."""
        if self._parts and self._parts[-1].proto.code == _P2P:
            return PeerID.from_bytes(self._parts[-1].value)
        return None

    def without_peer_id(self) -> Multiaddr:
        """This address without its trailing ``/p2p/<id>`` (``self`` if there is none)."""
        if self._parts and self._parts[-1].proto.code == _P2P:
            return Multiaddr._from_parts(self._parts[:-1])
        return self

    def with_peer_id(self, peer_id: PeerID) -> Multiaddr:
        """This address ending in ``/p2p/<peer_id>``.

        Raises:
            MultiaddrError: the address already ends in a different peer id.
        """
        current = self.peer_id()
        if current is not None:
            if current != peer_id:
                raise MultiaddrError(f"{self} already names peer {current}, not {peer_id}")
            return self
        value = peer_id.to_bytes()
        return Multiaddr._from_parts(
            self._parts + (_Component(_BY_CODE[_P2P], value, peer_id.to_base58()),)
        )

    def tcp_host_port(self) -> tuple[str, int]:
        """``(host, port)`` of ``/{ip4,ip6,dns,dns4,dns6}/<host>/tcp/<port>[/p2p/<id>]``.

        Raises:
            MultiaddrError: the address has any other shape.
        """
        parts = self._parts
        if parts and parts[-1].proto.code == _P2P:
            parts = parts[:-1]
        if (
            len(parts) != 2
            or parts[0].proto.name not in _HOST_PROTOCOLS
            or parts[1].proto.name != "tcp"
        ):
            raise MultiaddrError(f"{self} is not a TCP address (/ip4|ip6|dns*/<host>/tcp/<port>)")
        host, port = parts[0].text, parts[1].text
        assert host is not None and port is not None
        return host, int(port)

    @classmethod
    def from_host_port(cls, host: str, port: int, transport: str = "tcp") -> Multiaddr:
        """Build ``/ip4|ip6|dns/<host>/<tcp|udp>/<port>``; ``transport`` may also be
        ``quic-v1`` (``/udp/<port>/quic-v1``).

        Raises:
            MultiaddrError: bad host, port or transport.
        """
        if transport not in ("tcp", "udp", "quic-v1"):
            raise MultiaddrError(f"unsupported transport {transport!r}")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 0xFFFF:
            raise MultiaddrError(f"port {port!r} out of range 0..65535")
        head = _HOST_COMPONENTS.get(host)
        if head is None:
            head = _bounded_put(_HOST_COMPONENTS, host, _host_component(host), 256)
        layer = _BY_NAME["tcp" if transport == "tcp" else "udp"]
        parts: tuple[_Component, ...] = (head, _Component(layer, port.to_bytes(2, "big"), str(port)))
        if transport == "quic-v1":
            parts += (_Component(_BY_NAME["quic-v1"], b"", None),)
        return cls._from_parts(parts)
