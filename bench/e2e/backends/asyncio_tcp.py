"""Re-export of ``fastp2p.benchsuite.backends.asyncio_tcp``."""

from fastp2p.benchsuite.backends.asyncio_tcp import *  # noqa: F401,F403
