"""The native yamux demux (fastp2p/_native/frame.pyx) against its pure twin, here so that
the AddressSanitizer pass over tests/native (ci/asan_native.sh) runs it too. The cases
live in tests/proto/test_yamux_demux.py."""

from __future__ import annotations

from tests.proto.test_yamux_demux import (  # noqa: F401
    test_demux_error_delivers_nothing,
    test_demux_fast_path_and_order,
    test_demux_kernel_parity,
    test_demux_many_records_one_batch,
)
