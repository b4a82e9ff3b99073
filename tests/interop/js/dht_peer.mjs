// js-libp2p 3.3 + @libp2p/kad-dht reference DHT peer for fastp2p interop tests.
//
//   node dht_peer.mjs [--client] [--bootstrap MA]... [--listen MA] [--k N] [--alpha N]
//
// Listens on 127.0.0.1 (TCP, Noise, yamux; --listen: elsewhere, e.g. a testbed
// namespace's address), bucket size and parallelism kad-dht's defaults unless
// --k / --alpha (the netem testbed runs k = 6, like its fastp2p hosts), runs kad-dht on /ipfs/kad/1.0.0 in
// server mode (--client: client mode) with loopback addresses kept
// (passthroughMapper) and a "fastp2p" namespace (any value up to 16 KiB, first
// record wins on a tie) next to the stock /pk/ and /ipns/ ones. JSON lines:
//   stdout: {"event":"listening","addrs":[...],"peer_id":...}   first
//           {"event":"result","id",...} / {"event":"error","id","msg"}  one per command
//   stdin:  {"cmd":"bootstrap","addrs":[...],"wait_s"?,"id"}  dial each, wait (10 s) for the routing table
//           {"cmd":"find_peer","peer_id","id"}           -> addrs
//           {"cmd":"provide","key_hex","id"}             -> ok (key: a multihash, raw CID v1 codec)
//           {"cmd":"find_providers","key_hex","limit","id"} -> providers [{peer_id,addrs}]
//           {"cmd":"put","key","value","id"}             -> ok
//           {"cmd":"get","key","id"}                     -> value
//           {"cmd":"routing_table","id"}                 -> peers

import { emit, fail } from './common.mjs'

const { parseArgs } = await import('node:util')
const { createInterface } = await import('node:readline')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { identify } = await import('@libp2p/identify')
const { ping } = await import('@libp2p/ping')
const { kadDHT, passthroughMapper } = await import('@libp2p/kad-dht')
const { peerIdFromString } = await import('@libp2p/peer-id')
const { multiaddr } = await import('@multiformats/multiaddr')
const { CID } = await import('multiformats/cid')
const Digest = await import('multiformats/hashes/digest')

const { values: args } = parseArgs({
  options: {
    client: { type: 'boolean', default: false },
    bootstrap: { type: 'string', multiple: true, default: [] },
    listen: { type: 'string', default: '/ip4/127.0.0.1/tcp/0' },
    k: { type: 'string' },
    alpha: { type: 'string' }
  }
})

const node = await createLibp2p({
  addresses: { listen: [args.listen] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()],
  services: {
    identify: identify(),
    ping: ping(),
    dht: kadDHT({
      protocol: '/ipfs/kad/1.0.0',
      clientMode: args.client,
      ...(args.k ? { kBucketSize: Number(args.k) } : {}),
      ...(args.alpha ? { alpha: Number(args.alpha) } : {}),
      peerInfoMapper: passthroughMapper,
      allowQueryWithZeroPeers: true,
      validators: {
        fastp2p: async (key, value) => {
          if (value.length > 16 * 1024) throw new Error('value too large')
        }
      },
      selectors: { fastp2p: (key, records) => 0 }
    })
  }
}).catch(fail)

const dht = node.services.dht
const enc = new TextEncoder()
const dec = new TextDecoder('utf-8', { fatal: false })
const hex = (b) => Buffer.from(b).toString('hex')
const unhex = (s) => Uint8Array.from(Buffer.from(s, 'hex'))
// kad-dht keys provider records by the CID's multihash; any codec gives the same key
const cidOf = (mhHex) => CID.createV1(0x55, Digest.decode(unhex(mhHex)))

emit('listening', {
  addrs: node.getMultiaddrs().map(a => a.toString()),
  peer_id: node.peerId.toString()
})

async function bootstrap (addrs, waitS = 10) {
  for (const a of addrs) {
    await node.dial(multiaddr(a))
  }
  // identify, then kad-dht's topology, fill the table: seconds under emulation.
  // A peer enters the table only when identify on its connection completes; under
  // TCG emulation that can time out once, and nothing retries it: after 15 s with
  // an empty table, close the connections and dial again (a new identify).
  const deadline = Date.now() + waitS * 1000
  let redial = Date.now() + 15000
  while (Date.now() < deadline) {
    if (dht.routingTable.size > 0) break
    if (Date.now() > redial) {
      redial = Date.now() + 15000
      for (const a of addrs) {
        const ma = multiaddr(a)
        try {
          const pid = ma.getComponents().find(c => c.name === 'p2p')?.value
          if (pid != null) await node.hangUp(peerIdFromString(pid))
          await node.dial(ma)
        } catch (err) {
          process.stderr.write(`redial ${a}: ${err}\n`)
        }
      }
    }
    await new Promise(resolve => setTimeout(resolve, 100))
  }
  return dht.routingTable.size
}

async function handle (cmd) {
  switch (cmd.cmd) {
    case 'bootstrap':
      return { size: await bootstrap(cmd.addrs ?? [], cmd.wait_s ?? 10) }
    case 'find_peer': {
      const info = await node.peerRouting.findPeer(peerIdFromString(cmd.peer_id))
      return { peer_id: info.id.toString(), addrs: info.multiaddrs.map(a => a.toString()) }
    }
    case 'provide':
      await node.contentRouting.provide(cidOf(cmd.key_hex))
      return { ok: true }
    case 'find_providers': {
      const out = []
      for await (const p of node.contentRouting.findProviders(cidOf(cmd.key_hex))) {
        if (out.some(q => q.peer_id === p.id.toString())) continue
        out.push({ peer_id: p.id.toString(), addrs: p.multiaddrs.map(a => a.toString()) })
        if (out.length >= (cmd.limit ?? 20)) break
      }
      return { providers: out }
    }
    case 'put':
      await node.contentRouting.put(enc.encode(cmd.key), enc.encode(cmd.value))
      return { ok: true }
    case 'get': {
      const value = await node.contentRouting.get(enc.encode(cmd.key))
      return { value: dec.decode(value) }
    }
    case 'routing_table':
      return { size: dht.routingTable.size }
    default:
      throw new Error(`unknown command ${cmd.cmd}`)
  }
}

if (args.bootstrap.length) {
  try {
    await bootstrap(args.bootstrap)
  } catch (err) {
    fail(err)
  }
}

const rl = createInterface({ input: process.stdin })
rl.on('line', async (line) => {
  let cmd
  try {
    cmd = JSON.parse(line)
  } catch {
    return
  }
  try {
    emit('result', { id: cmd.id ?? null, ...(await handle(cmd)) })
  } catch (err) {
    emit('error', { id: cmd.id ?? null, msg: `${err?.name ?? 'Error'}: ${err?.message ?? String(err)}` })
  }
})
rl.on('close', async () => {
  await node.stop()
  process.exit(0)
})
