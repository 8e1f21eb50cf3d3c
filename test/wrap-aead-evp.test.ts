import { describe, expect, it } from 'vitest';
import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import {
  evpAvailable,
  openRecord,
  recordOpener,
  recordSealer,
  reloadForTest,
  sealRecord,
  TAG_LEN,
  writeNonce,
  type RecordCipher,
} from '../drivers/wrap/aead-evp.js';
import { carrierNonce } from '../drivers/wrap/carrier.js';

const CIPHERS: RecordCipher[] = ['aes-256-gcm', 'chacha20-poly1305'];
/** Counters that exercise both halves of the 64-bit nonce counter. */
const COUNTERS = [0, 1, 255, 256, 2 ** 32 - 1, 2 ** 32, 2 ** 40 + 0x0102_0304, Number.MAX_SAFE_INTEGER];

/** The carrier's sealing before this module: createCipheriv per record with carrierNonce. */
function referenceSeal(cipher: RecordCipher, key: Uint8Array, n: number, pt: Uint8Array): Buffer {
  const c = createCipheriv(cipher as 'aes-256-gcm', key, carrierNonce(cipher, n), { authTagLength: TAG_LEN });
  c.setAAD(new Uint8Array(0), { plaintextLength: pt.length });
  return Buffer.concat([c.update(pt), c.final(), c.getAuthTag()]);
}

function referenceOpen(cipher: RecordCipher, key: Uint8Array, n: number, sealed: Uint8Array): Buffer | undefined {
  const d = createDecipheriv(cipher as 'aes-256-gcm', key, carrierNonce(cipher, n), { authTagLength: TAG_LEN });
  d.setAAD(new Uint8Array(0), { plaintextLength: sealed.length - TAG_LEN });
  const p = d.update(sealed.subarray(0, sealed.length - TAG_LEN));
  d.setAuthTag(sealed.subarray(sealed.length - TAG_LEN));
  try {
    d.final();
    return p;
  } catch {
    return undefined;
  }
}

