"""Identify message codec and the stream reader."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fastp2p.errors import (
    FrameTooLargeError,
    LocalProtocolError,
    ProtobufError,
    RemoteProtocolError,
)
from fastp2p.proto import protobuf
from fastp2p.proto.identify import (
    MAX_LIST_ENTRIES,
    PROTOCOL_ID,
    PUSH_PROTOCOL_ID,
    IdentifyInfo,
    IdentifyReader,
    decode_identify,
    encode_identify,
    encode_identify_frame,
)
from fastp2p.proto.varint import uvarint_encode

# /ip4/127.0.0.1/tcp/4001 in binary form
ADDR = bytes.fromhex("047f000001060fa1")

FULL = IdentifyInfo(
    protocol_version="ipfs/0.1.0",
    agent_version="fastp2p/0.1",
    public_key=b"\x08\x01\x12\x20" + b"k" * 32,
    listen_addrs=[ADDR, ADDR[:-1] + b"\xa2"],
    observed_addr=ADDR,
    protocols=["/ipfs/id/1.0.0", "/ipfs/ping/1.0.0"],
    signed_peer_record=b"record",
)


def test_protocol_ids() -> None:
    assert PROTOCOL_ID == "/ipfs/id/1.0.0"
    assert PUSH_PROTOCOL_ID == "/ipfs/id/push/1.0.0"


def test_roundtrip_full() -> None:
    assert decode_identify(encode_identify(FULL)) == FULL


def test_field_numbers_on_the_wire() -> None:
    info = IdentifyInfo(protocol_version="p", agent_version="a", public_key=b"k",
                        listen_addrs=[b"L"], observed_addr=b"O", protocols=["x"],
                        signed_peer_record=b"S")
    assert protobuf.decode(encode_identify(info)) == [
        (5, 2, b"p"), (6, 2, b"a"), (1, 2, b"k"), (2, 2, b"L"), (4, 2, b"O"), (3, 2, b"x"), (8, 2, b"S"),
    ]


def test_empty_message() -> None:
    assert encode_identify(IdentifyInfo()) == b""
    info = decode_identify(b"")
    assert info.protocol_version is None and info.listen_addrs == [] and info.observed_addr is None


def test_multiaddr_like_objects_accepted() -> None:
    class FakeAddr:
        def to_bytes(self) -> bytes:
            return ADDR

    enc = encode_identify(IdentifyInfo(listen_addrs=[FakeAddr()], observed_addr=FakeAddr()))
    dec = decode_identify(enc)
    assert dec.listen_addrs == [ADDR] and dec.observed_addr == ADDR
    with pytest.raises(LocalProtocolError):
        encode_identify(IdentifyInfo(listen_addrs=["/ip4/1.2.3.4"]))


def test_unknown_fields_ignored() -> None:
    data = encode_identify(FULL) + protobuf.encode([(7, b"x"), (99, 5)]) + b"\x4d" + b"\x00" * 4
    assert decode_identify(data) == FULL


@pytest.mark.parametrize(
    "data",
    [
        b"\x0a\x05abc",  # truncated bytes field
        b"\x28\x01",  # protocolVersion with varint wire type
        b"\x1a\x02\xff\xfe",  # protocols entry not UTF-8
        b"\x2a\x01\x80",  # protocolVersion not UTF-8
        b"\x0b",  # group wire type
        b"\x80",  # truncated key
    ],
)
def test_malformed(data: bytes) -> None:
    with pytest.raises(ProtobufError):
        decode_identify(data)


def test_size_bounds() -> None:
    with pytest.raises(ProtobufError):
        decode_identify(protobuf.encode([(6, "a" * (64 * 1024))]))
    too_many = protobuf.encode([(3, "p")] * (MAX_LIST_ENTRIES + 1))
    with pytest.raises(ProtobufError):
        decode_identify(too_many)
    too_many = protobuf.encode([(2, b"a")] * (MAX_LIST_ENTRIES + 1))
    with pytest.raises(ProtobufError):
        decode_identify(too_many)
    ok = protobuf.encode([(3, "p")] * MAX_LIST_ENTRIES)
    assert len(decode_identify(ok).protocols) == MAX_LIST_ENTRIES


def test_merge_keeps_absent_fields() -> None:
    push = IdentifyInfo(listen_addrs=[b"new"])
    merged = FULL.merge(push)
    assert merged.listen_addrs == [b"new"]
    assert merged.protocols == FULL.protocols and merged.agent_version == FULL.agent_version
    assert FULL.listen_addrs != [b"new"]  # original untouched


def test_reader_split_everywhere() -> None:
    frame = encode_identify_frame(FULL)
    assert frame == uvarint_encode(len(encode_identify(FULL))) + encode_identify(FULL)
    for k in range(len(frame) + 1):
        reader = IdentifyReader()
        reader.receive_data(frame[:k])
        got = reader.messages()
        assert got == ([FULL] if k == len(frame) else [])
        reader.receive_data(frame[k:])
        if k < len(frame):
            assert reader.messages() == [FULL]
        reader.receive_eof()
        assert reader.result() == FULL


def test_reader_chunked_signed_peer_record() -> None:
    # go-libp2p sends a large identify as two messages, the second with only the record
    first = IdentifyInfo(agent_version="go-libp2p", protocols=["/a"])
    second = IdentifyInfo(signed_peer_record=b"R" * 3000)
    reader = IdentifyReader()
    reader.receive_data(encode_identify_frame(first) + encode_identify_frame(second))
    assert reader.messages() == [first, second]
    reader.receive_eof()
    res = reader.result()
    assert res.agent_version == "go-libp2p" and res.signed_peer_record == b"R" * 3000


def test_reader_errors() -> None:
    reader = IdentifyReader()
    with pytest.raises(FrameTooLargeError):
        reader.receive_data(uvarint_encode(64 * 1024 + 1))
    with pytest.raises(FrameTooLargeError):
        IdentifyReader().receive_data(b"\xff\xff\xff")
    reader = IdentifyReader()
    reader.receive_data(b"\x05\x0a\x03")
    with pytest.raises(ProtobufError):
        reader.receive_eof()
    reader = IdentifyReader(max_messages=2)
    with pytest.raises(ProtobufError):
        reader.receive_data(b"\x00" * 3)
    reader = IdentifyReader()
    reader.receive_eof()
    with pytest.raises(LocalProtocolError):
        reader.receive_data(b"\x00")
    with pytest.raises(ProtobufError):
        IdentifyReader().receive_data(b"\x02\x28\x01")


def test_reader_legacy_unprefixed() -> None:
    reader = IdentifyReader(length_prefixed=False)
    body = encode_identify(FULL)
    reader.receive_data(body[:10])
    assert reader.messages() == []
    reader.receive_data(body[10:])
    reader.receive_eof()
    assert reader.messages() == [FULL]
    with pytest.raises(FrameTooLargeError):
        IdentifyReader(length_prefixed=False).receive_data(b"\x00" * (64 * 1024 + 1))


addr_st = st.binary(min_size=1, max_size=40)
text_st = st.text(max_size=40)


@settings(max_examples=150, deadline=None)
@given(
    st.builds(
        IdentifyInfo,
        protocol_version=st.none() | text_st,
        agent_version=st.none() | text_st,
        public_key=st.none() | st.binary(max_size=80),
        listen_addrs=st.lists(addr_st, max_size=5),
        observed_addr=st.none() | addr_st,
        protocols=st.lists(text_st, max_size=5),
        signed_peer_record=st.none() | st.binary(max_size=80),
    )
)
def test_roundtrip_property(info: IdentifyInfo) -> None:
    assert decode_identify(encode_identify(info)) == info


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_decode(data: bytes) -> None:
    try:
        decode_identify(data)
    except ProtobufError:
        pass
    reader = IdentifyReader()
    try:
        reader.receive_data(data)
        reader.receive_eof()
    except RemoteProtocolError:
        pass


def test_peers_protocol_strings_are_shared_and_the_memo_is_bounded(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every peer lists the same protocol ids: records share one str per id, and a
    peer sending endless distinct junk neither grows the memo past its bound nor
    keeps the next peers' ids out of it."""
    from fastp2p.proto import identify as ident

    monkeypatch.setattr(ident, "_TEXTS", {})
    a = decode_identify(encode_identify(IdentifyInfo(protocols=["/ipfs/id/1.0.0", "/x/1"])))
    b = decode_identify(encode_identify(IdentifyInfo(protocols=["/ipfs/id/1.0.0", "/x/1"])))
    assert a.protocols == b.protocols == ["/ipfs/id/1.0.0", "/x/1"]
    assert all(x is y for x, y in zip(a.protocols, b.protocols, strict=True))
    for i in range(3 * ident._TEXTS_MAX // 256):
        junk = [f"/junk/{i}/{k}" for k in range(256)]
        assert decode_identify(encode_identify(IdentifyInfo(protocols=junk))).protocols == junk
    assert len(ident._TEXTS) <= ident._TEXTS_MAX
    c = decode_identify(encode_identify(IdentifyInfo(protocols=["/ipfs/id/1.0.0"])))
    d = decode_identify(encode_identify(IdentifyInfo(protocols=["/ipfs/id/1.0.0"])))
    assert c.protocols[0] is d.protocols[0]
    long_id = "/" + "y" * ident._TEXT_MAX
    assert decode_identify(encode_identify(IdentifyInfo(protocols=[long_id]))).protocols == [long_id]
    assert long_id.encode() not in ident._TEXTS
