/**
 * Hostile review of the decode/encode speedups (issue 16, applyfast): the decoder's fast paths
 * (varintAt, u8At, readSetFast in Propose/Collapse, the last-decoded-name cache) must accept
 * exactly what the named slow paths accept and throw nothing but WireError on peer input; the
 * header's byte loads and stores must agree with the layout for values past 2^31 and 2^32.
 */
import { describe, expect, it } from 'vitest';
import { Reader, Writer } from '../wire/buffer.js';
import { WireError } from '../wire/errors.js';
import { DeltaOp, RejectReason, type Delta } from '../wire/delta.js';
import { MsgType, decodeMessages, encodeMessage, type Message } from '../wire/messages.js';
import { readName } from '../wire/names.js';
import { decodeFrame, encodeFrame, writeFrameHeader } from '../wire/header.js';
import { FrameType, HEADER_LEN } from '../wire/constants.js';
import { ESTP_HEADER, viewOf } from '../wire/layouts.js';

/** xorshift32: deterministic. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

const bytes = (n: number, fill = 0x61): Uint8Array => new Uint8Array(n).fill(fill);
const hash = { hi: 0xdeadbeef, lo: 0x01234567 };

function set(klen: number, vlen: number): Delta {
  return { op: DeltaOp.Set, key: bytes(klen, 0x6b), value: bytes(vlen, 0x76) };
}

/** Valid messages touching every fast path's edges (key lengths 127/128, value lengths 127/128, 2^14 - 1 and 2^14). */
function seeds(): Message[] {
  const sets = [set(1, 0), set(127, 127), set(128, 128), set(3, 16383), set(3, 16384), set(4096, 5)];
  const other: Delta[] = [
    { op: DeltaOp.Del, key: bytes(5) },
    { op: DeltaOp.Cas, key: bytes(3), expect: 2 ** 40, value: bytes(7) },
    { op: DeltaOp.Txn, ops: [set(2, 2), { op: DeltaOp.Del, key: bytes(9, 0x7a) }] },
  ];
  const out: Message[] = [];
  for (const d of [...sets, ...other]) {
    out.push({
      type: MsgType.Collapse,
      register: 'kv',
      version: 2 ** 31 + 5,
      hash,
      entries: [
        { origin: 1, seq: 127, verdict: 'committed', delta: d },
        { origin: 2, seq: 2 ** 28, verdict: 'rejected', reason: RejectReason.CasMismatch },
        { origin: 2, seq: 2 ** 21, verdict: 'committed', delta: set(1, 1) },
      ],
    });
    out.push({
      type: MsgType.Propose,
      register: 'é-register',
      base: 16384,
      candidates: [
        { origin: 2, seq: 1, delta: d },
        { origin: 2 ** 27, seq: 2 ** 35, delta: set(2, 3) },
      ],
    });
  }
  out.push({
    type: MsgType.Collapse,
    register: 'kv',
    version: 9,
    hash,
    entries: [
      { origin: 1, seq: 3, verdict: 'committed', delta: set(2, 2) },
      { origin: 2, seq: 4, verdict: 'committed', delta: set(2, 2) },
    ],
    elided: [1],
  });
  out.push({
    type: MsgType.Propose,
    register: 'kv',
    base: 1,
    candidates: [
      {
        origin: 1,
        seq: 1,
        delta: {
          op: DeltaOp.Cross,
          parts: [
            { register: 'kv', at: 0, delta: set(2, 2) },
            { register: 'kw', at: 0, delta: set(3, 3) },
          ],
        },
      },
    ],
  });
  out.push({ type: MsgType.Status, register: 'kv', version: 2 ** 53 - 1, hash, logBase: 0, resolvedSeq: 300, held: [] });
  return out;
}

function mutate(src: Uint8Array, r: () => number): Uint8Array {
  const b = src.slice();
  const edits = 1 + Math.floor(r() * 3);
  let out = b;
  for (let e = 0; e < edits; e++) {
    const k = r();
    const at = Math.floor(r() * out.length);
    if (k < 0.5) out[at] = [0x00, 0x01, 0x7f, 0x80, 0x81, 0xff, Math.floor(r() * 256)][Math.floor(r() * 7)];
    else if (k < 0.7) out = out.slice(0, at);
    else if (k < 0.85) {
      const ins = new Uint8Array(out.length + 1);
      ins.set(out.subarray(0, at));
      ins[at] = Math.floor(r() * 256);
      ins.set(out.subarray(at), at + 1);
      out = ins;
    } else out = Uint8Array.from([...out.subarray(0, at), ...out.subarray(at + 1)]);
    if (out.length === 0) break;
  }
  return out;
}

