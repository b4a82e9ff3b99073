"""Typed RDMA completion errors: the map from a verbs completion status to its exception.

A work request that completes with an error status surfaces as one of these on
the future of the operation that posted it (DESIGN boundary rule 1: defined in
Python, raised by the native binding and the transport alike). They live here
in ``fastp2p/errors.py`` with the rest of the tree; this module maps verbs
completion statuses to them (``completion_error``) and re-exports them.

=========================  ===================================================
``IBV_WC_*`` status         exception
=========================  ===================================================
REM_ACCESS_ERR             ``RemoteAccessError`` (also an ``AccessDeniedError``:
                           the NIC refused a revoked/out-of-bounds rkey)
RETRY_EXC_ERR              ``RetryExceededError`` (peer unreachable or dead)
RNR_RETRY_EXC_ERR          ``RNRRetryExceededError`` (peer posted no receive)
WR_FLUSH_ERR               ``FlushError`` (the queue pair was torn down first)
LOC_PROT_ERR, LOC_LEN_ERR  ``LocalProtectionError`` (our buffer/lkey was wrong)
REM_OP_ERR, REM_INV_REQ    ``RemoteOperationError``
anything else              ``CompletionError``
=========================  ===================================================
"""

from __future__ import annotations

from fastp2p.errors import (
    WC_STATUS_NAMES,
    CompletionError,
    FlushError,
    LocalProtectionError,
    RemoteAccessError,
    RemoteOperationError,
    RetryExceededError,
    RNRRetryExceededError,
)

__all__ = [
    "CompletionError",
    "RemoteAccessError",
    "RetryExceededError",
    "RNRRetryExceededError",
    "FlushError",
    "LocalProtectionError",
    "RemoteOperationError",
    "completion_error",
    "WC_STATUS_NAMES",
]

_BY_STATUS: dict[int, type[CompletionError]] = {
    10: RemoteAccessError,
    12: RetryExceededError,
    13: RNRRetryExceededError,
    5: FlushError,
    4: LocalProtectionError,
    1: LocalProtectionError,
    8: LocalProtectionError,
    9: RemoteOperationError,
    11: RemoteOperationError,
    15: RemoteOperationError,
}


def completion_error(status: int, *, wr_id: int = 0, vendor_err: int = 0, what: str = "") -> CompletionError:
    """The typed exception for a failed completion (not raised: returned)."""
    cls = _BY_STATUS.get(status, CompletionError)
    name = WC_STATUS_NAMES.get(status, str(status))
    msg = f"{what + ': ' if what else ''}work request failed with {name} (vendor error {vendor_err:#x})"
    return cls(msg, status=status, wr_id=wr_id, vendor_err=vendor_err)
