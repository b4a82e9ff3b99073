"""A fastp2p peer in its own process for the RDMA tests (``python rdma_peer.py``).

Listens with the RDMA data path enabled (same_host="rdma": Soft-RoCE loopback
puts both peers on one host), prints ``{"addr": ..., "peer": ...}`` on stdout
and serves:

- ``/t/sink/1``: reads everything, answers the SHA-256 hex of it after EOF;
- ``/t/region/1``: line commands ``alloc N`` (a region of N bytes filled with a
  pattern, granted read+write to the caller; answers ``token_hex sha_hex``),
  ``hash`` (SHA-256 of the region) and ``u64 OFFSET`` (the 8-byte slot's value).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import sys

import fastp2p
from fastp2p.config import HostConfig, RdmaConfig

CFG = HostConfig(data_paths=("rdma", "tcp"), rdma=RdmaConfig(same_host="rdma"))


async def main() -> None:
    async with fastp2p.Host(listen=["/ip4/127.0.0.1/tcp/0"], config=CFG) as host:
        regions = []

        async def sink(stream) -> None:
            h = hashlib.sha256()
            buf = bytearray(1 << 20)
            while n := await stream.readinto(buf):
                h.update(memoryview(buf)[:n])
            await stream.write(h.hexdigest().encode())
            await stream.close_write()

        async def region(stream) -> None:
            buf = b""
            while True:
                chunk = await stream.read(4096)
                if not chunk:
                    return
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    cmd, *args = line.decode().split()
                    if cmd == "alloc":
                        n = int(args[0])
                        r = host.alloc(n)
                        pat = bytes(range(251)) * (n // 251 + 1)
                        r.view()[:] = pat[:n]
                        regions.append(r)
                        tok = r.grant(stream.conn.remote_peer, read=True, write=True)
                        out = f"{tok.hex()} {hashlib.sha256(r.view()).hexdigest()}"
                    elif cmd == "hash":
                        out = hashlib.sha256(regions[-1].view()).hexdigest()
                    elif cmd == "u64":
                        off = int(args[0])
                        out = str(int.from_bytes(regions[-1].view(off, 8), "little"))
                    else:
                        out = "?"
                    await stream.write(out.encode() + b"\n")

        host.set_handler("/t/sink/1", sink)
        host.set_handler("/t/region/1", region)
        print(json.dumps({"addr": str(host.full_addrs[0]), "peer": str(host.peer_id)}), flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


if __name__ == "__main__":
    asyncio.run(main())
