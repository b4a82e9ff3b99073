"""DNS codec and mDNS state machine (fastp2p/proto/dns.py, fastp2p/proto/mdns.py).

The wire samples were produced by independent code, not by our encoder:
``QUERY_JS``/``RESPONSE_JS``/``MISC_JS`` by dns-packet 5.6.1 (what
js-libp2p's ``@libp2p/mdns`` 12.0.32 sends through multicast-dns 7.2.5),
``COMPRESSED`` assembled by hand after RFC 1035 section 4.1.4. The live
cross-check with dns-packet in both directions is
tests/interop/test_mdns_interop.py.
"""

from __future__ import annotations

import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fastp2p.errors import DnsError, P2PError
from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto import dns, mdns

JS_ID = "12D3KooWGSzV1RfGvenRLX4Xpg9ey4iMKny6TkuDr3d3scmzxjwV"
JS_NAME = "abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789abc"

QUERY_JS = bytes.fromhex("000000000001000000000000045f703270045f756470056c6f63616c00000c0001")
RESPONSE_JS = bytes.fromhex(
    "000084000000000300000000045f703270045f756470056c6f63616c00000c00010000007800513f6162636465666768"
    "696a303132333435363738396162636465666768696a303132333435363738396162636465666768696a303132333435"
    "36373839616263045f703270045f756470056c6f63616c003f6162636465666768696a30313233343536373839616263"
    "6465666768696a303132333435363738396162636465666768696a30313233343536373839616263045f703270045f75"
    "6470056c6f63616c000010000100000078005958646e73616464723d2f6970342f31302e37372e302e322f7463702f34"
    "3030322f7032702f313244334b6f6f5747537a563152664776656e524c583458706739657934694d4b6e7936546b7544"
    "7233643373636d7a786a77563f6162636465666768696a303132333435363738396162636465666768696a3031323334"
    "35363738396162636465666768696a30313233343536373839616263045f703270045f756470056c6f63616c00001000"
    "0100000078005958646e73616464723d2f6970342f3132372e302e302e312f7463702f343030322f7032702f31324433"
    "4b6f6f5747537a563152664776656e524c583458706739657934694d4b6e7936546b75447233643373636d7a786a7756"
)
MISC_JS = bytes.fromhex(
    "0007840000000003000000010178045f703270045f756470056c6f63616c0000218001000000780013000100020fa101"
    "7803703270056c6f63616c00017803703270056c6f63616c00000100010000007800040a4d0001017803703270056c6f"
    "63616c00001c0001000000780010fe800000000000000000000000000001095f7365727669636573075f646e732d7364"
    "045f756470056c6f63616c00000c0001000011940011045f703270045f756470056c6f63616c00"
)


def _compressed() -> bytes:
    """A response whose PTR name and data and TXT name use pointers (by hand)."""
    hdr = struct.pack("!HHHHHH", 0, 0x8400, 0, 2, 0, 0)
    svc_at = len(hdr)
    svc = b"\x04_p2p\x04_udp\x05local\x00"
    ptr_fixed = struct.pack("!HHIH", 12, 1, 120, 0)  # rdlength patched below
    inst_label = b"\x03bob"
    ptr_rdata = inst_label + struct.pack("!H", 0xC000 | svc_at)
    rr1 = svc + struct.pack("!HHIH", 12, 1, 120, len(ptr_rdata)) + ptr_rdata
    inst_at = len(hdr) + len(svc) + len(ptr_fixed)
    txt = b"dnsaddr=/ip4/10.0.0.9/tcp/1/p2p/" + JS_ID.encode()
    txt_rdata = bytes([len(txt)]) + txt
    rr2 = struct.pack("!H", 0xC000 | inst_at) + struct.pack("!HHIH", 16, 0x8001, 60, len(txt_rdata)) + txt_rdata
    return hdr + rr1 + rr2


def _id() -> PeerID:
    return PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())


# -- the codec against independent bytes --------------------------------------------------


