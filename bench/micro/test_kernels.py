"""Micro benchmarks of the kernels, native vs pure (pytest-benchmark).

Lives outside ``testpaths``, so it is only collected when named explicitly:

    python -m pytest bench/micro/test_kernels.py -p no:randomly --benchmark-group-by=group

Each case runs for both implementations (``[pure]``/``[native]``) in the same
benchmark group, so the table shows the native/pure ratio directly.
"""

from __future__ import annotations

import os

import pytest

pytest.importorskip("pytest_benchmark")

from fastp2p import _accel  # noqa: E402

IMPLS = [pytest.param(_accel.pure, id="pure")]
if _accel.HAVE_NATIVE:
    IMPLS.append(pytest.param(_accel._impl, id="native"))

KEY = bytes(range(32))


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


def test_yamux_encode_header(benchmark, impl):
    benchmark.group = "yamux encode_header"
    benchmark(impl.encode_header, 0, 1, 12345, 65536)


def test_yamux_decode_one_frame(benchmark, impl):
    benchmark.group = "yamux decode 1 frame (12+1024 B)"
    data = impl.encode_header(0, 1, 3, 1024) + bytes(1024)

    def run():
        return impl.YamuxDecoder().feed(data)

    assert len(benchmark(run)) == 1


def test_yamux_decode_batch_1mib(benchmark, impl):
    benchmark.group = "yamux decode 1 MiB batch (1024 x 1 KiB DATA)"
    frame = impl.encode_header(0, 0, 3, 1012) + bytes(1012)
    data = frame * 1024
    dec = impl.YamuxDecoder()
    assert len(benchmark(dec.feed, data)) == 1024


def test_yamux_decode_batch_small(benchmark, impl):
    benchmark.group = "yamux decode 1 MiB batch of WINDOW_UPDATE headers"
    data = impl.encode_header(1, 0, 3, 4096) * ((1 << 20) // 12)
    dec = impl.YamuxDecoder()
    benchmark(dec.feed, data)


def test_mplex_decode_batch(benchmark, impl):
    benchmark.group = "mplex decode 1 MiB batch (1024 x 1 KiB messages)"
    frame = impl.mplex_encode_header(3, 2, 1020) + bytes(1020)
    data = frame * 1024
    dec = impl.MplexDecoder()
    assert len(benchmark(dec.feed, data)) == 1024


@pytest.mark.parametrize("size", [1024, 65536, 1 << 20], ids=["1KiB", "64KiB", "1MiB"])
def test_aead_seal(benchmark, impl, size):
    benchmark.group = f"noise seal_frames {size} B"
    pt = os.urandom(size)
    c = impl.NoiseCipher(KEY)
    benchmark(c.seal_frames, [pt])


@pytest.mark.parametrize("size", [1024, 65536, 1 << 20], ids=["1KiB", "64KiB", "1MiB"])
def test_aead_open(benchmark, impl, size):
    benchmark.group = f"noise open_frames {size} B"
    pt = os.urandom(size)
    sealed = _accel.pure.NoiseCipher(KEY).seal_frames(pt)

    def run():
        return impl.NoiseCipher(KEY).open_frames(sealed)

    assert len(benchmark(run)) == size


def test_pool_acquire_release(benchmark, impl):
    benchmark.group = "pool acquire+release 64 KiB"
    pool = impl.BufferPool()

    def run():
        pool.acquire(65536).release()

    benchmark(run)


def test_uvarint_encode(benchmark, impl):
    benchmark.group = "uvarint encode (3 bytes)"
    benchmark(impl.uvarint_encode, 300000)


def test_uvarint_decode(benchmark, impl):
    benchmark.group = "uvarint decode (3 bytes)"
    data = impl.uvarint_encode(300000)
    benchmark(impl.uvarint_decode, data)
