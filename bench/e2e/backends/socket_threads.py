"""Re-export of ``fastp2p.benchsuite.backends.socket_threads``."""

from fastp2p.benchsuite.backends.socket_threads import *  # noqa: F401,F403
