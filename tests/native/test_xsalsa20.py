"""XSalsa20 (pnet's stream cipher): pure and native twins against published vectors, and parity.

Vectors: NaCl's tests/stream3, tests/stream4 and tests/stream (the "Cryptography
in NaCl" secretbox example, and the SHA-512 of 4 MiB of keystream) and Crypto++'s
TestVectors/salsa.txt XSalsa20 set (Wei Dai, from naclcrypto-20090308).
"""

from __future__ import annotations

import hashlib
import struct
import threading

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import SecurityError
from fastp2p.proto import xsalsa20 as pure_xs

NACL_KEY = bytes.fromhex("1b27556473e985d462cd51197a9a46c76009549eac6474f206c4ee0844f68389")
NACL_NONCE = bytes.fromhex("69696ee955b62b73cd62bda875fc73d68219e0036b7a0b37")
NACL_STREAM3 = bytes.fromhex("eea6a7251c1e72916d11c2cb214d3c252539121d8e234e652d651fa4c8cff880")
NACL_STREAM4_M = bytes.fromhex(
    "be075fc53c81f2d5cf141316ebeb0c7b5228c52a4c62cbd44b66849b64244ffc"
    "e5ecbaaf33bd751a1ac728d45e6c61296cdc3c01233561f41db66cce314adb31"
    "0e3be8250c46f06dceea3a7fa1348057e2f6556ad6b1318a024a838f21af1fde"
    "048977eb48f59ffd4924ca1c60902e52f0a089bc76897040e082f93776384864"
    "5e0705"
)
NACL_STREAM4_C = bytes.fromhex(
    "8e993b9f48681273c29650ba32fc76ce48332ea7164d96a4476fb8c531a1186a"
    "c0dfc17c98dce87b4da7f011ec48c97271d2c20f9b928fe2270d6fb863d51738"
    "b48eeee314a7cc8ab932164548e526ae90224368517acfeabd6bb3732bc0e9da"
    "99832b61ca01b6de56244a9e88d5f9b37973f622a43d14a6599b1f654cb45a74"
    "e355a5"
)
#: SHA-512 of the first 4 MiB of keystream (NaCl tests/stream.c)
NACL_STREAM_SHA512 = (
    "2bd8e7db6877539e4f2b295ee415cd378ae214aa3beb3e08e911a5bd4a25e6ac"
    "16ca283c79c34c08c99f7bdb560111e8cac1ae65eea08ac384d7a591461ab6e3"
)
CRYPTOPP = [
    (
        "9e1da239d155f52ad37f75c7368a536668b051952923ad44f57e75ab588e475a",
        "af06f17859dffa799891c4288f6635b5c5a45eee9017fd72",
        "feac9d54fc8c115ae247d9a7e919dd76cfcbc72d32cae4944860817cbdfb8c04e6b1df76a16517cd33ccf1acda9206"
        "389e9e318f5966c093cfb3ec2d9ee2de856437ed581f552f26ac2907609df8c613b9e33d44bfc21ff79153e9ef81a9"
        "d66cc317857f752cc175fd8891fefebb7d041e6517c3162d197e2112837d3bc4104312ad35b75ea686e7c70d4ec047"
        "46b52ff09c421451459fb59f",
        "2c261a2f4e61a62e1b27689916bf03453fcbc97bb2af6f329391ef063b5a219bf984d07d70f602d85f6db61474e9d9"
        "f5a2deecb4fcd90184d16f3b5b5e168ee03ea8c93f3933a22bc3d1a5ae8c2d8b02757c87c073409052a2a8a41e7f48"
        "7e041f9a49a0997b540e18621cad3a24f0a56d9b19227929057ab3ba950f6274b121f193e32e06e5388781a1cb5731"
        "7c0ba6305e910961d01002f0",
    ),
    (
        "d5c7f6797b7e7e9c1d7fd2610b2abf2bc5a7885fb3ff78092fb3abe8986d35e2",
        "744e17312b27969d826444640e9c4a378ae334f185369c95",
        "7758298c628eb3a4b6963c5445ef66971222be5d1a4ad839715d1188071739b77cc6e05d5410f963a64167629757",
        "27b8cfe81416a76301fd1eec6a4d99675069b2da2776c360db1bdfea7c0aa613913e10f7a60fec04d11e65f2d64e",
    ),
    (
        "737d7811ce96472efed12258b78122f11deaec8759ccbd71eac6bbefa627785c",
        "6fb2ee3dda6dbd12f1274f126701ec75c35c86607adb3edd",
        "501325fb2645264864df11faa17bbd58312b77cad3d94ac8fb8542f0eb653ad73d7fce932bb874cb89ac39fc47f826"
        "7cf0f0c209f204b2d8578a3bdf461cb6a271a468bebaccd9685014ccbc9a73618c6a5e778a21cc8416c60ad24ddc41"
        "7a130d53eda6dfbfe47d09170a7be1a708b7b5f3ad464310be36d9a2a95dc39e83d38667e842eb6411e8a23712297b"
        "165f690c2d7ca1b1346e3c1fccf5cafd4f8be0",
        "6724c372d2e9074da5e27a6c54b2d703dc1d4c9b1f8d90f00c122e692ace7700eadca942544507f1375b6581d5a8fb"
        "39981c1c0e6e1ff2140b082e9ec016fce141d5199647d43b0b68bfd0fea5e00f468962c7384dd6129aea6a3fdfe75a"
        "bb210ed5607cef8fa0e152833d5ac37d52e557b91098a322e76a45bbbcf4899e790618aa3f4c2e5e0fc3de93269a57"
        "7d77a5502e8ea02f717b1dd2df1ec69d8b61ca",
    ),
]
HSET = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
needs_native = pytest.mark.skipif(
    not _accel.HAVE_NATIVE, reason="FASTP2P_NO_EXTENSIONS set: the native kernel is not loaded"
)


