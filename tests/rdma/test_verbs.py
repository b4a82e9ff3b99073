"""The verbs binding on a real device: object tree, QP states, every opcode."""

from __future__ import annotations

import hashlib
import os

import pytest

from fastp2p import _accel, rdma
from fastp2p.errors import ClosedResourceError, RDMAError
from fastp2p.memory import MemoryManager

pytestmark = pytest.mark.rdma


def _verbs():
    from fastp2p._native import verbs

    return verbs


def _wait(cq, n, timeout_spins=2000):
    out = []
    for _ in range(timeout_spins):
        out += cq.poll(32, spin_ns=1_000_000)
        if len(out) >= n:
            return out
    raise AssertionError(f"only {len(out)} of {n} completions: {out}")


@pytest.fixture
def pair(device):
    """Two RC QPs on one device connected to each other (loopback), one CQ each."""
    v = _verbs()
    dev = device
    cqa = dev.ctx.create_cq(256)
    cqb = dev.ctx.create_cq(256)
    acc = v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE | v.ACCESS_REMOTE_ATOMIC
    qa = dev.pd.create_qp(cqa, 64, 64)
    qb = dev.pd.create_qp(cqb, 64, 64)
    for q in (qa, qb):
        q.to_init(dev.port, acc)
    qa.to_rtr(qb.qp_num, 100, dev.gid, dev.port, dev.sgid_index, dev.mtu, dev.lid)
    qb.to_rtr(qa.qp_num, 200, dev.gid, dev.port, dev.sgid_index, dev.mtu, dev.lid)
    qa.to_rts(200)
    qb.to_rts(100)
    assert qa.state == v.QPS_RTS
    yield dev, qa, qb, cqa, cqb
    for o in (qa, qb, cqa, cqb):
        o.close()


def test_available_and_devices():
    ok, why = rdma.available()
    assert ok, why
    devs = rdma.devices()
    assert devs and devs[0]["ports"]
    assert _accel.HAVE_VERBS


def test_pick_gid_roce_v2(device):
    idx, gid, roce = device.ctx.pick_gid(device.port)
    types = {i: t for i, _g, t in device.ctx.gids(device.port)}
    if roce:
        assert types[idx] == "RoCEv2"


def test_send_recv_write_read_atomics(pair):
    v = _verbs()
    dev, qa, qb, cqa, cqb = pair
    mm = MemoryManager()
    ra, rb = mm.alloc(1 << 20), mm.alloc(1 << 20)
    acc = v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE | v.ACCESS_REMOTE_ATOMIC
    ma = dev.pd.register(ra, acc)
    mb = dev.pd.register(rb, acc)
    data = os.urandom(1 << 20)
    ra.view()[:] = data
    # SEND with immediate -> RECV
    qb.post_recv(7, mb, 0, 4096)
    qa.post_send(1, v.OP_SEND_IMM, ma, 0, 4096, imm=0xABCD)
    wa = _wait(cqa, 1)
    wb = _wait(cqb, 1)
    assert wa[0][:2] == (1, v.WC_SUCCESS)
    assert wb[0][0] == 7 and wb[0][3] == 4096 and wb[0][4] == 0xABCD
    assert bytes(rb.view(0, 4096)) == data[:4096]
    # WRITE the whole MiB, then READ it back elsewhere
    qa.post_send(2, v.OP_WRITE, ma, 0, 1 << 20, remote_addr=mb.addr, rkey=mb.rkey)
    assert _wait(cqa, 1)[0][:2] == (2, v.WC_SUCCESS)
    assert hashlib.sha256(rb.view()).digest() == hashlib.sha256(data).digest()
    ra.view()[:] = b"\0" * (1 << 20)
    qa.post_send(3, v.OP_READ, ma, 0, 1 << 20, remote_addr=mb.addr, rkey=mb.rkey)
    assert _wait(cqa, 1)[0][:2] == (3, v.WC_SUCCESS)
    assert bytes(ra.view()) == data
    # atomics on an 8-byte slot of b (host order)
    rb.view(64, 8)[:] = (41).to_bytes(8, "little")
    qa.post_send(4, v.OP_FAA, ma, 0, remote_addr=mb.addr + 64, rkey=mb.rkey, compare_add=1)
    assert _wait(cqa, 1)[0][:2] == (4, v.WC_SUCCESS)
    assert int.from_bytes(ra.view(0, 8), "little") == 41
    assert int.from_bytes(rb.view(64, 8), "little") == 42
    qa.post_send(5, v.OP_CAS, ma, 8, remote_addr=mb.addr + 64, rkey=mb.rkey, compare_add=42, swap=7)
    assert _wait(cqa, 1)[0][:2] == (5, v.WC_SUCCESS)
    assert int.from_bytes(ra.view(8, 8), "little") == 42
    assert int.from_bytes(rb.view(64, 8), "little") == 7
    # WRITE_WITH_IMM consumes a receive and reports the immediate
    qb.post_recv(8, mb, 0, 0)
    qa.post_send(6, v.OP_WRITE_IMM, ma, 0, 16, remote_addr=mb.addr + 128, rkey=mb.rkey, imm=5)
    _wait(cqa, 1)
    wb = _wait(cqb, 1)
    assert wb[0][0] == 8 and wb[0][2] == v.WC_RECV_RDMA_WITH_IMM and wb[0][4] == 5
    ma.close()
    mb.close()
    mm.close()


