"""Type aliases shared across fastp2p."""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any, TypeAlias

# PEP 688 (collections.abc.Buffer) arrived in 3.12; on 3.11 any object is accepted
# statically and the buffer protocol is checked at run time.
if sys.version_info >= (3, 12):
    from collections.abc import Buffer

    ReadableBuffer: TypeAlias = Buffer
    WritableBuffer: TypeAlias = Buffer
else:
    ReadableBuffer: TypeAlias = Any
    WritableBuffer: TypeAlias = Any

Handler: TypeAlias = Callable[[Any], Awaitable[None]]


def byte_view(data: ReadableBuffer) -> memoryview:
    """``data`` as a flat memoryview of unsigned bytes (no copy)."""
    mv = memoryview(data)
    if mv.ndim != 1 or mv.format != "B":
        mv = mv.cast("B")
    return mv
