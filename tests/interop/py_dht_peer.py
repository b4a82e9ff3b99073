"""py-libp2p (0.8.1) reference Kademlia DHT peer for fastp2p interop tests.

Run with the interop venv's interpreter (``.venv-interop/bin/python``)::

    py_dht_peer.py [--client]

Listens on 127.0.0.1 (TCP, Noise, yamux) and runs py-libp2p's ``KadDHT`` on
``/ipfs/kad/1.0.0`` (server mode unless ``--client``), with a ``fastp2p``
namespace (any value up to 16 KiB; first record wins a tie) next to ``/pk/``.

JSON lines, as ``js/dht_peer.mjs``:
  stdout: listening (first), result {id, ...} or error {id, msg} per command
  stdin:  bootstrap {addrs}, find_peer {peer_id}, provide {key_hex},
          find_providers {key_hex, limit}, put {key, value}, get {key},
          routing_table, exit
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback

_OUT = os.fdopen(os.dup(1), "w", buffering=1)
os.dup2(2, 1)
sys.stdout = sys.stderr

import multiaddr  # noqa: E402
import trio  # noqa: E402
from libp2p import (  # noqa: E402
    NOISE_PROTOCOL_ID,
    YAMUX_PROTOCOL_ID,
    NoiseTransport,
    Yamux,
    create_new_ed25519_key_pair,
    create_new_x25519_key_pair,
    new_host,
)
from libp2p.custom_types import TProtocol  # noqa: E402
from libp2p.kad_dht.kad_dht import DHTMode, KadDHT  # noqa: E402
from libp2p.peer.id import ID  # noqa: E402
from libp2p.peer.peerinfo import info_from_p2p_addr  # noqa: E402
from libp2p.records.pubkey import PublicKeyValidator  # noqa: E402
from libp2p.records.validator import NamespacedValidator, Validator  # noqa: E402
from libp2p.tools.anyio_service import background_trio_service  # noqa: E402


def emit(event: str, **fields: object) -> None:
    _OUT.write(json.dumps({"event": event, **fields}) + "\n")


class Fastp2pValidator(Validator):
    def validate(self, key: str, value: bytes) -> None:
        if len(value) > 16 * 1024:
            raise ValueError("value too large")

    def select(self, key: str, values: list[bytes]) -> int:
        return 0


async def handle(dht: KadDHT, host, cmd: dict) -> dict:  # type: ignore[no-untyped-def,type-arg]
    c = cmd.get("cmd")
    if c == "bootstrap":
        for a in cmd.get("addrs", []):
            info = info_from_p2p_addr(multiaddr.Multiaddr(a))
            await host.connect(info)
            await dht.add_peer(info.peer_id, skip_server_mode_check=True)
        await dht.refresh_routing_table()
        return {"size": dht.get_routing_table_size()}
    if c == "find_peer":
        info = await dht.find_peer(ID.from_base58(cmd["peer_id"]))
        if info is None:
            raise LookupError("peer not found")
        return {"peer_id": str(info.peer_id), "addrs": [str(a) for a in info.addrs]}
    if c == "provide":
        return {"ok": bool(await dht.provide(cmd["key_hex"]))}
    if c == "find_providers":
        infos = await dht.find_providers(cmd["key_hex"], int(cmd.get("limit", 20)))
        return {"providers": [{"peer_id": str(i.peer_id), "addrs": [str(a) for a in i.addrs]} for i in infos]}
    if c == "put":
        await dht.put_value(cmd["key"], cmd["value"].encode())
        return {"ok": True}
    if c == "get":
        value = await dht.get_value(cmd["key"])
        if value is None:
            raise LookupError("value not found")
        return {"value": value.decode("utf-8", errors="replace")}
    if c == "routing_table":
        return {"size": dht.get_routing_table_size()}
    raise ValueError(f"unknown command {c}")


async def commands(dht: KadDHT, host, nursery) -> None:  # type: ignore[no-untyped-def]
    stdin = trio.lowlevel.FdStream(os.dup(0))
    buf = b""

    async def run(cmd: dict) -> None:  # type: ignore[type-arg]
        try:
            emit("result", id=cmd.get("id"), **(await handle(dht, host, cmd)))
        except Exception as exc:
            traceback.print_exc()
            emit("error", id=cmd.get("id"), msg=f"{type(exc).__name__}: {exc}")

    while True:
        chunk = await stdin.receive_some(65536)
        if not chunk:
            nursery.cancel_scope.cancel()
            return
        buf += chunk
        while b"\n" in buf:
            line, buf = buf.split(b"\n", 1)
            try:
                cmd = json.loads(line)
            except ValueError:
                continue
            if cmd.get("cmd") == "exit":
                nursery.cancel_scope.cancel()
                return
            nursery.start_soon(run, cmd)


async def main(args: argparse.Namespace) -> int:
    key_pair = create_new_ed25519_key_pair()
    noise_key = create_new_x25519_key_pair()
    sec_opt = {NOISE_PROTOCOL_ID: NoiseTransport(key_pair, noise_privkey=noise_key.private_key)}
    muxer_opt = {TProtocol(YAMUX_PROTOCOL_ID): Yamux}
    listen = [multiaddr.Multiaddr("/ip4/127.0.0.1/tcp/0")]
    host = new_host(key_pair=key_pair, sec_opt=sec_opt, muxer_opt=muxer_opt, listen_addrs=listen)
    validator = NamespacedValidator({"pk": PublicKeyValidator(), "fastp2p": Fastp2pValidator()})
    dht = KadDHT(host, DHTMode.CLIENT if args.client else DHTMode.SERVER,
                 validator=validator, validator_changed=True)
    async with host.run(listen_addrs=listen), background_trio_service(dht):
        pid = host.get_id()
        addrs = []
        for a in host.get_addrs():
            s = str(a)
            if "/p2p/" not in s:
                s += f"/p2p/{pid}"
            addrs.append(s)
        emit("listening", addrs=addrs, peer_id=str(pid))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(commands, dht, host, nursery)
    return 0


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--client", action="store_true")
    args = p.parse_args()
    try:
        rc = trio.run(main, args)
    except KeyboardInterrupt:
        rc = 130
    except BaseException as exc:  # noqa: BLE001
        traceback.print_exc()
        emit("error", msg=f"{type(exc).__name__}: {exc}")
        rc = 1
    sys.exit(rc)
