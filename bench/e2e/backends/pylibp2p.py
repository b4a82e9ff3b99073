"""Re-export of ``fastp2p.benchsuite.backends.pylibp2p``."""

from fastp2p.benchsuite.backends.pylibp2p import *  # noqa: F401,F403
