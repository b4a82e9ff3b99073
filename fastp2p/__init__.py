"""fastp2p: libp2p-compatible peer-to-peer networking with a C hot path.

Public API: ``Host``, ``Stream``, ``PeerID``, ``Multiaddr``, key classes,
``BufferPool``, configuration dataclasses and the error hierarchy.
"""

from fastp2p import services
from fastp2p._accel import HAVE_NATIVE, HAVE_VERBS, Buffer, BufferPool
from fastp2p._version import __version__
from fastp2p.config import (
    GossipsubConfig,
    HostConfig,
    MdnsConfig,
    MplexConfig,
    NoiseConfig,
    YamuxConfig,
)
from fastp2p.errors import *  # noqa: F403
from fastp2p.errors import __all__ as _errors_all
from fastp2p.host import Host
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, Ed25519PublicKey, PeerID, PublicKey
from fastp2p.peerstore import PeerInfo, Peerstore
from fastp2p.services.pubsub import PublishError, PubsubMessage, Subscription, ValidationResult
from fastp2p.stream import Stream, StreamTransport

__all__ = [
    "__version__",
    "HAVE_NATIVE",
    "HAVE_VERBS",
    "Host",
    "Stream",
    "StreamTransport",
    "PeerID",
    "PeerInfo",
    "Peerstore",
    "Multiaddr",
    "Ed25519PrivateKey",
    "Ed25519PublicKey",
    "PublicKey",
    "Buffer",
    "BufferPool",
    "HostConfig",
    "YamuxConfig",
    "MplexConfig",
    "NoiseConfig",
    "GossipsubConfig",
    "MdnsConfig",
    "Subscription",
    "PubsubMessage",
    "ValidationResult",
    "PublishError",
    "services",
    *_errors_all,
]