def test_registration_leases_region(device):
    mm = MemoryManager()
    r = mm.alloc(1 << 16)
    mr = device.pd.register(r)
    assert r.leases == 1
    r.close()
    assert not r.freed  # the NIC may still touch it
    mr.close()
    mr.close()  # idempotent
    assert r.freed
    with pytest.raises(ClosedResourceError):
        device.pd.register(r)


def test_cached_registration_swept_after_close(device):
    mm = MemoryManager()
    r = mm.alloc(1 << 16)
    a = device.registration(r)
    assert device.registration(r) is a
    r.close()
    assert not r.freed
    device.pd.sweep()
    assert a.closed and r.freed


def test_parent_closes_children_first(device):
    v = _verbs()
    ctx = v.Context(device.name)
    pd = ctx.alloc_pd()
    cq = ctx.create_cq(16)
    qp = pd.create_qp(cq, 4, 4)
    mm = MemoryManager()
    r = mm.alloc(4096)
    mr = pd.register(r)
    with ctx:
        pass
    assert qp.closed and mr.closed and pd.closed and cq.closed and ctx.closed
    assert r.leases == 0
    with pytest.raises(ClosedResourceError):
        qp.post_send(1, v.OP_SEND)


def test_remote_access_error_is_typed(pair):
    v = _verbs()
    dev, qa, qb, cqa, cqb = pair
    mm = MemoryManager()
    ra, rb = mm.alloc(8192), mm.alloc(8192)
    ma = dev.pd.register(ra)
    mb = dev.pd.register(rb, v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ, 0, 4096)  # read-only, 4 KiB
    rkey, addr = mb.rkey, mb.addr
    qa.post_send(1, v.OP_WRITE, ma, 0, 64, remote_addr=addr, rkey=rkey)  # no write right
    wc = _wait(cqa, 1)[0]
    err = rdma.completion_error(wc[1], wr_id=wc[0], vendor_err=wc[6])
    assert isinstance(err, rdma.RemoteAccessError)
    from fastp2p.errors import AccessDeniedError

    assert isinstance(err, AccessDeniedError)
    ma.close()
    mb.close()


def test_bad_inputs(device):
    v = _verbs()
    with pytest.raises(RDMAError):
        v.Context("no-such-device")
    mm = MemoryManager()
    r = mm.alloc(4096)
    with pytest.raises(ValueError):
        device.pd.register(r, offset=4000, length=200)
    with pytest.raises(BufferError):
        device.pd.register(b"read-only", v.ACCESS_LOCAL_WRITE)
