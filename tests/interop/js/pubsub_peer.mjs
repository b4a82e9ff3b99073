// js-libp2p 3.3 + @libp2p/gossipsub reference pubsub peer for fastp2p interop tests.
//
//   node pubsub_peer.mjs [--muxer yamux|mplex] [--topic T]... [--dial MA]... [--direct MA/p2p/ID]...
//
// --direct: gossipsub explicit peering (directPeers) with that peer.
//
// Listens on 127.0.0.1 (TCP, Noise, one muxer), runs gossipsub (StrictSign, the
// library's defaults otherwise) and speaks JSON lines:
//   stdout: {"event":"listening","addrs":[...],"peer_id":...}           first
//           {"event":"message","topic","from","seqno","data","recv_ms"}  one per message
//           {"event":"peers","topic","n"}                                answer to wait_peers
//           {"event":"published","id","recipients"} / {"event":"publish_error","id","msg"}
//           {"event":"scores","scores":{peer: score}}                    answer to scores
//           {"event":"connected","addr"} / {"event":"error","msg"}
//   stdin:  {"cmd":"subscribe","topic"} {"cmd":"publish","topic","data","id"}
//           {"cmd":"wait_peers","topic","n"} {"cmd":"dial","addr"} {"cmd":"scores"}
//           {"cmd":"quiet"} (stop emitting message events; count them: {"cmd":"count"})

import { emit, fail } from './common.mjs'

const { parseArgs } = await import('node:util')
const { createInterface } = await import('node:readline')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { mplex } = await import('@libp2p/mplex')
const { identify } = await import('@libp2p/identify')
const { gossipsub } = await import('@libp2p/gossipsub')
const { multiaddr } = await import('@multiformats/multiaddr')
const { peerIdFromString } = await import('@libp2p/peer-id')

const { values: args } = parseArgs({
  options: {
    muxer: { type: 'string', default: 'yamux' },
    topic: { type: 'string', multiple: true, default: [] },
    dial: { type: 'string', multiple: true, default: [] },
    direct: { type: 'string', multiple: true, default: [] }
  }
})

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [args.muxer === 'mplex' ? mplex({ disconnectThreshold: 1000 }) : yamux()],
  services: {
    identify: identify(),
    pubsub: gossipsub({
      allowPublishToZeroTopicPeers: true,
      emitSelf: false,
      heartbeatInterval: 200,
      directPeers: args.direct.map(a => {
        const [addr, id] = a.split('/p2p/')
        return { id: peerIdFromString(id), addrs: [multiaddr(addr)] }
      })
    })
  }
}).catch(fail)

const pubsub = node.services.pubsub
const encoder = new TextEncoder()
const decoder = new TextDecoder('utf-8', { fatal: false })
let quiet = false
let received = 0
let firstMs = null
let lastMs = null
let lats = []
const waiters = []

function checkWaiters () {
  for (let i = waiters.length - 1; i >= 0; i--) {
    const w = waiters[i]
    if (pubsub.getSubscribers(w.topic).length >= w.n) {
      waiters.splice(i, 1)
      emit('peers', { topic: w.topic, n: pubsub.getSubscribers(w.topic).length })
    }
  }
}

pubsub.addEventListener('message', (evt) => {
  const msg = evt.detail
  const recvMs = performance.timeOrigin + performance.now()
  received++
  if (quiet) {
    // bench mode: payloads start with "<send time ms>;"
    const head = decoder.decode(msg.data.subarray(0, 32)).split(';')[0]
    const sent = Number(head)
    if (!Number.isNaN(sent)) lats.push(recvMs - sent)
    if (firstMs === null) firstMs = recvMs
    lastMs = recvMs
    return
  }
  emit('message', {
    topic: msg.topic,
    from: msg.from?.toString() ?? null,
    seqno: msg.sequenceNumber !== undefined ? msg.sequenceNumber.toString() : null,
    data: decoder.decode(msg.data),
    recv_ms: recvMs
  })
})
pubsub.addEventListener('subscription-change', checkWaiters)
setInterval(checkWaiters, 100)

for (const t of args.topic) {
  pubsub.subscribe(t)
}

emit('listening', {
  addrs: node.getMultiaddrs().map(a => a.toString()),
  peer_id: node.peerId.toString()
})

for (const a of args.dial) {
  try {
    await node.dial(multiaddr(a))
    emit('connected', { addr: a })
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
    if (cmd.cmd === 'subscribe') {
      pubsub.subscribe(cmd.topic)
    } else if (cmd.cmd === 'publish') {
      try {
        const res = await pubsub.publish(cmd.topic, encoder.encode(cmd.data))
        emit('published', { id: cmd.id ?? null, recipients: res.recipients.length })
      } catch (err) {
        emit('publish_error', { id: cmd.id ?? null, msg: String(err?.message ?? err) })
      }
    } else if (cmd.cmd === 'wait_peers') {
      waiters.push({ topic: cmd.topic, n: cmd.n ?? 1 })
      checkWaiters()
    } else if (cmd.cmd === 'dial') {
      await node.dial(multiaddr(cmd.addr))
      emit('connected', { addr: cmd.addr })
    } else if (cmd.cmd === 'scores') {
      const scores = {}
      for (const p of pubsub.getPeers()) {
        scores[p.toString()] = pubsub.score.score(p.toString())
      }
      emit('scores', { scores })
    } else if (cmd.cmd === 'quiet') {
      quiet = true
      received = 0
      firstMs = lastMs = null
      lats = []
      emit('quiet', {})
    } else if (cmd.cmd === 'bench_publish') {
      const t0 = performance.timeOrigin + performance.now()
      const pad = 'x'.repeat(cmd.size)
      for (let i = 0; i < cmd.n; i++) {
        const now = performance.timeOrigin + performance.now()
        const text = (now.toFixed(3) + ';' + pad).slice(0, cmd.size)
        await pubsub.publish(cmd.topic, encoder.encode(text))
      }
      emit('bench_published', { n: cmd.n, start_ms: t0, end_ms: performance.timeOrigin + performance.now() })
    } else if (cmd.cmd === 'stats') {
      const s = [...lats].sort((a, b) => a - b)
      const q = (f) => s.length ? s[Math.min(s.length - 1, Math.floor(f * s.length))] : null
      emit('stats', { received, first_ms: firstMs, last_ms: lastMs, p50_ms: q(0.5), p99_ms: q(0.99) })
    } else if (cmd.cmd === 'count') {
      emit('count', { received })
    } else if (cmd.cmd === 'exit') {
      await node.stop()
      process.exit(0)
    }
  } catch (err) {
    fail(err)
  }
})
rl.on('close', async () => {
  await node.stop()
  process.exit(0)
})
