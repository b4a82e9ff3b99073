"""fastp2p: libp2p-compatible peer-to-peer networking with a C hot path."""

from fastp2p._version import __version__
from fastp2p.errors import *  # noqa: F403
from fastp2p.errors import __all__ as _errors_all

__all__ = ["__version__", *_errors_all]
