"""Multiaddr text/binary codec, manipulation helpers and error reporting."""

from __future__ import annotations

import hashlib
import pickle

import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastp2p.errors import MultiaddrError
from fastp2p.multiaddr import PROTOCOLS, Multiaddr, protocol_by_code, protocol_by_name
from fastp2p.multibase import b58encode
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto.varint import uvarint_encode

QM = "QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"
QM_CID = "bafzbeie5745rpv2m6tjyuugywy4d5ewrqgqqhfnf445he3omzpjbx5xqxe"  # the same peer

# Text and binary pairs published by other implementations' test suites
# (js-multiaddr, cs-multiaddress, swift-multiaddr) and the multiaddr spec.
VECTORS = [
    ("/ip4/127.0.0.1/tcp/4001", "047f000001060fa1"),
    ("/ip4/127.0.0.1/udp/1234", "047f000001910204d2"),
    ("/ip4/127.0.0.1/tcp/4321", "047f0000010610e1"),
    ("/ip4/127.0.0.1/udp/1234/ip4/127.0.0.1/tcp/4321", "047f000001910204d2047f0000010610e1"),
    ("/ip6/2001:8a0:7ac5:4201:3ac9:86ff:fe31:7095", "29200108a07ac542013ac986fffe317095"),
    (
        "/p2p/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC",
        "a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b",
    ),
    ("/ip4/127.0.0.1/udp/1234/utp", "047f000001910204d2ae02"),
    (
        "/ip4/104.131.131.82/udp/4001/quic-v1/webtransport"
        "/certhash/f1220a78c594f830726e17fba30224d448d5c4a4434e9e5a14f24b3822d14da46d19b"
        "/certhash/f1220855beff35231e37b3c4970b3e16e0e100eba09adc3e1ad5473a16c97f258b61e",
        "046883835291020fa1cd03d103d203221220a78c594f830726e17fba30224d448d5c4a4434e9e5a14f24b382"
        "2d14da46d19bd203221220855beff35231e37b3c4970b3e16e0e100eba09adc3e1ad5473a16c97f258b61e",
    ),
]


@pytest.mark.parametrize(("text", "hexbytes"), VECTORS, ids=[v[0][:40] for v in VECTORS])
def test_known_vectors(text: str, hexbytes: str) -> None:
    ma = Multiaddr(text)
    assert ma.to_bytes().hex() == hexbytes
    back = Multiaddr.from_bytes(bytes.fromhex(hexbytes))
    assert back == ma
    assert Multiaddr(str(back)) == ma
    if "certhash" not in text:  # certhash text is re-encoded as base64url
        assert str(ma) == text
        assert str(back) == text


def test_ipfs_alias_and_certhash_other_multibases() -> None:
    assert Multiaddr("/ipfs/QmcgpsyWgH8Y8ajJz1Cu72KnS5uo2Aa2LpzU7kinSupNKC").to_bytes().hex() == (
        "a503221220d52ebb89d85b02a284948203a62ff28389c57c9f42beec4ec20db76a68911c0b"
    )
    # swift-multiaddr: a base32 certhash (md5 multihash).
    ma2 = Multiaddr(
        "/ip4/127.0.0.1/udp/1234/quic-v1/webtransport/certhash/b2uaraocy6yrdblb4sfptaddgimjmmpy"
    )
    assert (
        ma2.to_bytes().hex()
        == "047f000001910204d2cd03d103d20313d501103858f62230ac3c915f300c664312c63f"
    )


@pytest.mark.parametrize(
    ("text", "canonical"),
    [
        ("/ip6/0:0:0:0:0:0:0:1/tcp/1", "/ip6/::1/tcp/1"),
        ("/ip6/2001:DB8:0:0:0:0:0:1/udp/1/quic-v1", "/ip6/2001:db8::1/udp/1/quic-v1"),
        ("/ip4/1.2.3.4/tcp/0080", "/ip4/1.2.3.4/tcp/80"),
        ("/ip4/1.2.3.4/tcp/80/", "/ip4/1.2.3.4/tcp/80"),
        (f"/ipfs/{QM}", f"/p2p/{QM}"),
        (f"/p2p/{QM_CID}", f"/p2p/{QM}"),
        ("/unix/tmp/p2p.sock", "/unix/%2Ftmp%2Fp2p.sock"),
        ("/unix/%2Ftmp%2Fp2p.sock", "/unix/%2Ftmp%2Fp2p.sock"),
        ("/", "/"),
        ("", "/"),
    ],
)
def test_canonical_text(text: str, canonical: str) -> None:
    ma = Multiaddr(text)
    assert str(ma) == canonical
    assert Multiaddr(canonical) == ma