describe('decoder fast paths against the named slow paths', () => {
  it('varintAt and u8At read what varint and u8 read, or fail with WireError where they fail (random octets, every start)', () => {
    const r = rng(7);
    for (let t = 0; t < 20_000; t++) {
      const n = 1 + Math.floor(r() * 10);
      const buf = new Uint8Array(n);
      for (let i = 0; i < n; i++) buf[i] = r() < 0.3 ? [0x00, 0x80, 0xff, 0x7f][Math.floor(r() * 4)] : Math.floor(r() * 256);
      const start = Math.floor(r() * n);
      const end = start + Math.floor(r() * (n - start + 1));
      const run = (f: (x: Reader) => number): { v?: number; pos?: number; err?: string } => {
        const x = new Reader(buf, start, end);
        try {
          const v = f(x);
          return { v, pos: x.pos };
        } catch (e) {
          expect(e).toBeInstanceOf(WireError);
          return { err: (e as WireError).message };
        }
      };
      expect(run((x) => x.varintAt('collapse', 3, '.seq'))).toEqual(run((x) => x.varint('collapse[3].seq')));
      expect(run((x) => x.u8At('collapse', 3, '.verdict'))).toEqual(run((x) => x.u8('collapse[3].verdict')));
    }
  });

  it('mutated Propose/Collapse/Status payloads: only WireError escapes, and what decodes re-encodes to the same octets', () => {
    const r = rng(16);
    const base = seeds().map((m) => encodeMessage(m));
    for (const b of base) {
      const d = decodeMessages(b);
      expect(d.messages.length).toBe(1);
      expect(encodeMessage(d.messages[0])).toEqual(b);
    }
    let decoded = 0;
    for (let t = 0; t < 40_000; t++) {
      const src = base[Math.floor(r() * base.length)];
      const m = mutate(src, r);
      if (m.length === 0) continue;
      let d;
      try {
        d = decodeMessages(m);
      } catch (e) {
        if (!(e instanceof WireError)) throw new Error(`non-WireError on ${Buffer.from(m).toString('hex')}: ${String(e)}`);
        continue;
      }
      decoded++;
      // Decoding is canonical: every accepted message is the encoding of what it decoded to.
      d.messages.forEach((msg, i) => {
        if (msg.type === MsgType.Collapse && msg.elided) return; // elided entries carry a placeholder delta
        expect(Buffer.from(encodeMessage(msg)).toString('hex')).toBe(Buffer.from(d.raws[i]).toString('hex'));
      });
    }
    expect(decoded).toBeGreaterThan(100);
  });

  it('the name cache: same length, other octets decode afresh; invalid UTF-8 after a cached name is refused', () => {
    const enc = (b: number[]): Reader => new Reader(Uint8Array.from([b.length, ...b]));
    expect(readName(enc([0x6b, 0x76]))).toBe('kv');
    expect(readName(enc([0x6b, 0x76]))).toBe('kv');
    expect(readName(enc([0x6b, 0x77]))).toBe('kw');
    // Two octets as the cached name, not UTF-8: refused, and the cache still names kw.
    expect(() => readName(enc([0xc3, 0x28]))).toThrow(WireError);
    expect(readName(enc([0x6b, 0x77]))).toBe('kw');
    // A prefix of the cached octets with a shorter length is not the cached name.
    expect(readName(enc([0x6b]))).toBe('k');
    // A length that runs past the end with the cached octets before the end: truncation, not the cache.
    expect(readName(enc([0x6b]))).toBe('k');
    expect(() => readName(new Reader(Uint8Array.from([2, 0x6b])))).toThrow(WireError);
    // Against TextDecoder over random names, in sequence (the cache carries over).
    const r = rng(3);
    const ref = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });
    for (let t = 0; t < 20_000; t++) {
      const n = 1 + Math.floor(r() * 3);
      const b: number[] = [];
      for (let i = 0; i < n; i++) b.push(r() < 0.7 ? 0x61 + Math.floor(r() * 3) : Math.floor(r() * 256));
      let want: string | undefined;
      try {
        want = ref.decode(Uint8Array.from(b));
      } catch {
        want = undefined;
      }
      let got: string | undefined;
      try {
        got = readName(enc(b));
      } catch (e) {
        expect(e).toBeInstanceOf(WireError);
        got = undefined;
      }
      expect(got).toBe(want);
    }
  });

  it('frame header: pair ids past 2^31 and packet numbers past 2^32 up to 2^53 - 1 round trip and match the layout', () => {
    const payload = Uint8Array.from([1, 2, 3]);
    for (const pairId of [0, 1, 2 ** 31 - 1, 2 ** 31, 2 ** 32 - 1]) {
      for (const pn of [0, 2 ** 31, 2 ** 32 - 1, 2 ** 32, 2 ** 32 + 1, 2 ** 48 + 7, 2 ** 53 - 1]) {
        const f = encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber: pn }, payload);
        const d = decodeFrame(f);
        expect(d.header.pairId).toBe(pairId);
        expect(d.header.packetNumber).toBe(pn);
        const dv = viewOf(f);
        expect(ESTP_HEADER.fields.pair_id.get(dv)).toBe(pairId);
        expect(ESTP_HEADER.fields.packet_number.get(dv)).toBe(BigInt(pn));
        const inPlace = new Uint8Array(HEADER_LEN + payload.length);
        inPlace.set(payload, HEADER_LEN);
        expect(writeFrameHeader(inPlace, { type: FrameType.Data, flags: 0, pairId, packetNumber: pn })).toEqual(f);
      }
    }
  });

  it('the scratch body writer: encodings stay independent (a large message, then small ones, and back)', () => {
    const big: Message = {
      type: MsgType.Collapse,
      register: 'kv',
      version: 1,
      hash,
      entries: [{ origin: 1, seq: 1, verdict: 'committed', delta: set(3, 1 << 17) }],
    };
    const small: Message = { type: MsgType.Status, register: 'kv', version: 1, hash, logBase: 0, resolvedSeq: 0, held: [] };
    const a = encodeMessage(big);
    const aCopy = a.slice();
    const b = encodeMessage(small);
    const bCopy = b.slice();
    const c = encodeMessage(big);
    encodeMessage(small);
    expect(a).toEqual(aCopy);
    expect(b).toEqual(bCopy);
    expect(c).toEqual(aCopy);
    expect(a.buffer).not.toBe(c.buffer);
    const w = new Writer();
    expect(w.buf.length).toBe(0);
    w.u8(1);
    expect(w.finish()).toEqual(Uint8Array.from([1]));
  });
});
