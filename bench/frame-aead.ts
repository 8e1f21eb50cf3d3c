/**
 * `node dist/bench/frame-aead.js [--ms 200] [--rounds 5] [--json]` (issue 16: update rate): ETCP's
 * Data-frame AEAD three ways in one process, interleaved round by round, on frames of a pair
 * update's sizes (20-octet header as associated data, 40 / 100 / 1,400 octets of payload):
 *
 *  node    crypto/aead.ts's fallback: createCipheriv / createDecipheriv per frame (KeyObject made once);
 *  evp     drivers/crypto/frame-aead.ts on libcrypto's EVP: one context per direction, five FFI calls per frame;
 *  sodium  the same module on libsodium: one FFI call per frame, by address into native memory.
 *
 * CPU µs per frame (user + system of this process), the median of the rounds, and node / impl
 * from the same run. Sealing writes into a reused buffer (Session.sealInPlace's case); opening
 * returns a new plaintext array (Session.open's).
 */
import { randomBytes } from 'node:crypto';
import { nodeAead, AEAD_TAG_LEN, type AeadImpl, type AeadProvider } from '../crypto/aead.js';
import { frameAead } from '../drivers/crypto/frame-aead.js';

export interface FrameAeadFigure {
  impl: AeadImpl;
  op: 'seal' | 'open';
  payload: number;
  cpuUs: number;
  /** node's µs / this one's (1 for node itself). */
  speedup: number;
}

const PAYLOADS = [40, 100, 1_400];

function cpuUs(): number {
  const u = process.cpuUsage();
  return u.user + u.system;
}

/** CPU µs per call of `f`, run for at least `ms` of CPU. */
function timeOne(f: (i: number) => void, ms: number): number {
  const t0 = cpuUs();
  let n = 0;
  while (cpuUs() - t0 < ms * 1000) for (let i = 0; i < 256; i++, n++) f(n);
  return (cpuUs() - t0) / n;
}

const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

export function runFrameAead(o: { ms?: number; rounds?: number } = {}): FrameAeadFigure[] {
  const ms = o.ms ?? 200;
  const rounds = o.rounds ?? 5;
  const impls: [AeadImpl, AeadProvider][] = [['node', nodeAead]];
  for (const impl of ['evp', 'sodium'] as const) {
    try {
      impls.push([impl, frameAead(impl)]);
    } catch {
      console.error(`frame-aead: ${impl} not available here; skipped`);
    }
  }
  const key = new Uint8Array(randomBytes(32));
  const ad = new Uint8Array(randomBytes(20));
  const samples = new Map<string, number[]>();
  for (let r = 0; r < rounds; r++) {
    for (const payload of PAYLOADS) {
      const pt = new Uint8Array(randomBytes(payload));
      const out = new Uint8Array(payload + AEAD_TAG_LEN);
      for (const [impl, p] of r % 2 === 0 ? impls : [...impls].reverse()) {
        const s = p.sealer(key);
        const op = p.opener(key);
        const seal = timeOne((i) => s.seal(i, ad, pt, out, 0), ms);
        s.seal(7, ad, pt, out, 0);
        const open = timeOne(() => {
          if (!op.open(7, ad, out)) throw new Error(`${impl}: a frame did not open`);
        }, ms);
        s.close();
        op.close();
        for (const [k, v] of [
          [`${impl}/seal/${payload}`, seal],
          [`${impl}/open/${payload}`, open],
        ] as const)
          samples.set(k, [...(samples.get(k) ?? []), v]);
      }
    }
  }
  const figures: FrameAeadFigure[] = [];
  for (const payload of PAYLOADS)
    for (const op of ['seal', 'open'] as const) {
      const node = median(samples.get(`node/${op}/${payload}`)!);
      for (const [impl] of impls) {
        const us = median(samples.get(`${impl}/${op}/${payload}`)!);
        figures.push({ impl, op, payload, cpuUs: Number(us.toFixed(3)), speedup: Number((node / us).toFixed(2)) });
      }
    }
  return figures;
}

if (process.argv[1]?.endsWith('frame-aead.js')) {
  const arg = (name: string): number | undefined => {
    const i = process.argv.indexOf(name);
    return i < 0 ? undefined : Number(process.argv[i + 1]);
  };
  const figures = runFrameAead({ ms: arg('--ms'), rounds: arg('--rounds') });
  if (process.argv.includes('--json')) console.log(JSON.stringify(figures, null, 2));
  else
    for (const f of figures)
      console.log(
        `${f.op} ${String(f.payload).padStart(5)} B  ${f.impl.padEnd(6)} ${f.cpuUs.toFixed(2).padStart(7)} µs  node/this ${f.speedup}`,
      );
}
