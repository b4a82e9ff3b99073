"""Re-export of ``fastp2p.benchsuite.backends.zmq_backend``."""

from fastp2p.benchsuite.backends.zmq_backend import *  # noqa: F401,F403
