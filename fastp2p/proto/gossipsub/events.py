"""Events a :class:`~fastp2p.proto.gossipsub.router.GossipsubRouter` reports to its driver."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fastp2p.proto.gossipsub.rpc_pb import Message, PeerInfoPB
from fastp2p.proto.peer_record import PeerRecord

__all__ = [
    "GossipsubEvent",
    "ValidationRequested",
    "MessageDelivered",
    "MessageRejected",
    "PeerSubscribed",
    "PeerUnsubscribed",
    "PeerGrafted",
    "PeerPruned",
    "PeerExchangeReceived",
]


@dataclass(frozen=True, slots=True)
class ValidationRequested:
    """A new message passed the router's own checks; the application must judge it.

    The driver answers with ``router.report_validation(msg_id, result, now)``.
    """

    msg_id: bytes
    message: Message
    received_from: Any


@dataclass(frozen=True, slots=True)
class MessageDelivered:
    """A valid message in a subscribed topic (``received_from`` is None for our own)."""

    msg_id: bytes
    message: Message
    received_from: Any


@dataclass(frozen=True, slots=True)
class MessageRejected:
    """A message was dropped as invalid (bad signature, validator said reject, ...)."""

    msg_id: bytes | None
    topic: str
    received_from: Any
    reason: str


@dataclass(frozen=True, slots=True)
class PeerSubscribed:
    """``peer`` announced a subscription to ``topic``."""

    peer: Any
    topic: str


@dataclass(frozen=True, slots=True)
class PeerUnsubscribed:
    """``peer`` left ``topic`` (or disconnected)."""

    peer: Any
    topic: str


@dataclass(frozen=True, slots=True)
class PeerGrafted:
    """``peer`` joined our mesh for ``topic``."""

    peer: Any
    topic: str


@dataclass(frozen=True, slots=True)
class PeerPruned:
    """``peer`` left our mesh for ``topic``."""

    peer: Any
    topic: str


@dataclass(frozen=True, slots=True)
class PeerExchangeReceived:
    """A PRUNE from a peer scoring at least ``accept_px_threshold`` suggested these peers.

    ``records``: the signed peer records among them whose envelope signature
    verified under the suggested peer's own key (their addresses can be dialled).
    """

    topic: str
    peers: tuple[PeerInfoPB, ...]
    received_from: Any
    records: tuple[PeerRecord, ...] = ()


GossipsubEvent = (
    ValidationRequested
    | MessageDelivered
    | MessageRejected
    | PeerSubscribed
    | PeerUnsubscribed
    | PeerGrafted
    | PeerPruned
    | PeerExchangeReceived
)
