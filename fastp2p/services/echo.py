"""Echo service (/echo/1.0.0): send every byte back until the peer closes its write side."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from fastp2p.services.base import ServiceHost
    from fastp2p.stream import Stream

PROTOCOL_ID = "/echo/1.0.0"
_CHUNK = 256 * 1024


async def echo_handler(stream: Stream) -> None:
    """Echo until EOF, then half-close."""
    buf = bytearray(_CHUNK)
    view = memoryview(buf)
    while n := await stream.readinto(buf):
        await stream.write(view[:n])
    await stream.close_write()


def serve_echo(host: ServiceHost) -> None:
    """Register the echo handler on ``host``."""
    host.set_handler(PROTOCOL_ID, echo_handler)