@pytest.mark.parametrize(
    "text",
    [
        "/dns4/example.com/tcp/443/wss",
        "/dns6/ipfs.io/tcp/443/tls/ws",
        "/dns/bücher.example/tcp/1",
        "/dnsaddr/bootstrap.libp2p.io",
        "/ip4/1.2.3.4/udp/4001/quic",
        "/ip4/1.2.3.4/tcp/1/tls/sni/example.com/http",
        "/ip4/1.2.3.4/tcp/1/noise",
        f"/ip4/1.2.3.4/tcp/1/p2p/{QM}/p2p-circuit/p2p/{QM}",
        "/ip6/fe80::1/ip6zone/eth0/tcp/1",
        "/ip4/10.0.0.0/ipcidr/8",
        "/memory/18446744073709551615",
        "/dns/example.com/tcp/443/tls/http/http-path/a%2Fb%20c",
        "/sctp/5000",
        "/dccp/5000",
        "/webrtc",
        "/wss",
        "/https",
    ],
)
def test_text_round_trip(text: str) -> None:
    ma = Multiaddr(text)
    assert str(ma) == text
    assert Multiaddr.from_bytes(ma.to_bytes()) == ma
    assert Multiaddr(ma) == ma


def test_unix_paths() -> None:
    legacy = Multiaddr("/unix/a/b/c/d/e")
    assert legacy.value_for("unix") == "%2Fa%2Fb%2Fc%2Fd%2Fe"
    assert legacy.to_bytes() == uvarint_encode(400) + uvarint_encode(10) + b"/a/b/c/d/e"
    # go-multiaddr: /unix swallows the rest, even names of protocols.
    assert Multiaddr("/ip4/1.2.3.4/tcp/80/unix/a/tcp/1").protocols() == ["ip4", "tcp", "unix"]
    # percent-escaped form may be followed by more components
    ma = Multiaddr("/unix/%2Ftmp%2Fs.sock/p2p/" + QM)
    assert ma.protocols() == ["unix", "p2p"]
    assert ma.peer_id() == PeerID.from_string(QM)
    # a relative path without "/" still round-trips through text
    rel = Multiaddr(uvarint_encode(400) + b"\x05stdio")
    assert str(rel) == "/unix/%73tdio"
    assert Multiaddr(str(rel)) == rel


def test_accessors() -> None:
    ma = Multiaddr(f"/ip4/1.2.3.4/tcp/4001/tls/p2p/{QM}")
    assert ma.protocols() == ["ip4", "tcp", "tls", "p2p"]
    assert ma.items() == [("ip4", "1.2.3.4"), ("tcp", "4001"), ("tls", None), ("p2p", QM)]
    assert ma.value_for("tcp") == "4001"
    assert ma.value_for("tls") == ""
    assert ma.value_for("ipfs") == QM
    assert ma.value_for("udp") is None
    assert ma.value_for("nonsense") is None
    assert len(ma) == 4 and bool(ma) and not Multiaddr("/")
    assert repr(ma) == f"Multiaddr('/ip4/1.2.3.4/tcp/4001/tls/p2p/{QM}')"
    assert bytes(ma) == ma.to_bytes()


def test_value_semantics() -> None:
    a = Multiaddr("/ip4/1.2.3.4/tcp/1")
    b = Multiaddr(bytes.fromhex("0401020304060001"))
    assert a == b and hash(a) == hash(b)
    assert a != Multiaddr("/ip4/1.2.3.4/tcp/2")
    assert a != "/ip4/1.2.3.4/tcp/1"
    assert len({a, b}) == 1
    assert pickle.loads(pickle.dumps(a)) == a
    assert Multiaddr(bytearray(a.to_bytes())) == a
    assert Multiaddr(memoryview(a.to_bytes())) == a
    with pytest.raises(AttributeError):
        a._bytes = b""  # type: ignore[misc]
    with pytest.raises(TypeError):
        Multiaddr(42)  # type: ignore[arg-type]


