"""Re-export of ``fastp2p.benchsuite.backends.fastp2p_tcp``."""

from fastp2p.benchsuite.backends.fastp2p_tcp import *  # noqa: F401,F403