def test_decode_js_query() -> None:
    m = dns.decode(QUERY_JS)
    assert not m.is_response and m.id == 0
    assert m.questions == (dns.Question("_p2p._udp.local", dns.TYPE_PTR, dns.CLASS_IN, False),)
    assert m.answers == m.additionals == ()
    # our query is byte-identical to js-libp2p's
    assert dns.encode(mdns.query_message()) == QUERY_JS


def test_decode_js_response() -> None:
    m = dns.decode(RESPONSE_JS)
    assert m.is_response and m.flags & dns.FLAG_AA
    ptr, txt1, txt2 = m.answers
    assert (ptr.name, ptr.type, ptr.ttl, ptr.data) == ("_p2p._udp.local", dns.TYPE_PTR, 120,
                                                       f"{JS_NAME}._p2p._udp.local")
    assert txt1.data == (f"dnsaddr=/ip4/10.77.0.2/tcp/4002/p2p/{JS_ID}".encode(),)
    assert txt2.type == dns.TYPE_TXT and txt2.name == f"{JS_NAME}._p2p._udp.local"
    found = mdns.parse_response(m)
    # the loopback address is dropped on receipt (spec, "Issues")
    assert found == [mdns.Discovery(PeerID.from_string(JS_ID), (Multiaddr("/ip4/10.77.0.2/tcp/4002"),), 120)]


def test_decode_js_srv_a_aaaa_flush() -> None:
    m = dns.decode(MISC_JS)
    assert m.id == 7
    srv, a, aaaa = m.answers
    assert srv.cache_flush and srv.data == dns.Srv(1, 2, 4001, "x.p2p.local")
    assert (a.data, aaaa.data) == ("10.77.0.1", "fe80::1")
    assert m.additionals[0].data == "_p2p._udp.local" and m.additionals[0].ttl == 4500
    # re-encoding what dns-packet sent gives its bytes back except for compression
    again = dns.decode(dns.encode(m))
    assert again == m


def test_decode_compressed() -> None:
    m = dns.decode(_compressed())
    assert m.answers[0].data == "bob._p2p._udp.local"
    assert m.answers[1].name == "bob._p2p._udp.local" and m.answers[1].cache_flush
    assert m.answers[1].ttl == 60
    (d,) = mdns.parse_response(m)
    assert d.addrs == (Multiaddr("/ip4/10.0.0.9/tcp/1"),) and d.ttl == 60  # the TXT's TTL


def test_encoder_compresses() -> None:
    st_ = mdns.MdnsState(_id(), 0.0, peer_name="p" * 32)
    st_.set_addrs([Multiaddr("/ip4/10.1.2.3/tcp/4001")])
    wire = dns.encode(st_.full_answer())
    assert wire.count(b"\x04_p2p\x04_udp\x05local") == 1
    assert dns.decode(wire) == dns.decode(dns.encode(dns.decode(wire)))


# -- strictness ---------------------------------------------------------------------------


def _hdr(qd: int = 0, an: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0, 0x8400, qd, an, 0, 0)


@pytest.mark.parametrize("data,what", [
    (b"", "shorter"),
    (_hdr(1), "past its end"),
    (_hdr(1) + b"\x01a\x00\x00", "truncated question"),
    (_hdr(1) + b"\xc0\x0c\x00\x0c\x00\x01", "backwards"),  # points at itself
    (_hdr(1) + b"\x01a\xc0\x0e\x00\x0c\x00\x01", "backwards"),  # points forward
    (_hdr(1) + b"\x41" + b"a" * 65 + b"\x00\x00\x0c\x00\x01", "label type"),
    (_hdr(1) + b"\x80\x00\x00\x0c\x00\x01", "label type"),
    (_hdr(1) + (b"\x3f" + b"a" * 63) * 4 + b"\x00\x00\x0c\x00\x01", "longer than 255"),
    (_hdr(1) + b"\x03\xff\xfe\xfd\x00\x00\x0c\x00\x01", "UTF-8"),
    (_hdr(0, 1) + b"\x00\x00\x01\x00\x01\x00\x00\x00\x78\x00\x03abc", "not 4"),
    (_hdr(0, 1) + b"\x00\x00\x10\x00\x01\x00\x00\x00\x78\x00\x02\x05a", "past the record"),
    (_hdr(0, 1) + b"\x00\x00\x10\x00\x01\x00\x00\x00\x78\x00\x09", "past the message"),
    (_hdr(0, 1) + b"\x00\x00\x0c\x00\x01\x00\x00\x00\x78\x00\x03\x00\x00\x00", "longer than its name"),
    (_hdr(0, 1) + b"\x00\x00\x21\x00\x01\x00\x00\x00\x78\x00\x03\x00\x00\x00", "SRV"),
    (_hdr() + b"\x00", "after the last record"),
    (struct.pack("!HHHHHH", 0, 0, 200, 57, 0, 0), "exceed"),
    (_hdr() + b"\x00" * dns.MAX_MESSAGE, "exceeds"),
])
def test_malformed(data: bytes, what: str) -> None:
    with pytest.raises(DnsError, match=what):
        dns.decode(data)


