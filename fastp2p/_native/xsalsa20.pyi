from fastp2p._typing import ReadableBuffer, WritableBuffer

KEY_SIZE: int
NONCE_SIZE: int
NOGIL_THRESHOLD: int

class XSalsa20:
    def __init__(self, key: bytes, nonce: bytes) -> None: ...
    def apply(self, buf: WritableBuffer) -> None: ...
    def apply_copy(self, data: ReadableBuffer) -> bytearray: ...
