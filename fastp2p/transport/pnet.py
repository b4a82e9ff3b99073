"""Private-network protection of a raw connection (libp2p pnet), below multistream.

``PnetConnection`` wraps any ``RawConnection`` (TCP, memory): it sends our
24-byte nonce at once, strips the peer's nonce from the first bytes received,
and XORs everything after with XSalsa20 (``fastp2p._accel.XSalsa20``, the C
kernel unless FASTP2P_NO_EXTENSIONS). multistream, Noise and the muxer run
unchanged on top. Received bytes are decrypted in place in the transport's
receive buffer (one kernel call per read, no copy) when it is writable; sent
bytes go through one kernel call into another buffer, since what is sent may be
a recycled, read-only Noise frame block: into a recycled pool block.

The shared-memory and RDMA data paths are negotiated after Noise, between peers
that already proved the same PSK; their bytes do not pass through this layer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable
from typing import Any

from fastp2p import _accel
from fastp2p.errors import PnetError
from fastp2p.proto.pnet import NONCE_SIZE, PnetCodec
from fastp2p.transport.base import RawConnection

__all__ = ["PnetConnection", "DEFAULT_TIMEOUT"]

#: seconds from sending our nonce until the peer's first bytes must have proved
#: the same key (``HostConfig.pnet_timeout``); one round trip when it has it
DEFAULT_TIMEOUT = 5.0


class PnetConnection(RawConnection):
    """``inner`` with every byte each way XORed with XSalsa20(psk, sender's nonce)."""

    def __init__(self, inner: RawConnection, psk: bytes, *, timeout: float = DEFAULT_TIMEOUT) -> None:
        self.inner = inner
        self._deadline = asyncio.get_running_loop().time() + timeout
        self._timeout = timeout
        self.outbound = inner.outbound
        self.local_addr = inner.local_addr
        self.remote_addr = inner.remote_addr
        self._codec = PnetCodec(psk, os.urandom(NONCE_SIZE), _accel.XSalsa20)
        self._on_data: Callable[[memoryview], None] | None = None
        # Each side sends its nonce first, without waiting for the peer's.
        inner.write(self._codec.preamble())

    @property
    def bytes_received(self) -> int:
        return getattr(self.inner, "bytes_received", 0)

    def _decrypt(self, data: memoryview | bytes) -> memoryview:
        view = memoryview(data)
        if view.readonly:
            view = memoryview(bytearray(view))
        return self._codec.decrypt_in_place(view)

    async def _read_inner(self) -> bytes:
        if self._codec.verified:
            return await self.inner.read_some()
        # A peer with another key may never answer: js-libp2p, for one, waits for
        # the rest of a garbage multistream message until its 10 s upgrade timeout.
        try:
            async with asyncio.timeout_at(self._deadline):
                return await self.inner.read_some()
        except TimeoutError:
            raise PnetError(
                f"private network handshake failed: no valid answer within {self._timeout:g} s "
                "of our nonce: wrong or missing PSK?"
            ) from None

    async def read_some(self) -> bytes:
        while True:
            data = await self._read_inner()
            if not data:
                return b""
            plain = self._decrypt(data)
            if len(plain):
                return bytes(plain)
            # only (part of) the peer's nonce so far

    def write(self, data: bytes | bytearray | memoryview) -> None:
        n = memoryview(data).nbytes
        if not n:
            return
        # Into a recycled pool block (resident, no page faults, unlike a fresh
        # multi-megabyte bytearray); the view keeps it until the transport sent it.
        out = _accel.get_default_pool().acquire(n).view
        self._codec.encrypt_into(data, out)
        self.inner.write(out)

    def hold_flush(self) -> None:
        self.inner.hold_flush()

    def hold_past_tasks(self) -> None:
        self.inner.hold_past_tasks()

    def flush(self) -> None:
        self.inner.flush()

    @property
    def write_paused(self) -> bool:
        return self.inner.write_paused

    @property
    def pause_state(self) -> Any:
        return self.inner.pause_state

    async def drain(self) -> None:
        await self.inner.drain()

    def _on_wire(self, view: memoryview) -> None:
        try:
            plain = self._decrypt(view)
        except PnetError:
            # only possible if the upgrade handed over before the peer's first
            # bytes were checked; the connection is unusable either way
            self.inner.abort()
            return
        if len(plain):
            assert self._on_data is not None
            self._on_data(plain)

    def start_push(
        self,
        on_data: Callable[[memoryview], None],
        on_lost: Callable[[BaseException | None], None],
    ) -> bytes:
        self._on_data = on_data
        left = self.inner.start_push(self._on_wire, on_lost)
        return bytes(self._decrypt(left)) if left else b""

    def redirect_push(self, on_data: Callable[[memoryview], None]) -> bool:
        self._on_data = on_data  # (after this wrapper's decryption, as before)
        return True

    def cap_reads(self, n: int) -> None:
        self.inner.cap_reads(n)  # the pad keeps sizes: inner's reads are ours

    def pause_reading(self) -> None:
        self.inner.pause_reading()

    def resume_reading(self) -> None:
        self.inner.resume_reading()

    def close(self) -> None:
        self.inner.close()

    def abort(self) -> None:
        self.inner.abort()

    @property
    def is_closed(self) -> bool:
        return bool(getattr(self.inner, "is_closed", False))
