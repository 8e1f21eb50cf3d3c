/**
 * What a carrier hands on must not keep alive more than the octets counted for it (the
 * session's quotas count a record's plaintext, not the socket read it arrived in). Records are
 * decrypted in place, so a record's plaintext is a view of its read; a view that is small
 * against its read's ArrayBuffer (a 1-octet DATA record in a 64 KiB read), or a record sliced
 * into many tiny reads, is copied out. Records whole in reads of about their size, small or
 * large, still go on without a copy.
 *
 * Reads are fed as Node hands them over: each its own ArrayBuffer, the size of the read.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { EventEmitter } from 'node:events';
import { randomBytes } from 'node:crypto';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { generateKeyPair } from '../crypto/primitives.js';
import { acceptCarrier, Carrier, dialCarrier, MAX_SEALED_RECORD, type CarrierCipher } from '../drivers/wrap/carrier.js';
import { forceNodeCrypto, recordSealer, SMALL_SEALED } from '../drivers/wrap/aead-evp.js';
import type { CipherState } from '../core/etcp/noise.js';
import { loopbackServers } from './helpers.js';

setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

const TAG = 16;
/** The largest record's plaintext (a DATA header and MAX_DATA). */
const MAX_PLAIN = MAX_SEALED_RECORD - TAG;
/** One socket read at its largest on Node. */
const READ = 64 * 1024;
/** The most parts one record may be delivered in (carrier.ts, KEEP_PIECE). */
const MAX_PARTS = 42;

/** sodium: small records opened in one call (openWhole); evp: every record streamed; node: node:crypto (new buffers). */
type Path = 'sodium' | 'evp' | 'node';

/** A read as Node hands it over: an ArrayBuffer of its own, the size of the read. */
function ownRead(...bufs: Uint8Array[]): Buffer {
  const n = bufs.reduce((k, b) => k + b.length, 0);
  const r = Buffer.allocUnsafeSlow(n);
  let at = 0;
  for (const b of bufs) {
    r.set(b, at);
    at += b.length;
  }
  return r;
}

function rig(cipher: CarrierCipher, path: Path) {
  const key = randomBytes(32);
  const sealer = recordSealer(cipher, key);
  const s = new EventEmitter() as EventEmitter & Record<string, unknown>;
  Object.assign(s, { setNoDelay() {}, resume() {}, pause() {}, destroy() {} });
  const cs = { key } as unknown as CipherState;
  if (path === 'node') forceNodeCrypto(true);
  let c: Carrier;
  try {
    c = new Carrier(s as never, cs, cs, [], cipher);
  } finally {
    forceNodeCrypto(false);
  }
  const rx = (c as unknown as { rxAead: { impl: string; openWhole?: unknown } }).rxAead;
  if (path === 'evp') Object.defineProperty(rx, 'openWhole', { value: undefined });
  const records: Buffer[][] = [];
  let closed: string | undefined;
  c.start({ onRecord: (parts) => void records.push(parts), onClose: (w) => void (closed = w), onDrain: () => {} });
  let n = 0;
  /** A record sealed and framed (length prefix, ciphertext, tag). */
  const frame = (plain: Uint8Array): Buffer => {
    const out = Buffer.alloc(4 + plain.length + TAG);
    out.writeUInt32BE(plain.length + TAG, 0);
    sealer.sealInto(n++, [plain], out, 4);
    return out;
  };
  const feed = (read: Buffer): void => void s.emit('data', read);
  const opener = (c as unknown as { opener: { plain: Buffer[]; gathered?: Buffer } }).opener;
  return { c, frame, feed, records, opener, closed: () => closed, impl: rx.impl };
}

/** The ArrayBuffers `parts` keep alive, counted once each. */
function pinned(parts: Uint8Array[]): number {
  let n = 0;
  for (const b of new Set(parts.map((p) => p.buffer))) n += b.byteLength;
  return n;
}

