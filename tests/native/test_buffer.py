"""Buffer pool: pure and native twins."""

from __future__ import annotations

import gc

import pytest

from fastp2p import _accel
from fastp2p.errors import ClosedResourceError

native_only = pytest.mark.skipif(not _accel.HAVE_NATIVE, reason="native kernels not loaded")


def test_acquire_write_read(impl):
    pool = impl.BufferPool()
    buf = pool.acquire(100)
    assert buf.nbytes == 100 and len(buf) == 100
    v = buf.view
    assert isinstance(v, memoryview) and len(v) == 100 and not v.readonly
    v[:5] = b"hello"
    assert bytes(buf.view[:5]) == b"hello"
    assert buf.address != 0
    del v
    buf.release()
    pool.close()


@pytest.mark.parametrize(
    "n, cap",
    [
        (0, 4096),
        (1, 4096),
        (4096, 4096),
        (4097, 8192),
        (65536, 65536),
        (65537, 131072),
        (1 << 20, 1 << 20),
        ((1 << 20) + 1, 2 << 20),
        (64 << 20, 64 << 20),
    ],
)
def test_size_classes(impl, n, cap):
    pool = impl.BufferPool()
    with pool.acquire(n) as buf:
        assert buf.capacity == cap
        assert buf.nbytes == n


def test_oversize_exact_and_uncached(impl):
    pool = impl.BufferPool(size_classes=(64, 128))
    buf = pool.acquire(1000)
    assert buf.capacity == 1000
    buf.release()
    assert pool.stats() == {**pool.stats(), "allocated": 0, "cached": 0, "in_use": 0}


def test_release_with_live_view_is_buffer_error(impl):
    pool = impl.BufferPool()
    buf = pool.acquire(10)
    v = buf.view
    derived = memoryview(v)[2:4]
    del v
    with pytest.raises(BufferError):
        buf.release()
    del derived
    gc.collect()
    buf.release()
    with pytest.raises(ClosedResourceError):
        buf.release()
    with pytest.raises(ClosedResourceError):
        buf.view  # noqa: B018


def test_view_released_by_context(impl):
    pool = impl.BufferPool()
    buf = pool.acquire(10)
    with buf.view as v:
        v[0] = 1
    buf.release()


def test_double_release_via_pool(impl):
    pool = impl.BufferPool()
    buf = pool.acquire(10)
    pool.release(buf)
    with pytest.raises(ClosedResourceError):
        pool.release(buf)


def test_context_manager(impl):
    pool = impl.BufferPool()
    with pool.acquire(32) as buf:
        buf.view[0] = 7
    assert pool.stats()["in_use"] == 0
    with pytest.raises(ClosedResourceError):
        buf.release()
    with impl.BufferPool() as p2:
        p2.acquire(1).release()
    with pytest.raises(ClosedResourceError):
        p2.acquire(1)


def test_stats_and_cache_limit(impl):
    pool = impl.BufferPool(size_classes=(4096,), max_cached_per_class=2)
    bufs = [pool.acquire(100) for _ in range(4)]
    st = pool.stats()
    assert (st["allocated"], st["cached"], st["in_use"]) == (4, 0, 4)
    for b in bufs:
        b.release()
    st = pool.stats()
    assert (st["allocated"], st["cached"], st["in_use"]) == (2, 2, 0)
    again = pool.acquire(10)
    st = pool.stats()
    assert (st["allocated"], st["cached"], st["in_use"]) == (2, 1, 1)
    pool.close()
    st = pool.stats()
    assert (st["allocated"], st["cached"], st["in_use"]) == (1, 0, 1)
    again.view[0] = 1  # leased buffers stay valid after close
    again.release()
    assert pool.stats()["allocated"] == 0


def test_default_classes_and_limits_match_the_c_pool(impl):
    # one place: csrc/fp_pool.h FP_POOL_DEFAULT_*; the pure twin mirrors it
    pool = impl.BufferPool()
    assert pool.size_classes == tuple(1 << s for s in range(12, 27))
    limits = pool.cache_limits()
    assert limits[4096] == 256 and limits[1 << 20] == 32 and limits[64 << 20] == 8
    assert impl.get_default_pool().size_classes == pool.size_classes
    assert impl.get_default_pool().cache_limits() == limits


