"""What a TCP connection hands its transport, observed over real sockets."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


class SendRecorder:
    """Forwards to the real transport; records what each write/writelines call
    handed it (a ``writelines`` is one send: one writev on uvloop)."""

    def __init__(self, transport: Any) -> None:
        self.real = transport
        self.calls: list[tuple[str, list[int]]] = []

    def write(self, data: Any) -> None:
        self.calls.append(("write", [memoryview(data).nbytes]))
        self.real.write(data)

    def writelines(self, bufs: Any) -> None:
        bufs = list(bufs)
        self.calls.append(("writelines", [memoryview(b).nbytes for b in bufs]))
        self.real.writelines(bufs)

    @property
    def sends(self) -> list[int]:
        """Bytes per call, in order."""
        return [sum(sizes) for _, sizes in self.calls]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.real, name)


@contextlib.contextmanager
def recording_sends(raw: Any) -> Iterator[SendRecorder]:
    """Record the sends of ``raw`` (a TcpConnection) inside the block."""
    rec = SendRecorder(raw._transport)
    raw._transport = rec
    try:
        yield rec
    finally:
        raw._transport = rec.real