def test_pointer_chain_bounded() -> None:
    # each name a pointer to the previous one: a legal chain longer than MAX_POINTERS
    body = bytearray(b"\x01a\x00\x00\x0c\x00\x01")
    offsets = [12]
    for _ in range(dns.MAX_POINTERS + 2):
        offsets.append(12 + len(body))
        body += struct.pack("!H", 0xC000 | offsets[-2]) + b"\x00\x0c\x00\x01"
    n = len(offsets)
    data = struct.pack("!HHHHHH", 0, 0, n, 0, 0, 0) + bytes(body)
    with pytest.raises(DnsError, match="compression pointers"):
        dns.decode(data)


def test_escaped_labels_round_trip() -> None:
    m = dns.Message(questions=(dns.Question("my\\.host\\\\x._p2p._udp.local", dns.TYPE_TXT),))
    wire = dns.encode(m)
    assert b"\x09my.host\\x" in wire
    assert dns.decode(wire) == m
    assert dns.name_eq("_P2P._udp.LOCAL.", "_p2p._udp.local")


# -- fuzz ---------------------------------------------------------------------------------

FUZZ = settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def dns_soup(draw: st.DrawFn) -> bytes:
    """A header with small counts, then label-ish bytes, pointers and record headers."""
    counts = [draw(st.integers(0, 4)) for _ in range(4)]
    out = bytearray(struct.pack("!HHHHHH", draw(st.integers(0, 0xFFFF)),
                                draw(st.sampled_from([0, 0x8400, 0x8000, 0x7800])), *counts))
    for _ in range(draw(st.integers(0, 40))):
        kind = draw(st.integers(0, 5))
        if kind == 0:
            lab = draw(st.binary(max_size=70))
            out += bytes([min(len(lab), 255) & 0xFF]) + lab
        elif kind == 1:
            out += struct.pack("!H", 0xC000 | draw(st.integers(0, max(0, len(out) + 4))))
        elif kind == 2:
            out += b"\x00"
        elif kind == 3:
            out += struct.pack("!HHIH", draw(st.sampled_from([1, 12, 16, 28, 33, 255, 47])),
                               draw(st.sampled_from([1, 0x8001])), 120, draw(st.integers(0, 80)))
        elif kind == 4:
            out += b"dnsaddr=/ip4/10.0.0.1/tcp/1/p2p/" + JS_ID.encode()
        else:
            out += draw(st.binary(max_size=20))
    return bytes(out)


@FUZZ
@given(st.one_of(st.binary(max_size=dns.MAX_MESSAGE + 16), dns_soup(),
                 st.builds(lambda b, i, x: b[:i] + bytes([x]) + b[i + 1:],
                           st.sampled_from([RESPONSE_JS, MISC_JS, QUERY_JS, _compressed()]),
                           st.integers(0, 700), st.integers(0, 255))))
def test_fuzz_decoder_and_state(data: bytes) -> None:
    try:
        m = dns.decode(data)
    except DnsError:
        pass
    else:
        # what decodes re-encodes and decodes to the same message
        try:
            wire = dns.encode(m)
        except DnsError:
            pass  # e.g. an empty label an escape cannot express is refused, typed
        else:
            assert dns.decode(wire) == m
    s = mdns.MdnsState(_FUZZ_ID, 0.0)
    s.set_addrs([Multiaddr("/ip4/10.0.0.2/tcp/4001")])
    try:
        sends, found = s.receive(data, ("10.0.0.3", 5353), 1.0)
    except P2PError:
        return
    assert all(isinstance(x.data, bytes) for x in sends)
    assert len(s.peers()) <= s.max_peers


