/**
 * `node dist/bench/aead-evp.js [--ms 250] [--rounds 3] [--json] [--no-openssl] [--carrier [--carrier-bytes N]] [--small]` (issue 17: speed):
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
 * same sizes for reference (its own process, its own CPU accounting). With --carrier, two Carrier
 * objects on loopback in this process move N bytes (default 256 MiB) in DATA-sized records,
 * node:crypto (the fallback, forced) and evp alternating ABBA: CPU per GiB, the whole path.
 * With --small, the records a connection's set-up and a request carry (64 octets to SMALL_SEALED):
 * evp (five FFI calls a record) against libsodium (one: what the carrier takes for them), sealing
 * into a reused buffer and opening a whole record in place, interleaved; CPU µs per record.
 */
import { createCipheriv, createDecipheriv, createSecretKey, randomBytes } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import {
  recordOpener,
  recordSealer,
  forceNodeCrypto,
  writeNonce,
  evpAvailable,
  TAG_LEN,
  SMALL_SEALED,
  type RecordCipher,
} from '../drivers/wrap/aead-evp.js';
import { Carrier } from '../drivers/wrap/carrier.js';
import type { CipherState } from '../core/etcp/noise.js';

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

/** Two carriers on loopback in this process, `bytes` one way in records of `record` payload octets. */
export interface CarrierFigure {
  cipher: RecordCipher;
  record: number;
  bytes: number;
  /** CPU ms (user + system, both carriers and the kernel's loopback work for this process) per GiB. */
  nodeCpuMsPerGiB: number;
  evpCpuMsPerGiB: number;
  nodeMBps: number;
  evpMBps: number;
  /** node / evp CPU per GiB: how much cheaper the whole carrier path is. */
  ratio: number;
}

