/**
 * `node dist/bench/aead-evp.js [--ms 250] [--rounds 3] [--json] [--no-openssl]` (issue 17: speed):
 * the carrier's record AEAD two ways, in one process, interleaved round by round:
 *
 *  node  what the carrier does today: createCipheriv / createDecipheriv per record (KeyObject
 *        made once), update per record, getAuthTag / setAuthTag + final;
 *  evp   drivers/wrap/aead-evp.ts: libcrypto's EVP through koffi, one context per direction,
 *        per record only the IV set; sealed into a fresh Buffer.allocUnsafe (the carrier must
 *        hand each record to socket.write), opened in place.
 *
 * For 1 KiB, 64 KiB and 256 KiB records, both ciphers, sealing and opening: GB of plaintext per
 * CPU-second (user + system of this process) and µs of CPU per record, the median of the rounds,
 * and the ratio evp / node from the same run. With openssl on PATH, `openssl speed -evp` at the
 * same sizes for reference (its own process, its own CPU accounting).
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { recordOpener, recordSealer, writeNonce, evpAvailable, TAG_LEN, type RecordCipher } from '../drivers/wrap/aead-evp.js';

const SIZES = [1024, 64 * 1024, 256 * 1024];
const CIPHERS: RecordCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];

export interface AeadFigure {
  cipher: RecordCipher;
  op: 'seal' | 'open';
  size: number;
  nodeGBps: number;
  evpGBps: number;
  nodeUsPerRecord: number;
  evpUsPerRecord: number;
  /** evp / node, GB per CPU-second. */
  ratio: number;
  /** Sealing only: evp into a fresh Buffer.allocUnsafe per record (its first touch page-faults, as Node's own output does). */
  evpFreshGBps?: number;
  evpFreshUsPerRecord?: number;
  freshRatio?: number;
}

export interface AeadBenchResult {
  node: string;
  openssl: string;
  figures: AeadFigure[];
  /** `openssl speed -evp CIPHER -bytes SIZE`: GB/s (its own process), when openssl ran. */
  opensslSpeed: { cipher: RecordCipher; size: number; GBps: number }[];
}

type Op = (n: number) => void;

function cpuMs(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
}

/** Runs op for about `ms` of CPU; returns CPU µs per call. */
function measure(op: Op, ms: number): number {
  for (let i = 0; i < 20; i++) op(i); // warm
  let calls = 0;
  const t0 = cpuMs();
  let t = t0;
  while (t - t0 < ms) {
    for (let i = 0; i < 16; i++) op(calls++);
    t = cpuMs();
  }
  return ((t - t0) * 1000) / calls;
}

function nodeSeal(cipher: RecordCipher, key: Uint8Array, pt: Buffer): Op {
  const k = createSecretKey(key);
  const iv = Buffer.alloc(12);
  const empty = new Uint8Array(0);
  return (n) => {
    writeNonce(cipher, n, iv);
    const c = createCipheriv(cipher as 'aes-256-gcm', k, iv, { authTagLength: TAG_LEN });
    c.setAAD(empty, { plaintextLength: pt.length });
    c.update(pt);
    c.final();
    c.getAuthTag();
  };
}

function evpSeal(cipher: RecordCipher, key: Uint8Array, pt: Buffer, fresh: boolean): Op {
  const s = recordSealer(cipher, key, 'evp');
  const parts = [pt];
  const reused = Buffer.allocUnsafe(pt.length + TAG_LEN);
  return (n) => {
    s.sealInto(n, parts, fresh ? Buffer.allocUnsafe(pt.length + TAG_LEN) : reused, 0);
  };
}

/** Sealed records for counters 0..count-1 (opening needs valid tags, in counter order). */
function sealedSet(cipher: RecordCipher, key: Uint8Array, pt: Buffer, count: number): Buffer[] {
  const s = recordSealer(cipher, key, 'node');
  const r: Buffer[] = [];
  for (let n = 0; n < count; n++) {
    const out = Buffer.allocUnsafe(pt.length + TAG_LEN);
    s.sealInto(n, [pt], out, 0);
    r.push(out);
  }
  return r;
}

function nodeOpen(cipher: RecordCipher, key: Uint8Array, recs: Buffer[]): Op {
  const k = createSecretKey(key);
  const iv = Buffer.alloc(12);
  const empty = new Uint8Array(0);
  return (i) => {
    const n = i % recs.length;
    const r = recs[n];
    writeNonce(cipher, n, iv);
    const d = createDecipheriv(cipher as 'aes-256-gcm', k, iv, { authTagLength: TAG_LEN });
    d.setAAD(empty, { plaintextLength: r.length - TAG_LEN });
    d.update(r.subarray(0, r.length - TAG_LEN));
    d.setAuthTag(r.subarray(r.length - TAG_LEN));
    d.final();
  };
}

