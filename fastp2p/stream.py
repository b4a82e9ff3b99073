"""Public home of :class:`Stream`; the implementation lives next to the
connection that drives it (``fastp2p.transport.stream``)."""

from fastp2p.transport.stream import ConflictDetector, PushSink, Stream
from fastp2p.transport.stream_transport import StreamTransport

__all__ = ["Stream", "ConflictDetector", "PushSink", "StreamTransport"]