_FUZZ_ID = _id()


# -- the state machine --------------------------------------------------------------------


def _pair() -> tuple[mdns.MdnsState, mdns.MdnsState]:
    a = mdns.MdnsState(_id(), 0.0)
    b = mdns.MdnsState(_id(), 0.0)
    a.set_addrs([Multiaddr("/ip4/10.0.0.1/tcp/4001"), Multiaddr("/ip4/127.0.0.1/tcp/4001")])
    b.set_addrs([Multiaddr("/ip4/10.0.0.2/tcp/4002")])
    return a, b


def test_query_answer_discover() -> None:
    a, b = _pair()
    (q,) = a.poll(0.0)
    assert q.dest is None and dns.decode(q.data).questions[0].name == mdns.SERVICE_NAME
    assert a.poll(0.5) == [] and a.next_deadline() == pytest.approx(10.0)
    # a hears its own query too and answers it; b answers as well
    (ans_a,), none = a.receive(q.data, ("10.0.0.1", 5353), 0.01)
    assert none == []
    (ans_b,), _ = b.receive(q.data, ("10.0.0.1", 5353), 0.01)
    msg = dns.decode(ans_b.data)
    assert [r.type for r in msg.answers] == [dns.TYPE_PTR]
    assert {r.type for r in msg.additionals} == {dns.TYPE_TXT, dns.TYPE_SRV, dns.TYPE_A}
    # own answer ignored, b's discovered once
    assert a.receive(ans_a.data, ("10.0.0.1", 5353), 0.02) == ([], [])
    sends, found = a.receive(ans_b.data, ("10.0.0.2", 5353), 0.02)
    assert sends == [] and found == [mdns.Discovery(b.peer_id, (Multiaddr("/ip4/10.0.0.2/tcp/4002"),))]
    assert a.receive(ans_b.data, ("10.0.0.2", 5353), 0.03) == ([], [])
    # b never announces loopback: a's answer has only 10.0.0.1
    _, found_b = b.receive(ans_a.data, ("10.0.0.1", 5353), 0.03)
    assert found_b[0].addrs == (Multiaddr("/ip4/10.0.0.1/tcp/4001"),)
    # a response from another port is not mDNS (RFC 6762 section 11)
    c = mdns.MdnsState(_id(), 0.0)
    assert c.receive(ans_b.data, ("10.0.0.2", 40000), 0.0) == ([], [])


def test_answers_rate_limited_then_sent() -> None:
    a, b = _pair()
    q = dns.encode(mdns.query_message())
    b.poll(0.0)  # b's own first query
    (first,), _ = b.receive(q, ("10.0.0.1", 5353), 1.0)
    assert b.receive(q, ("10.0.0.1", 5353), 1.3) == ([], [])
    assert b.receive(q, ("10.0.0.1", 5353), 1.4) == ([], [])
    assert b.next_deadline() == pytest.approx(2.0)
    held = [s for s in b.poll(2.0) if dns.decode(s.data).is_response]
    assert len(held) == 1 and b.answers_sent == 2


def test_rediscovery_after_expiry_and_goodbye() -> None:
    a, b = _pair()
    answer = dns.encode(b.full_answer())
    assert a.receive(answer, ("10.0.0.2", 5353), 0.0)[1]
    assert b.peer_id in a.peers()
    a.poll(200.0)  # past the 120 s TTL
    assert b.peer_id not in a.peers()
    assert a.receive(answer, ("10.0.0.2", 5353), 201.0)[1]
    bye = b.goodbye()
    assert bye is not None
    assert a.receive(bye.data, ("10.0.0.2", 5353), 202.0) == ([], [])
    assert b.peer_id not in a.peers()


