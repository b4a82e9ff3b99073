"""Shared fixtures: the ``impl`` parametrization over pure and native kernels, markers."""

from __future__ import annotations

import os

import pytest

from fastp2p import _accel


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow test: pass --runslow to run it")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def _impls() -> list[object]:
    params: list[object] = [pytest.param(_accel.pure, id="pure")]
    if _accel.HAVE_NATIVE:
        params.append(pytest.param(_accel._impl, id="native"))
    else:
        params.append(
            pytest.param(
                None,
                id="native",
                marks=pytest.mark.skip(reason="FASTP2P_NO_EXTENSIONS set: native kernels not loaded"),
            )
        )
    return params


@pytest.fixture(params=_impls())
def impl(request: pytest.FixtureRequest) -> object:
    """The kernel implementation under test: ``_accel.pure`` or the native one."""
    return request.param


@pytest.fixture
def no_fd_leak():
    """Fail the test if it leaves file descriptors open."""
    before = set(os.listdir("/proc/self/fd"))
    yield
    import gc

    gc.collect()
    after = set(os.listdir("/proc/self/fd"))
    leaked = after - before
    assert not leaked, f"leaked fds: {sorted(leaked)}"
