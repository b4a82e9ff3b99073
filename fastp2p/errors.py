"""The whole fastp2p exception hierarchy.

Imported by the pure-Python code and by the compiled ``fastp2p._native``
modules alike, so both paths raise identical types.

Every class says whose fault it was (local caller, remote peer, the OS) and
protocol errors carry the code to put on the wire (``error_code``).
"""

from __future__ import annotations

import enum

__all__ = [
    "GoAwayCode",
    "StreamErrorCode",
    "P2PError",
    "ProtocolError",
    "LocalProtocolError",
    "RemoteProtocolError",
    "FrameError",
    "FrameVersionError",
    "FrameTypeError",
    "FrameTooLargeError",
    "ShmRingError",
    "FlowControlError",
    "VarintError",
    "ProtobufError",
    "DnsError",
    "PeerRecordError",
    "MultiaddrError",
    "InvalidKeyError",
    "PskFormatError",
    "NegotiationError",
    "SecurityError",
    "HandshakeError",
    "IdentityProofError",
    "PnetError",
    "PeerIDMismatchError",
    "DecryptError",
    "StreamResetError",
    "ConnectionClosedError",
    "DialError",
    "ResourceError",
    "ClosedResourceError",
    "BrokenResourceError",
    "BusyResourceError",
    "ResourceLimitExceededError",
    "AccessError",
    "AccessDeniedError",
    "RegionBoundsError",
    "TransportUnavailableError",
    "RDMAError",
    "MemoryRegistrationError",
    "CompletionError",
    "RemoteAccessError",
    "RetryExceededError",
    "RNRRetryExceededError",
    "FlushError",
    "LocalProtectionError",
    "RemoteOperationError",
]


class GoAwayCode(enum.IntEnum):
    """yamux spec: Go Away codes 0x0 normal, 0x1 protocol error, 0x2 internal error."""

    NORMAL = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2


class StreamErrorCode(enum.IntEnum):
    """Why a stream was reset (go-libp2p ``network.StreamErrorCode`` values)."""

    NONE = 0
    PROTOCOL = 1
    INTERNAL = 2
    CANCELLED = 3
    RESOURCE_LIMIT = 4


class P2PError(Exception):
    """Base class for every exception fastp2p raises itself."""


# -- protocol violations ---------------------------------------------------


class ProtocolError(P2PError):
    """A wire protocol was violated; ``error_code`` is what goes on the wire."""

    error_code: int = GoAwayCode.PROTOCOL_ERROR


class LocalProtocolError(ProtocolError):
    """The local caller asked for something the protocol does not allow."""

    error_code = GoAwayCode.INTERNAL_ERROR


class RemoteProtocolError(ProtocolError):
    """The remote peer sent something the protocol does not allow.

    ``event_hint`` (wsproto) optionally names what the driver should report.
    """

    def __init__(self, message: str = "", *, event_hint: object | None = None) -> None:
        super().__init__(message)
        self.event_hint = event_hint


class FrameError(RemoteProtocolError):
    """A malformed frame was received."""


class ShmRingError(RemoteProtocolError):
    """The peer process left a shared-memory ring in an impossible state.

    Raised by the ring consumer or producer when indices, lengths or header
    fields in shared memory are out of bounds or went backwards; the one
    connection using the ring is closed.
    """


class FrameVersionError(FrameError):
    """A yamux header carried an unknown version byte."""


class FrameTypeError(FrameError):
    """A frame carried an unknown type/flag value."""


class FrameTooLargeError(FrameError):
    """A frame length exceeded the negotiated or spec maximum."""


class FlowControlError(RemoteProtocolError):
    """The peer sent more than its flow-control window allowed."""


class VarintError(RemoteProtocolError):
    """An unsigned varint was overlong, non-minimal or exceeded its limit."""


class ProtobufError(RemoteProtocolError):
    """A protobuf message could not be decoded."""


class PeerRecordError(RemoteProtocolError):
    """A signed peer record (envelope) was malformed, forged or about another peer."""


class DnsError(RemoteProtocolError):
    """A DNS (mDNS) message was malformed, too large or had too many records."""


class MultiaddrError(P2PError, ValueError):
    """A multiaddr could not be parsed; the message says where."""

    def __init__(self, message: str, *, offset: int | None = None) -> None:
        super().__init__(message if offset is None else f"{message} (at offset {offset})")
        self.offset = offset


class InvalidKeyError(P2PError, ValueError):
    """A key could not be decoded or is of an unsupported type."""


class PskFormatError(InvalidKeyError):
    """A private-network key file is not a valid ``/key/swarm/psk/1.0.0/`` file."""


class NegotiationError(P2PError):
    """multistream-select found no protocol both sides support."""

    def __init__(
        self,
        message: str = "",
        *,
        offered: tuple[str, ...] = (),
        supported: tuple[str, ...] = (),
    ) -> None:
        super().__init__(message or f"no common protocol among {list(offered)}")
        self.offered = offered
        self.supported = supported


# -- security ----------------------------------------------------------------


class SecurityError(P2PError):
    """A security check failed; the connection must not be used."""


class HandshakeError(SecurityError):
    """The Noise handshake failed (malformed message, bad signature, ...)."""


