"""An independent RDMA peer written with pyverbs (Debian python3-pyverbs), run by
``test_pyverbs_interop.py`` under /usr/bin/python3. It exchanges QP info with
the fastp2p side as JSON lines over a plain TCP socket, then:

1. RDMA READs the fastp2p region into its own MR and RDMA WRITEs its pattern
   into the fastp2p region; reports both SHA-256s;
2. waits while the fastp2p side READs its MR and WRITEs a new pattern into it;
   reports the SHA-256 of what landed.

Usage: pyverbs_peer.py PORT DEVICE GID_INDEX SIZE
"""

import hashlib
import json
import socket
import sys
import time

import pyverbs.enums as e
from pyverbs.addr import AHAttr, GlobalRoute
from pyverbs.cq import CQ
from pyverbs.device import Context
from pyverbs.mr import MR
from pyverbs.pd import PD
from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr
from pyverbs.wr import SGE, SendWR

port, dev, gid_index, size = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
sock = socket.create_connection(("127.0.0.1", int(port)))
f = sock.makefile("rwb")


def send(obj):
    f.write(json.dumps(obj).encode() + b"\n")
    f.flush()


def recv():
    return json.loads(f.readline())


ctx = Context(name=dev)
pd = PD(ctx)
acc = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE | e.IBV_ACCESS_REMOTE_READ
mr = MR(pd, size, acc)
cq = CQ(ctx, 64)
cap = QPCap(max_send_wr=16, max_recv_wr=16, max_send_sge=1, max_recv_sge=1)
qp = QP(pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=cq, rcq=cq, cap=cap))
gid = ctx.query_gid(1, gid_index)
send({"qpn": qp.qp_num, "psn": 0, "addr": mr.buf, "rkey": mr.rkey, "gid": str(gid)})
peer = recv()

a = QPAttr(qp_state=e.IBV_QPS_INIT, cur_qp_state=e.IBV_QPS_RESET)
a.qp_access_flags = acc
a.ah_attr = AHAttr(port_num=1, is_global=1, gr=GlobalRoute(dgid=gid, sgid_index=gid_index))
a.dest_qp_num = peer["qpn"]
a.path_mtu = e.IBV_MTU_1024
a.max_dest_rd_atomic = 1
a.max_rd_atomic = 1
a.min_rnr_timer = 12
a.timeout = 14
a.retry_cnt = 7
a.rnr_retry = 7
a.rq_psn = peer["psn"]
a.sq_psn = 0
qp.to_rts(a)
send({"state": "rts"})
recv()  # the fastp2p side is RTS too


def wait():
    t = time.time()
    while True:
        k, wcs = cq.poll(1)
        if k:
            if wcs[0].status != e.IBV_WC_SUCCESS:
                raise RuntimeError(f"completion status {wcs[0].status}")
            return
        if time.time() - t > 60:
            raise TimeoutError("no completion")


wr = SendWR(opcode=e.IBV_WR_RDMA_READ, num_sge=1, sg=[SGE(mr.buf, size, mr.lkey)],
            send_flags=e.IBV_SEND_SIGNALED)
wr.set_wr_rdma(peer["rkey"], peer["addr"])
qp.post_send(wr)
wait()
read_sha = hashlib.sha256(mr.read(size, 0)).hexdigest()
pattern = bytes((i * 7 + 3) & 0xFF for i in range(256)) * (size // 256)
mr.write(pattern, size)
wr = SendWR(opcode=e.IBV_WR_RDMA_WRITE, num_sge=1, sg=[SGE(mr.buf, size, mr.lkey)],
            send_flags=e.IBV_SEND_SIGNALED)
wr.set_wr_rdma(peer["rkey"], peer["addr"])
qp.post_send(wr)
wait()
send({"read_sha": read_sha, "wrote_sha": hashlib.sha256(pattern).hexdigest()})
recv()  # the fastp2p side read our MR and wrote its pattern into it
send({"landed_sha": hashlib.sha256(mr.read(size, 0)).hexdigest()})
