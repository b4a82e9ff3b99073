"""Typed RDMA completion errors (subclasses of ``fastp2p.errors.RDMAError``).

A work request that completes with an error status surfaces as one of these on
the future of the operation that posted it (DESIGN boundary rule 1: defined in
Python, raised by the native binding and the transport alike). They live here
rather than in ``fastp2p/errors.py`` only because that file is shared; they
are re-exported by ``fastp2p.rdma``.

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

from fastp2p.errors import AccessDeniedError, RDMAError

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

# enum ibv_wc_status (infiniband/verbs.h), stable ABI values
WC_STATUS_NAMES = {
    0: "SUCCESS",
    1: "LOC_LEN_ERR",
    2: "LOC_QP_OP_ERR",
    3: "LOC_EEC_OP_ERR",
    4: "LOC_PROT_ERR",
    5: "WR_FLUSH_ERR",
    6: "MW_BIND_ERR",
    7: "BAD_RESP_ERR",
    8: "LOC_ACCESS_ERR",
    9: "REM_INV_REQ_ERR",
    10: "REM_ACCESS_ERR",
    11: "REM_OP_ERR",
    12: "RETRY_EXC_ERR",
    13: "RNR_RETRY_EXC_ERR",
    14: "LOC_RDD_VIOL_ERR",
    15: "REM_INV_RD_REQ_ERR",
    16: "REM_ABORT_ERR",
    17: "INV_EECN_ERR",
    18: "INV_EEC_STATE_ERR",
    19: "FATAL_ERR",
    20: "RESP_TIMEOUT_ERR",
    21: "GENERAL_ERR",
}


class CompletionError(RDMAError):
    """A work request completed with an error status.

    ``status`` is the ``IBV_WC_*`` value, ``status_name`` its name, ``wr_id``
    the request's id, ``vendor_err`` the provider's detail code.
    """

    def __init__(self, message: str, *, status: int = 0, wr_id: int = 0, vendor_err: int = 0) -> None:
        super().__init__(message)
        self.status = status
        self.status_name = WC_STATUS_NAMES.get(status, str(status))
        self.wr_id = wr_id
        self.vendor_err = vendor_err


class RemoteAccessError(CompletionError, AccessDeniedError):
    """The remote NIC refused the access: rkey invalid (revoked), out of bounds or no right."""


class RetryExceededError(CompletionError):
    """Transport retries exhausted: the peer is unreachable or dead."""


class RNRRetryExceededError(CompletionError):
    """The peer had no receive buffer posted for too long."""


class FlushError(CompletionError):
    """The work request was flushed: its queue pair went to the error state or was closed."""


class LocalProtectionError(CompletionError):
    """The local buffer or key did not cover the request."""


class RemoteOperationError(CompletionError):
    """The responder could not execute the request (invalid request or operation error)."""


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
