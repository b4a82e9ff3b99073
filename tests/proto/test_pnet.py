"""pnet sans-IO: the ``/key/swarm/psk/1.0.0/`` key file format and the per-connection codec."""

from __future__ import annotations

import base64

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p import _accel
from fastp2p.errors import PnetError, PskFormatError
from fastp2p.proto.pnet import (
    MAX_PSK_FILE,
    MULTISTREAM_HEADER,
    PnetCodec,
    decode_psk_file,
    encode_psk_file,
)
from fastp2p.proto.xsalsa20 import XSalsa20 as PureXSalsa20

KEY = bytes(range(32))
HEX = KEY.hex()
SETTINGS = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("encoding", ["/base16/", "/base64/", "/bin/"])
def test_roundtrip(encoding: str) -> None:
    assert decode_psk_file(encode_psk_file(KEY, encoding)) == KEY


@pytest.mark.parametrize(
    "text",
    [
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX}",  # js-libp2p's generateKey (no final newline)
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX}\n",  # go-libp2p / ipfs swarm.key
        f"/key/swarm/psk/1.0.0/\r\n/base16/\r\n{HEX.upper()}\r\n",
        f"/key/swarm/psk/1.0.0/\n/base64/\n{base64.b64encode(KEY).decode()}\n",
    ],
)
def test_accepted_forms(text: str) -> None:
    assert decode_psk_file(text.encode()) == KEY


def test_bin_form() -> None:
    head = b"/key/swarm/psk/1.0.0/\n/bin/\n"
    assert decode_psk_file(head + KEY) == KEY
    assert decode_psk_file(head + KEY + b"\n") == KEY
    key_ending_in_newline = bytes(31) + b"\n"
    assert decode_psk_file(head + key_ending_in_newline) == key_ending_in_newline


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"/key/swarm/psk/1.0.0/",  # no newline
        f"/key/swarm/psk/2.0.0/\n/base16/\n{HEX}\n".encode(),  # other codec
        f"/key/swarm/psk/1.0.0/\n/base32/\n{HEX}\n".encode(),  # unknown encoding
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX[:-2]}\n".encode(),  # 31 bytes
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX}00\n".encode(),  # 33 bytes
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX[:-1]}g\n".encode(),  # not hex
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX[:32]} {HEX[32:]}\n".encode(),  # split
        f"/key/swarm/psk/1.0.0/\n/base16/\n{HEX}\n{HEX}\n".encode(),  # two keys
        b"/key/swarm/psk/1.0.0/\n/base64/\n" + base64.b64encode(KEY).rstrip(b"=") + b"\n",  # unpadded
        b"/key/swarm/psk/1.0.0/\n/base16/\n\n",
        b"/key/swarm/psk/1.0.0/\n/bin/\n" + KEY[:31],
        b"/key/swarm/psk/1.0.0/\n/bin/\n" + KEY + b"xy",
        b"/key/swarm/psk/1.0.0/\n/base16/\n" + b"0" * (MAX_PSK_FILE + 1),
        b"\xff\xfe/key/swarm/psk/1.0.0/\n/base16/\n" + HEX.encode(),
    ],
)
def test_rejected(data: bytes) -> None:
    with pytest.raises(PskFormatError):
        decode_psk_file(data)


def test_encode_refuses_bad_input() -> None:
    with pytest.raises(ValueError):
        encode_psk_file(KEY[:31])
    with pytest.raises(ValueError):
        encode_psk_file(KEY, "/base58/")


@SETTINGS
@given(
    st.sampled_from([b"/base16/", b"/base64/", b"/bin/", b"/base16", b""]),
    st.binary(max_size=200),
    st.sampled_from([b"\n", b"\r\n", b""]),
)
def test_fuzz_structured(enc: bytes, body: bytes, eol: bytes) -> None:
    data = b"/key/swarm/psk/1.0.0/" + eol + enc + eol + body
    try:
        key = decode_psk_file(data)
    except PskFormatError:
        return
    assert len(key) == 32


@SETTINGS
@given(st.binary(max_size=4096))
def test_fuzz_any_bytes(data: bytes) -> None:
    try:
        assert len(decode_psk_file(data)) == 32
    except PskFormatError:
        pass


# -- the codec -------------------------------------------------------------------------


def _pair(psk_a: bytes = KEY, psk_b: bytes = KEY, impl=PureXSalsa20) -> tuple[PnetCodec, PnetCodec]:
    return PnetCodec(psk_a, bytes(24), impl), PnetCodec(psk_b, bytes([1]) * 24, impl)


def _feed(codec: PnetCodec, wire: bytes, step: int) -> bytes:
    out = bytearray()
    for i in range(0, len(wire), step):
        out += codec.decrypt_in_place(memoryview(bytearray(wire[i : i + step])))
    return bytes(out)


@pytest.mark.parametrize("step", [1, 5, 24, 25, 1000])
def test_codec_pair_roundtrip(impl, step: int) -> None:
    a, b = _pair(impl=impl.XSalsa20)
    payload = MULTISTREAM_HEADER + b"\x07/noise\n" + bytes(range(256)) * 3
    wire = a.preamble() + bytes(a.encrypt(payload[:7])) + bytes(a.encrypt(payload[7:]))
    assert wire[:24] == bytes(24)
    assert MULTISTREAM_HEADER not in wire
    assert _feed(b, wire, step) == payload
    assert b.remote_nonce_received


def test_codec_wrong_key_fails_on_first_bytes() -> None:
    a, b = _pair(KEY, bytes(32))
    wire = a.preamble() + bytes(a.encrypt(MULTISTREAM_HEADER))
    with pytest.raises(PnetError, match="wrong or missing PSK"):
        _feed(b, wire, 3)


def test_codec_plain_multistream_peer_fails_at_once() -> None:
    _, b = _pair()
    # a public peer's eager header: 20 bytes, fewer than a nonce, still recognised
    with pytest.raises(PnetError, match="plain multistream"):
        _feed(b, MULTISTREAM_HEADER, 20)


def test_codec_validates_sizes() -> None:
    with pytest.raises(ValueError):
        PnetCodec(KEY[:31], bytes(24), PureXSalsa20)
    with pytest.raises(ValueError):
        PnetCodec(KEY, bytes(23), PureXSalsa20)


@SETTINGS
@given(st.binary(max_size=2048), st.integers(1, 64))
def test_codec_fuzz_garbage(data: bytes, step: int) -> None:
    """Arbitrary bytes from a peer: plaintext or PnetError, never anything else."""
    _, b = _pair()
    try:
        _feed(b, data, step)
    except PnetError:
        pass


def test_native_kernel_is_what_accel_injects() -> None:
    assert _accel.XSalsa20 is (_accel.native or _accel.pure).XSalsa20
