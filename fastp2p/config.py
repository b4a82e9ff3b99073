"""Frozen configuration dataclasses; one per protocol, gathered in HostConfig."""

from __future__ import annotations

from dataclasses import dataclass, field


def _default_muxers() -> tuple[str, ...]:
    # Imported lazily: the muxer sessions import their configs from here.
    from fastp2p.proto.mplex.session import PROTOCOL_ID as mplex
    from fastp2p.proto.yamux.session import PROTOCOL_ID as yamux

    return (yamux, mplex)


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
    # The driver stops reading the socket at half of it, so it should exceed twice the
    # 256 KiB receive batch for backpressure to act before the reset.
    max_buffered_per_stream: int = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class NoiseConfig:
    """Noise handshake settings."""

    handshake_timeout: float = 10.0


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


@dataclass(frozen=True, slots=True)
class HostConfig:
    """Everything a Host needs; every field has a sane default."""

    muxers: tuple[str, ...] = field(default_factory=_default_muxers)
    yamux: YamuxConfig = field(default_factory=YamuxConfig)
    mplex: MplexConfig = field(default_factory=MplexConfig)
    noise: NoiseConfig = field(default_factory=NoiseConfig)
    #: data paths in order of preference; TCP (Noise) is always the fallback
    data_paths: tuple[str, ...] = ("shm", "tcp")
    shm: ShmConfig = field(default_factory=ShmConfig)
    max_inbound_connections: int = 1024
    max_outbound_connections: int = 1024
    negotiation_timeout: float = 10.0
    dial_timeout: float = 10.0
    agent_version: str = "fastp2p/0.1.0"
    protocol_version: str = "ipfs/0.1.0"
    enable_identify: bool = True
    enable_ping: bool = True