@native_only
def test_pure_pool_defaults_mirror_the_native_ones():
    native, pure = _accel._impl.BufferPool(), _accel.pure.BufferPool()
    assert pure.size_classes == native.size_classes
    assert pure.cache_limits() == native.cache_limits()
    assert pure.max_cached_per_class == native.max_cached_per_class
    assert pure.max_cached_bytes_per_class == native.max_cached_bytes_per_class


def test_default_pool_cannot_be_closed_but_trims(impl):
    pool = impl.get_default_pool()
    with pytest.raises(ValueError):
        pool.close()
    buf = pool.acquire(100)
    buf.release()
    assert pool.stats()["cached"] >= 1
    pool.trim()
    assert pool.stats()["cached"] == 0
    assert not pool.closed
    pool.acquire(1).release()


def test_byte_budget(impl):
    pool = impl.BufferPool(size_classes=(4096, 1 << 20), max_cached_per_class=100,
                           max_cached_bytes_per_class=4 << 20)
    assert pool.cache_limits() == {4096: 100, 1 << 20: 8}  # 4 blocks, raised to the minimum 8
    bufs = [pool.acquire(1 << 20) for _ in range(10)]
    for b in bufs:
        b.release()
    assert pool.stats()["cached"] == 8


def test_reuse_same_block(impl):
    pool = impl.BufferPool()
    a = pool.acquire(4000)
    a.view[:3] = b"abc"
    a.release()
    b = pool.acquire(10)
    assert pool.stats()["allocated"] == 1
    b.release()


def test_bad_args(impl):
    with pytest.raises(ValueError):
        impl.BufferPool(size_classes=())
    with pytest.raises(ValueError):
        impl.BufferPool(size_classes=(0, 10))
    with pytest.raises(ValueError):
        impl.BufferPool(max_cached_per_class=-1)
    with pytest.raises(ValueError):
        impl.BufferPool().acquire(-1)


@native_only
def test_native_exports_pep3118_and_alignment():
    pool = _accel._impl.BufferPool()
    buf = pool.acquire(10000)
    assert buf.address % 4096 == 0
    mv = memoryview(buf)  # direct PEP 3118 export
    assert buf.exports == 1
    mv[:2] = b"hi"
    assert bytes(buf.view[:2]) == b"hi"
    with pytest.raises(BufferError):
        buf.release()
    mv.release()
    assert buf.exports == 0
    addr = buf.address
    buf.release()
    again = pool.acquire(9000)  # same 16 KiB class
    assert again.address == addr  # free list reuse
    again.release()
    big = pool.acquire(2 << 20)  # mmap-backed class
    assert big.address % 4096 == 0
    big.view[-1] = 1
    big.release()


@native_only
def test_native_dealloc_returns_memory():
    pool = _accel._impl.BufferPool()
    buf = pool.acquire(10)
    del buf
    gc.collect()
    st = pool.stats()
    assert st["in_use"] == 0 and st["cached"] == 1


@native_only
def test_native_buffer_keeps_pool_alive():
    buf = _accel._impl.BufferPool().acquire(100)
    gc.collect()
    buf.view[0] = 1
    buf.release()


@native_only
def test_native_buffer_not_constructible():
    with pytest.raises(TypeError):
        _accel._impl.Buffer()


def test_native_usable_in_noise_and_decoder(impl):
    pool = impl.BufferPool()
    buf = pool.acquire(5)
    buf.view[:] = b"hello"
    sealed = impl.NoiseCipher(bytes(32)).seal_frames([buf.view])
    assert impl.NoiseCipher(bytes(32)).open_frames(sealed) == b"hello"
    buf.release()


@native_only
def test_native_pool_hugepages_option_falls_back():
    pool = _accel._impl.BufferPool(hugepages=True)
    assert pool.hugepages
    buf = pool.acquire(4 << 20)
    buf.view[-1] = 1
    st = pool.stats()
    try:
        with open("/proc/sys/vm/nr_hugepages") as f:
            reserved = int(f.read())
    except OSError:
        reserved = -1
    if reserved == 0:
        assert st["huge_allocated"] == 0  # normal pages, still page-aligned and usable
    assert buf.address % 4096 == 0
    buf.release()
    pool.close()