class IdentityProofError(HandshakeError):
    """The peer's Noise payload did not prove its identity (bad identity key, or a
    signature that does not cover its static key): whoever answers at that address is
    not a genuine libp2p peer, so a multi-address dial stops there."""


class PnetError(HandshakeError):
    """The private-network (pnet) layer failed: the peer has another pre-shared key,
    none at all, or is not in a private network (its bytes decrypt to garbage)."""


class PeerIDMismatchError(SecurityError):
    """We dialled /p2p/A but the handshake authenticated B."""

    def __init__(self, expected: object, actual: object) -> None:
        super().__init__(f"peer id mismatch: expected {expected}, got {actual}")
        self.expected = expected
        self.actual = actual


class DecryptError(SecurityError):
    """An AEAD tag did not verify; the connection must be closed."""


# -- stream and connection termination ---------------------------------------


class StreamResetError(P2PError):
    """The stream was reset; ``remote`` says by which side."""

    def __init__(
        self,
        message: str = "stream reset",
        *,
        code: int = StreamErrorCode.NONE,
        remote: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.remote = remote


class ConnectionClosedError(P2PError):
    """The connection is gone; ``code`` is the GoAway code, ``remote`` who closed it."""

    def __init__(
        self,
        message: str = "connection closed",
        *,
        code: int = GoAwayCode.NORMAL,
        remote: bool = True,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.remote = remote


class DialError(P2PError):
    """Every address of a dial failed; ``errors`` holds one exception per address."""

    def __init__(self, message: str, errors: list[BaseException] | None = None) -> None:
        super().__init__(message)
        self.errors = list(errors or [])


# -- resources ---------------------------------------------------------------


class ResourceError(P2PError):
    """Base for resource state errors (trio's taxonomy)."""


class ClosedResourceError(ResourceError):
    """Your code closed this resource and then used it."""


class BrokenResourceError(ResourceError):
    """The resource broke under you; ``__cause__`` holds the underlying error."""


class BusyResourceError(ResourceError):
    """Two tasks used one stream direction at the same time."""


class ResourceLimitExceededError(ResourceError):
    """A configured limit (streams, connections, memory) was reached."""


class AccessError(P2PError):
    """A memory-region operation was refused by the region's owner."""


class AccessDeniedError(AccessError):
    """The grant token is forged, revoked, expired, for another peer, or lacks the right."""


class RegionBoundsError(AccessError):
    """The requested range lies outside the granted (or the local) region."""


class TransportUnavailableError(P2PError):
    """The requested transport cannot be used here (e.g. no RDMA support)."""


class RDMAError(P2PError):
    """A verbs call failed."""

    def __init__(self, message: str, *, errno: int = 0) -> None:
        super().__init__(message)
        self.errno = errno
        self.strerror = message


class MemoryRegistrationError(RDMAError):
    """Registering memory with the RDMA device failed."""


# -- RDMA completion errors (raised by fastp2p._native.verbs and transport.rdma) --

# enum ibv_wc_status (infiniband/verbs.h), stable ABI values
WC_STATUS_NAMES = {
    0: "SUCCESS",
    1: "LOC_LEN_ERR",
    2: "LOC_QP_OP_ERR",
    3: "LOC_EEC_OP_ERR",
    4: "LOC_PROT_ERR",
    5: "WR_FLUSH_ERR",
    6: "MW_BIND_ERR",
    7: "BAD_RESP_ERR",
    8: "LOC_ACCESS_ERR",
    9: "REM_INV_REQ_ERR",
    10: "REM_ACCESS_ERR",
    11: "REM_OP_ERR",
    12: "RETRY_EXC_ERR",
    13: "RNR_RETRY_EXC_ERR",
    14: "LOC_RDD_VIOL_ERR",
    15: "REM_INV_RD_REQ_ERR",
    16: "REM_ABORT_ERR",
    17: "INV_EECN_ERR",
    18: "INV_EEC_STATE_ERR",
    19: "FATAL_ERR",
    20: "RESP_TIMEOUT_ERR",
    21: "GENERAL_ERR",
}


class CompletionError(RDMAError):
    """A work request completed with an error status.

    ``status`` is the ``IBV_WC_*`` value, ``status_name`` its name, ``wr_id``
    the request's id, ``vendor_err`` the provider's detail code.
    """

    def __init__(self, message: str, *, status: int = 0, wr_id: int = 0, vendor_err: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = WC_STATUS_NAMES.get(status, str(status))
        self.wr_id = wr_id
        self.vendor_err = vendor_err


class RemoteAccessError(CompletionError, AccessDeniedError):
    """The remote NIC refused the access: rkey invalid (revoked), out of bounds or no right."""


class RetryExceededError(CompletionError):
    """Transport retries exhausted: the peer is unreachable or dead."""


class RNRRetryExceededError(CompletionError):
    """The peer had no receive buffer posted for too long."""


class FlushError(CompletionError):
    """The work request was flushed: its queue pair went to the error state or was closed."""


class LocalProtectionError(CompletionError):
    """The local buffer or key did not cover the request."""


class RemoteOperationError(CompletionError):
    """The responder could not execute the request (invalid request or operation error)."""