def test_encapsulate_decapsulate() -> None:
    udp = Multiaddr("/ip4/127.0.0.1/udp/1234")
    both = udp.encapsulate("/udp/5678")
    assert str(both) == "/ip4/127.0.0.1/udp/1234/udp/5678"
    assert str(both.decapsulate("/udp/5678")) == "/ip4/127.0.0.1/udp/1234"
    assert str(both.decapsulate("/udp/1234")) == "/ip4/127.0.0.1"
    assert str(both.decapsulate("udp")) == "/ip4/127.0.0.1/udp/1234"
    assert str(both.decapsulate("/udp")) == "/ip4/127.0.0.1/udp/1234"  # js-multiaddr style
    assert str(both.decapsulate("/ip4")) == "/"
    assert both.decapsulate("/tcp/1") == both
    assert both.decapsulate("tcp") == both
    assert both.decapsulate(Multiaddr("/udp/1234/udp/5678")) == Multiaddr("/ip4/127.0.0.1")
    # component-aligned: /udp/123 does not match /udp/1234
    assert both.decapsulate("/udp/123") == both
    assert Multiaddr("/").encapsulate(udp) == udp
    assert udp.encapsulate(Multiaddr("/tls").to_bytes()) == Multiaddr("/ip4/127.0.0.1/udp/1234/tls")
    with pytest.raises(MultiaddrError):
        udp.decapsulate("bogus")


def test_peer_id_helpers() -> None:
    pid = Ed25519PrivateKey.generate().peer_id()
    base = Multiaddr("/ip4/1.2.3.4/tcp/1")
    full = base.with_peer_id(pid)
    assert str(full) == f"/ip4/1.2.3.4/tcp/1/p2p/{pid}"
    assert full.peer_id() == pid
    assert full.without_peer_id() == base
    assert base.without_peer_id() == base
    assert base.peer_id() is None
    assert full.with_peer_id(pid) == full
    with pytest.raises(MultiaddrError):
        full.with_peer_id(PeerID.from_string(QM))
    relay = Multiaddr(f"/ip4/1.2.3.4/tcp/1/p2p/{QM}/p2p-circuit")
    assert relay.peer_id() is None
    assert Multiaddr(f"/p2p/{QM_CID}").peer_id() == PeerID.from_string(QM)


def test_tcp_host_port() -> None:
    assert Multiaddr("/ip4/127.0.0.1/tcp/4001").tcp_host_port() == ("127.0.0.1", 4001)
    assert Multiaddr("/ip6/::1/tcp/80").tcp_host_port() == ("::1", 80)
    assert Multiaddr("/dns4/example.com/tcp/443").tcp_host_port() == ("example.com", 443)
    assert Multiaddr("/dns/example.com/tcp/1").tcp_host_port() == ("example.com", 1)
    assert Multiaddr(f"/ip4/1.2.3.4/tcp/5/p2p/{QM}").tcp_host_port() == ("1.2.3.4", 5)
    for bad in [
        "/ip4/1.2.3.4/udp/5",
        "/ip4/1.2.3.4",
        "/tcp/5",
        "/ip4/1.2.3.4/tcp/5/ws",
        "/dnsaddr/example.com/tcp/5",
        "/",
        f"/p2p/{QM}",
    ]:
        with pytest.raises(MultiaddrError):
            Multiaddr(bad).tcp_host_port()


def test_from_host_port() -> None:
    assert str(Multiaddr.from_host_port("127.0.0.1", 4001)) == "/ip4/127.0.0.1/tcp/4001"
    assert str(Multiaddr.from_host_port("::1", 80)) == "/ip6/::1/tcp/80"
    assert str(Multiaddr.from_host_port("[::1]", 80)) == "/ip6/::1/tcp/80"
    assert str(Multiaddr.from_host_port("example.com", 1, "udp")) == "/dns/example.com/udp/1"
    assert str(Multiaddr.from_host_port("1.2.3.4", 1, "quic-v1")) == "/ip4/1.2.3.4/udp/1/quic-v1"
    m = Multiaddr.from_host_port("10.0.0.1", 0)
    assert m.tcp_host_port() == ("10.0.0.1", 0)
    for host, port, transport in [
        ("1.2.3.4", 65536, "tcp"),
        ("1.2.3.4", -1, "tcp"),
        ("1.2.3.4", 1, "sctp"),
        ("", 1, "tcp"),
        ("a/b", 1, "tcp"),
    ]:
        with pytest.raises(MultiaddrError):
            Multiaddr.from_host_port(host, port, transport)


