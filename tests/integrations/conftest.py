"""Integrations with other frameworks (Dask).

The multi-process cluster tests check Dask behaviour over fastp2p:// in the
native pass; under the pure-Python twins they would only take several times
longer, so the pure pass keeps the comm-level tests and skips the clusters.
"""

from __future__ import annotations

import pytest

from fastp2p import _accel


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _accel.HAVE_NATIVE:
        return
    skip = pytest.mark.skip(
        reason="Dask cluster tests run in the native pass (FASTP2P_NO_EXTENSIONS=1 only adds time)"
    )
    for item in items:
        if str(item.fspath).replace("\\", "/").endswith("tests/integrations/test_dask_cluster.py"):
            item.add_marker(skip)
