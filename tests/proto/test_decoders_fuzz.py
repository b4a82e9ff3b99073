"""Property fuzzing of the Python-level decoders with inputs up to 16 KiB (issue 8,
section 3): identify, the generic protobuf reader, the Noise handshake payload and its
extensions, public keys and peer ids, binary multiaddrs, multistream-select (both
sides, fed in pieces). Each must return or raise a fastp2p ``P2PError`` (for some,
``ValueError`` as documented), never anything else, and must not take long.

Inputs are arbitrary bytes and, to get past the first byte checks, structured
protobuf-like field soups (valid tags, varint lengths that may lie).
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.errors import P2PError
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import PeerID, public_key_from_protobuf
from fastp2p.proto import protobuf
from fastp2p.proto.identify import IdentifyReader, decode_identify
from fastp2p.proto.multistream import MultistreamDialer, MultistreamListener
from fastp2p.proto.noise.payload_pb import NoiseExtensions, NoiseHandshakePayload

MAX = 16 * 1024
SETTINGS = settings(max_examples=200, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


@st.composite
def field_soup(draw: st.DrawFn) -> bytes:
    """Protobuf-shaped bytes: fields 1..20 (and 99), every wire type, lengths that may lie."""
    out = bytearray()
    for _ in range(draw(st.integers(0, 200))):
        number = draw(st.sampled_from([1, 2, 3, 4, 5, 6, 8, 10, 11, 12, 99, 26224]))
        wire = draw(st.sampled_from([0, 0, 1, 2, 2, 2, 3, 4, 5, 6, 7]))
        out += _uvarint(number << 3 | wire)
        if wire == 0:
            out += _uvarint(draw(st.integers(0, 2**70)))
        elif wire == 2:
            body = draw(st.binary(max_size=draw(st.sampled_from([16, 256, 8192]))))
            lie = draw(st.sampled_from([0, 0, 0, 1, -1, 2**40]))
            out += _uvarint(max(0, len(body) + lie)) + body
        elif wire in (1, 5):
            out += draw(st.binary(min_size=0, max_size=8))
        if len(out) > MAX:
            break
    return bytes(out[:MAX])


ANY = st.one_of(st.binary(max_size=MAX), field_soup())
OK = (P2PError, ValueError)


@SETTINGS
@given(ANY)
def test_protobuf_decode(data: bytes) -> None:
    try:
        fields = protobuf.decode(data)
    except P2PError:
        return
    assert all(isinstance(n, int) and n > 0 for n, _, _ in fields)


@SETTINGS
@given(ANY)
def test_identify(data: bytes) -> None:
    try:
        decode_identify(data)
    except P2PError:
        pass
    reader = IdentifyReader()
    try:
        for i in range(0, len(data), 777):
            reader.receive_data(data[i : i + 777])
        list(reader.messages())
    except P2PError:
        pass


@SETTINGS
@given(ANY)
def test_noise_payload_and_extensions(data: bytes) -> None:
    for cls in (NoiseHandshakePayload, NoiseExtensions):
        try:
            cls.decode(data)
        except P2PError:
            pass


@SETTINGS
@given(ANY)
def test_public_keys_and_peer_ids(data: bytes) -> None:
    try:
        public_key_from_protobuf(data)
    except OK:
        pass
    try:
        PeerID.from_bytes(data)
    except OK:
        pass


@SETTINGS
@given(
    st.one_of(
        st.binary(max_size=MAX),
        st.lists(
            st.sampled_from(
                [
                    b"\x04",
                    b"\x7f\x00\x00\x01",
                    b"\x06",
                    b"\x00\x50",
                    b"\xa5\x03",
                    b"\x22",
                    b"\x29",
                    b"\x91\x02",
                    b"\xcc\x03",
                    b"\x01",
                    b"\xff",
                    b"\x80",
                ]
            ),
            max_size=2000,
        ).map(b"".join),
    )
)
def test_binary_multiaddr(data: bytes) -> None:
    try:
        ma = Multiaddr.from_bytes(data)
    except OK:
        return
    assert Multiaddr.from_bytes(ma.to_bytes()) == ma


@SETTINGS
@given(st.binary(max_size=MAX), st.integers(1, 4096))
def test_multistream_both_sides(data: bytes, step: int) -> None:
    for machine in (MultistreamListener(["/a/1", "/b/2"]), MultistreamDialer(["/a/1", "/c/3"])):
        try:
            for i in range(0, len(data), step):
                machine.receive_data(data[i : i + step])
                machine.data_to_send()
        except P2PError:
            continue
        # a machine that did not fail holds at most a bounded amount of input
        assert len(machine.unused_data()) <= len(data)


@SETTINGS
@given(ANY)
def test_psk_key_file(data: bytes) -> None:
    from fastp2p.proto.pnet import decode_psk_file

    try:
        assert len(decode_psk_file(data)) == 32
    except OK:
        pass


@SETTINGS
@given(ANY)
def test_dns_message(data: bytes) -> None:
    # structured DNS inputs and the mDNS state machine: tests/proto/test_mdns.py
    from fastp2p.proto import dns

    try:
        msg = dns.decode(data)
    except P2PError:
        return
    assert len(msg.questions) + len(msg.records()) <= dns.MAX_RECORDS


@SETTINGS
@given(ANY)
def test_signed_peer_record(data: bytes) -> None:
    from fastp2p.errors import PeerRecordError
    from fastp2p.proto.peer_record import PeerRecord, open_peer_record

    for fn in (open_peer_record, PeerRecord.decode):
        try:
            fn(data)
        except PeerRecordError:
            pass
