"""Re-export of ``fastp2p.benchsuite.backends.limits``."""

from fastp2p.benchsuite.backends.limits import *  # noqa: F401,F403
