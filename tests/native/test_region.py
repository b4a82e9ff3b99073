"""MemoryRegion: pool memory and pinned user buffers, pure and native twins."""

from __future__ import annotations

import gc
import mmap
import sys

import pytest

from fastp2p import _accel
from fastp2p.errors import AccessError, ClosedResourceError, RegionBoundsError

try:
    import numpy
except ImportError:  # pragma: no cover - numpy is not a test dependency
    numpy = None

native_only = pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")
needs_numpy = pytest.mark.skipif(numpy is None, reason="numpy not installed")


def _nr_hugepages() -> int:
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            return int(f.read())
    except (OSError, ValueError):
        return -1


def _mapped(addr: int) -> bool:
    """Whether ``addr`` lies in a mapping of this process (/proc/self/maps)."""
    with open("/proc/self/maps") as f:
        for line in f:
            lo, hi = (int(x, 16) for x in line.split()[0].split("-"))
            if lo <= addr < hi:
                return True
    return False


# -- both implementations ----------------------------------------------------------------


def test_alloc_is_zeroed_aligned_and_writable(impl):
    region = impl.alloc_region(10000)
    assert isinstance(region, impl.MemoryRegion)
    assert region.nbytes == len(region) == 10000
    assert region.address % 4096 == 0
    assert len(region.region_id) == 16
    assert not region.closed and not region.registered
    v = region.view()
    assert len(v) == 10000 and not v.readonly
    assert bytes(v) == bytes(10000)
    v[100:105] = b"hello"
    assert bytes(region.view(100, 5)) == b"hello"
    assert region.view(100, 5).tobytes() == b"hello"
    v.release()
    region.close()


def test_alloc_reuses_pool_blocks_but_zeroes_them(impl):
    a = impl.alloc_region(5000)
    a.view()[:] = b"\xff" * 5000
    a.close()
    del a
    gc.collect()
    b = impl.alloc_region(5000)
    assert bytes(b.view()) == bytes(5000)
    b.close()


def test_region_ids_are_unique(impl):
    ids = {impl.alloc_region(1).region_id for _ in range(50)}
    assert len(ids) == 50


def test_bad_sizes(impl):
    with pytest.raises(ValueError):
        impl.alloc_region(-1)
    empty = impl.alloc_region(0)
    assert empty.nbytes == 0 and len(empty.view()) == 0
    empty.close()


@pytest.mark.parametrize(
    "offset, length",
    [(-1, None), (101, None), (0, 101), (50, 51), (100, 1), (0, -1), (10, -5)],
)
def test_view_bounds(impl, offset, length):
    region = impl.alloc_region(100)
    with pytest.raises(RegionBoundsError):
        region.view(offset, length)
    region.close()


def test_view_edges(impl):
    region = impl.alloc_region(100)
    assert len(region.view(100)) == 0
    assert len(region.view(100, 0)) == 0
    assert len(region.view(0, 100)) == 100
    assert len(region.view(99)) == 1
    region.close()


def test_close_is_idempotent_and_refuses_use(impl):
    region = impl.alloc_region(100)
    region.close()
    region.close()
    assert region.closed
    with pytest.raises(ClosedResourceError):
        region.view()
    with pytest.raises(ClosedResourceError):
        region.lease()
    with pytest.raises(ClosedResourceError):
        region._acquire_lease()
    with pytest.raises(ClosedResourceError):
        region.address  # noqa: B018
    with pytest.raises(ClosedResourceError):
        region.__enter__()


def test_context_manager(impl):
    with impl.alloc_region(64) as region:
        region.view()[0] = 1
    assert region.closed


def test_lease_defers_the_free(impl):
    region = impl.alloc_region(4096)
    view = region.view()
    lease = region.lease()
    assert region.leases == 1
    region.close()
    assert region.closed and not region.freed
    view[0] = 42  # memory still valid under the lease
    assert view[0] == 42
    view.release()
    assert not region.freed  # the lease alone holds it
    lease.release()
    lease.release()  # idempotent
    assert lease.released
    assert region.leases == 0 and region.freed


def test_lease_methods_pair(impl):
    region = impl.alloc_region(10)
    region._acquire_lease()
    region._acquire_lease()
    region.close()
    region._release_lease()
    assert not region.freed
    region._release_lease()
    assert region.freed
    with pytest.raises(RuntimeError):
        region._release_lease()


