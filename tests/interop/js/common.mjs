// Shared by the reference peer scripts (peer.mjs, perf_peer.mjs, mdns_peer.mjs,
// pubsub_peer.mjs, dht_peer.mjs): their stdout protocol (one JSON object per line),
// the "listening" announcement, and a bounded shutdown on SIGTERM/SIGINT.
//
// Import it statically at the top of a script: static imports are evaluated before
// the script's own body, so the polyfill below is in place before the scripts'
// dynamic `await import('libp2p')`.

// Node 20 lacks Promise.withResolvers (used by libp2p 3.x).
if (typeof Promise.withResolvers !== 'function') {
  Promise.withResolvers = function withResolvers () {
    let resolve
    let reject
    const promise = new this((res, rej) => { resolve = res; reject = rej })
    return { promise, resolve, reject }
  }
}

export function emit (event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + '\n')
}

export function fail (err) {
  emit('error', { msg: `${err?.name ?? 'Error'}: ${err?.message ?? String(err)}` })
  console.error(err)
  // Let stdout drain before exiting.
  process.stdout.write('', () => process.exit(1))
}

// {"event":"listening","addrs":[".../p2p/<id>"],"peer_id":"<id>"}
export function announceListening (node) {
  const peerId = node.peerId.toString()
  emit('listening', {
    addrs: node.getMultiaddrs().map((a) => {
      const s = a.toString()
      return s.includes('/p2p/') ? s : `${s}/p2p/${peerId}`
    }),
    peer_id: peerId
  })
}

// Stop the node (at most 2 s), let stdout drain, exit with `code`; installed for
// SIGTERM and SIGINT (exit 0). Returns the function for the script's own use.
export function exitOnSignals (node) {
  async function shutdown (code) {
    try {
      await Promise.race([node.stop(), new Promise((resolve) => setTimeout(resolve, 2000))])
    } finally {
      process.stdout.write('', () => process.exit(code))
    }
  }
  process.on('SIGTERM', () => { shutdown(0) })
  process.on('SIGINT', () => { shutdown(0) })
  return shutdown
}