def test_new_addrs_reported_again() -> None:
    a, b = _pair()
    a.receive(dns.encode(b.full_answer()), ("10.0.0.2", 5353), 0.0)
    b.set_addrs([Multiaddr("/ip4/10.0.0.2/tcp/4002"), Multiaddr("/ip4/192.168.5.2/tcp/4002")])
    (d,) = a.receive(dns.encode(b.full_answer()), ("10.0.0.2", 5353), 1.0)[1]
    assert len(d.addrs) == 2


def test_bounded_peers() -> None:
    a = mdns.MdnsState(_id(), 0.0, max_peers=8)
    for i in range(50):
        b = mdns.MdnsState(_id(), 0.0)
        b.set_addrs([Multiaddr(f"/ip4/10.0.1.{i}/tcp/1")])
        a.receive(dns.encode(b.full_answer()), ("10.0.1.1", 5353), float(i))
    assert len(a.peers()) == 8


def test_direct_and_meta_and_legacy_queries() -> None:
    _, b = _pair()

    def ask(name: str, qtype: int, port: int = 5353) -> dns.Message:
        q = dns.encode(dns.Message(id=77, questions=(dns.Question(name, qtype),)))
        (s,), _ = b.receive(q, ("10.0.0.9", port), 5.0)
        if port == 5353:
            assert s.dest is None
        else:
            assert s.dest == ("10.0.0.9", port)
        return dns.decode(s.data)

    assert [r.data for r in ask(mdns.META_QUERY, dns.TYPE_PTR).answers] == [mdns.SERVICE_NAME]
    (txt,) = ask(b.instance, dns.TYPE_TXT).answers
    assert txt.data == (f"dnsaddr=/ip4/10.0.0.2/tcp/4002/p2p/{b.peer_id}".encode(),)
    (srv,) = ask(b.instance.upper(), dns.TYPE_SRV).answers
    assert srv.data == dns.Srv(0, 0, 4002, b.hostname)
    (a_rec,) = ask(b.hostname, dns.TYPE_A).answers
    assert a_rec.data == "10.0.0.2"
    legacy = ask(mdns.SERVICE_NAME, dns.TYPE_PTR, port=40000)
    assert legacy.id == 77 and legacy.questions and all(r.ttl <= 10 for r in legacy.records())
    # nothing to say: no answer
    assert b.receive(dns.encode(dns.Message(questions=(dns.Question("x.local", 1),))),
                     ("10.0.0.9", 5353), 6.0) == ([], [])


def test_no_addrs_no_answer_and_malformed_counted() -> None:
    s = mdns.MdnsState(_id(), 0.0)
    assert s.receive(QUERY_JS, ("10.0.0.9", 5353), 0.0) == ([], [])
    with pytest.raises(DnsError):
        s.receive(b"\x00" * 5, ("10.0.0.9", 5353), 0.0)
    assert s.malformed == 1


def test_bad_params() -> None:
    with pytest.raises(ValueError):
        mdns.MdnsState(_id(), 0.0, peer_name="a.b")
    with pytest.raises(ValueError):
        mdns.MdnsState(_id(), 0.0, interval=0)
    assert len(mdns.random_peer_name()) == 32


def test_direct_and_legacy_answers_rate_limited() -> None:
    _, b = _pair()
    q = dns.encode(dns.Message(id=1, questions=(dns.Question(mdns.SERVICE_NAME, dns.TYPE_PTR),)))
    sent = sum(len(b.receive(q, ("10.0.0.9", 40000), 5.0)[0]) for _ in range(100))
    assert sent == int(mdns.DIRECT_ANSWER_RATE) and b.rate_limited == 100 - sent
    # refilled a second later
    assert len(b.receive(q, ("10.0.0.9", 40000), 6.0)[0]) == 1


def test_goodbye_of_another_service_in_the_same_packet_is_not_ours() -> None:
    a, b = _pair()
    full = b.full_answer()
    other = dns.Record("_printer._tcp.local", dns.TYPE_PTR, "x._printer._tcp.local", 0)
    msg = dns.Message(flags=full.flags, answers=full.answers + (other,), additionals=full.additionals)
    (d,) = a.receive(dns.encode(msg), ("10.0.0.2", 5353), 0.0)[1]
    assert d.peer_id == b.peer_id and d.ttl == 120
