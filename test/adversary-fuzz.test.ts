import { describe, expect, it } from 'vitest';
import { Rng } from '../testing/sim/rng.js';
import { estpPayload, MAX_PAYLOAD, qnPayload, wrapRecord, type QnContext } from '../testing/lab/fuzz.js';
import { decodeMessages } from '../wire/messages.js';
import { decodeEnvelope } from '../wire/qn.js';
import { decodeRecord } from '../wire/wrap.js';

/**
 * The adversary's generators (testing/lab/fuzz.ts) are only worth their count if they are
 * reproducible and if most of what they make passes the codecs and reaches the protocol
 * cores, with a share that does not: these tests hold them to both.
 */
const ESTP = { registers: ['config', 'journal'], origins: [1, 2] };
const qnCtx = (): QnContext => ({
  domains: [0x1234, 0x5678],
  self: 77,
  victim: 10,
  others: [20, 30],
  registers: ['kv'],
  cursor: { term: 1, index: 0 },
});
const wrapCtx = { conns: [1, 2, 3, 4], targets: [{ family: 4 as const, address: '127.0.0.1', port: 9 }] };
const N = 2000;

function share(make: (rng: Rng) => Uint8Array, decodes: (b: Uint8Array) => boolean): { ok: number; sizes: number[] } {
  const rng = new Rng(7);
  let ok = 0;
  const sizes: number[] = [];
  for (let i = 0; i < N; i++) {
    const b = make(rng);
    sizes.push(b.length);
    try {
      if (decodes(b)) ok++;
    } catch {
      /* malformed on purpose */
    }
  }
  return { ok: ok / N, sizes };
}

describe('the adversary fuzz generators', () => {
  it('are deterministic from the seed', () => {
    const run = (seed: number): string[] => {
      const rng = new Rng(seed);
      const q = qnCtx();
      return Array.from({ length: 200 }, (_, i) =>
        Buffer.from(i % 3 === 0 ? estpPayload(rng, ESTP) : i % 3 === 1 ? qnPayload(rng, q) : wrapRecord(rng, wrapCtx)).toString('hex'),
      );
    };
    expect(run(42)).toEqual(run(42));
    expect(run(42)).not.toEqual(run(43));
  });

  it('ESTP payloads: a third to nine tenths decode, every one fits a sealed frame', () => {
    const { ok, sizes } = share(
      (rng) => estpPayload(rng, ESTP),
      (b) => decodeMessages(b).messages.length > 0,
    );
    expect(ok).toBeGreaterThan(0.33);
    expect(ok).toBeLessThan(0.9);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(MAX_PAYLOAD);
  });

  it('QN payloads: most decode and name the targeted domain; some are relayed or forged', () => {
    const q = qnCtx();
    const { ok, sizes } = share(
      (rng) => qnPayload(rng, q),
      (b) => decodeEnvelope(b).domain === 0x1234,
    );
    expect(ok).toBeGreaterThan(0.4);
    expect(ok).toBeLessThan(0.95);
    expect(Math.max(...sizes)).toBeLessThanOrEqual(MAX_PAYLOAD);
    const rng = new Rng(8);
    const envs = Array.from({ length: N }, () => qnPayload(rng, q)).flatMap((b) => {
      try {
        return [decodeEnvelope(b)];
      } catch {
        return [];
      }
    });
    expect(envs.some((e) => e.to !== q.victim)).toBe(true); // relays
    expect(envs.some((e) => e.from !== q.self)).toBe(true); // forged origins
    expect(envs.some((e) => e.body.t === 'append' && e.body.term === 2 ** 53 - 1)).toBe(true); // term extremes
  });

  it('WRAP records: most decode, a share does not', () => {
    const { ok } = share(
      (rng) => wrapRecord(rng, wrapCtx),
      (b) => decodeRecord(b) !== undefined,
    );
    expect(ok).toBeGreaterThan(0.4);
    expect(ok).toBeLessThan(0.95);
  });
});
