"""Backend registry; see ``fastp2p.benchsuite.backends``."""

from fastp2p.benchsuite.backends import BASELINE, all_backends, get_backend  # noqa: F401