def test_nacl_stream3(impl):
    assert impl.XSalsa20(NACL_KEY, NACL_NONCE).apply_copy(bytes(32)) == NACL_STREAM3


def test_nacl_stream4_in_place_and_split(impl):
    msg = bytes(32) + NACL_STREAM4_M
    for cut in (0, 1, 31, 32, 33, 64, 100, len(msg)):
        x = impl.XSalsa20(NACL_KEY, NACL_NONCE)
        buf = bytearray(msg)
        x.apply(memoryview(buf)[:cut])
        x.apply(memoryview(buf)[cut:])
        assert bytes(buf[32:]) == NACL_STREAM4_C, cut
        assert bytes(buf[:32]) == NACL_STREAM3


@pytest.mark.parametrize("key,nonce,plain,cipher", CRYPTOPP)
def test_cryptopp_vectors(impl, key, nonce, plain, cipher):
    x = impl.XSalsa20(bytes.fromhex(key), bytes.fromhex(nonce))
    assert x.apply_copy(bytes.fromhex(plain)).hex() == cipher


@needs_native
def test_nacl_stream_4mib_native():
    # 4 MiB crosses the lane path, the GIL release threshold and many calls
    x = _accel.native.XSalsa20(NACL_KEY, NACL_NONCE)
    h = hashlib.sha512()
    for n in (1, 63, 1000, 70000, 1 << 20):
        h.update(x.apply_copy(bytes(n)))
    buf = bytearray((4 << 20) - (1 + 63 + 1000 + 70000 + (1 << 20)))
    x.apply(buf)
    h.update(buf)
    assert h.hexdigest() == NACL_STREAM_SHA512


def test_hsalsa20_matches_native_subkey():
    # the pure HSalsa20 is what XSalsa20 uses; pin it against the NaCl vector through the stream
    sub = pure_xs.hsalsa20(NACL_KEY, NACL_NONCE[:16])
    words = pure_xs._input_words(sub, (*struct.unpack("<2I", NACL_NONCE[16:]), 0, 0))
    assert pure_xs.salsa20_block(words)[:32] == NACL_STREAM3


def test_bad_sizes(impl):
    with pytest.raises(ValueError):
        impl.XSalsa20(bytes(31), bytes(24))
    with pytest.raises(ValueError):
        impl.XSalsa20(bytes(32), bytes(23))
    with pytest.raises((TypeError, BufferError)):
        impl.XSalsa20(bytes(32), bytes(24)).apply(b"read-only")
    assert impl.XSalsa20(bytes(32), bytes(24)).apply_copy(b"") == bytearray()


def test_exhausted_counter_pure():
    x = pure_xs.XSalsa20(bytes(32), bytes(24))
    x._counter = (1 << 64) - 1
    x.apply_copy(bytes(64))  # the last block
    with pytest.raises(SecurityError):
        x.apply_copy(b"x")


@needs_native
@HSET
@given(
    key=st.binary(min_size=32, max_size=32),
    nonce=st.binary(min_size=24, max_size=24),
    data=st.binary(max_size=3000),
    cuts=st.lists(st.integers(min_value=0, max_value=3000), max_size=6),
)
def test_native_pure_parity(key, nonce, data, cuts):
    n = _accel.native.XSalsa20(key, nonce)
    p = pure_xs.XSalsa20(key, nonce)
    bounds = sorted({0, len(data), *(c for c in cuts if c <= len(data))})
    out_n, buf_p = bytearray(), bytearray(data)
    for a, b in zip(bounds, bounds[1:], strict=False):
        out_n += n.apply_copy(memoryview(data)[a:b])
        p.apply(memoryview(buf_p)[a:b])
    assert out_n == buf_p
    # and decrypting with a fresh stream gives the data back
    assert _accel.native.XSalsa20(key, nonce).apply_copy(out_n) == data


@needs_native
def test_native_releases_gil_and_refuses_concurrent_use():
    x = _accel.native.XSalsa20(bytes(32), bytes(24))
    big = bytearray(128 << 20)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            x.apply(big)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    t = threading.Thread(target=worker)
    t.start()
    # while the worker holds the stream without the GIL, this thread still runs
    seen_busy = False
    while t.is_alive():
        try:
            x.apply_copy(b"x")
        except Exception as exc:  # BusyResourceError
            seen_busy = type(exc).__name__ == "BusyResourceError"
            break
    t.join(60)
    assert not errors
    assert seen_busy, "the main thread never ran while the worker was inside the kernel"


def test_apply_into(impl):
    msg = bytes(32) + NACL_STREAM4_M
    x = impl.XSalsa20(NACL_KEY, NACL_NONCE)
    out = bytearray(len(msg))
    x.apply_into(msg[:40], memoryview(out)[:40])  # from read-only bytes
    x.apply_into(msg[40:], memoryview(out)[40:])
    assert bytes(out[32:]) == NACL_STREAM4_C
    same = bytearray(msg)
    impl.XSalsa20(NACL_KEY, NACL_NONCE).apply_into(same, same)  # in place is allowed
    assert bytes(same) == bytes(out)
    with pytest.raises(ValueError):
        x.apply_into(b"abc", bytearray(4))
    with pytest.raises((TypeError, BufferError)):
        x.apply_into(b"abc", b"xyz")


@needs_native
def test_native_overlap_refused():
    buf = bytearray(100)
    with pytest.raises(ValueError, match="overlap"):
        _accel.native.XSalsa20(bytes(32), bytes(24)).apply_into(memoryview(buf)[:50], memoryview(buf)[10:60])