export interface AeadBenchResult {
  /** With --carrier: the Carrier class end to end, node:crypto (the fallback forced) vs evp, interleaved. */
  carrier?: CarrierFigure[];
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
    openssl: `${process.versions.openssl} (node); ${opensslVersion || 'openssl binary not run'}`,
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

/** One transfer through a pair of Carriers on loopback; the implementation is whatever aead-evp loads now. */
export async function carrierTransfer(cipher: RecordCipher, record: number, bytes: number): Promise<{ cpuMs: number; wallMs: number }> {
  const key = randomBytes(32);
  const cs = { key } as unknown as CipherState;
  let rxSock!: Socket;
  let got = 0;
  let done!: () => void;
  const finished = new Promise<void>((r) => (done = r));
  const server = createServer((s) => {
    rxSock = s;
    const rx = new Carrier(s, cs, cs, [], cipher);
    rx.start({
      onRecord: (p) => {
        for (const x of p) got += x.length;
        if (got >= bytes) done();
      },
      onClose: () => {},
      onDrain: () => {},
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const out = connect((server.address() as AddressInfo).port, '127.0.0.1');
  await new Promise<void>((r) => out.once('connect', () => r()));
  const tx = new Carrier(out, cs, cs, [], cipher);
  const head = Buffer.alloc(13); // a DATA record's header, as the manager sends it beside the payload
  const payload = randomBytes(record - 13);
  let sent = 0;
  const pump = (): void => {
    while (sent < bytes && tx.writable) {
      tx.send([head, payload]);
      sent += record;
    }
  };
  tx.start({ onRecord: () => {}, onClose: () => {}, onDrain: pump });
  const t0 = cpuMs();
  const w0 = performance.now();
  pump();
  await finished;
  const r = { cpuMs: cpuMs() - t0, wallMs: performance.now() - w0 };
  tx.close('done');
  rxSock.destroy();
  server.close();
  return r;
}

export async function runCarrierBench(opts: { bytes?: number; rounds?: number } = {}): Promise<CarrierFigure[]> {
  const bytes = opts.bytes ?? 256 * 1024 * 1024;
  const rounds = opts.rounds ?? 3;
  const figs: CarrierFigure[] = [];
  for (const cipher of CIPHERS) {
    for (const record of [16 * 1024, 64 * 1024, 256 * 1024]) {
      const node: { cpuMs: number; wallMs: number }[] = [];
      const evp: { cpuMs: number; wallMs: number }[] = [];
      for (let r = 0; r < rounds * 2; r++) {
        const useNode = r % 2 === (Math.floor(r / 2) % 2 === 0 ? 0 : 1); // ABBA order
        forceNodeCrypto(useNode);
        const x = await carrierTransfer(cipher, record, bytes);
        (useNode ? node : evp).push(x);
      }
      forceNodeCrypto(false);
      const med = (xs: { cpuMs: number; wallMs: number }[], k: 'cpuMs' | 'wallMs'): number => median(xs.map((x) => x[k]));
      const gib = bytes / 2 ** 30;
      figs.push({
        cipher,
        record,
        bytes,
        nodeCpuMsPerGiB: med(node, 'cpuMs') / gib,
        evpCpuMsPerGiB: med(evp, 'cpuMs') / gib,
        nodeMBps: bytes / 1e6 / (med(node, 'wallMs') / 1000),
        evpMBps: bytes / 1e6 / (med(evp, 'wallMs') / 1000),
        ratio: med(node, 'cpuMs') / med(evp, 'cpuMs'),
      });
    }
  }
  return figs;
}

export interface SmallFigure {
  cipher: RecordCipher;
  op: 'seal' | 'open';
  size: number;
  evpUsPerRecord: number;
  sodiumUsPerRecord: number;
  /** evp / sodium CPU per record. */
  ratio: number;
}

/** Small records, evp against libsodium (the carrier's path for records up to SMALL_SEALED), interleaved, median of rounds. */
export function runSmallRecordBench(opts: { ms: number; rounds: number }): SmallFigure[] {
  const figs: SmallFigure[] = [];
  for (const cipher of CIPHERS) {
    for (const size of [64, 1024, SMALL_SEALED - TAG_LEN]) {
      const key = randomBytes(32);
      const pt = randomBytes(size);
      const recs = sealedSet(cipher, key, pt, 64);
      for (const op of ['seal', 'open'] as const) {
        const impls = (['evp', 'sodium'] as const).map((impl): Op => {
          if (op === 'seal') {
            const sealer = recordSealer(cipher, key, impl);
            const out = Buffer.allocUnsafe(size + TAG_LEN);
            return (n) => void sealer.sealInto(n, [pt], out, 0);
          }
          const o = recordOpener(cipher, key, impl);
          const work = Buffer.allocUnsafe(size + TAG_LEN);
          return (i) => {
            const n = i % recs.length;
            recs[n].copy(work); // the bench's copy (it reopens the same records), in both columns
            const ok =
              impl === 'sodium'
                ? o.openWhole!(n, work) !== undefined
                : (o.begin(n, size), o.update(work.subarray(0, size)), o.final(work.subarray(size)));
            if (!ok) throw new Error('bench record failed authentication');
          };
        });
        const us: [number[], number[]] = [[], []];
        for (let r = 0; r < opts.rounds; r++) {
          const order = r % 2 === 0 ? [0, 1] : [1, 0];
          for (const k of order) us[k].push(measure(impls[k], opts.ms));
        }
        const [e, so] = us.map(median);
        figs.push({ cipher, op, size, evpUsPerRecord: e, sodiumUsPerRecord: so, ratio: e / so });
      }
    }
  }
  return figs;
}

export function printSmallRecordBench(figs: SmallFigure[]): void {
  console.log('small records: CPU µs per record, evp (five FFI calls) vs libsodium (one), median of rounds');
  console.log('cipher             op    record   evp µs  sodium µs  evp/sodium');
  for (const f of figs) {
    console.log(
      `${f.cipher.padEnd(18)} ${f.op.padEnd(5)} ${`${f.size} B`.padStart(7)}  ${f.evpUsPerRecord.toFixed(2).padStart(7)}  ${f.sodiumUsPerRecord
        .toFixed(2)
        .padStart(9)}  ${f.ratio.toFixed(2).padStart(9)}x`,
    );
  }
}

export function printCarrierBench(figs: CarrierFigure[]): void {
  console.log('two Carriers on loopback in one process (sender + receiver + loopback TCP): CPU ms per GiB and MB/s, median of rounds');
  console.log('cipher             record    node ms/GiB  evp ms/GiB  node/evp   node MB/s  evp MB/s');
  for (const f of figs) {
    console.log(
      `${f.cipher.padEnd(18)} ${`${f.record / 1024} KiB`.padStart(7)}  ${f.nodeCpuMsPerGiB.toFixed(0).padStart(11)}  ${f.evpCpuMsPerGiB
        .toFixed(0)
        .padStart(10)}  ${f.ratio.toFixed(2).padStart(7)}x  ${f.nodeMBps.toFixed(0).padStart(9)}  ${f.evpMBps.toFixed(0).padStart(8)}`,
    );
  }
}

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

async function main(): Promise<void> {
  const rounds = Number(arg('--rounds') ?? 3);
  if (process.argv.includes('--small')) {
    const figs = runSmallRecordBench({ ms: Number(arg('--ms') ?? 250), rounds });
    if (process.argv.includes('--json')) console.log(JSON.stringify(figs, null, 2));
    else printSmallRecordBench(figs);
    return;
  }
  const r = runAeadBench({ ms: Number(arg('--ms') ?? 250), rounds, openssl: !process.argv.includes('--no-openssl') });
  if (process.argv.includes('--carrier'))
    r.carrier = await runCarrierBench({ bytes: Number(arg('--carrier-bytes') ?? 256 * 1024 * 1024), rounds });
  if (process.argv.includes('--json')) console.log(JSON.stringify(r, null, 2));
  else {
    printAeadBench(r);
    if (r.carrier) printCarrierBench(r.carrier);
  }
}

if (process.argv[1]?.endsWith('aead-evp.js')) void main();
