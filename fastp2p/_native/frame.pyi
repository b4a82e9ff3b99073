from fastp2p._typing import ReadableBuffer

TYPE_DATA: int
TYPE_WINDOW_UPDATE: int
TYPE_PING: int
TYPE_GO_AWAY: int
FLAG_SYN: int
FLAG_ACK: int
FLAG_FIN: int
FLAG_RST: int
HEADER_SIZE: int
VERSION: int
NEW_STREAM: int
MESSAGE_RECEIVER: int
MESSAGE_INITIATOR: int
CLOSE_RECEIVER: int
CLOSE_INITIATOR: int
RESET_RECEIVER: int
RESET_INITIATOR: int

def uvarint_encode(n: int) -> bytes: ...
def uvarint_decode(buf: ReadableBuffer, offset: int = 0) -> tuple[int, int] | None: ...
def encode_header(type: int, flags: int, stream_id: int, length: int) -> bytes: ...

class YamuxDecoder:
    def __init__(self) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: ReadableBuffer) -> list[tuple[int, int, int, int, memoryview | None]]: ...

def mplex_encode_header(stream_id: int, flag: int, length: int) -> bytes: ...

class MplexDecoder:
    max_message_size: int
    def __init__(self, max_message_size: int = ...) -> None: ...
    @property
    def buffered(self) -> int: ...
    def feed(self, data: ReadableBuffer) -> list[tuple[int, int, memoryview]]: ...
