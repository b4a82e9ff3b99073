"""The minimal protobuf codec: round trips, limits, and only ProtobufError on garbage."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastp2p.errors import ProtobufError
from fastp2p.proto.protobuf import decode, encode, fields_by_number, length_prefixed

fields = st.lists(
    st.tuples(
        st.integers(1, 2**29 - 1),
        st.one_of(st.integers(0, 2**63 - 1), st.binary(max_size=64)),
    ),
    max_size=20,
)


@given(fields)
def test_round_trip(items: list[tuple[int, int | bytes]]) -> None:
    decoded = decode(encode(items))
    assert [(n, v) for n, _w, v in decoded] == items


@given(st.binary(max_size=256))
def test_garbage_raises_only_protobuf_error(data: bytes) -> None:
    try:
        decode(data)
    except ProtobufError:
        pass


def test_known_bytes_and_errors() -> None:
    # field 1 varint 150 (protobuf docs example), field 2 string "testing"
    msg = bytes.fromhex("089601") + bytes.fromhex("120774657374696e67")
    assert fields_by_number(msg) == {1: [150], 2: [b"testing"]}
    assert encode([(1, 150), (2, "testing")]) == msg
    assert length_prefixed(b"abc") == b"\x03abc"
    with pytest.raises(ProtobufError, match="exceeds"):
        decode(b"\x12\x10abc")  # length 16, 3 bytes present
    with pytest.raises(ProtobufError, match="truncated"):
        decode(b"\x08")
    with pytest.raises(ProtobufError, match="field number 0"):
        decode(b"\x00\x01")
    with pytest.raises(ProtobufError, match="wire type"):
        decode(b"\x0b")  # start group
    fixed = decode(b"\x0d\x01\x00\x00\x00\x11" + (2).to_bytes(8, "little"))
    assert fixed == [(1, 5, 1), (2, 1, 2)]
