// js-libp2p (3.x) peer with @libp2p/mdns discovery, for fastp2p's mDNS interop tests.
//
//   node mdns_peer.mjs --listen /ip4/10.77.0.2/tcp/4002 [--interval-ms 1000] [--dial]
//                      [--timeout 60]
//
// TCP + Noise + yamux, identify and ping. Answers mDNS queries with its listen
// addresses and queries every --interval-ms. With --dial it connects to every peer
// mDNS reports and pings it.
//
// Stdout carries JSON lines only:
//   {"event":"listening","addrs":[".../p2p/<id>"],"peer_id":"<id>"}     always first
//   {"event":"discovered","peer_id":...,"addrs":[...],"elapsed_ms":...}  each mDNS discovery
//   {"event":"ping","peer_id":...,"rtt_ms":...,"elapsed_ms":...}         --dial: after dialling
//   {"event":"dial_error","peer_id":...,"msg":...}                       --dial failed
//   {"event":"connection","peer_id":...,"direction":"inbound"|"outbound"} each new connection
//   {"event":"identify","peer_id":...,"agent_version":...}               each identified peer
//   {"event":"error","msg":...}                                          exit 1
// Exits 0 on SIGTERM/SIGINT or after --timeout seconds.

import { emit, fail, announceListening, exitOnSignals } from './common.mjs'

const { parseArgs } = await import('node:util')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { ping } = await import('@libp2p/ping')
const { identify } = await import('@libp2p/identify')
const { mdns } = await import('@libp2p/mdns')

const t0 = performance.now()

const { values: args } = parseArgs({
  options: {
    listen: { type: 'string', default: '/ip4/0.0.0.0/tcp/0' },
    'interval-ms': { type: 'string', default: '10000' },
    dial: { type: 'boolean', default: false },
    timeout: { type: 'string', default: '60' }
  }
})

let node
try {
  node = await createLibp2p({
    addresses: { listen: [args.listen] },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    // as a service (not in peerDiscovery) so its own 'peer' events are visible below;
    // libp2p registers a service with the peer-discovery symbol as a discovery source too
    services: { identify: identify(), ping: ping(), mdns: mdns({ interval: Number(args['interval-ms']) }) }
  })
} catch (err) {
  fail(err)
}

announceListening(node)

const dialing = new Set()
// @libp2p/mdns's own event: this peer was found in an mDNS response (libp2p's
// 'peer:discovery' fires only for peers new to the peer store, e.g. not for one
// that already connected to us)
node.services.mdns.addEventListener('peer', (evt) => {
  const id = evt.detail.id
  emit('discovered', {
    peer_id: id.toString(),
    addrs: evt.detail.multiaddrs.map((a) => a.toString()),
    elapsed_ms: performance.now() - t0
  })
  if (!args.dial || dialing.has(id.toString())) {
    return
  }
  dialing.add(id.toString())
  ;(async () => {
    try {
      const conn = await node.dial(id)
      const rtt = await node.services.ping.ping(conn.remotePeer)
      emit('ping', { peer_id: conn.remotePeer.toString(), rtt_ms: rtt, elapsed_ms: performance.now() - t0 })
    } catch (err) {
      emit('dial_error', { peer_id: id.toString(), msg: String(err) })
      dialing.delete(id.toString())
    }
  })()
})

node.addEventListener('connection:open', (evt) => {
  emit('connection', { peer_id: evt.detail.remotePeer.toString(), direction: evt.detail.direction })
})

node.addEventListener('peer:identify', (evt) => {
  emit('identify', {
    peer_id: evt.detail.peerId.toString(),
    agent_version: evt.detail.agentVersion ?? null
  })
})

const shutdown = exitOnSignals(node)
setTimeout(() => { shutdown(0) }, Number(args.timeout) * 1000)
