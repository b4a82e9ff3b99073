"""``fastp2p.rdma.available()`` explains why not, with the fix (runs without a device)."""

from __future__ import annotations

import resource

import pytest

from fastp2p import _accel, rdma

NEEDS_DEVICE = False


def test_built_without_verbs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_accel, "HAVE_VERBS", False)
    monkeypatch.setattr(_accel, "HAVE_NATIVE", True)  # a native build that lacks verbs
    ok, why = rdma.available()
    assert not ok and "libibverbs-dev" in why and "FASTP2P_WITH_VERBS=1" in why
    assert rdma.devices() == []


def test_memlock_too_low_says_how_to_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resource, "getrlimit", lambda _r: (64 * 1024, 64 * 1024))
    monkeypatch.setattr(rdma, "_has_ipc_lock", lambda: False)
    why = rdma.memlock_problem()
    assert why is not None and "ulimit -l unlimited" in why and "RLIMIT_MEMLOCK" in why
    monkeypatch.setattr(rdma, "_has_ipc_lock", lambda: True)
    assert rdma.memlock_problem() is None


@pytest.mark.skipif(not _accel.HAVE_VERBS, reason="verbs module not built")
def test_no_device_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastp2p._native import verbs

    monkeypatch.setattr(verbs, "devices", lambda: [])
    ok, why = rdma.available()
    assert not ok and "no RDMA device" in why and "rdma link add" in why


@pytest.mark.skipif(not _accel.HAVE_VERBS, reason="verbs module not built")
def test_unknown_device_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from fastp2p._native import verbs

    monkeypatch.setattr(verbs, "devices", lambda: ["mlx5_0"])
    ok, why = rdma.available("rxe9")
    assert not ok and "rxe9" in why and "mlx5_0" in why


def test_typed_completion_errors() -> None:
    from fastp2p.errors import AccessDeniedError, RDMAError

    e = rdma.completion_error(10, wr_id=7)
    assert isinstance(e, rdma.RemoteAccessError) and isinstance(e, AccessDeniedError)
    assert e.wr_id == 7 and e.status_name == "REM_ACCESS_ERR"
    assert isinstance(rdma.completion_error(12), rdma.RetryExceededError)
    assert isinstance(rdma.completion_error(5), rdma.FlushError)
    assert isinstance(rdma.completion_error(13), rdma.RNRRetryExceededError)
    assert type(rdma.completion_error(99)) is rdma.CompletionError
    assert isinstance(rdma.completion_error(99), RDMAError)