function evpOpen(cipher: RecordCipher, key: Uint8Array, recs: Buffer[]): Op {
  const o = recordOpener(cipher, key, 'evp');
  const work = Buffer.allocUnsafe(recs[0].length);
  return (i) => {
    const n = i % recs.length;
    const r = recs[n];
    // In place, as the carrier opens its socket reads: the copy is the bench's (the record is reused), outside evp's cost in the carrier.
    r.copy(work);
    o.begin(n, r.length - TAG_LEN);
    o.update(work.subarray(0, r.length - TAG_LEN));
    if (!o.final(work.subarray(r.length - TAG_LEN))) throw new Error('bench record failed authentication');
  };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

function opensslSpeed(cipher: RecordCipher, size: number): number | undefined {
  try {
    const out = execFileSync(
      'openssl',
      ['speed', '-evp', cipher === 'aes-256-gcm' ? 'aes-256-gcm' : 'chacha20-poly1305', '-seconds', '1', '-bytes', String(size)],
      {
        encoding: 'utf8',
        stdio: ['ignore', 'pipe', 'ignore'],
        timeout: 20_000,
      },
    );
    // The last line: "<name>  <N>k" (thousands of bytes per second).
    const m = /\s([\d.]+)k\s*$/.exec(out.trim());
    return m ? (Number(m[1]) * 1000) / 1e9 : undefined;
  } catch {
    return undefined;
  }
}

export function runAeadBench(opts: { ms?: number; rounds?: number; openssl?: boolean } = {}): AeadBenchResult {
  if (!evpAvailable()) throw new Error('libcrypto EVP not available: nothing to compare');
  const ms = opts.ms ?? 250;
  const rounds = opts.rounds ?? 3;
  const figures: AeadFigure[] = [];
  for (const cipher of CIPHERS) {
    for (const size of SIZES) {
      const key = randomBytes(32);
      const pt = randomBytes(size);
      const recs = sealedSet(cipher, key, pt, 64);
      for (const op of ['seal', 'open'] as const) {
        const nodeOp = op === 'seal' ? nodeSeal(cipher, key, pt) : nodeOpen(cipher, key, recs);
        const evpOp = op === 'seal' ? evpSeal(cipher, key, pt, false) : evpOpen(cipher, key, recs);
        const freshOp = op === 'seal' ? evpSeal(cipher, key, pt, true) : undefined;
        const nodeUs: number[] = [];
        const evpUs: number[] = [];
        const freshUs: number[] = [];
        for (let r = 0; r < rounds; r++) {
          // Interleaved, alternating which goes first: drift on a shared machine hits both.
          if (r % 2 === 0) {
            nodeUs.push(measure(nodeOp, ms));
            evpUs.push(measure(evpOp, ms));
            if (freshOp) freshUs.push(measure(freshOp, ms));
          } else {
            if (freshOp) freshUs.push(measure(freshOp, ms));
            evpUs.push(measure(evpOp, ms));
            nodeUs.push(measure(nodeOp, ms));
          }
        }
        const nu = median(nodeUs);
        const eu = median(evpUs);
        const fu = freshOp ? median(freshUs) : undefined;
        figures.push({
          ...(fu === undefined ? {} : { evpFreshGBps: size / fu / 1000, evpFreshUsPerRecord: fu, freshRatio: nu / fu }),
          cipher,
          op,
          size,
          nodeGBps: size / nu / 1000,
          evpGBps: size / eu / 1000,
          nodeUsPerRecord: nu,
          evpUsPerRecord: eu,
          ratio: nu / eu,
        });
      }
    }
  }
  const opensslSpeedFigures: AeadBenchResult['opensslSpeed'] = [];
  let opensslVersion = '';
  if (opts.openssl !== false) {
    try {
      opensslVersion = execFileSync('openssl', ['version'], { encoding: 'utf8' }).trim();
    } catch {
      /* no openssl binary: no reference figures */
    }
    if (opensslVersion) {
      for (const cipher of CIPHERS) {
        for (const size of SIZES) {
          const g = opensslSpeed(cipher, size);
          if (g !== undefined) opensslSpeedFigures.push({ cipher, size, GBps: g });
        }
      }
    }
  }
  return {
    node: process.version,
    openssl: `${process.versions.openssl} (node); ${opensslVersion || 'no openssl binary'}`,
    figures,
    opensslSpeed: opensslSpeedFigures,
  };
}

export function printAeadBench(r: AeadBenchResult): void {
  console.log(`carrier record AEAD, node ${r.node}, OpenSSL ${r.openssl}`);
  console.log(
    'GB of plaintext per CPU-second and CPU µs per record, node = createCipheriv per record, evp = libcrypto via koffi, one context',
  );
  console.log('(seal: evp into a reused buffer; "fresh": evp into a new Buffer.allocUnsafe per record. open: in place)');
  console.log('cipher             op    record   node GB/s  evp GB/s   node µs   evp µs   evp/node   fresh GB/s  fresh µs  fresh/node');
  const n = (x: number | undefined, w: number): string => (x === undefined ? '' : x.toFixed(2)).padStart(w);
  for (const f of r.figures) {
    console.log(
      `${f.cipher.padEnd(18)} ${f.op.padEnd(5)} ${`${f.size / 1024} KiB`.padStart(7)}  ${n(f.nodeGBps, 9)}  ${n(f.evpGBps, 8)}  ` +
        `${n(f.nodeUsPerRecord, 8)}  ${n(f.evpUsPerRecord, 7)}  ${n(f.ratio, 8)}x  ${n(f.evpFreshGBps, 10)}  ${n(f.evpFreshUsPerRecord, 8)}  ` +
        `${f.freshRatio === undefined ? '' : `${n(f.freshRatio, 9)}x`}`,
    );
  }
  for (const o of r.opensslSpeed) console.log(`openssl speed -evp ${o.cipher} -bytes ${o.size}: ${o.GBps.toFixed(2)} GB/s`);
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

if (process.argv[1]?.endsWith('aead-evp.js')) {
  const r = runAeadBench({
    ms: Number(arg('--ms') ?? 250),
    rounds: Number(arg('--rounds') ?? 3),
    openssl: !process.argv.includes('--no-openssl'),
  });
  if (process.argv.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else printAeadBench(r);
}
