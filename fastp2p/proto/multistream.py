"""multistream-select 1.0 (``/multistream/1.0.0``) negotiation, sans-IO.

Rules
-----
- multistream-select spec: every message is a uvarint length prefix followed by
  the payload; the payload ends with ``\\n`` and the length counts it.
- Messages longer than :data:`MAX_MESSAGE_LENGTH` (1024 bytes, go-multistream's
  limit) are rejected with :class:`~fastp2p.errors.FrameTooLargeError`. A
  message without the trailing ``\\n``, an empty message or invalid UTF-8 is a
  :class:`~fastp2p.errors.FrameError`; a bad length prefix is a
  :class:`~fastp2p.errors.VarintError`.
- Both sides first exchange the header ``/multistream/1.0.0``. A well-formed
  but different header (another multistream version, or some other protocol
  entirely) raises :class:`~fastp2p.errors.NegotiationError`: the two peers do
  not share a negotiation protocol, which is a negotiation outcome rather than
  a framing violation.
- The dialer proposes protocols one at a time; the listener answers with the
  same line (accepted) or ``na`` (not available). ``ls`` asks the listener for
  its protocol list (optional in the spec, answered here).
- Once a protocol is agreed, every further byte belongs to that protocol:
  :meth:`unused_data` hands them to the application.

Theory of operation
-------------------
Dialer::

    AWAIT_HEADER --header--> AWAIT_ANSWER --echo of proposal--> DONE
                                 |  ^
                                 na |  (propose the next one; none left -> NegotiationError)
                                 +--+

Listener::

    AWAIT_HEADER --header (we answer with our header)--> AWAIT_PROPOSAL
    AWAIT_PROPOSAL --ls--> answer list, stay
    AWAIT_PROPOSAL --unsupported--> answer na, stay (more than 64 times -> NegotiationError)
    AWAIT_PROPOSAL --supported--> echo it, DONE

Implementation
--------------
The dialer pipelines the header and its first proposal in one write, as
go-multistream does and the spec recommends. The listener sends its header
together with its first answer when both can be produced from one
``receive_data`` call. With ``lazy=True`` (one protocol only) the dialer
reports ``selected`` at once so the application may write right after
:meth:`MultistreamDialer.data_to_send`; ``done`` only becomes true once the
listener confirmed, and a ``na`` then raises :class:`NegotiationError`.
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Callable, Collection, Sequence

from fastp2p._typing import ReadableBuffer
from fastp2p.errors import (
    FrameError,
    FrameTooLargeError,
    LocalProtocolError,
    NegotiationError,
    RemoteProtocolError,
)
from fastp2p.proto.varint import uvarint_decode, uvarint_encode

__all__ = [
    "PROTOCOL_ID",
    "HEADER_MESSAGE",
    "MAX_MESSAGE_LENGTH",
    "MAX_NA_ROUNDS",
    "NA",
    "LS",
    "encode_message",
    "encode_ls_response",
    "decode_ls_response",
    "first_flight",
    "select_first_flight",
    "MultistreamDialer",
    "MultistreamListener",
]

PROTOCOL_ID = "/multistream/1.0.0"
MAX_MESSAGE_LENGTH = 1024
MAX_NA_ROUNDS = 64
NA = "na"
LS = "ls"


@functools.lru_cache(maxsize=1024)  # a few protocol ids, framed on every stream
def encode_message(message: str) -> bytes:
    """Frame one multistream line: ``uvarint(len + 1) + message + b"\\n"``.

    Raises:
        LocalProtocolError: ``message`` contains a newline or is too long.
    """
    if "\n" in message:
        raise LocalProtocolError(f"multistream message contains a newline: {message!r}")
    payload = message.encode() + b"\n"
    if len(payload) > MAX_MESSAGE_LENGTH:
        raise LocalProtocolError(f"multistream message too long ({len(payload)} bytes)")
    return uvarint_encode(len(payload)) + payload


#: the first bytes every multistream-select peer sends
HEADER_MESSAGE = encode_message(PROTOCOL_ID)


_HEADER_LEN = len(HEADER_MESSAGE)
# the header and a line with a one-byte length: all select_first_flight looks at
_FIRST_FLIGHT_PEEK = _HEADER_LEN + 1 + 127
_FIRST_FLIGHTS: dict[str, bytes] = {}
_FIRST_FLIGHTS_MAX = 256


def first_flight(protocol: str) -> bytes:
    """The header and one line for ``protocol``: a lazy dialer's proposal, and
    the listener's whole answer when it accepts (made once per protocol: every
    stream a host opens or accepts sends one).

    Raises:
        LocalProtocolError: ``protocol`` is reserved or cannot be framed.
    """
    got = _FIRST_FLIGHTS.get(protocol)
    if got is None:
        if protocol in (NA, LS, PROTOCOL_ID) or not protocol:
            raise LocalProtocolError(f"cannot propose reserved id {protocol!r}")
        got = HEADER_MESSAGE + encode_message(protocol)
        if len(_FIRST_FLIGHTS) >= _FIRST_FLIGHTS_MAX:
            _FIRST_FLIGHTS.clear()
        _FIRST_FLIGHTS[protocol] = got
    return got


def select_first_flight(data: bytes, accept: Callable[[str], bool]) -> tuple[str, int] | None:
    """A listener's usual case in one step: ``data`` starts with the header and
    one proposal (under 127 bytes) that ``accept`` takes. Returns the protocol
    and the bytes the two lines took; the answer is ``first_flight(protocol)``,
    what :class:`MultistreamListener` would send for the same bytes.

    None for anything else (a split line, another header, ``ls``, ``na``, a
    protocol not accepted, a malformed line): the caller then runs
    :class:`MultistreamListener` on the same bytes, which answers, refuses or
    raises as always.
    """
    if not data.startswith(HEADER_MESSAGE) or len(data) <= _HEADER_LEN:
        return None
    n = data[_HEADER_LEN]  # a one-byte length: 0 < n < 128
    end = _HEADER_LEN + 1 + n
    if n >= 0x80 or n < 2 or len(data) < end or data[end - 1] != 0x0A:
        return None
    try:
        protocol = data[_HEADER_LEN + 1 : end - 1].decode("utf-8")
    except UnicodeDecodeError:
        return None
    if protocol in (NA, LS, PROTOCOL_ID) or "\n" in protocol or not accept(protocol):
        return None
    return protocol, end


def encode_ls_response(protocols: Sequence[str]) -> bytes:
    """Frame an ``ls`` answer.

    multistream-select spec: one length-prefixed message whose body is every
    protocol as an embedded length-prefixed ``\\n``-terminated line, then ``\\n``.
    """
    body = b"".join(encode_message(p) for p in protocols) + b"\n"
    return uvarint_encode(len(body)) + body


def decode_ls_response(body: bytes) -> list[str]:
    """Parse the body (without the outer length prefix) of an ``ls`` answer.

    Raises:
        RemoteProtocolError: malformed embedded lines.
    """
    out: list[str] = []
    buf = bytearray(body)
    if not buf.endswith(b"\n"):
        raise FrameError("ls response does not end with a newline")
    del buf[-1:]
    pos = 0
    while pos < len(buf):
        r = _parse_message(buf, pos, MAX_MESSAGE_LENGTH)
        if r is None:
            raise FrameError("truncated line in ls response")
        line, pos = r
        out.append(line)
    return out


def _parse_message(buf: bytearray, pos: int, limit: int) -> tuple[str, int] | None:
    """Parse one framed line at ``pos``; None when incomplete.

    Raises:
        VarintError, FrameTooLargeError, FrameError.
    """
    r = uvarint_decode(buf, pos)
    if r is None:
        if len(buf) - pos >= 2 and limit < 1 << 14:
            # Two continuation bytes already mean a length >= 2**14 > limit.
            raise FrameTooLargeError(f"multistream message too large (> {limit} bytes)")
        return None
    length, start = r
    if length > limit:
        raise FrameTooLargeError(f"multistream message of {length} bytes exceeds {limit}")
    if length == 0:
        raise FrameError("empty multistream message")
    end = start + length
    if end > len(buf):
        return None
    if buf[end - 1] != 0x0A:
        raise FrameError("multistream message does not end with a newline")
    try:
        text = bytes(buf[start : end - 1]).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise FrameError("multistream message is not valid UTF-8") from exc
    return text, end


class _State(enum.Enum):
    AWAIT_HEADER = "await_header"
    NEGOTIATING = "negotiating"
    DONE = "done"
    FAILED = "failed"


class _Negotiator:
    """Buffering and framing shared by both roles."""

    def __init__(self) -> None:
        self._inbuf = bytearray()
        self._outbuf = bytearray()
        self._unused = bytearray()
        self._state = _State.AWAIT_HEADER
        self._selected: str | None = None

    @property
    def done(self) -> bool:
        """True once a protocol has been agreed (and, for the dialer, confirmed)."""
        return self._state is _State.DONE

    @property
    def selected(self) -> str | None:
        """The agreed protocol, or None while negotiating."""
        return self._selected

    def data_to_send(self) -> bytes:
        """Bytes to write to the peer now (drains the outgoing buffer)."""
        out = bytes(self._outbuf)
        self._outbuf.clear()
        return out

    def unused_data(self) -> bytes:
        """Bytes received after the negotiation finished (drained on each call).

        They belong to the selected protocol and must be handed to it first.
        """
        out = bytes(self._unused)
        self._unused.clear()
        return out

    def receive_data(self, data: ReadableBuffer) -> None:
        """Feed bytes read from the peer.

        Raises:
            NegotiationError: no common protocol, or a foreign header.
            RemoteProtocolError: malformed messages (FrameError, FrameTooLargeError,
                VarintError) or an answer that makes no sense.
            LocalProtocolError: called again after a failure.
        """
        if self._state is _State.FAILED:
            raise LocalProtocolError("multistream negotiation already failed")
        if self._state is _State.DONE:
            self._unused += data
            return
        if self._state is _State.AWAIT_HEADER and not self._inbuf and self._first_flight(data):
            return
        self._inbuf += data
        pos = 0
        try:
            while self._state is not _State.DONE:
                r = _parse_message(self._inbuf, pos, MAX_MESSAGE_LENGTH)
                if r is None:
                    if self._state is _State.AWAIT_HEADER:
                        self._check_header_prefix()
                    break
                line, pos = r
                self._handle(line)
        except BaseException:
            self._state = _State.FAILED
            raise
        if self._state is _State.DONE:
            self._unused += self._inbuf[pos:]
            self._inbuf.clear()
        else:
            del self._inbuf[:pos]

    def _first_flight(self, data: ReadableBuffer) -> bool:
        """The usual first bytes, whole, in one step (no line parsing); False
        for anything else, which the line-by-line path then handles."""
        return False

    def _finish(self, selected: str, data: ReadableBuffer, used: int) -> bool:
        self._selected = selected
        self._state = _State.DONE
        self._unused += memoryview(data)[used:]
        return True

    def _check_header_prefix(self) -> None:
        # An incomplete first message: fail on the first wrong byte rather than
        # wait for the rest of a "message" whose length is garbage (a peer that
        # speaks something else, e.g. one in a private network: its first bytes
        # are its pnet nonce).
        n = min(len(self._inbuf), len(HEADER_MESSAGE))
        if self._inbuf[:n] != HEADER_MESSAGE[:n]:
            raise NegotiationError(
                f"peer does not speak {PROTOCOL_ID}: its first bytes are {bytes(self._inbuf[:8]).hex()}, "
                "not the header (a peer in a private network, or not libp2p?)",
                offered=(),
                supported=(PROTOCOL_ID,),
            )

    def _check_header(self, line: str) -> None:
        if line != PROTOCOL_ID:
            raise NegotiationError(
                f"peer does not speak {PROTOCOL_ID} (header {line!r})",
                offered=(line,),
                supported=(PROTOCOL_ID,),
            )

    def _handle(self, line: str) -> None:  # pragma: no cover - abstract
        raise NotImplementedError


class MultistreamDialer(_Negotiator):
    """Initiator side: proposes ``protocols`` in order until one is accepted.

    Args:
        protocols: protocol ids in order of preference (at least one).
        lazy: optimistic selection of the single protocol given; ``selected``
            is set at once, ``done`` when the listener confirmed.

    Raises:
        LocalProtocolError: empty list, ``lazy`` with more than one protocol, or
            an id that cannot be framed.
    """

    def __init__(self, protocols: Sequence[str], *, lazy: bool = False) -> None:
        super().__init__()
        self._protocols = tuple(protocols)
        if not self._protocols:
            raise LocalProtocolError("no protocol to propose")
        if lazy and len(self._protocols) != 1:
            raise LocalProtocolError("lazy negotiation needs exactly one protocol")
        for p in self._protocols:
            if p in (NA, LS, PROTOCOL_ID) or not p:
                raise LocalProtocolError(f"cannot propose reserved id {p!r}")
            encode_message(p)
        self._lazy = lazy
        self._index = 0
        # multistream spec recommendation: header and first proposal in the same packet.
        self._outbuf += HEADER_MESSAGE + encode_message(self._protocols[0])
        if lazy:
            self._selected = self._protocols[0]

    def _first_flight(self, data: ReadableBuffer) -> bool:
        # the listener's usual answer: its header and our first proposal echoed
        if self._index:
            return False
        answer = first_flight(self._protocols[0])
        if bytes(data[: len(answer)]) != answer:
            return False
        return self._finish(self._protocols[0], data, len(answer))

    @property
    def proposing(self) -> str:
        """The protocol currently awaiting an answer."""
        return self._protocols[self._index]

    def _handle(self, line: str) -> None:
        if self._state is _State.AWAIT_HEADER:
            self._check_header(line)
            self._state = _State.NEGOTIATING
            return
        current = self._protocols[self._index]
        if line == current:
            self._selected = current
            self._state = _State.DONE
        elif line == NA:
            self._index += 1
            if self._lazy or self._index >= len(self._protocols):
                self._selected = None
                raise NegotiationError(
                    offered=self._protocols[: self._index if not self._lazy else 1]
                )
            self._outbuf += encode_message(self._protocols[self._index])
        else:
            raise RemoteProtocolError(
                f"unexpected multistream answer {line!r} to proposal {current!r}"
            )


class MultistreamListener(_Negotiator):
    """Responder side: accepts the first proposal it supports.

    Args:
        supported: the protocol ids served, or a predicate over ids (``ls``
            then lists ``listing`` only).
        listing: what to answer to ``ls``; defaults to ``supported`` when it
            is a collection.
    """

    def __init__(
        self,
        supported: Callable[[str], bool] | Collection[str],
        *,
        listing: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        if callable(supported):
            self._accept: Callable[[str], bool] = supported
            self._listing: tuple[str, ...] = tuple(listing or ())
        else:
            protos = frozenset(supported)
            self._accept = protos.__contains__
            self._listing = tuple(listing) if listing is not None else tuple(supported)
        self._offered: list[str] = []
        self._na_rounds = 0

    def _first_flight(self, data: ReadableBuffer) -> bool:
        # a dialer's usual opening: the header and one proposal we accept
        hit = select_first_flight(bytes(data[:_FIRST_FLIGHT_PEEK]), self._accept)
        if hit is None:
            return False
        self._outbuf += first_flight(hit[0])
        return self._finish(hit[0], data, hit[1])

    @property
    def offered(self) -> tuple[str, ...]:
        """Proposals the dialer made that were refused."""
        return tuple(self._offered)

    def _handle(self, line: str) -> None:
        if self._state is _State.AWAIT_HEADER:
            self._check_header(line)
            self._outbuf += encode_message(PROTOCOL_ID)
            self._state = _State.NEGOTIATING
            return
        if line == LS:
            self._outbuf += encode_ls_response(self._listing)
            return
        if line and line not in (NA, PROTOCOL_ID) and self._accept(line):
            self._outbuf += encode_message(line)
            self._selected = line
            self._state = _State.DONE
            return
        self._offered.append(line)
        self._na_rounds += 1
        if self._na_rounds > MAX_NA_ROUNDS:
            raise NegotiationError(
                f"peer proposed more than {MAX_NA_ROUNDS} unsupported protocols",
                offered=tuple(self._offered),
                supported=self._listing,
            )
        self._outbuf += encode_message(NA)