# -- errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "fragment", "offset"),
    [
        ("ip4/1.2.3.4", "begin with '/'", 0),
        ("/ip4", "missing value", 4),
        ("/ip4/", "missing value", 5),
        ("/ip4/1.2.3.4/tcp", "component 1 (tcp): missing value", 16),
        ("/ip4/1.2.3.4//tcp/1", "component 1: empty protocol name", 13),
        ("/ip4/1.2.3.4/bogus/1", "unknown protocol 'bogus'", 13),
        ("/ip4/1.2.3.256", "bad ip4", 5),
        ("/ip4/01.2.3.4", "bad ip4", 5),
        ("/ip4/::1", "bad ip4", 5),
        ("/ip6/1.2.3.4", "bad ip6", 5),
        ("/ip6/fe80::1%eth0", "ip6zone", 5),
        ("/ip6/:::", "bad ip6", 5),
        ("/ip4/1.2.3.4/tcp/65536", "out of range", 17),
        ("/ip4/1.2.3.4/tcp/-1", "not a decimal", 17),
        ("/ip4/1.2.3.4/tcp/+1", "not a decimal", 17),
        ("/ip4/1.2.3.4/tcp/1e3", "not a decimal", 17),
        ("/ip4/1.2.3.4/udp/99999999999999999999999", "not a decimal", 17),
        ("/ip4/10.0.0.0/ipcidr/256", "out of range", 21),
        ("/p2p/Qmfoo", "bad peer id", 5),
        ("/p2p/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi", "libp2p-key", 5),
        ("/unix/%zz", "percent", 6),
        ("/http-path/%2", "percent", 11),
        ("/certhash/uEiA", "truncated", 10),
        ("/certhash/notmultibase!", "", 10),
        ("/ip4/1.2.3.4/tcp/1/tls/x", "component 3: unknown protocol 'x'", 23),
        ("/memory/18446744073709551616", "out of range", 8),
        ("//", "empty protocol name", 1),
    ],
)
def test_text_errors(text: str, fragment: str, offset: int) -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr(text)
    assert fragment in str(info.value)
    assert info.value.offset == offset
    assert isinstance(info.value, ValueError)


def _c(name: str) -> bytes:
    proto = protocol_by_name(name)
    assert proto is not None
    return uvarint_encode(proto.code)


@pytest.mark.parametrize(
    ("data", "fragment", "offset"),
    [
        (b"\x04\x7f\x00\x00", "truncated value, need 4 bytes, have 3", 1),
        (b"\x04", "truncated value", 1),
        (
            b"\x04\x7f\x00\x00\x01\x06\x0f",
            "component 1 (tcp): truncated value, need 2 bytes, have 1",
            6,
        ),
        (b"\x04\x7f\x00\x00\x01\x00", "component 1: unknown protocol code 0", 5),
        (b"\x7f", "unknown protocol code 127", 0),
        (b"\x80", "truncated protocol code varint", 0),
        (b"\x84\x00", "bad protocol code varint", 0),
        (b"\xff" * 10, "bad protocol code varint", 0),
        (b"\xa5\x03", "truncated p2p length varint", 2),
        (b"\xa5\x03\x22\x12\x20", "truncated value, need 34 bytes, have 2", 3),
        (b"\xa5\x03\x03\x12\x01\x00", "bad peer id", 3),
        (b"\xa5\x03\x00", "bad peer id", 3),
        (_c("dns") + b"\x00", "empty value", 2),
        (_c("dns") + b"\x03a/b", "contains '/'", 2),
        (_c("dns") + b"\x02\xff\xfe", "not UTF-8", 2),
        (_c("unix") + b"\x00", "empty value", 3),
        (_c("certhash") + b"\x02\x12\x20", "", 3),
    ],
)
def test_binary_errors(data: bytes, fragment: str, offset: int) -> None:
    with pytest.raises(MultiaddrError) as info:
        Multiaddr.from_bytes(data)
    assert fragment in str(info.value)
    assert info.value.offset == offset


def test_protocol_table_matches_csv_codes() -> None:
    assert protocol_by_name("ipfs") is protocol_by_name("p2p")
    assert protocol_by_code(421).name == "p2p"  # type: ignore[union-attr]
    expected = {
        "ip4": 4, "tcp": 6, "udp": 273, "ip6": 41, "dns": 53, "dns4": 54, "dns6": 55,
        "dnsaddr": 56, "unix": 400, "p2p": 421, "tls": 448, "noise": 454, "quic": 460,
        "quic-v1": 461, "ws": 477, "wss": 478, "p2p-circuit": 290, "webrtc-direct": 280,
        "certhash": 466, "webtransport": 465, "memory": 777,
    }  # fmt: skip
    for name, code in expected.items():
        assert protocol_by_name(name).code == code  # type: ignore[union-attr]
    assert len({p.code for p in PROTOCOLS}) == len(PROTOCOLS)


