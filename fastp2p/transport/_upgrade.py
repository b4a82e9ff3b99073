"""What the in-band data-path upgrades (shared memory, RDMA) share."""

from __future__ import annotations

import collections
from typing import TYPE_CHECKING, Any, Generic, TypeVar

if TYPE_CHECKING:
    from fastp2p.transport.stream import Stream

__all__ = ["UpgradeRefused", "UpgradeChannel"]

M = TypeVar("M")


class UpgradeRefused(Exception):
    """The upgrade did not happen; ``str(exc)`` is the reason (not an error)."""




class UpgradeChannel(Generic[M]):
    """Length-prefixed upgrade messages of one protocol over one stream.

    ``codec`` is the protocol's sans-IO module (``encode`` and ``MessageReader``).
    """

    def __init__(self, stream: Stream, codec: Any, what: str) -> None:
        self.stream = stream
        self._encode = codec.encode
        self.reader = codec.MessageReader()
        self.queue: collections.deque[M] = collections.deque()
        self._what = what

    async def send(self, msg: M) -> None:
        await self.stream.write(self._encode(msg))

    async def recv(self) -> M:
        while not self.queue:
            data = await self.stream.read(4096)
            if not data:
                raise UpgradeRefused(f"peer closed the {self._what} stream")
            self.queue.extend(self.reader.receive_data(data))
        return self.queue.popleft()
