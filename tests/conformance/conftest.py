"""Every test here runs under the leak and resource checks of tests/resource_guard.py."""

from tests.resource_guard import (  # noqa: F401
    _process_singletons,
    pytest_configure,
    resource_guard,
)
