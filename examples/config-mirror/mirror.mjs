#!/usr/bin/env node
// @ts-check
/**
 * A replicated configuration service built on Spook's public library only (`spook`).
 *
 * Each host runs spookd and one of these. The service keeps a local mirror of a map register
 * (scan it whole at one version, then watch its changes from that version) and serves it over
 * HTTP; writes go through the register and come back through the watch like everyone else's.
 * It writes no sync code: when spookd restarts, the watcher resubscribes from the last version
 * it delivered (no gap, no duplicate); when that version was compacted away, it rescans.
 *
 *   GET  /config          → {"version": 12, "entries": {"k": "v", …}}   the mirror
 *   GET  /config/<key>    → the value (404 when absent)
 *   PUT  /config/<key>    → body is the value; answers the write's outcome
 *   DELETE /config/<key>  → the outcome
 *
 * Usage: node mirror.mjs --socket /run/spook/admin.sock --peer b --register config --port 8080
 */
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';
import { openRegister } from 'spook';

const { values: opt } = parseArgs({
  options: {
    socket: { type: 'string', default: '/run/spook/admin.sock' },
    peer: { type: 'string' },
    register: { type: 'string', default: 'config' },
    port: { type: 'string', default: '8080' },
    host: { type: 'string', default: '127.0.0.1' },
  },
});

const reg = await openRegister(opt.register, { socket: opt.socket, ...(opt.peer ? { peer: opt.peer } : {}) });

/** The mirror: key → value text, as of `version`. */
const mirror = new Map();
let version = 0;
let watcher;

/** Scan the register whole at one version, then follow it from there. */
async function follow() {
  const all = await reg.scanAll('', { timeoutMs: 60_000 });
  mirror.clear();
  for (const e of all.entries) mirror.set(e.key, e.value ?? Buffer.from(e.bytes).toString('base64'));
  version = all.version;
  watcher = await reg.watch('', {
    fromVersion: version,
    onChange(c) {
      if (c.op === 'set') mirror.set(c.key, c.value ?? Buffer.from(c.bytes ?? []).toString('base64'));
      else if (c.op === 'del') mirror.delete(c.key);
      version = c.version;
    },
    // What we would need was compacted away (we were gone too long): start over from a fresh scan.
    onCompacted: () => void retry('compacted'),
    onEnd: (e) => void retry(e.code),
    timeoutMs: 60_000,
  });
}

async function retry(why) {
  console.error(`mirror: watch ended (${why}); rescanning`);
  watcher?.close();
  for (;;) {
    try {
      return await follow();
    } catch (e) {
      console.error(`mirror: ${e.code ?? ''} ${e.message}; retrying in 1 s`);
      await new Promise((r) => setTimeout(r, 1_000));
    }
  }
}

await follow();

const body = (req) =>
  new Promise((resolve, reject) => {
    const parts = [];
    req.on('data', (b) => parts.push(b));
    req.on('end', () => resolve(Buffer.concat(parts)));
    req.on('error', reject);
  });

const send = (res, status, obj) => {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(`${JSON.stringify(obj)}\n`);
};

const server = createServer(async (req, res) => {
  try {
    const url = new URL(req.url ?? '/', 'http://x');
    if (url.pathname === '/config' && req.method === 'GET') return send(res, 200, { version, entries: Object.fromEntries(mirror) });
    const m = /^\/config\/(.+)$/.exec(url.pathname);
    if (!m) return send(res, 404, { error: 'no such path' });
    const key = decodeURIComponent(m[1]);
    if (req.method === 'GET')
      return mirror.has(key) ? send(res, 200, { key, value: mirror.get(key), version }) : send(res, 404, { key, version });
    if (req.method === 'PUT') {
      const o = await reg.set(key, new Uint8Array(await body(req)), { timeoutMs: 15_000 });
      return send(res, o.verdict === 'committed' ? 200 : o.verdict === 'pending' ? 202 : 409, o);
    }
    if (req.method === 'DELETE') {
      const o = await reg.del(key, { timeoutMs: 15_000 });
      return send(res, o.verdict === 'committed' ? 200 : o.verdict === 'pending' ? 202 : 409, o);
    }
    send(res, 405, { error: 'method not allowed' });
  } catch (e) {
    // spookd away beyond the call's deadline, or refusing the write: say so with its code.
    send(res, 503, { error: e.message, code: e.code ?? 'internal' });
  }
});
server.listen(Number(opt.port), opt.host, () =>
  console.error(`mirror: ${opt.register} at version ${version}, http://${opt.host}:${opt.port}`),
);

const quit = () => {
  watcher?.close();
  reg.close();
  server.close();
};
process.on('SIGTERM', quit);
process.on('SIGINT', quit);
