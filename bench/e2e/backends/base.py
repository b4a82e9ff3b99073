"""The one backend interface (re-exported from ``fastp2p.benchsuite.backends.base``)."""

from fastp2p.benchsuite.backends.base import (  # noqa: F401
    SCENARIOS,
    AsyncClient,
    Backend,
    BaseClient,
    BaseServer,
    BenchError,
    Session,
    WorkerSession,
)