const octets = (parts: Uint8Array[]): number => parts.reduce((n, p) => n + p.length, 0);

/** A record's framing (length prefix and tag): a view may keep it alive too (carrier.ts, pinsLittle). */
const SLACK = 4 + TAG;
/** Each part keeps alive at most twice its length with its framing (a view at least half its read, or a buffer of its own). */
function expectBounded(parts: Uint8Array[]): void {
  for (const p of parts) {
    expect(p.buffer.byteLength, `a part of ${p.length} in a buffer of ${p.buffer.byteLength}`).toBeLessThanOrEqual(2 * (p.length + SLACK));
  }
}

afterEach(() => forceNodeCrypto(false));

for (const cipher of ['chacha20-poly1305', 'aes-256-gcm'] as const) {
  for (const path of ['sodium', 'evp', 'node'] as const) {
    describe(`carrier plaintext against the reads it arrived in (${cipher}, ${path})`, () => {
      it('the opener is the one this case is about', () => {
        const r = rig(cipher, path);
        // Without libsodium the default opener is EVP: the sodium case then repeats the evp one.
        if (path === 'node') expect(r.impl).toBe('node');
        else expect(['sodium', 'evp']).toContain(r.impl);
      });

      it('(a) small records each inside a 64 KiB read: what is delivered keeps at most twice its octets alive', () => {
        const r = rig(cipher, path);
        const N = 1000;
        const want: Buffer[] = [];
        gc();
        const before = process.memoryUsage().arrayBuffers;
        for (let i = 0; i < N; i++) {
          const small = randomBytes(1 + (i % 40));
          want.push(small);
          const fill = READ - (4 + small.length + TAG) - 4 - TAG;
          const k0 = r.records.length;
          // The small record first, last, or split across two large reads (then it is streamed).
          // Records are sealed in the order they are fed (counter nonces).
          if (i % 3 === 0) r.feed(ownRead(r.frame(small), r.frame(Buffer.alloc(fill))));
          else if (i % 3 === 1) r.feed(ownRead(r.frame(Buffer.alloc(fill)), r.frame(small)));
          else {
            const both = Buffer.concat([r.frame(Buffer.alloc(fill)), r.frame(small), r.frame(Buffer.alloc(READ - 4 - TAG - 7))]);
            const cut = 4 + fill + TAG + 7;
            r.feed(ownRead(both.subarray(0, cut)));
            r.feed(ownRead(both.subarray(cut)));
          }
          // The small records are kept (a stalled connection), the rest dropped (one drained).
          const mine = r.records[k0 + (i % 3 === 0 ? 0 : 1)];
          r.records.length = k0;
          r.records.push(mine);
        }
        expect(r.closed()).toBeUndefined();
        expect(r.records.map((p) => Buffer.concat(p))).toEqual(want);
        const kept = r.records.flat();
        expectBounded(kept);
        expect(pinned(kept)).toBeLessThanOrEqual(2 * (octets(kept) + SLACK * kept.length));
        gc();
        const grew = process.memoryUsage().arrayBuffers - before;
        // Before the fix: N x 64 KiB (62.5 MiB). Now: ~N x 20 octets, plus whatever the GC has not yet swept.
        expect(grew).toBeLessThan((N * READ) / 8);
      });

      it('(a) a medium record under half of its read is copied out; a piece of a record at a read boundary too', () => {
        const r = rig(cipher, path);
        const mid = randomBytes(20_000);
        const big = randomBytes(MAX_PLAIN);
        // [pad][mid record][first 100 octets of the big one] in one 64 KiB read, then the rest in reads of 64 KiB.
        const first = 4 + mid.length + TAG + 4 + 100;
        const pad = r.frame(Buffer.alloc(READ - first - 4 - TAG));
        const wire = Buffer.concat([r.frame(mid), r.frame(big)]);
        r.feed(ownRead(pad, wire.subarray(0, first)));
        for (let at = first; at < wire.length; at += READ) r.feed(ownRead(wire.subarray(at, Math.min(at + READ, wire.length))));
        expect(r.records.length).toBe(3);
        expect(Buffer.concat(r.records[1]).equals(mid)).toBe(true);
        expect(Buffer.concat(r.records[2]).equals(big)).toBe(true);
        expectBounded(r.records[1]);
        expectBounded(r.records[2]);
        expect(r.records[2].length).toBeLessThanOrEqual(MAX_PARTS);
      });

      if (path !== 'node') {
        it('(b) a record whole in a read of its size, small or large, is delivered without a copy', () => {
          const r = rig(cipher, path);
          const cases = [1, 13, 100, SMALL_SEALED - TAG, SMALL_SEALED, 3000, 10_000, 20_000, 100_000, MAX_PLAIN];
          for (const len of cases) {
            const plain = randomBytes(len);
            const read = ownRead(r.frame(plain));
            r.feed(read);
            const parts = r.records.at(-1)!;
            expect(parts.length, `record of ${len}`).toBe(1);
            expect(parts[0].buffer, `record of ${len}`).toBe(read.buffer);
            expect(parts[0].equals(plain)).toBe(true);
          }
          expect(r.records.length).toBe(cases.length);
        });

        it('(b) a large record nearly whole in its read, or across reads of 64 KiB, is delivered as views of them', () => {
          const r = rig(cipher, path);
          const big = randomBytes(MAX_PLAIN);
          const small = randomBytes(50);
          // Nearly whole: the read also holds the head of the next record.
          const w = Buffer.concat([r.frame(big), r.frame(small)]);
          const read = ownRead(w.subarray(0, w.length - 30));
          r.feed(read);
          r.feed(ownRead(w.subarray(w.length - 30)));
          expect(r.records.length).toBe(2);
          expect(r.records[0].length).toBe(1);
          expect(r.records[0][0].buffer).toBe(read.buffer);
          expect(r.records[0][0].equals(big)).toBe(true);
          expect(Buffer.concat(r.records[1]).equals(small)).toBe(true);
          // Bulk: one record in reads of 64 KiB, each piece a view of its read.
          const wire = r.frame(big);
          const reads: Buffer[] = [];
          for (let at = 0; at < wire.length; at += READ) reads.push(ownRead(wire.subarray(at, Math.min(at + READ, wire.length))));
          for (const x of reads) r.feed(x);
          const parts = r.records[2];
          expect(Buffer.concat(parts).equals(big)).toBe(true);
          const bufs = new Set(reads.map((x) => x.buffer));
          // All but the last read's few octets (under KEEP_PIECE, gathered) are views.
          expect(parts.filter((p) => bufs.has(p.buffer)).length).toBe(Math.floor(wire.length / READ));
        });
      }

      it('(c) a maximal record trickled one octet per read is delivered intact in a few buffers; held meanwhile in a few', () => {
        const r = rig(cipher, path);
        const big = randomBytes(MAX_PLAIN);
        const wire = r.frame(big);
        let most = 0;
        for (let i = 0; i < wire.length; i++) {
          // Every read a 1-octet ArrayBuffer of its own: each would pass for "not small against its read".
          r.feed(ownRead(wire.subarray(i, i + 1)));
          if (i === 4 + 100 || i === 4 + 100_000 || i === wire.length - 2) {
            // While the record is in progress: few buffers, about what arrived (plus the first gathering buffer).
            const held = [...r.opener.plain, ...(r.opener.gathered ? [r.opener.gathered] : [])];
            most = Math.max(most, held.length);
            expect(pinned(held)).toBeLessThanOrEqual(2 * (i - 3) + 4096);
          }
        }
        expect(most).toBeLessThanOrEqual(MAX_PARTS);
        expect(r.records.length).toBe(1);
        expect(r.records[0].length).toBeLessThanOrEqual(10);
        expect(Buffer.concat(r.records[0]).equals(big)).toBe(true);
        expectBounded(r.records[0]);
      });

      it('(c) reads that alternate just over and far under the piece bound keep a record within its part bound', () => {
        const r = rig(cipher, path);
        const big = randomBytes(MAX_PLAIN);
        const wire = r.frame(big);
        for (let at = 0, k = 0; at < wire.length; k++) {
          const n = k % 2 ? 1 : 16 * 1024 + 1;
          r.feed(ownRead(wire.subarray(at, at + n)));
          at += n;
        }
        expect(r.records.length).toBe(1);
        expect(r.records[0].length).toBeLessThanOrEqual(MAX_PARTS);
        expect(Buffer.concat(r.records[0]).equals(big)).toBe(true);
        expectBounded(r.records[0]);
      });

      it('(d) random records in random reads (own buffers and pool slices): exact content and order, every part bounded', () => {
        const r = rig(cipher, path);
        const want: Buffer[] = [];
        const frames: Buffer[] = [];
        for (let i = 0; i < 300; i++) {
          const sizes = [0, 1 + (i % 30), 200 + i, SMALL_SEALED - TAG + (i % 3) - 1, 5000 + 37 * i, 70_000 + 101 * i, MAX_PLAIN];
          const p = randomBytes(sizes[i % sizes.length]);
          want.push(p);
          frames.push(r.frame(p));
        }
        const wire = Buffer.concat(frames);
        let seed = 7;
        const rnd = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 8) / 2 ** 24;
        for (let at = 0; at < wire.length;) {
          const shape = rnd();
          const n = Math.max(1, Math.floor(shape < 0.3 ? rnd() * 40 : shape < 0.6 ? rnd() * 4096 : rnd() * READ));
          const slice = wire.subarray(at, at + n);
          // A pool slice (Buffer.from under 4 KiB) shares 8 KiB with others: what it delivers is copied too.
          r.feed(rnd() < 0.3 ? Buffer.from(slice) : ownRead(slice));
          at += n;
        }
        expect(r.closed()).toBeUndefined();
        expect(r.records.length).toBe(want.length);
        r.records.forEach((parts, i) => {
          expect(Buffer.concat(parts).equals(want[i]), `record ${i}`).toBe(true);
          expect(parts.length).toBeLessThanOrEqual(MAX_PARTS);
          expectBounded(parts);
        });
      });
    });
  }
}

