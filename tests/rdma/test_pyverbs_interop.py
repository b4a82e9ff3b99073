"""fastp2p's verbs binding and an independent pyverbs peer (another process, the
system python3 with Debian's python3-pyverbs) move data with RDMA WRITE and READ
into each other's registered memory; QP info goes over a plain socket."""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import socket
import subprocess

import pytest

from fastp2p.memory import MemoryManager

pytestmark = pytest.mark.rdma

SYSTEM_PY = "/usr/bin/python3"
PEER = pathlib.Path(__file__).with_name("pyverbs_peer.py")
SIZE = 4 << 20


def _have_pyverbs() -> bool:
    if not os.path.exists(SYSTEM_PY):
        return False
    r = subprocess.run([SYSTEM_PY, "-c", "import pyverbs.device"], capture_output=True)
    return r.returncode == 0


def test_pyverbs_peer_write_read_both_ways(device) -> None:
    if not _have_pyverbs():
        pytest.skip("python3-pyverbs is not installed for /usr/bin/python3")
    from fastp2p._native import verbs as v

    mm = MemoryManager()
    region = mm.alloc(SIZE)
    ours = os.urandom(SIZE)
    region.view()[:] = ours
    acc = v.ACCESS_LOCAL_WRITE | v.ACCESS_REMOTE_READ | v.ACCESS_REMOTE_WRITE
    mr = device.pd.register(region, acc)
    scratch = mm.alloc(SIZE)
    smr = device.pd.register(scratch)
    cq = device.ctx.create_cq(64)
    qp = device.pd.create_qp(cq, 16, 16)
    qp.to_init(device.port, acc)
    lsock = socket.create_server(("127.0.0.1", 0))
    port = lsock.getsockname()[1]
    proc = subprocess.Popen(
        [SYSTEM_PY, str(PEER), str(port), device.name, str(device.gid_index), str(SIZE)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={k: val for k, val in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")},
    )
    try:
        lsock.settimeout(120)
        conn, _ = lsock.accept()
        conn.settimeout(120)
        f = conn.makefile("rwb")

        def send(obj):
            f.write(json.dumps(obj).encode() + b"\n")
            f.flush()

        def recv():
            line = f.readline()
            assert line, proc.stderr.read().decode() if proc.poll() is not None else "peer closed"
            return json.loads(line)

        peer = recv()
        send({"qpn": qp.qp_num, "psn": 77, "addr": mr.addr, "rkey": mr.rkey})
        qp.to_rtr(peer["qpn"], peer["psn"], device.gid, device.port, device.sgid_index, device.mtu, device.lid, 1)
        qp.to_rts(77, 14, 7, 7, 1)
        assert recv() == {"state": "rts"}
        send({"state": "rts"})
        # 1. the pyverbs peer READs our region and WRITEs its pattern into it
        got = recv()
        assert got["read_sha"] == hashlib.sha256(ours).hexdigest()
        assert hashlib.sha256(region.view()).hexdigest() == got["wrote_sha"]
        # 2. we READ its MR (which holds the pattern it wrote to us), then WRITE a new one
        qp.post_send(1, v.OP_READ, smr, 0, SIZE, remote_addr=peer["addr"], rkey=peer["rkey"])
        wc = _wait(cq)
        assert wc[1] == v.WC_SUCCESS, wc
        assert hashlib.sha256(scratch.view()).hexdigest() == got["wrote_sha"]
        newp = os.urandom(SIZE)
        scratch.view()[:] = newp
        qp.post_send(2, v.OP_WRITE, smr, 0, SIZE, remote_addr=peer["addr"], rkey=peer["rkey"])
        wc = _wait(cq)
        assert wc[1] == v.WC_SUCCESS, wc
        send({"state": "written"})
        assert recv()["landed_sha"] == hashlib.sha256(newp).hexdigest()
        assert proc.wait(60) == 0, proc.stderr.read().decode()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        lsock.close()
        qp.close()
        cq.close()
        mr.close()
        smr.close()
        mm.close()
    assert region.freed


def _wait(cq):
    for _ in range(60_000):
        wcs = cq.poll(1, spin_ns=1_000_000)
        if wcs:
            return wcs[0]
    raise AssertionError("no completion")
