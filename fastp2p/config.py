"""Frozen configuration dataclasses; one per protocol, gathered in HostConfig."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from fastp2p._version import __version__

if TYPE_CHECKING:
    from fastp2p.proto.gossipsub.rpc_pb import RPCLimits
    from fastp2p.proto.gossipsub.score import PeerScoreParams, PeerScoreThresholds


def _default_muxers() -> tuple[str, ...]:
    # Imported lazily: the muxer sessions import their configs from here.
    from fastp2p.proto.mplex.session import PROTOCOL_ID as mplex
    from fastp2p.proto.yamux.session import PROTOCOL_ID as yamux

    return (yamux, mplex)


#: how identify's agent version of a fastp2p peer begins (the default
#: ``HostConfig.agent_version``); a peer that sends it gets the fastp2p-only
#: shortcuts that identify decides (``Host.open_stream`` over mplex)
AGENT_PREFIX = "fastp2p/"

@dataclass(frozen=True, slots=True)
class YamuxConfig:
    """yamux session settings (libp2p yamux spec defaults)."""

    initial_window: int = 256 * 1024
    max_window: int = 16 * 1024 * 1024
    max_streams: int = 10_000
    # Largest DATA frame we emit; the receiver accepts anything within its window.
    max_frame_size: int = 256 * 1024
    keepalive_interval: float | None = 30.0
    ping_timeout: float = 15.0
    # Bound on unacknowledged inbound SYNs (go-yamux ``maxIncomingStreams`` backlog).
    accept_backlog: int = 256


@dataclass(frozen=True, slots=True)
class MplexConfig:
    """mplex session settings (libp2p mplex spec)."""

    max_message_size: int = 1024 * 1024
    max_streams: int = 10_000
    # mplex has no flow control: bound buffered-but-unread bytes per stream, then reset.
    # The driver stops reading the socket at half of it, and caps its reads at that
    # half (below 2 MiB the 1 MiB receive batch shrinks), so backpressure acts before
    # the reset.
    max_buffered_per_stream: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """Noise handshake settings."""

    #: bound on the whole security upgrade of a raw connection (multistream
    #: ``/noise`` selection, the XX handshake and the muxer choice)
    handshake_timeout: float = 10.0
    #: transport ciphers in preference order. ``ChaChaPoly`` is the libp2p cipher
    #: every peer gets; ``AESGCM`` (AES-256-GCM) is negotiated only with fastp2p
    #: peers inside the handshake, and offered only on CPUs with AES instructions
    #: (fastp2p/proto/noise/handshake.py, "Transport cipher negotiation").
    ciphers: tuple[str, ...] = ("AESGCM", "ChaChaPoly")
    #: seal large writes (>= ``parallel_seal_min`` bytes) as runs of frames, and open
    #: large reads (>= ``parallel_open_min`` bytes of two or more whole frames) as
    #: runs of frames, on a small process-wide pool of C threads with the GIL
    #: released (frames are independent: each has its own nonce; the wire bytes
    #: and what a forged frame does are the same). None: on with 4 or more usable
    #: CPUs, off below (on 2 cores the other core runs the peer or the loop).
    parallel_seal: bool | None = None
    #: pool threads besides the writer's or reader's own (0: min(4, CPUs - 1))
    parallel_seal_threads: int = 0
    #: (a stream write of 1 MiB is sealed in one call: four 256 KiB yamux frames;
    #: a read is at most the TCP receive buffer, 1 MiB: sixteen 64 KiB frames)
    parallel_seal_min: int = 1 << 18
    parallel_open_min: int = 1 << 17

    def __post_init__(self) -> None:
        bad = [c for c in self.ciphers if c not in ("ChaChaPoly", "AESGCM")]
        if bad:
            raise ValueError(f"NoiseConfig.ciphers: unknown cipher(s) {bad}")
        if min(self.parallel_seal_threads, self.parallel_seal_min, self.parallel_open_min) < 0:
            raise ValueError("NoiseConfig.parallel_seal_threads/_min and parallel_open_min must be >= 0")

    def seal_threads(self) -> int:
        """Pool threads sealing large writes and opening large reads on this machine
        (0: serial)."""
        cpus = _usable_cpus()
        if self.parallel_seal is False or (self.parallel_seal is None and cpus < 4):
            return 0
        return self.parallel_seal_threads or max(1, min(4, cpus - 1))


@functools.cache
def _usable_cpus() -> int:
    # once per process: asked on every new connection (a syscall each time otherwise)
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


SHM_MAX_RING = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class ShmConfig:
    """Same-host shared-memory data path (``/fastp2p/shm/1.0.0``).

    ``sealed=False`` (the default, DESIGN decision 4): frames in the rings are
    authenticated by the upgrade (memory handed only to the verified peer's
    process) but not encrypted; any process that can read the peer's memory
    (root, ptrace) can read them. ``sealed=True`` keeps sealing every frame with
    the connection's Noise ciphers, as on TCP.
    """

    ring_capacity: int = 4 * 1024 * 1024
    sealed: bool = False
    upgrade_timeout: float = 5.0
    # Unsent bytes the path holds beyond the ring before writers wait (backpressure).
    write_high_water: int = 4 * 1024 * 1024
    #: after traffic, poll the ring this long (in slices that let other tasks
    #: run) before sleeping on the eventfd: a reply that comes back within it
    #: costs no system call on either side. 0 disables; the price is up to this
    #: much CPU per burst of traffic. Off by default: on a machine with spare
    #: cores it trades CPU for latency; with none it only adds contention.
    spin_us: float = 0.0

    def __post_init__(self) -> None:
        cap = self.ring_capacity
        # fp_ring: a power of two, at least one 4 KiB page, at most 256 MiB.
        if cap < 4096 or cap > SHM_MAX_RING or cap & (cap - 1):
            raise ValueError(
                f"ShmConfig.ring_capacity must be a power of two between 4 KiB and 256 MiB, got {cap}"
            )
        if self.write_high_water < 0 or self.spin_us < 0 or self.upgrade_timeout <= 0:
            raise ValueError("ShmConfig: write_high_water and spin_us >= 0, upgrade_timeout > 0")


def _default_score_params() -> PeerScoreParams:
    from fastp2p.proto.gossipsub.score import PeerScoreParams

    return PeerScoreParams()


def _default_score_thresholds() -> PeerScoreThresholds:
    from fastp2p.proto.gossipsub.score import PeerScoreThresholds

    return PeerScoreThresholds()


def _default_rpc_limits() -> RPCLimits:
    from fastp2p.proto.gossipsub.rpc_pb import RPCLimits

    return RPCLimits()


@dataclass(frozen=True, slots=True)
class GossipsubConfig:
    """Pubsub (gossipsub v1.2/v1.1/v1.0, floodsub) settings; defaults follow the specs
    and go-libp2p-pubsub. See ``fastp2p/proto/gossipsub/router.py`` for each rule."""

    enabled: bool = True
    #: protocols offered, in order of preference
    protocols: tuple[str, ...] = ("/meshsub/1.2.0", "/meshsub/1.1.0", "/meshsub/1.0.0", "/floodsub/1.0.0")
    d: int = 6
    d_lo: int = 5
    d_hi: int = 12
    d_lazy: int = 6
    d_score: int = 4
    d_out: int = 2
    heartbeat_interval: float = 1.0
    heartbeat_initial_delay: float = 0.1
    fanout_ttl: float = 60.0
    mcache_len: int = 5
    mcache_gossip: int = 3
    seen_ttl: float = 120.0
    prune_backoff: float = 60.0
    unsubscribe_backoff: float = 10.0
    #: heartbeats added to a backoff before regrafting (v1.1 "plus some slack")
    backoff_slack: int = 1
    graft_flood_threshold: float = 10.0
    do_px: bool = True
    prune_peers: int = 16
    flood_publish: bool = True
    gossip_factor: float = 0.25
    gossip_retransmission: int = 3
    max_ihave_length: int = 5000
    max_ihave_messages: int = 10
    #: IWANT ids answered per peer per heartbeat
    max_iwant_ids: int = 5000
    iwant_followup_time: float = 3.0
    opportunistic_graft_ticks: int = 60
    opportunistic_graft_peers: int = 2
    enable_idontwant: bool = True
    #: IDONTWANT is sent for messages whose data is at least this large (v1.2)
    idontwant_message_size_threshold: int = 1024
    max_idontwant_messages: int = 1000
    idontwant_ttl_heartbeats: int = 3
    #: also send IDONTWANT to mesh peers for large messages we publish (v1.2 leaves this
    #: to the user, for networks where several messages share one message id)
    idontwant_on_publish: bool = False
    #: explicit peering (v1.1): multiaddrs with ``/p2p/``; always forwarded to, never
    #: in the mesh, kept connected (redialled every ``direct_connect_interval`` s)
    direct_peers: tuple[str, ...] = ()
    direct_connect_interval: float = 300.0
    direct_connect_initial_delay: float = 1.0
    #: "strict_sign" (default) or "strict_no_sign" (libp2p-pubsub.md "Signature Policy")
    signature_policy: str = "strict_sign"
    #: ``fn(message) -> bytes``; default from + seqno (data hash with strict_no_sign)
    msg_id_fn: Callable[[Any], bytes] | None = None
    max_message_size: int = 1024 * 1024
    #: topics one peer may be subscribed to, as we track them
    max_peer_topics: int = 1024
    #: messages waiting in one Subscription before the oldest is dropped
    subscription_queue_size: int = 1024
    #: RPC frames queued for one peer before new ones are dropped (slow peer)
    peer_queue_size: int = 4096
    #: concurrent asynchronous validations before new messages are ignored
    max_pending_validations: int = 8192
    emit_self: bool = False
    allow_publish_to_zero_peers: bool = True
    score: PeerScoreParams = field(default_factory=_default_score_params)
    thresholds: PeerScoreThresholds = field(default_factory=_default_score_thresholds)
    limits: RPCLimits = field(default_factory=_default_rpc_limits)


@dataclass(frozen=True, slots=True)
class RdmaConfig:
    """RDMA verbs data path (``/fastp2p/rdma/1.0.0``); see ``fastp2p.transport.rdma``.

    Frames are authenticated by the Noise-secured upgrade (queue pair numbers
    go only to the verified PeerId) but not encrypted (DESIGN decision 4).
    ``same_host="shm"`` (default): a peer on this host (same kernel boot id)
    is refused RDMA so the connection takes shared memory, whatever the
    order in ``HostConfig.data_paths``; ``"rdma"`` lets the order decide
    (Soft-RoCE loopback tests use it).
    """

    device: str | None = None  # None: FASTP2P_RDMA_DEVICE or the first device
    recv_credits: int = 16  # receive slots pre-posted per connection (>= 2)
    send_slots: int = 16
    buf_size: int = 256 * 1024  # bytes per slot (largest stream message)
    rma_depth: int = 32  # one-sided operations in flight per connection
    write_high_water: int = 4 * 1024 * 1024
    busy_poll_us: int = 20  # adaptive busy-poll budget after a completion (0: off)
    qp_timeout: int = 16  # IB local ack timeout exponent: 4.096 us * 2**16 = 268 ms
    retry_count: int = 7  # transport retries before RETRY_EXC_ERR (dead peer)
    rnr_retry: int = 7
    upgrade_timeout: float = 10.0
    grant_timeout: float = 120.0  # owner keeps a one-sided rkey alive at most this long
    same_host: str = "shm"


@dataclass(frozen=True, slots=True)
class DhtConfig:
    """Kademlia DHT (``/ipfs/kad/1.0.0``) settings; see ``fastp2p.services.kad``.

    ``mode``: "server" answers DHT queries and is added to other peers'
    routing tables; "client" only queries; "auto" starts as a client and
    becomes a server once a peer that dialled us reports (identify's observed
    address) one of our listen addresses, i.e. we are reachable.
    """

    enabled: bool = False
    mode: str = "auto"
    protocol: str = "/ipfs/kad/1.0.0"
    k: int = 20
    alpha: int = 3
    #: disjoint lookup paths (S/Kademlia); 1 = a plain lookup
    disjoint_paths: int = 1
    rpc_timeout: float = 10.0
    query_timeout: float = 60.0
    refresh_interval: float = 600.0
    #: GET_VALUE answers collected before a get_value returns
    quorum: int = 3
    provider_expiry: float = 48 * 3600.0
    provider_republish: float = 22 * 3600.0
    provider_addr_ttl: float = 30 * 60.0
    record_ttl: float = 36 * 3600.0
    max_records: int = 10_000
    max_records_per_peer: int = 256
    max_provider_keys: int = 100_000
    max_providers_per_key: int = 64
    max_keys_per_provider: int = 10_000
    #: largest value accepted in the default ``/fastp2p/`` namespace
    max_value_size: int = 16 * 1024
    #: concurrent inbound DHT streams served per peer
    max_streams_per_peer: int = 16

    def __post_init__(self) -> None:
        if self.mode not in ("server", "client", "auto"):
            raise ValueError(f"DhtConfig.mode must be server, client or auto, got {self.mode!r}")
        if self.k < 1 or self.alpha < 1 or self.disjoint_paths < 1 or self.quorum < 1:
            raise ValueError("DhtConfig: k, alpha, disjoint_paths and quorum must be >= 1")


@dataclass(frozen=True, slots=True)
class FilesConfig:
    """File sharing (``host.files``): announcements on pubsub, multi-provider fetch.

    See ``fastp2p/services/files.py`` for the protocol and announcement format.
    """

    #: pubsub topic of announcements
    topic: str = "fastp2p/files/1.0.0"
    #: bytes per chunk of new manifests (a power of two, 4 KiB .. 64 MiB)
    chunk_size: int = 1 << 20
    #: re-announce every shared file this often (seconds); also on new topic peers
    announce_interval: float = 30.0
    #: forget an announcement not heard again within this many seconds
    announcement_ttl: float = 120.0
    #: announcements kept (least recently heard dropped first)
    max_announcements: int = 4096
    #: chunk bytes requested but not yet received, per provider
    pipeline_bytes: int = 8 << 20
    #: a provider that sends no byte of a requested chunk for this long is dropped
    stall_timeout: float = 15.0
    #: how long a fetch waits for a (new) provider when it has none
    provider_wait: float = 10.0
    #: threads hashing chunks (share, verify, resume)
    hash_threads: int = 2

    def __post_init__(self) -> None:
        cs = self.chunk_size
        if cs < 4096 or cs > 64 << 20 or cs & (cs - 1):
            raise ValueError(f"FilesConfig.chunk_size must be a power of two in [4 KiB, 64 MiB], got {cs}")
        if self.max_announcements < 1 or self.hash_threads < 1 or self.pipeline_bytes < 1:
            raise ValueError("FilesConfig: max_announcements, hash_threads and pipeline_bytes must be >= 1")


@dataclass(frozen=True, slots=True)
class ConnectionManagerConfig:
    """Connection manager (``host.connection_manager``; ``fastp2p.services.connmgr``).

    Above ``high_watermark`` connections the lowest-value unprotected ones
    older than ``grace_period`` seconds are closed until ``low_watermark``
    remain; defaults are go-libp2p's. The hard bounds stay
    ``HostConfig.max_inbound_connections`` / ``max_outbound_connections``.
    """

    enabled: bool = True
    high_watermark: int = 192
    low_watermark: int = 160
    grace_period: float = 60.0
    #: seconds between checks once the host went above the high watermark
    trim_interval: float = 30.0

    def __post_init__(self) -> None:
        if not 0 <= self.low_watermark <= self.high_watermark:
            raise ValueError(
                "ConnectionManagerConfig: need 0 <= low_watermark <= high_watermark, got "
                f"{self.low_watermark}, {self.high_watermark}"
            )
        if self.grace_period < 0 or self.trim_interval <= 0:
            raise ValueError("ConnectionManagerConfig: grace_period >= 0 and trim_interval > 0")


@dataclass(frozen=True, slots=True)
class MdnsConfig:
    """mDNS peer discovery on the LAN (``HostConfig.mdns``); see ``fastp2p.services.mdns``.

    ``HostConfig(mdns=True)`` is ``MdnsConfig()``. Discoveries go into the
    peerstore and to ``host.on_peer_discovered`` callbacks; ``auto_dial``
    also connects to each discovered peer.
    """

    enabled: bool = True
    #: seconds between "find all peers" queries (js-libp2p's default)
    interval: float = 10.0
    #: DNS-SD service name (``_p2p-<fingerprint>._udp.local`` for a private network)
    service_name: str = "_p2p._udp.local"
    #: our instance label; random 32 characters when None (the spec's advice)
    peer_name: str | None = None
    #: TTL of our records (seconds)
    ttl: int = 120
    port: int = 5353
    #: interface names to join; () = every interface that is up, multicast and not loopback
    interfaces: tuple[str, ...] = ()
    auto_dial: bool = False
    #: also query and answer on ff02::fb (IPv6), where the machine has IPv6
    ipv6: bool = True
    #: discovered peers remembered at once
    max_peers: int = 1024
    #: announce and accept loopback addresses (peers on one machine, e.g. with
    #: ``interfaces=("lo",)``); the spec leaves them out
    loopback: bool = False

    def __post_init__(self) -> None:
        if self.interval <= 0 or not 0 < self.ttl < 2**31 or self.max_peers < 1:
            raise ValueError("MdnsConfig: interval > 0, 0 < ttl < 2**31, max_peers >= 1")
        if not 0 < self.port < 65536:
            raise ValueError(f"MdnsConfig.port out of range: {self.port}")


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Everything a Host needs; every field has a sane default."""

    muxers: tuple[str, ...] = field(default_factory=_default_muxers)
    yamux: YamuxConfig = field(default_factory=YamuxConfig)
    mplex: MplexConfig = field(default_factory=MplexConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    #: data paths in order of preference; TCP (Noise) is always the fallback
    data_paths: tuple[str, ...] = ("rdma", "shm", "tcp")
    shm: ShmConfig = field(default_factory=ShmConfig)
    rdma: RdmaConfig = field(default_factory=RdmaConfig)
    max_inbound_connections: int = 1024
    max_outbound_connections: int = 1024
    #: inbound connections still in multistream/Noise at once (not counted against
    #: ``max_inbound_connections``); a newcomer over the bound evicts the oldest, so
    #: sockets stalled mid-handshake cannot lock honest peers out
    max_pending_inbound: int = 256
    #: peer records the peerstore keeps; the least recently written one beyond it
    #: is evicted, unless the peer is connected, in the DHT's routing table or a
    #: gossipsub direct peer (a node learns of peers without limit)
    max_peerstore_peers: int = 16384
    negotiation_timeout: float = 10.0
    dial_timeout: float = 10.0
    agent_version: str = f"{AGENT_PREFIX}{__version__}"
    protocol_version: str = "ipfs/0.1.0"
    enable_identify: bool = True
    enable_ping: bool = True
    pubsub: GossipsubConfig = field(default_factory=GossipsubConfig)
    files: FilesConfig = field(default_factory=FilesConfig)
    dht: DhtConfig = field(default_factory=DhtConfig)
    connection_manager: ConnectionManagerConfig = field(default_factory=ConnectionManagerConfig)
    #: multiaddrs (with ``/p2p/``) dialled at start, with retries; they seed the DHT
    bootstrap: tuple[str, ...] = ()
    #: mDNS discovery: True (defaults), an ``MdnsConfig``, or False (off)
    mdns: MdnsConfig | bool = False
    #: private network (pnet): the 32-byte pre-shared key, the bytes of a
    #: ``/key/swarm/psk/1.0.0/`` key file, or the path of one (read once, here);
    #: None: the public network. Every connection is then protected below multistream.
    psk: bytes | str | os.PathLike[str] | None = field(default=None, repr=False)
    #: with a PSK: seconds from sending our nonce until the peer's first bytes must
    #: have proved the same key (a peer with another key may never answer)
    pnet_timeout: float = 5.0
    #: busy polling (latency for a core): after a stream read starts waiting, keep
    #: the event loop polling its sockets for up to this many microseconds instead
    #: of sleeping in the kernel, where waking a sleeping CPU is slow (VMs, deep
    #: C-states); like Linux's SO_BUSY_POLL. Adaptive: halved after each longer wait,
    #: restored by a short one. 0: off (see fastp2p.transport.busypoll)
    busy_poll_us: int = 0

    def __post_init__(self) -> None:
        if self.max_peerstore_peers < 1:
            raise ValueError(f"HostConfig.max_peerstore_peers must be >= 1, got {self.max_peerstore_peers}")
        from fastp2p.transport.busypoll import MAX_BUSY_POLL_US

        if not 0 <= self.busy_poll_us <= MAX_BUSY_POLL_US:
            raise ValueError(f"HostConfig.busy_poll_us must be 0..{MAX_BUSY_POLL_US}, got {self.busy_poll_us}")
        if self.psk is not None:
            object.__setattr__(self, "psk", _load_psk(self.psk))


def _load_psk(psk: bytes | str | os.PathLike[str]) -> bytes:
    """A PSK as 32 bytes: raw key, key-file bytes, or a key-file path (PskFormatError if bad)."""
    from fastp2p.pnet import load_psk_file
    from fastp2p.proto.pnet import PSK_SIZE, decode_psk_file

    if isinstance(psk, bytes | bytearray | memoryview):
        raw = bytes(psk)
        return raw if len(raw) == PSK_SIZE else decode_psk_file(raw)
    return load_psk_file(psk)
