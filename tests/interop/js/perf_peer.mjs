// js-libp2p (3.x) peer speaking the libp2p perf protocol (/perf/1.0.0), written from
// the spec (specs/perf/perf.md): @libp2p/perf is not published on the npm registry
// this project installs from, so this small peer implements it on libp2p's own
// stream API (TCP + Noise + yamux, the same stack and pins as peer.mjs).
//
//   node perf_peer.mjs --listen
//   node perf_peer.mjs --dial MULTIADDR --upload BYTES --download BYTES
//
// Server: read the big-endian u64 download size, read until EOF, then send that
// many bytes and close. Client: open a stream, send the size, upload, close the
// write side, read the download until EOF; times both phases.
//
// Stdout carries JSON lines only (as peer.mjs):
//   {"event":"listening","addrs":[".../p2p/<id>"],"peer_id":"<id>"}   always first
//   {"event":"perf_served","uploaded":N,"downloaded":N}               server, per stream
//   {"event":"perf","upload_bytes":N,"download_bytes":N,"upload_s":S,"download_s":S}
//   {"event":"done"}                                                  client, exit 0
//   {"event":"error","msg":...}                                       exit 1

import { emit, fail, announceListening, exitOnSignals } from './common.mjs'

const { parseArgs } = await import('node:util')
const { createLibp2p } = await import('libp2p')
const { tcp } = await import('@libp2p/tcp')
const { noise } = await import('@libp2p/noise')
const { yamux } = await import('@libp2p/yamux')
const { multiaddr } = await import('@multiformats/multiaddr')

const PERF = '/perf/1.0.0'
const CHUNK = 64 * 1024
// The spec allows any size; a test peer must not be made to send forever.
const MAX_DOWNLOAD = 2n ** 40n
const ZEROS = new Uint8Array(CHUNK)

const { values: args } = parseArgs({
  options: {
    listen: { type: 'boolean', default: false },
    dial: { type: 'string' },
    upload: { type: 'string', default: '0' },
    download: { type: 'string', default: '0' },
    timeout: { type: 'string', default: '120' }
  }
})
if (args.listen === (args.dial !== undefined)) {
  fail(new Error('exactly one of --listen or --dial MULTIADDR is required'))
}

function toBytes (chunk) {
  return chunk instanceof Uint8Array ? chunk : chunk.subarray()
}

async function send (stream, buf) {
  if (!stream.send(buf)) {
    await stream.onDrain()
  }
}

async function sendZeros (stream, n) {
  let left = n
  while (left > 0) {
    const k = left < CHUNK ? left : CHUNK
    await send(stream, k === CHUNK ? ZEROS : ZEROS.subarray(0, k))
    left -= k
  }
}

const node = await createLibp2p({
  addresses: { listen: args.listen ? ['/ip4/127.0.0.1/tcp/0'] : [] },
  transports: [tcp()],
  connectionEncrypters: [noise()],
  streamMuxers: [yamux()]
})

await node.handle(PERF, async (stream) => {
  try {
    let head = new Uint8Array(0)
    let uploaded = 0
    let want = null
    for await (const chunk of stream) {
      let buf = toBytes(chunk)
      if (want === null) {
        const joined = new Uint8Array(head.byteLength + buf.byteLength)
        joined.set(head, 0)
        joined.set(buf, head.byteLength)
        if (joined.byteLength < 8) {
          head = joined
          continue
        }
        want = new DataView(joined.buffer, joined.byteOffset, 8).getBigUint64(0, false)
        buf = joined.subarray(8)
      }
      uploaded += buf.byteLength
    }
    if (want === null) throw new Error('stream ended before the 8-byte download size')
    if (want > MAX_DOWNLOAD) throw new Error(`download size ${want} too large`)
    await sendZeros(stream, Number(want))
    await stream.close()
    emit('perf_served', { uploaded, downloaded: Number(want) })
  } catch (err) {
    emit('perf_served_error', { msg: String(err) })
    stream.abort(err)
  }
}, { maxInboundStreams: 64 })

announceListening(node)

const shutdown = exitOnSignals(node)

if (!args.listen) {
  const deadline = setTimeout(() => fail(new Error(`timed out after ${args.timeout}s`)), Number(args.timeout) * 1000)
  try {
    const upload = Number(args.upload)
    const download = BigInt(args.download)
    const conn = await node.dial(multiaddr(args.dial))
    const t0 = performance.now()
    const stream = await conn.newStream(PERF)
    const size = new Uint8Array(8)
    new DataView(size.buffer).setBigUint64(0, download, false)
    await send(stream, size)
    await sendZeros(stream, upload)
    await stream.close()
    const t1 = performance.now()
    let got = 0
    for await (const chunk of stream) {
      got += toBytes(chunk).byteLength
    }
    const t2 = performance.now()
    if (BigInt(got) !== download) throw new Error(`expected ${download} bytes, got ${got}`)
    emit('perf', {
      upload_bytes: upload,
      download_bytes: got,
      upload_s: (t1 - t0) / 1000,
      download_s: (t2 - t1) / 1000
    })
    clearTimeout(deadline)
    emit('done')
    await shutdown(0)
  } catch (err) {
    fail(err)
  }
}
