"""Network simulations over the in-process memory transport.

They check protocol behaviour at scale (delivery, hops, attacks), which the
native pass covers; under the pure-Python twins the same code only runs
several times slower, so the pure pass skips them to keep CI within budget.
"""

from __future__ import annotations

import pytest

from fastp2p import _accel


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if _accel.HAVE_NATIVE:
        return
    skip = pytest.mark.skip(
        reason="simulations run in the native pass; the pure twins add only time here "
        "(FASTP2P_NO_EXTENSIONS=1)"
    )
    for item in items:
        if "tests/sim/" in str(item.fspath).replace("\\", "/"):
            item.add_marker(skip)