def test_lease_context_manager(impl):
    region = impl.alloc_region(10)
    with region.lease() as lease:
        region.close()
        assert not region.freed
    assert lease.released and region.freed


def test_register_bytearray_shares_and_pins(impl):
    buf = bytearray(b"abcdef")
    region = impl.register_region(buf)
    assert region.registered and region.nbytes == 6
    region.view(1, 2)[:] = b"XY"
    assert buf == bytearray(b"aXYdef")
    buf[0] = ord("z")
    assert bytes(region.view(0, 1)) == b"z"
    with pytest.raises(BufferError):
        buf.append(0)  # pinned: cannot move under the region
    region.close()
    gc.collect()
    buf.append(0)  # released once closed and unviewed


@needs_numpy
def test_register_numpy_array(impl):
    arr = numpy.zeros(1000, dtype=numpy.float64)
    region = impl.register_region(arr)
    assert region.nbytes == 8000
    v = region.view()
    v[:8] = numpy.float64(2.5).tobytes()
    assert arr[0] == 2.5
    arr[1] = 7.0
    assert numpy.frombuffer(region.view(8, 8), dtype=numpy.float64)[0] == 7.0
    v.release()
    region.close()


@needs_numpy
def test_register_2d_c_contiguous_numpy(impl):
    arr = numpy.zeros((4, 8), dtype=numpy.uint16)
    region = impl.register_region(arr)
    assert region.nbytes == 64
    region.view(2, 2)[:] = b"\x01\x00"
    assert arr[0, 1] == 1
    region.close()


def test_register_mmap_of_a_file(impl, tmp_path):
    path = tmp_path / "data.bin"
    path.write_bytes(bytes(8192))
    with open(path, "r+b") as f:
        mm = mmap.mmap(f.fileno(), 8192)
        region = impl.register_region(mm)
        assert region.nbytes == 8192
        region.view(4096, 5)[:] = b"hello"
        mm.flush()
        with pytest.raises(BufferError):
            mm.close()  # pinned
        region.close()
        gc.collect()
        mm.close()
    assert path.read_bytes()[4096:4101] == b"hello"


@needs_numpy
def test_register_rejects_readonly(impl):
    with pytest.raises(TypeError, match="read-only"):
        impl.register_region(b"immutable")
    ro = numpy.zeros(10)
    ro.flags.writeable = False
    with pytest.raises(TypeError, match="read-only"):
        impl.register_region(ro)


@needs_numpy
def test_register_rejects_non_contiguous(impl):
    with pytest.raises(ValueError, match="contiguous"):
        impl.register_region(numpy.zeros(20)[::2])
    with pytest.raises(ValueError, match="contiguous"):
        impl.register_region(memoryview(bytearray(20))[::3])


def test_register_rejects_non_buffers(impl):
    for bad in (5, "text", None, [1, 2]):
        with pytest.raises(TypeError):
            impl.register_region(bad)


def test_hugepages_fall_back_with_a_reason(impl):
    region = impl.alloc_region(4 << 20, hugepages=True)
    if region.hugepages:  # pragma: no cover - only where huge pages are reserved
        assert region.hugepage_fallback_reason is None
    else:
        reason = region.hugepage_fallback_reason
        assert isinstance(reason, str) and reason
        if impl is not _accel.pure and _nr_hugepages() == 0:
            assert "nr_hugepages" in reason
    region.view()[-1] = 1
    region.close()
    small = impl.alloc_region(4096, hugepages=True)
    assert not small.hugepages and small.hugepage_fallback_reason
    plain = impl.alloc_region(4 << 20)
    assert not plain.hugepages and plain.hugepage_fallback_reason is None


def test_grant_needs_a_manager(impl):
    region = impl.alloc_region(10)
    with pytest.raises(AccessError):
        region.revoke_all()
    with pytest.raises(AccessError):
        region.revoke(b"x")


def test_not_constructible(impl):
    with pytest.raises(TypeError):
        impl.MemoryRegion()