describe('over a loopback carrier', () => {
  const listen = loopbackServers();
  it('whatever the kernel makes of the reads, records arrive exact and every part keeps at most twice its octets', async () => {
    const a = generateKeyPair();
    const b = generateKeyPair();
    let accepted!: Promise<Carrier>;
    const port = await listen((s) => {
      accepted = acceptCarrier(s, b, () => 'a').then((x) => x.carrier);
    });
    const x = await dialCarrier('127.0.0.1', port, a, b.publicKey);
    const y = await accepted;
    const got: Buffer[][] = [];
    y.start({ onRecord: (p) => void got.push(p), onClose: () => {}, onDrain: () => {} });
    x.start({ onRecord: () => {}, onClose: () => {}, onDrain: () => {} });
    const sent: Buffer[] = [];
    for (let i = 0; i < 120; i++) {
      const p = randomBytes([1, 30, 1500, 9000, 70_000, MAX_PLAIN][i % 6]);
      sent.push(p);
      x.send([p]);
    }
    const t0 = Date.now();
    while (got.length < sent.length && Date.now() - t0 < 10_000) await new Promise((res) => setTimeout(res, 5));
    expect(got.length).toBe(sent.length);
    got.forEach((parts, i) => {
      expect(Buffer.concat(parts).equals(sent[i]), `record ${i}`).toBe(true);
      expect(parts.length).toBeLessThanOrEqual(MAX_PARTS);
      expectBounded(parts);
    });
    x.close('done');
    y.close('done');
  });
});
