"""Type aliases shared across fastp2p."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

if TYPE_CHECKING:
    from collections.abc import Buffer

    ReadableBuffer: TypeAlias = Buffer
    WritableBuffer: TypeAlias = Buffer
else:
    ReadableBuffer = Any
    WritableBuffer = Any

Handler: TypeAlias = Callable[[Any], Awaitable[None]]