# -- properties --------------------------------------------------------------------------

_ports = st.integers(0, 65535).map(str)
_names = st.text(
    st.characters(blacklist_characters="/", blacklist_categories=("Cs",)), min_size=1, max_size=20
)
_peer_ids = st.binary(max_size=64).map(
    lambda b: b58encode(b"\x12\x20" + hashlib.sha256(b).digest())
)
_paths = st.binary(min_size=1, max_size=30)

_component = st.one_of(
    st.ip_addresses(v=4).map(lambda ip: f"/ip4/{ip}"),
    st.ip_addresses(v=6).map(lambda ip: f"/ip6/{ip.compressed}"),
    _ports.map(lambda p: f"/tcp/{p}"),
    _ports.map(lambda p: f"/udp/{p}"),
    _names.map(lambda n: f"/dns/{n}"),
    _names.map(lambda n: f"/dns4/{n}"),
    _names.map(lambda n: f"/dnsaddr/{n}"),
    _names.map(lambda n: f"/sni/{n}"),
    _peer_ids.map(lambda p: f"/p2p/{p}"),
    st.integers(0, 255).map(lambda n: f"/ipcidr/{n}"),
    st.integers(0, 2**64 - 1).map(lambda n: f"/memory/{n}"),
    st.sampled_from([f"/{p.name}" for p in PROTOCOLS if p.size == 0]),
)


@given(st.lists(_component, max_size=8).map("".join))
def test_random_valid_text_round_trips(text: str) -> None:
    ma = Multiaddr(text or "/")
    assert str(ma) == (text or "/")
    again = Multiaddr.from_bytes(ma.to_bytes())
    assert again == ma and str(again) == str(ma)


@st.composite
def _binary_component(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["unix", "http-path", "dns", "p2p", "fixed", "zero"]))
    if kind in ("unix", "http-path"):
        value = draw(_paths)
    elif kind == "dns":
        value = draw(_names).encode()
    elif kind == "p2p":
        value = b"\x12\x20" + hashlib.sha256(draw(st.binary(max_size=8))).digest()
    elif kind == "fixed":
        proto = draw(st.sampled_from([p for p in PROTOCOLS if p.size > 0]))
        return uvarint_encode(proto.code) + draw(
            st.binary(min_size=proto.size // 8, max_size=proto.size // 8)
        )
    else:
        proto = draw(st.sampled_from([p for p in PROTOCOLS if p.size == 0]))
        return uvarint_encode(proto.code)
    name = "p2p" if kind == "p2p" else kind
    return _c(name) + uvarint_encode(len(value)) + value


@given(st.lists(_binary_component(), max_size=6).map(b"".join))
def test_random_valid_binary_round_trips(data: bytes) -> None:
    ma = Multiaddr.from_bytes(data)
    assert ma.to_bytes() == data
    assert Multiaddr(str(ma)) == ma


@given(st.binary(max_size=64))
def test_random_bytes_raise_only_multiaddr_error(data: bytes) -> None:
    try:
        ma = Multiaddr.from_bytes(data)
    except MultiaddrError:
        return
    assert ma.to_bytes() == data
    assert Multiaddr(str(ma)) == ma


@given(st.lists(_binary_component(), min_size=1, max_size=4).map(b"".join), st.data())
def test_mutated_binary_raise_only_multiaddr_error(data: bytes, draw: st.DataObject) -> None:
    i = draw.draw(st.integers(0, len(data) - 1))
    mutated = data[:i] + bytes([draw.draw(st.integers(0, 255))]) + data[i + 1 :]
    cut = mutated[: draw.draw(st.integers(0, len(mutated)))]
    for candidate in (mutated, cut):
        try:
            ma = Multiaddr.from_bytes(candidate)
        except MultiaddrError:
            continue
        assert ma.to_bytes() == candidate
        assert Multiaddr(str(ma)) == ma


@given(st.text(st.sampled_from("/ip46tcpudns0123456789.:%abfz-"), max_size=40))
def test_random_text_raises_only_multiaddr_error(text: str) -> None:
    try:
        ma = Multiaddr(text)
    except MultiaddrError:
        return
    assert Multiaddr(str(ma)) == ma
    assert Multiaddr.from_bytes(ma.to_bytes()) == ma
