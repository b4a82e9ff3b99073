"""Our DNS encoder against dns-packet 5.6.1, the codec under js-libp2p's ``@libp2p/mdns``.

What fastp2p multicasts (query, the full answer with compressed names, a
goodbye, a legacy unicast answer) is decoded by dns-packet in a Node.js
process, and the fields it reads must be the ones we meant. The other
direction (dns-packet's bytes into our decoder) is tests/proto/test_mdns.py;
real multicast with js-libp2p is tests/netns/test_mdns_netns.py.
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from fastp2p.multiaddr import Multiaddr
from fastp2p.peer import Ed25519PrivateKey, PeerID
from fastp2p.proto import dns, mdns
from tests.interop.peers import JS_DIR, missing

pytestmark = [pytest.mark.interop, pytest.mark.timeout(60)]

_DECODE = """
const p = require('dns-packet')
const out = []
for (const hex of JSON.parse(process.argv[1])) {
  const m = p.decode(Buffer.from(hex, 'hex'))
  const rr = (r) => ({ name: r.name, type: r.type, ttl: r.ttl, flush: r.flush,
    data: r.type === 'TXT' ? r.data.map((b) => b.toString()) : r.data })
  out.push({ type: m.type, id: m.id, aa: m.flag_aa,
    questions: m.questions.map((q) => ({ name: q.name, type: q.type })),
    answers: m.answers.map(rr), additionals: m.additionals.map(rr) })
}
console.log(JSON.stringify(out))
"""


def _dns_packet_decode(packets: list[bytes]) -> list[dict]:
    why = missing("js")
    if why is not None:
        pytest.skip(f"js-libp2p peer unavailable: {why}")
    node = shutil.which("node")
    assert node is not None
    r = subprocess.run([node, "-e", _DECODE, json.dumps([p.hex() for p in packets])], cwd=JS_DIR,
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    out: list[dict] = json.loads(r.stdout)
    return out


def test_dns_packet_reads_what_we_send() -> None:
    pid = PeerID.from_public_key(Ed25519PrivateKey.generate().public_key())
    st = mdns.MdnsState(pid, 0.0, peer_name="q" * 32)
    st.set_addrs([Multiaddr("/ip4/10.77.0.1/tcp/4001"), Multiaddr("/ip6/fd00::1/tcp/4001")])
    query = dns.encode(mdns.query_message())
    full = dns.encode(st.full_answer())
    bye = st.goodbye()
    assert bye is not None
    legacy_q = dns.encode(dns.Message(id=4242, questions=(dns.Question(mdns.SERVICE_NAME, dns.TYPE_PTR),)))
    (legacy,), _ = st.receive(legacy_q, ("10.77.0.9", 40000), 1.0)
    q, ans, gb, leg = _dns_packet_decode([query, full, bye.data, legacy.data])

    assert q["type"] == "query" and q["questions"] == [{"name": "_p2p._udp.local", "type": "PTR"}]

    assert ans["type"] == "response" and ans["aa"] is True
    assert ans["answers"] == [{"name": "_p2p._udp.local", "type": "PTR", "ttl": 120, "flush": False,
                               "data": f"{'q' * 32}._p2p._udp.local"}]
    by_type = {r["type"]: r for r in ans["additionals"]}
    assert by_type["TXT"]["name"] == f"{'q' * 32}._p2p._udp.local" and by_type["TXT"]["flush"] is True
    assert by_type["TXT"]["data"] == [f"dnsaddr=/ip4/10.77.0.1/tcp/4001/p2p/{pid}",
                                      f"dnsaddr=/ip6/fd00::1/tcp/4001/p2p/{pid}"]
    assert by_type["SRV"]["data"] == {"priority": 0, "weight": 0, "port": 4001,
                                      "target": f"{'q' * 32}.p2p.local"}
    assert by_type["A"]["data"] == "10.77.0.1" and by_type["AAAA"]["data"] == "fd00::1"

    assert gb["answers"][0]["ttl"] == 0 and all(r["ttl"] == 0 for r in gb["additionals"])
    assert leg["id"] == 4242 and leg["questions"] == [{"name": "_p2p._udp.local", "type": "PTR"}]
    assert all(r["ttl"] <= 10 for r in leg["answers"] + leg["additionals"])
