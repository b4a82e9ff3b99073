# The monotonic clock without a Python call, for the native modules (inline:
# cimporting this makes no module of its own).

from posix.time cimport clock_gettime, timespec, CLOCK_MONOTONIC


cdef inline double monotonic() noexcept nogil:
    """``time.monotonic()`` (the same clock) without a Python call."""
    cdef timespec ts
    clock_gettime(CLOCK_MONOTONIC, &ts)
    return <double>ts.tv_sec + <double>ts.tv_nsec * 1e-9