describe('carrier record AEAD through libcrypto (aead-evp)', () => {
  it('libcrypto loads on this host (the test machine has libcrypto.so.3)', () => {
    expect(evpAvailable()).toBe(true);
  });

  it('nonces are the carrier’s: ChaChaPoly little-endian, AESGCM big-endian counter after 4 zero octets', () => {
    for (const cipher of CIPHERS) {
      for (const n of COUNTERS) {
        const iv = Buffer.alloc(12, 0xee);
        writeNonce(cipher, n, iv);
        expect(iv.toString('hex'), `${cipher} n=${n}`).toBe(carrierNonce(cipher, n).toString('hex'));
      }
    }
    expect(() => writeNonce('aes-256-gcm', -1, Buffer.alloc(12))).toThrow(/counter/);
    expect(() => writeNonce('aes-256-gcm', 1.5, Buffer.alloc(12))).toThrow(/counter/);
  });

  for (const impl of ['evp', 'node'] as const) {
    for (const cipher of CIPHERS) {
      it(`${impl} ${cipher}: byte for byte the carrier's records (known answers from node:crypto), and opens them`, () => {
        const key = randomBytes(32);
        const s = recordSealer(cipher, key, impl);
        const o = recordOpener(cipher, key, impl);
        expect(s.impl).toBe(impl);
        for (const len of [0, 1, 15, 16, 17, 1024, 65_536 + 13, 262_144]) {
          for (const n of [0, 7, 2 ** 32 + 3]) {
            const pt = randomBytes(len);
            const sealed = sealRecord(s, n, pt);
            expect(sealed.equals(referenceSeal(cipher, key, n, pt)), `len ${len} n ${n}`).toBe(true);
            expect(referenceOpen(cipher, key, n, sealed)?.equals(pt)).toBe(true);
            expect(openRecord(o, n, referenceSeal(cipher, key, n, pt))?.equals(pt)).toBe(true);
          }
        }
        s.close();
        o.close();
      });
    }
  }

  it('a fixed known answer (AES-256-GCM and ChaCha20-Poly1305, key 0..31, counter 5, "spook")', () => {
    const key = Uint8Array.from({ length: 32 }, (_, i) => i);
    for (const cipher of CIPHERS) {
      const want = referenceSeal(cipher, key, 5, Buffer.from('spook'));
      for (const impl of ['evp', 'node'] as const)
        expect(sealRecord(recordSealer(cipher, key, impl), 5, Buffer.from('spook')).equals(want)).toBe(true);
    }
  });

  it('sealing from parts into a caller’s buffer at an offset equals sealing their concatenation', () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      const parts = [randomBytes(13), randomBytes(0), randomBytes(65_536)];
      const out = Buffer.alloc(4 + 13 + 65_536 + TAG_LEN + 8, 0xaa);
      const end = recordSealer(cipher, key, 'evp').sealInto(9, parts, out, 4);
      expect(end).toBe(4 + 13 + 65_536 + TAG_LEN);
      expect(out.subarray(4, end).equals(referenceSeal(cipher, key, 9, Buffer.concat(parts)))).toBe(true);
      expect(out.subarray(0, 4).equals(Buffer.alloc(4, 0xaa))).toBe(true);
      expect(out.subarray(end).equals(Buffer.alloc(8, 0xaa))).toBe(true);
      // An output too short is refused before libcrypto writes anything.
      expect(() => recordSealer(cipher, key, 'evp').sealInto(0, parts, Buffer.alloc(100), 0)).toThrow(/cannot take/);
      expect(() => recordSealer(cipher, key, 'evp').sealInto(0, parts, out, out.length - 10)).toThrow(/cannot take/);
    }
  });

  it('the wire is the same both ways: sealed by one implementation, opened by the other, streamed in pieces', () => {
    for (const cipher of CIPHERS) {
      const key = randomBytes(32);
      for (const [a, b] of [
        ['evp', 'node'],
        ['node', 'evp'],
      ] as const) {
        const s = recordSealer(cipher, key, a);
        const o = recordOpener(cipher, key, b);
        for (let n = 0; n < 50; n++) {
          const pt = randomBytes(1 + ((n * 7919) % 70_000));
          const sealed = sealRecord(s, n, pt);
          // Opened as the carrier does: ciphertext in arbitrary pieces (socket reads), then the tag.
          const ct = Buffer.from(sealed.subarray(0, sealed.length - TAG_LEN));
          o.begin(n, ct.length);
          const got: Buffer[] = [];
          for (let at = 0; at < ct.length;) {
            const k = Math.min(ct.length - at, 1 + ((n * 131 + at) % 9000));
            got.push(Buffer.from(o.update(ct.subarray(at, at + k))));
            at += k;
          }
          expect(o.final(sealed.subarray(sealed.length - TAG_LEN)), `${a}→${b} ${cipher} n ${n}`).toBe(true);
          expect(Buffer.concat(got).equals(pt)).toBe(true);
        }
      }
    }
  });

  for (const impl of ['evp', 'node'] as const) {
    it(`${impl}: a flipped ciphertext or tag octet, a wrong counter or a short tag fails open (false, no throw), and the opener carries on`, () => {
      for (const cipher of CIPHERS) {
        const key = randomBytes(32);
        const o = recordOpener(cipher, key, impl);
        const pt = randomBytes(3000);
        const good = referenceSeal(cipher, key, 3, pt);
        for (const at of [0, 1500, good.length - TAG_LEN - 1, good.length - TAG_LEN, good.length - 1]) {
          const bad = Buffer.from(good);
          bad[at] ^= 0x01;
          expect(openRecord(o, 3, bad), `${cipher} flipped octet ${at}`).toBeUndefined();
        }
        expect(openRecord(o, 4, good)).toBeUndefined();
        expect(openRecord(o, 3, good.subarray(0, 10))).toBeUndefined();
        o.begin(3, good.length - TAG_LEN);
        o.update(Buffer.from(good.subarray(0, good.length - TAG_LEN)));
        expect(o.final(good.subarray(good.length - TAG_LEN, good.length - 1))).toBe(false);
        // A record short of its announced length never verifies.
        o.begin(3, good.length - TAG_LEN);
        o.update(Buffer.from(good.subarray(0, 100)));
        expect(o.final(good.subarray(good.length - TAG_LEN))).toBe(false);
        // After all that, the same opener still opens a good record.
        expect(openRecord(o, 3, good)?.equals(pt)).toBe(true);
      }
    });
  }

  it('bounds: a piece longer than the record announced, a wrong key length, use after close are refused', () => {
    const o = recordOpener('aes-256-gcm', randomBytes(32), 'evp');
    o.begin(0, 10);
    expect(() => o.update(Buffer.alloc(11))).toThrow(/expected/);
    expect(() => o.begin(0, 2 ** 31)).toThrow(/at most/);
    expect(() => recordSealer('aes-256-gcm', randomBytes(31), 'evp')).toThrow(/key of 31/);
    const s = recordSealer('chacha20-poly1305', randomBytes(32), 'evp');
    s.close();
    s.close(); // idempotent: freed once
    expect(() => sealRecord(s, 0, Buffer.alloc(1))).toThrow(/after close/);
    o.close();
    expect(() => o.begin(0, 1)).toThrow(/after close/);
  });

  it('falls back to node:crypto, with one warning, when libcrypto cannot be loaded', () => {
    const warnings: string[] = [];
    const onWarning = (w: Error): void => void warnings.push(w.message);
    process.on('warning', onWarning);
    try {
      reloadForTest('libcrypto-that-is-not-there.so.99');
      expect(evpAvailable()).toBe(false);
      const key = randomBytes(32);
      const s = recordSealer('aes-256-gcm', key);
      const o = recordOpener('aes-256-gcm', key);
      expect(s.impl).toBe('node');
      expect(o.impl).toBe('node');
      const pt = randomBytes(5000);
      const sealed = sealRecord(s, 11, pt);
      expect(sealed.equals(referenceSeal('aes-256-gcm', key, 11, pt))).toBe(true);
      expect(openRecord(o, 11, sealed)?.equals(pt)).toBe(true);
      recordSealer('chacha20-poly1305', key);
      expect(() => recordSealer('aes-256-gcm', key, 'evp')).toThrow(/not available/);
    } finally {
      reloadForTest('libcrypto.so.3');
    }
    return new Promise<void>((resolve) =>
      setImmediate(() => {
        process.off('warning', onWarning);
        expect(warnings.filter((w) => w.includes('carrier AEAD'))).toHaveLength(1);
        expect(evpAvailable()).toBe(true);
        resolve();
      }),
    );
  });
});
