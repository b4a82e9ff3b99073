"""RDMA tests: every test here carries the ``rdma`` marker and skips, with the
reason from ``fastp2p.rdma.available()``, where no usable device exists.

Run them for real in the Soft-RoCE VM (``ci/rdma_tests.sh``)."""

from __future__ import annotations

import pytest

from fastp2p import rdma

_OK, _WHY = rdma.available()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    skip = pytest.mark.skip(reason=f"RDMA unavailable: {_WHY}")
    for item in items:
        # modules with NEEDS_DEVICE = False run anywhere (no marker, no skip)
        if getattr(item.module, "NEEDS_DEVICE", True) is False:
            continue
        if "tests/rdma/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(pytest.mark.rdma)
            if not _OK:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def device() -> rdma.RdmaDevice:
    return rdma.open_device()
