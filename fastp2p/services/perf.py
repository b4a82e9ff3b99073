"""libp2p perf protocol (/perf/1.0.0): measure upload and download throughput.

Client: send the u64 download size, then upload bytes, close the write side,
then read the download until EOF (libp2p perf spec).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastp2p.errors import RemoteProtocolError
from fastp2p.proto.perf import PROTOCOL_ID, decode_download_size, encode_download_size

if TYPE_CHECKING:
    from fastp2p.peer import PeerID
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream

__all__ = ["PROTOCOL_ID", "PerfResult", "perf", "serve_perf"]

_CHUNK = 1 << 20
# The spec puts no bound on download size; a server must not be made to send forever.
MAX_DOWNLOAD = 1 << 40


@dataclass(frozen=True)
class PerfResult:
    """Seconds spent uploading, downloading and in total (including stream set-up)."""

    upload_bytes: int
    download_bytes: int
    upload_seconds: float
    download_seconds: float
    total_seconds: float

    @property
    def upload_gbps(self) -> float:
        return self.upload_bytes * 8 / self.upload_seconds / 1e9 if self.upload_seconds else 0.0

    @property
    def download_gbps(self) -> float:
        return (
            self.download_bytes * 8 / self.download_seconds / 1e9 if self.download_seconds else 0.0
        )


async def _perf_handler(stream: Stream) -> None:
    n = decode_download_size(await stream.readexactly(8))
    if n > MAX_DOWNLOAD:
        raise RemoteProtocolError(f"perf download size {n} exceeds {MAX_DOWNLOAD}")
    buf = bytearray(_CHUNK)
    while await stream.readinto(buf):
        pass
    view = memoryview(buf)
    while n > 0:
        k = min(n, _CHUNK)
        await stream.write(view[:k])
        n -= k
    await stream.close_write()


def serve_perf(host: ServiceHost) -> None:
    """Register the perf server on ``host``."""
    host.set_handler(PROTOCOL_ID, _perf_handler)


async def perf(host: ServiceHost, peer: PeerID, upload: int, download: int) -> PerfResult:
    """Run one perf exchange against ``peer``.

    Raises:
        NegotiationError: the peer does not serve /perf/1.0.0.
        RemoteProtocolError: it sent a different number of bytes than requested.

    Cancellation: the stream is reset.
    """
    t0 = time.perf_counter()
    stream = await host.open_stream(peer, PROTOCOL_ID)
    async with stream:
        await stream.write(encode_download_size(download))
        buf = bytearray(_CHUNK)
        view = memoryview(buf)
        left = upload
        while left > 0:
            k = min(left, _CHUNK)
            await stream.write(view[:k])
            left -= k
        await stream.close_write()
        t1 = time.perf_counter()
        got = 0
        while n := await stream.readinto(buf):
            got += n
        t2 = time.perf_counter()
    if got != download:
        raise RemoteProtocolError(f"perf: expected {download} bytes, got {got}")
    return PerfResult(upload, download, t1 - t0, t2 - t1, t2 - t0)