def test_accel_exports_the_region_api():
    for name in ("MemoryRegion", "RegionLease", "alloc_region", "register_region",
                 "get_default_pool"):
        assert name in _accel.__all__
        assert getattr(_accel, name) is getattr(_accel._impl, name)
        assert hasattr(_accel.pure, name)


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="3.12+ has __buffer__")
def test_pure_region_is_not_a_buffer_on_311():
    region = _accel.pure.alloc_region(10)
    with pytest.raises(TypeError):
        memoryview(region)  # documented: needs the native core on 3.11
    region.close()


def test_pure_close_with_live_view_keeps_memory_valid():
    region = _accel.pure.alloc_region(1 << 20)
    view = region.view(10, 10)
    region.close()
    assert region.freed  # the region let go; the view keeps the mmap alive
    view[:] = b"0123456789"
    assert bytes(view) == b"0123456789"


# -- native: PEP 3118 exports and deferred frees ------------------------------------------


@native_only
@needs_numpy
def test_native_memoryview_and_numpy_share_memory():
    region = _accel.alloc_region(4096)
    mv = memoryview(region)
    assert not mv.readonly and mv.nbytes == 4096
    arr = numpy.frombuffer(region, dtype=numpy.uint32)
    assert arr.flags.writeable and arr.size == 1024
    arr[0] = 0x01020304
    assert bytes(mv[:4]) == (0x01020304).to_bytes(4, sys.byteorder)
    mv[4:8] = b"\xff\xff\xff\xff"
    assert arr[1] == 0xFFFFFFFF
    assert arr.ctypes.data == region.address
    assert region.exports == 2
    del arr
    mv.release()
    assert region.exports == 0
    region.close()
    with pytest.raises(ClosedResourceError):
        memoryview(region)


@native_only
def test_native_close_with_live_view_defers_the_free():
    pool = _accel.get_default_pool()
    before = pool.stats()["in_use"]
    region = _accel.alloc_region(10000)
    assert pool.stats()["in_use"] == before + 1
    mv = memoryview(region)[100:200]
    region.close()
    assert region.closed and not region.freed
    assert pool.stats()["in_use"] == before + 1  # still leased to the region
    mv[:3] = b"abc"  # memory is still valid
    assert bytes(mv[:3]) == b"abc"
    with pytest.raises(ClosedResourceError):
        region.view()
    mv.release()
    assert region.freed
    assert pool.stats()["in_use"] == before


@native_only
@needs_numpy
def test_native_close_with_numpy_view_defers_the_free():
    region = _accel.alloc_region(8192)
    arr = numpy.frombuffer(region, dtype=numpy.uint8)
    region.close()
    assert not region.freed
    arr[:] = 9
    del arr
    gc.collect()
    assert region.freed


@native_only
def test_native_large_region_is_unmapped_only_after_the_last_view():
    # above the largest size class: an exact, uncached mmap'd block, munmap'd on free
    nbytes = (64 << 20) + 4096
    region = _accel.alloc_region(nbytes)
    addr = region.address
    assert _mapped(addr)
    view = region.view(nbytes - 10)
    lease = region.lease()
    region.close()
    view[:] = b"z" * 10
    lease.release()
    assert _mapped(addr) and not region.freed  # the view still holds it
    view.release()
    assert region.freed
    assert not _mapped(addr)


@native_only
def test_native_registered_buffer_released_after_last_view():
    buf = bytearray(100)
    region = _accel.register_region(buf)
    mv = memoryview(region)
    region.close()
    with pytest.raises(BufferError):
        buf.append(1)  # still pinned: a view of the region is alive
    mv[0] = 5
    mv.release()
    buf.append(1)
    assert buf[0] == 5


@native_only
def test_native_dropped_region_returns_its_block():
    pool = _accel.get_default_pool()
    before = pool.stats()["in_use"]
    region = _accel.alloc_region(3000)
    del region
    gc.collect()
    assert pool.stats()["in_use"] == before


@native_only
@needs_numpy
def test_native_register_fortran_contiguous():
    arr = numpy.zeros((4, 8), dtype=numpy.uint8, order="F")
    region = _accel.register_region(arr)  # any contiguous layout is one block of memory
    assert region.nbytes == 32
    region.close()


@native_only
def test_native_lease_object_keeps_region_alive():
    region = _accel.alloc_region(100)
    lease = region.lease()
    region.close()
    del region
    gc.collect()
    lease.release()

