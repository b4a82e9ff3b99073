// js-libp2p (3.x) reference peer for fastp2p interop tests.
//
//   node peer.mjs --listen [--muxer yamux|mplex]
//   node peer.mjs --dial /ip4/127.0.0.1/tcp/PORT/p2p/PEER [--muxer yamux|mplex] [--pings N]
//   either with --psk FILE: a private network (@libp2p/pnet) with that swarm.key
//
// TCP + Noise only, exactly one muxer offered. Serves /echo/1.0.0 (echo until EOF,
// then close); ping and identify services are enabled.
//
// Stdout carries JSON lines only (same protocol as ../py_peer.py):
//   {"event":"listening","addrs":[".../p2p/<id>"],"peer_id":"<id>"}      always first
//   {"event":"connected","peer_id":...}                                   dialer
//   {"event":"ping","rtt_ms":...}                                         dialer, N times
//   {"event":"identify","peer_id":...,"agent_version":...,"protocol_version":...,
//    "protocols":[...],"listen_addrs":[...]}                              both sides
//   {"event":"echo","ok":true,"sha256":...,"bytes":...}                   dialer
//   {"event":"echo_served","peer_id":...,"bytes":...,"sha256":...}        listener
//   {"event":"done"}                                                      dialer, exit 0
//   {"event":"error","msg":...}                                           exit 1

import { emit, fail, announceListening, exitOnSignals } from './common.mjs'

const { createHash, randomBytes } = await import('node:crypto')
const { readFileSync } = await import('node:fs')
const { parseArgs } = await import('node:util')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { mplex } = await import('@libp2p/mplex')
const { ping } = await import('@libp2p/ping')
const { identify } = await import('@libp2p/identify')
const { multiaddr } = await import('@multiformats/multiaddr')
const { preSharedKey } = await import('@libp2p/pnet')

const ECHO = '/echo/1.0.0'
const ECHO_SIZE = 1024 * 1024
const CHUNK = 64 * 1024

const { values: args } = parseArgs({
  options: {
    listen: { type: 'boolean', default: false },
    dial: { type: 'string' },
    muxer: { type: 'string', default: 'yamux' },
    pings: { type: 'string', default: '3' },
    timeout: { type: 'string', default: '60' },
    // dialer: seconds to stay connected after "done" so the listener can identify us
    linger: { type: 'string', default: '1' },
    // private network: a /key/swarm/psk/1.0.0/ key file
    psk: { type: 'string' },
    // @libp2p/mplex aborts the whole connection once a remote opens more than
    // `disconnectThreshold` streams in one second (default 5, counted for every
    // NEW_STREAM, not only those over the inbound limit). A ping + identify + echo
    // session opens ~6, so raise it by default; pass 5 to get the stock behaviour.
    'mplex-disconnect-threshold': { type: 'string', default: '1000' }
  }
})
if (args.listen === (args.dial !== undefined)) {
  fail(new Error('exactly one of --listen or --dial MULTIADDR is required'))
}
if (!['yamux', 'mplex'].includes(args.muxer)) {
  fail(new Error(`unknown --muxer ${args.muxer}`))
}

function toBytes (chunk) {
  // Streams yield Uint8Array or Uint8ArrayList.
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

async function send (stream, buf) {
  if (!stream.send(buf)) {
    await stream.onDrain()
  }
}

function identifyEvent (result) {
  return {
    peer_id: result.peerId.toString(),
    agent_version: result.agentVersion ?? null,
    protocol_version: result.protocolVersion ?? null,
    protocols: result.protocols ?? [],
    listen_addrs: (result.listenAddrs ?? []).map((a) => a.toString()),
    observed_addr: result.observedAddr?.toString() ?? null
  }
}

const node = await createLibp2p({
  addresses: { listen: ['/ip4/127.0.0.1/tcp/0'] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [args.muxer === 'yamux'
    ? yamux()
    : mplex({ disconnectThreshold: Number(args['mplex-disconnect-threshold']) })],
  ...(args.psk !== undefined ? { connectionProtector: preSharedKey({ psk: readFileSync(args.psk) }) } : {}),
  services: {
    identify: identify(),
    ping: ping()
  }
})

await node.handle(ECHO, async (stream, connection) => {
  const h = createHash('sha256')
  let total = 0
  try {
    for await (const chunk of stream) {
      const buf = toBytes(chunk)
      h.update(buf)
      total += buf.byteLength
      await send(stream, buf)
    }
    await stream.close()
    emit('echo_served', { peer_id: connection.remotePeer.toString(), bytes: total, sha256: h.digest('hex') })
  } catch (err) {
    emit('echo_served_error', { peer_id: connection.remotePeer.toString(), bytes: total, msg: String(err) })
    stream.abort(err)
  }
})

announceListening(node)

const shutdown = exitOnSignals(node)

if (args.listen) {
  // Inbound peers are identified automatically when they connect.
  node.addEventListener('peer:identify', (evt) => {
    emit('identify', identifyEvent(evt.detail))
  })
} else {
  const deadline = setTimeout(() => fail(new Error(`timed out after ${args.timeout}s`)), Number(args.timeout) * 1000)
  try {
    const ma = multiaddr(args.dial)
    let t0 = performance.now()
    const conn = await node.dial(ma)
    emit('connected', { peer_id: conn.remotePeer.toString(), ms: performance.now() - t0 })

    for (let i = 0; i < Number(args.pings); i++) {
      t0 = performance.now()
      const libRtt = await node.services.ping.ping(conn.remotePeer)
      emit('ping', { rtt_ms: performance.now() - t0, lib_rtt_ms: libRtt })
    }

    const result = await node.services.identify.identify(conn)
    emit('identify', identifyEvent(result))

    const payload = randomBytes(ECHO_SIZE)
    const want = createHash('sha256').update(payload).digest('hex')
    const stream = await conn.newStream(ECHO)
    const writer = (async () => {
      for (let off = 0; off < payload.byteLength; off += CHUNK) {
        await send(stream, payload.subarray(off, off + CHUNK))
      }
      await stream.close()
    })()
    const h = createHash('sha256')
    let total = 0
    for await (const chunk of stream) {
      const buf = toBytes(chunk)
      h.update(buf)
      total += buf.byteLength
    }
    await writer
    const got = h.digest('hex')
    if (got !== want || total !== payload.byteLength) {
      throw new Error(`echo mismatch: sent ${payload.byteLength} bytes sha256 ${want}, got ${total} bytes sha256 ${got}`)
    }
    emit('echo', { ok: true, sha256: got, bytes: total, mode: 'duplex' })
    clearTimeout(deadline)
    emit('done')
    await new Promise((resolve) => setTimeout(resolve, Number(args.linger) * 1000))
    await shutdown(0)
  } catch (err) {
    fail(err)
  }
}
