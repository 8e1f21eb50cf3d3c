import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  DROP_REASON_NAMES,
  DropReason,
  FLAG_KEY_PHASE,
  FrameType,
  HEADER_LEN,
  MAX_DELTA_LEN,
  MAX_FRAME_LEN,
  MAX_HANDSHAKE_PAYLOAD_LEN,
  MAX_KEY_LEN,
  MAX_MESSAGE_LEN,
  MAX_PAYLOAD_LEN,
  MAX_VALUE_LEN,
  MAX_REGISTER_NAME_LEN,
} from '../wire/constants.js';
import { WireError } from '../wire/errors.js';
import { concatBytes } from './helpers.js';
import { Rng } from '../testing/sim/rng.js';
import { Reader, Writer, varintLen } from '../wire/buffer.js';
import { decodeFrame, encodeFrame } from '../wire/header.js';
import { DeltaOp, RejectReason, decodeDelta, encodeDelta, encodedDeltaLen, validateDelta, type Delta } from '../wire/delta.js';
import {
  CloseReason,
  ELIDED_DELTA,
  MANIFEST_MATCHED,
  MANIFEST_REPLY,
  MAX_MANIFEST_LIMITS,
  MAX_MANIFEST_PARTS,
  MsgType,
  REQ_WANT_META,
  decodeMessages,
  encodeMessage,
  encodeMessageInto,
  writeMessage,
  type ManifestMsg,
  type Message,
} from '../wire/messages.js';

// ---------------------------------------------------------------- helpers

const utf8 = new TextEncoder();
const b = (s: string): Uint8Array => utf8.encode(s);
const bytes = (...xs: number[]): Uint8Array => Uint8Array.from(xs);
const fill = (n: number, v = 0xab): Uint8Array => new Uint8Array(n).fill(v);

const concat = (...parts: Uint8Array[]): Uint8Array => concatBytes(parts);

/** Deep copy with every Uint8Array replaced by a plain array, so equality compares contents only. */
function plain(x: unknown): unknown {
  if (x instanceof Uint8Array) return { bytes: Array.from(x) };
  if (Array.isArray(x)) return x.map(plain);
  if (x !== null && typeof x === 'object') {
    return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  }
  return x;
}

/** Runs fn, asserts it throws a WireError with this reason and field, and that the message names the field. */
function expectWire(fn: () => unknown, reason: DropReason, field: string): WireError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, `expected WireError(${DROP_REASON_NAMES[reason]}, ${field})`).toBeInstanceOf(WireError);
  const we = err as WireError;
  expect(DROP_REASON_NAMES[we.reason]).toBe(DROP_REASON_NAMES[reason]);
  expect(we.field).toBe(field);
  expect(we.message).toContain(field);
  expect(we.message).toContain(DROP_REASON_NAMES[reason]);
  return we;
}

const ALL_FRAME_TYPES = [FrameType.HandshakeInit, FrameType.HandshakeResp, FrameType.CookieReply, FrameType.Data];
const HANDSHAKE_TYPES = [FrameType.HandshakeInit, FrameType.HandshakeResp, FrameType.CookieReply];

function dataFrame(payload: Uint8Array = fill(10), pairId = 7, packetNumber = 1): Uint8Array {
  return encodeFrame({ type: FrameType.Data, flags: 0, pairId, packetNumber }, payload);
}

function withByte(buf: Uint8Array, i: number, v: number): Uint8Array {
  const c = buf.slice();
  c[i] = v;
  return c;
}

function withPayloadLen(buf: Uint8Array, len: number): Uint8Array {
  const c = buf.slice();
  c[6] = (len >>> 8) & 0xff;
  c[7] = len & 0xff;
  return c;
}

// ---------------------------------------------------------------- frame header

// The 20-byte header encodes to the PROTOCOL layout and decodes back to the same fields.
describe('frame header round trip', () => {
  const packetNumbers = [0, 1, 0xffffffff, 2 ** 32, 2 ** 32 + 5, 2 ** 40 + 12345, Number.MAX_SAFE_INTEGER];

  for (const type of ALL_FRAME_TYPES) {
    for (const pn of packetNumbers) {
      it(`${FrameType[type]} with packet number ${pn}`, () => {
        const payload = fill(HANDSHAKE_TYPES.includes(type) ? 48 : 300, 0x5a);
        const buf = encodeFrame({ type, flags: FLAG_KEY_PHASE, pairId: 0xfeedface, packetNumber: pn }, payload);
        expect(buf.length).toBe(HEADER_LEN + payload.length);
        const f = decodeFrame(buf);
        expect(f.header).toEqual({ type, flags: FLAG_KEY_PHASE, payloadLen: payload.length, pairId: 0xfeedface, packetNumber: pn });
        expect(Array.from(f.payload)).toEqual(Array.from(payload));
      });
    }
  }

  it('lays out fields big-endian as specified (magic "SP", version 1, 64-bit packet number)', () => {
    const buf = encodeFrame(
      { type: FrameType.Data, flags: 1, pairId: 0x01020304, packetNumber: 2 ** 32 * 0x0a0b + 0x0c0d0e0f },
      bytes(0xee, 0xff),
    );
    expect(Array.from(buf)).toEqual([
      0x53,
      0x50, // magic "SP"
      1, // version
      FrameType.Data,
      1, // flags
      20, // header length
      0x00,
      0x02, // payload length
      0x01,
      0x02,
      0x03,
      0x04, // pair id
      0x00,
      0x00,
      0x0a,
      0x0b, // packet number, high 32
      0x0c,
      0x0d,
      0x0e,
      0x0f, // packet number, low 32
      0xee,
      0xff,
    ]);
  });

  it('decodes a frame that sits at a non-zero offset inside a larger buffer', () => {
    const frame = dataFrame(bytes(1, 2, 3), 99, 2 ** 33 + 1);
    const host = new Uint8Array(frame.length + 11);
    host.set(frame, 5);
    const f = decodeFrame(host.subarray(5, 5 + frame.length));
    expect(f.header.pairId).toBe(99);
    expect(f.header.packetNumber).toBe(2 ** 33 + 1);
    expect(Array.from(f.payload)).toEqual([1, 2, 3]);
  });

  it('encodeFrame refuses an unsafe or negative packet number and a frame over MAX_FRAME_LEN', () => {
    expect(() => encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: -1 }, fill(1))).toThrow(RangeError);
    expect(() => encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: 2 ** 53 }, fill(1))).toThrow(RangeError);
    expectWire(
      () => encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: 1 }, fill(MAX_PAYLOAD_LEN + 1)),
      DropReason.Oversized,
      'frame',
    );
    expect(encodeFrame({ type: FrameType.Data, flags: 0, pairId: 1, packetNumber: 1 }, fill(MAX_PAYLOAD_LEN)).length).toBe(MAX_FRAME_LEN);
  });

  it('property: any valid header and payload round-trip', () => {
    const arbTypeAndPayload = fc.oneof(
      fc.record({ type: fc.constantFrom(...HANDSHAKE_TYPES), payload: fc.uint8Array({ maxLength: MAX_HANDSHAKE_PAYLOAD_LEN }) }),
      fc.record({ type: fc.constant(FrameType.Data), payload: fc.uint8Array({ maxLength: MAX_PAYLOAD_LEN }) }),
    );
    fc.assert(
      fc.property(
        arbTypeAndPayload,
        fc.constantFrom(0, FLAG_KEY_PHASE),
        fc.integer({ min: 0, max: 0xffffffff }),
        fc.maxSafeNat(),
        ({ type, payload }, flags, pairId, packetNumber) => {
          const buf = encodeFrame({ type, flags, pairId, packetNumber }, payload);
          const f = decodeFrame(buf, (id) => id === pairId);
          expect(f.header).toEqual({ type, flags, payloadLen: payload.length, pairId, packetNumber });
          expect(Array.from(f.payload)).toEqual(Array.from(payload));
        },
      ),
      { numRuns: 500 },
    );
  });
});

// Each malformed header is dropped with the right DropReason and a message naming the faulty field.
describe('malformed frames', () => {
  it('truncated: fewer than 20 bytes', () => {
    const good = dataFrame();
    for (const n of [0, 1, 2, 6, HEADER_LEN - 1]) {
      expectWire(() => decodeFrame(good.subarray(0, n)), DropReason.Truncated, 'header');
    }
  });

  it('bad magic', () => {
    expectWire(() => decodeFrame(withByte(dataFrame(), 0, 0x00)), DropReason.BadMagic, 'header.magic');
    expectWire(() => decodeFrame(withByte(dataFrame(), 1, 0x51)), DropReason.BadMagic, 'header.magic');
    // byte-swapped magic ("PS") is not accepted
    expectWire(() => decodeFrame(withByte(withByte(dataFrame(), 0, 0x50), 1, 0x53)), DropReason.BadMagic, 'header.magic');
  });

  it('wrong version', () => {
    for (const v of [0, 2, 255]) expectWire(() => decodeFrame(withByte(dataFrame(), 2, v)), DropReason.BadVersion, 'header.version');
  });

  it('unknown frame type', () => {
    for (const t of [0, 5, 0x44, 255]) expectWire(() => decodeFrame(withByte(dataFrame(), 3, t)), DropReason.UnknownType, 'header.type');
  });

  it('reserved flag bits (each of bits 1..7); the key-phase bit alone is accepted', () => {
    for (let bit = 1; bit < 8; bit++) {
      expectWire(() => decodeFrame(withByte(dataFrame(), 4, 1 << bit)), DropReason.ReservedFlags, 'header.flags');
      expectWire(() => decodeFrame(withByte(dataFrame(), 4, (1 << bit) | FLAG_KEY_PHASE)), DropReason.ReservedFlags, 'header.flags');
    }
    expect(decodeFrame(withByte(dataFrame(), 4, FLAG_KEY_PHASE)).header.flags).toBe(FLAG_KEY_PHASE);
  });

  it('bad header length', () => {
    for (const l of [0, 19, 21, 40, 255])
      expectWire(() => decodeFrame(withByte(dataFrame(), 5, l)), DropReason.BadHeaderLen, 'header.hdr_len');
  });

  it('payload length that lies: longer than what follows', () => {
    const f = dataFrame(fill(10));
    expectWire(() => decodeFrame(withPayloadLen(f, 11)), DropReason.LengthMismatch, 'header.payload_len');
    expectWire(() => decodeFrame(withPayloadLen(f, 0xffff)), DropReason.LengthMismatch, 'header.payload_len');
    expectWire(() => decodeFrame(f.subarray(0, f.length - 1)), DropReason.LengthMismatch, 'header.payload_len');
  });

  it('payload length that lies: shorter than what follows', () => {
    const f = dataFrame(fill(10));
    expectWire(() => decodeFrame(withPayloadLen(f, 9)), DropReason.LengthMismatch, 'header.payload_len');
    expectWire(() => decodeFrame(withPayloadLen(f, 0)), DropReason.LengthMismatch, 'header.payload_len');
    expectWire(() => decodeFrame(concat(f, bytes(0))), DropReason.LengthMismatch, 'header.payload_len');
  });

  it('oversized frame (> MAX_FRAME_LEN) even when its header is otherwise valid', () => {
    const big = new Uint8Array(MAX_FRAME_LEN + 1);
    big.set(dataFrame(fill(10)).subarray(0, HEADER_LEN));
    const withLen = withPayloadLen(big, MAX_FRAME_LEN + 1 - HEADER_LEN);
    expectWire(() => decodeFrame(withLen), DropReason.Oversized, 'frame');
    expectWire(() => decodeFrame(new Uint8Array(65536)), DropReason.Oversized, 'frame');
    // exactly MAX_FRAME_LEN is accepted
    expect(decodeFrame(dataFrame(fill(MAX_PAYLOAD_LEN))).payload.length).toBe(MAX_PAYLOAD_LEN);
  });

  it('handshake payload over MAX_HANDSHAKE_PAYLOAD_LEN (Data frames are not limited by it)', () => {
    for (const type of HANDSHAKE_TYPES) {
      const at = encodeFrame({ type, flags: 0, pairId: 0, packetNumber: 0 }, fill(MAX_HANDSHAKE_PAYLOAD_LEN));
      expect(decodeFrame(at).header.payloadLen).toBe(MAX_HANDSHAKE_PAYLOAD_LEN);
      const over = encodeFrame({ type, flags: 0, pairId: 0, packetNumber: 0 }, fill(MAX_HANDSHAKE_PAYLOAD_LEN + 1));
      expectWire(() => decodeFrame(over), DropReason.Oversized, 'header.payload_len');
    }
    expect(decodeFrame(dataFrame(fill(MAX_HANDSHAKE_PAYLOAD_LEN + 1))).header.payloadLen).toBe(MAX_HANDSHAKE_PAYLOAD_LEN + 1);
  });

  it('unknown pair on a Data frame when knownPair says no; the callback sees the pair id', () => {
    const seen: number[] = [];
    const f = dataFrame(fill(4), 0xcafe0001);
    expectWire(
      () =>
        decodeFrame(f, (id) => {
          seen.push(id);
          return false;
        }),
      DropReason.UnknownPair,
      'header.pair_id',
    );
    expect(seen).toEqual([0xcafe0001]);
    expect(decodeFrame(f, (id) => id === 0xcafe0001).header.pairId).toBe(0xcafe0001);
    // without a callback the pair check is skipped
    expect(decodeFrame(f).header.pairId).toBe(0xcafe0001);
  });

  it('handshake frames are not subject to the pair check', () => {
    for (const type of HANDSHAKE_TYPES) {
      const f = encodeFrame({ type, flags: 0, pairId: 12345, packetNumber: 3 }, fill(32));
      expect(decodeFrame(f, () => false).header.type).toBe(type);
    }
  });

  it('checks run in header order: each fixed fault reveals the next one', () => {
    // One Data frame with every header fault at once; repair them one at a time.
    let f = dataFrame(fill(10), 42);
    f = withByte(f, 0, 0x00); // magic
    f = withByte(f, 2, 9); // version
    f = withByte(f, 3, 9); // type
    f = withByte(f, 4, 0x80); // flags
    f = withByte(f, 5, 7); // hdr_len
    f = withPayloadLen(f, 99); // payload_len
    const never = () => false;
    expectWire(() => decodeFrame(f, never), DropReason.BadMagic, 'header.magic');
    f = withByte(f, 0, 0x53);
    expectWire(() => decodeFrame(f, never), DropReason.BadVersion, 'header.version');
    f = withByte(f, 2, 1);
    expectWire(() => decodeFrame(f, never), DropReason.UnknownType, 'header.type');
    f = withByte(f, 3, FrameType.Data);
    expectWire(() => decodeFrame(f, never), DropReason.ReservedFlags, 'header.flags');
    f = withByte(f, 4, 0);
    expectWire(() => decodeFrame(f, never), DropReason.BadHeaderLen, 'header.hdr_len');
    f = withByte(f, 5, HEADER_LEN);
    expectWire(() => decodeFrame(f, never), DropReason.LengthMismatch, 'header.payload_len');
    f = withPayloadLen(f, 10);
    expectWire(() => decodeFrame(f, never), DropReason.UnknownPair, 'header.pair_id');
    expect(decodeFrame(f, (id) => id === 42).header.pairId).toBe(42);
  });

  it('length is checked before magic: an oversized or truncated frame with bad magic reports its length', () => {
    expectWire(() => decodeFrame(new Uint8Array(MAX_FRAME_LEN + 1)), DropReason.Oversized, 'frame');
    expectWire(() => decodeFrame(new Uint8Array(HEADER_LEN - 1)), DropReason.Truncated, 'header');
  });

  it('a handshake frame whose payload_len lies reports the lie, not the handshake size', () => {
    const f = encodeFrame({ type: FrameType.HandshakeInit, flags: 0, pairId: 0, packetNumber: 0 }, fill(300));
    expectWire(() => decodeFrame(withPayloadLen(f, 301)), DropReason.LengthMismatch, 'header.payload_len');
    expectWire(() => decodeFrame(withByte(f, 1, 0)), DropReason.BadMagic, 'header.magic');
  });
});

// ---------------------------------------------------------------- varint

// LEB128 varints: exact at boundaries, canonical (minimal, at most 8 bytes), writer refuses bad input.
describe('message framing', () => {
  it("a message's length prefix is the Writer's varint at every byte boundary of the body length", () => {
    // Bodies of 1 to 4 length bytes: the in-place framing (encodeMessage, encodeMessageInto) and writeMessage agree.
    for (const len of [0, 1, 100, 127, 128, 129, 300, 16_383, 16_384, 16_385, 2_097_151, 2_097_152, 2_097_153]) {
      const m: Message = { type: MsgType.StreamData, register: 'r', targetVersion: 1, offset: 0, data: fill(len) };
      const w = new Writer(16);
      writeMessage(w, m);
      const want = w.buf.subarray(0, w.pos);
      expect(Buffer.from(encodeMessage(m)).equals(Buffer.from(want))).toBe(true);
      const out = new Uint8Array(want.length + 3);
      expect(encodeMessageInto(m, out, 3)).toBe(want.length);
      expect(Buffer.from(out.subarray(3)).equals(Buffer.from(want))).toBe(true);
      const r = new Reader(want, 1);
      const bodyLen = r.varint('length');
      expect(bodyLen).toBe(want.length - r.pos); // the prefix says what follows
      expect(bodyLen).toBeGreaterThanOrEqual(len);
    }
  });
});

describe('varint', () => {
  const roundTrip = (v: number): { enc: Uint8Array; dec: number; consumed: number } => {
    const enc = new Writer(1).varint(v).finish();
    const r = new Reader(enc);
    const dec = r.varint('v');
    return { enc, dec, consumed: r.pos };
  };

  // expected encoded length: ceil(bitLength / 7), at least 1
  const expectedLen = (v: number): number => Math.max(1, Math.ceil(v.toString(2).length / 7));

  for (const v of [0, 1, 127, 128, 300, 16383, 16384, 2 ** 21 - 1, 2 ** 21, 2 ** 28, 2 ** 35, 2 ** 49 - 1, 2 ** 49, 2 ** 53 - 1]) {
    it(`round trips ${v}`, () => {
      const { enc, dec, consumed } = roundTrip(v);
      expect(dec).toBe(v);
      expect(enc.length).toBe(expectedLen(v));
      expect(varintLen(v)).toBe(enc.length);
      expect(consumed).toBe(enc.length);
    });
  }

  it('varintAt reads what varint reads, and names the list entry only when the read fails', () => {
    const rng = new Rng(5);
    for (let t = 0; t < 2000; t++) {
      const bytes = Uint8Array.from({ length: rng.int(0, 9) }, () => (rng.chance(0.5) ? rng.int(0x80, 0xff) : rng.int(0, 0x7f)));
      let want: { v: number; pos: number } | string;
      let got: { v: number; pos: number } | string;
      const a = new Reader(bytes);
      try {
        want = { v: a.varint('list[3].f'), pos: a.pos };
      } catch (e) {
        want = `${(e as WireError).field}: ${(e as WireError).message}`;
      }
      const b = new Reader(bytes);
      try {
        got = { v: b.varintAt('list', 3, '.f'), pos: b.pos };
      } catch (e) {
        got = `${(e as WireError).field}: ${(e as WireError).message}`;
      }
      expect(got, Array.from(bytes).join(',')).toEqual(want);
    }
  });

  it('uses standard LEB128 byte layout', () => {
    expect(Array.from(roundTrip(0).enc)).toEqual([0x00]);
    expect(Array.from(roundTrip(127).enc)).toEqual([0x7f]);
    expect(Array.from(roundTrip(128).enc)).toEqual([0x80, 0x01]);
    expect(Array.from(roundTrip(300).enc)).toEqual([0xac, 0x02]);
    expect(Array.from(roundTrip(2 ** 21).enc)).toEqual([0x80, 0x80, 0x80, 0x01]);
  });

  it('property: any safe non-negative integer round-trips and varintLen predicts the size', () => {
    fc.assert(
      fc.property(fc.maxSafeNat(), (v) => {
        const { enc, dec, consumed } = roundTrip(v);
        expect(dec).toBe(v);
        expect(consumed).toBe(enc.length);
        expect(varintLen(v)).toBe(enc.length);
        expect(enc.length).toBeLessThanOrEqual(8);
      }),
      { numRuns: 2000 },
    );
  });

  it('rejects non-minimal encodings', () => {
    for (const enc of [bytes(0x80, 0x00), bytes(0xff, 0x00), bytes(0x80, 0x80, 0x00), bytes(0x81, 0x80, 0x80, 0x00)]) {
      const e = expectWire(() => new Reader(enc).varint('thing.count'), DropReason.MalformedPayload, 'thing.count');
      expect(e.message).toMatch(/non-minimal/);
    }
  });

  it('rejects varints longer than 8 bytes', () => {
    const nine = bytes(0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x01);
    expectWire(() => new Reader(nine).varint('x.offset'), DropReason.MalformedPayload, 'x.offset');
    const eightContinued = bytes(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff);
    expectWire(() => new Reader(eightContinued).varint('x.offset'), DropReason.MalformedPayload, 'x.offset');
  });

  it('rejects a varint cut off by the end of the buffer', () => {
    expectWire(() => new Reader(bytes()).varint('x.len'), DropReason.MalformedPayload, 'x.len');
    expectWire(() => new Reader(bytes(0x80, 0x80)).varint('x.len'), DropReason.MalformedPayload, 'x.len');
  });

  // docs/PROTOCOL.md §3.2 / Appendix A currently say values up to 2^56-1 are "accepted" and list this as
  // Open question 3. A decoder returning a JS number cannot accept them without silently changing the
  // value, so this test asserts the only lossless outcome for a number-valued decoder: rejection.
  it('never returns an inexact number: an 8-byte varint above 2^53-1 is rejected', () => {
    // LEB128 groups (low first): 1, 0, 0, 0, 0, 0, 0, 16  =>  2^53 + 1, which a double cannot hold.
    const over = bytes(0x81, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x10);
    expectWire(() => new Reader(over).varint('v'), DropReason.MalformedPayload, 'v');
  });

  it('Writer refuses negative, fractional, non-finite and unsafe values', () => {
    for (const v of [-1, -0.5, 1.5, Number.NaN, Infinity, 2 ** 53, 2 ** 60]) {
      expect(() => new Writer().varint(v), `varint(${v})`).toThrow(RangeError);
    }
  });
});

// ---------------------------------------------------------------- deltas

// Keys are 1..MAX_KEY_LEN bytes: an empty key is malformed on the wire.
const arbKey = fc.uint8Array({ minLength: 1, maxLength: MAX_KEY_LEN });
const arbValue = fc.uint8Array({ maxLength: 900 });
const arbDelta: fc.Arbitrary<Delta> = fc.oneof(
  fc.record({ op: fc.constant(DeltaOp.Set as const), key: arbKey, value: arbValue }),
  fc.record({ op: fc.constant(DeltaOp.Del as const), key: arbKey }),
  fc.record({ op: fc.constant(DeltaOp.Cas as const), key: arbKey, expect: fc.maxSafeNat(), value: arbValue }),
  fc.record({ op: fc.constant(DeltaOp.Append as const), offset: fc.maxSafeNat(), data: fc.uint8Array({ maxLength: 1100 }) }),
);

const sampleDeltas: Delta[] = [
  { op: DeltaOp.Set, key: b('color'), value: b('blue') },
  { op: DeltaOp.Del, key: b('color') },
  { op: DeltaOp.Cas, key: b('lock'), expect: 2 ** 40, value: b('held') },
  { op: DeltaOp.Append, offset: 123456, data: fill(200) },
];

// Deltas encode canonically and decode back; malformed deltas are rejected with the field named.
describe('delta codec', () => {
  it('property: round trip, canonical bytes, encodedDeltaLen is exact (all four ops)', () => {
    fc.assert(
      fc.property(arbDelta, (d) => {
        const enc = encodeDelta(d);
        expect(enc.length).toBe(encodedDeltaLen(d));
        const dec = decodeDelta(enc);
        expect(plain(dec)).toEqual(plain(d));
        expect(Array.from(encodeDelta(dec))).toEqual(Array.from(enc));
      }),
      { numRuns: 1000 },
    );
  });

  it('matches the examples of PROTOCOL.md §4.1', () => {
    const hex = (d: Delta) => Buffer.from(encodeDelta(d)).toString('hex');
    expect(hex({ op: DeltaOp.Set, key: b('k'), value: b('v') })).toBe('01016b0176');
    expect(hex({ op: DeltaOp.Del, key: b('k') })).toBe('02016b');
    expect(hex({ op: DeltaOp.Cas, key: b('k'), expect: 300, value: b('v') })).toBe('03016bac020176');
    expect(hex({ op: DeltaOp.Append, offset: 5, data: b('xy') })).toBe('0405027879');
  });

  it('encodes Set as op | len key | len value', () => {
    expect(Array.from(encodeDelta({ op: DeltaOp.Set, key: b('a'), value: b('bc') }))).toEqual([1, 1, 0x61, 2, 0x62, 0x63]);
    expect(Array.from(encodeDelta({ op: DeltaOp.Append, offset: 128, data: b('z') }))).toEqual([4, 0x80, 0x01, 1, 0x7a]);
  });

  it('rejects an unknown op', () => {
    for (const op of [0, 5, 255]) expectWire(() => decodeDelta(bytes(op, 1, 0x61, 0)), DropReason.MalformedPayload, 'delta.op');
  });

  it('rejects every strict prefix of a valid delta (truncation)', () => {
    for (const d of sampleDeltas) {
      const enc = encodeDelta(d);
      for (let n = 0; n < enc.length; n++) {
        let err: unknown;
        try {
          decodeDelta(enc.subarray(0, n));
        } catch (e) {
          err = e;
        }
        expect(err, `${DeltaOp[d.op]} cut at ${n}`).toBeInstanceOf(WireError);
        expect((err as WireError).reason).toBe(DropReason.MalformedPayload);
      }
    }
  });

  it('rejects a key longer than MAX_KEY_LEN and accepts one of exactly MAX_KEY_LEN', () => {
    const long = new Writer()
      .u8(DeltaOp.Del)
      .lenBytes(fill(MAX_KEY_LEN + 1))
      .finish();
    const e = expectWire(() => decodeDelta(long), DropReason.MalformedPayload, 'delta.key');
    expect(e.message).toContain(String(MAX_KEY_LEN));
    const max = new Writer().u8(DeltaOp.Del).lenBytes(fill(MAX_KEY_LEN)).finish();
    expect(decodeDelta(max)).toMatchObject({ op: DeltaOp.Del });
  });

  it('rejects a value length that lies (claims more, or fewer, bytes than are present)', () => {
    const good = encodeDelta({ op: DeltaOp.Set, key: b('k'), value: b('hello') });
    expect(good[3]).toBe(5); // the value length byte
    expectWire(() => decodeDelta(withByte(good, 3, 6)), DropReason.MalformedPayload, 'delta.value');
    expectWire(() => decodeDelta(withByte(good, 3, 4)), DropReason.MalformedPayload, 'delta');
    const app = encodeDelta({ op: DeltaOp.Append, offset: 0, data: b('abc') });
    expectWire(() => decodeDelta(withByte(app, 2, 9)), DropReason.MalformedPayload, 'delta.data');
  });

  it('rejects a value or data longer than MAX_VALUE_LEN by its length alone, and carries a 1 MiB value and a MAX_KEY_LEN key', () => {
    // The length is checked before any byte is read or allocated: a lie costs nothing.
    const over = new Writer()
      .u8(DeltaOp.Set)
      .lenBytes(b('k'))
      .varint(MAX_VALUE_LEN + 1)
      .finish();
    expect(expectWire(() => decodeDelta(over), DropReason.MalformedPayload, 'delta.value').message).toContain(String(MAX_VALUE_LEN));
    const dataOver = new Writer()
      .u8(DeltaOp.Append)
      .varint(0)
      .varint(MAX_VALUE_LEN + 1)
      .finish();
    expectWire(() => decodeDelta(dataOver), DropReason.MalformedPayload, 'delta.data');
    const big = encodeDelta({ op: DeltaOp.Cas, key: fill(MAX_KEY_LEN, 3), expect: 9, value: fill(1 << 20, 5) });
    expect(big.length).toBeLessThanOrEqual(MAX_DELTA_LEN);
    expect(decodeDelta(big)).toEqual({ op: DeltaOp.Cas, key: fill(MAX_KEY_LEN, 3), expect: 9, value: fill(1 << 20, 5) });
  });

  it('validateDelta refuses an empty key, an over-long key and an oversized delta', () => {
    expect(() => validateDelta({ op: DeltaOp.Set, key: bytes(), value: b('v') })).toThrow(RangeError);
    expect(() => validateDelta({ op: DeltaOp.Del, key: bytes() })).toThrow(RangeError);
    expect(() => validateDelta({ op: DeltaOp.Cas, key: bytes(), expect: 0, value: b('v') })).toThrow(RangeError);
    expect(() => validateDelta({ op: DeltaOp.Del, key: fill(MAX_KEY_LEN + 1) })).toThrow(RangeError);
    expect(() => validateDelta({ op: DeltaOp.Del, key: fill(MAX_KEY_LEN + 1) })).toThrow(
      `key is ${MAX_KEY_LEN + 1} bytes; the limit MAX_KEY_LEN is ${MAX_KEY_LEN}`,
    );
    // A register's own value limit, named in the refusal.
    expect(() => validateDelta({ op: DeltaOp.Set, key: b('k'), value: fill(1000) }, 1000)).not.toThrow();
    expect(() => validateDelta({ op: DeltaOp.Set, key: b('k'), value: fill(1001) }, 1000)).toThrow(
      'value is 1001 bytes; register cfg limit maxValueBytes is 1000',
    );
    expect(() => validateDelta({ op: DeltaOp.Append, offset: 0, data: fill(1001) }, 1000)).toThrow(RangeError);
    expect(() => validateDelta({ op: DeltaOp.Append, offset: 0, data: fill(10) })).not.toThrow();
    for (const d of sampleDeltas) expect(() => validateDelta(d)).not.toThrow();
  });
});

// ---------------------------------------------------------------- messages

const h64 = (hi: number, lo: number) => ({ hi, lo });

/** One valid example of every MsgType. */
const examples: Message[] = [
  {
    type: MsgType.Status,
    register: 'inventory',
    version: 2 ** 40 + 3,
    hash: h64(0xdeadbeef, 0x01234567),
    logBase: 2 ** 40 - 100,
    resolvedSeq: 77,
    held: [
      { from: 2 ** 40 + 5, to: 2 ** 40 + 9 },
      { from: 2 ** 40 + 11, to: 2 ** 40 + 11 },
    ],
  },
  { type: MsgType.Ack, largestPn: 2 ** 33 + 1, ackDelayMs: 25 },
  {
    type: MsgType.Propose,
    register: 'cfg',
    base: 1,
    candidates: [
      { origin: 1, seq: 1, delta: sampleDeltas[0] },
      { origin: 2, seq: 900, delta: sampleDeltas[1] },
      { origin: 3, seq: 2 ** 35, delta: sampleDeltas[2] },
      { origin: 1, seq: 2, delta: sampleDeltas[3] },
    ],
  },
  {
    type: MsgType.Collapse,
    register: 'cfg',
    version: 12,
    hash: h64(0xffffffff, 0),
    entries: [
      { origin: 1, seq: 1, verdict: 'committed', delta: sampleDeltas[0] },
      { origin: 2, seq: 5, verdict: 'rejected', reason: RejectReason.CasMismatch },
      { origin: 3, seq: 6, verdict: 'committed', delta: sampleDeltas[3] },
    ],
  },
  {
    type: MsgType.ReconReq,
    register: 'map',
    targetVersion: 100,
    flags: REQ_WANT_META,
    prefixes: [
      { depth: 0, prefix: 0 },
      { depth: 3, prefix: 0xabc },
      { depth: 8, prefix: 0xffffffff },
    ],
  },
  {
    type: MsgType.ReconNode,
    register: 'map',
    targetVersion: 100,
    depth: 2,
    prefix: 0x3f,
    children: Array.from({ length: 16 }, (_, i) => ({ count: i * 3, hash: h64((i * 0x01010101) >>> 0, 0xffffffff - i) })),
  },
  {
    type: MsgType.ReconEntries,
    register: 'map',
    // A pin's entries are at most its version (rev 1.34): a pin this late makes room for the 7-octet version below.
    targetVersion: 2 ** 50,
    depth: 8,
    prefix: 0x12345678,
    part: 1,
    parts: 3,
    entries: [
      { key: b('alpha'), version: 4, value: b('one') },
      { key: fill(256, 7), version: 2 ** 50, value: bytes() },
    ],
  },
  {
    type: MsgType.ReconMeta,
    register: 'map',
    targetVersion: 100,
    hash: h64(1, 2),
    size: 12345,
    origins: [
      { origin: 1, seq: 10 },
      { origin: 2, seq: 0 },
    ],
    rejections: [
      { origin: 1, seq: 4, reason: RejectReason.CasMismatch },
      { origin: 2, seq: 9, reason: RejectReason.WrongKind },
    ],
  },
  { type: MsgType.SnapReq, register: 'map', targetVersion: 9, flags: 1, fromChunk: 4 },
  { type: MsgType.SnapChunk, register: 'ünïcødé-名前', targetVersion: 9, chunk: 0, chunks: 1, entries: [] },
  { type: MsgType.StreamReq, register: 'log', targetVersion: 3, flags: 0, offset: 2 ** 45 },
  { type: MsgType.StreamData, register: 'log', targetVersion: 3, offset: 1000, data: fill(600, 0x11) },
  { type: MsgType.Close, reason: CloseReason.GoingAway },
  {
    type: MsgType.Manifest,
    flags: MANIFEST_MATCHED | MANIFEST_REPLY,
    digest: 0xfeedf00d,
    part: 1,
    parts: 2,
    entries: [
      {
        name: 'config',
        kind: 1,
        limits: [
          { id: 1, value: 1_000_000 },
          { id: 2, value: 2 ** 28 },
        ],
      },
      { name: 'log', kind: 2, limits: [{ id: 2, value: 2 ** 40 }] },
      { name: 'future', kind: 9, limits: [] },
    ],
  },
  // ---- large values: the last piece of a 1023-byte message in 2 (the smallest layout: pieces of 512, rev 1.33), and its acknowledgement
  { type: MsgType.Fragment, msgId: 2 ** 33, total: 1023, count: 2, index: 1, bytes: fill(511, 1) },
  {
    type: MsgType.FragmentAck,
    msgId: 7,
    ranges: [
      { from: 0, to: 3 },
      { from: 5, to: 5 },
      { from: 9, to: 700 },
    ],
  },
  // ---- catch-up by log diff (rev 1.12): one part of the diff since v70 (a deletion, then ascending versions)
  {
    type: MsgType.ReconDiff,
    register: 'map',
    targetVersion: 100,
    since: 70,
    part: 2,
    parts: 3,
    entries: [
      { key: b('gone'), version: 0, value: undefined },
      { key: b('alpha'), version: 71, value: b('one') },
      { key: b('beta'), version: 71, value: bytes() },
      { key: fill(20, 7), version: 100, value: fill(3, 1) },
    ],
  },
];

/** A message as type | varint length | body, from raw body bytes. */
function wrap(type: number, body: Uint8Array): Uint8Array {
  return new Writer().u8(type).varint(body.length).bytes(body).finish();
}

// Every message type survives encode/decode; framing of several and of unknown messages works.
describe('message round trip', () => {
  it('the examples cover every MsgType', () => {
    const all = Object.values(MsgType).filter((v): v is MsgType => typeof v === 'number');
    expect(examples.map((m) => m.type).sort((x, y) => x - y)).toEqual(all.sort((x, y) => x - y));
  });

  for (const m of examples) {
    it(`${MsgType[m.type]} round trips`, () => {
      const enc = encodeMessage(m);
      expect(enc[0]).toBe(m.type);
      const out = decodeMessages(enc);
      expect(out.unknown).toBe(0);
      expect(out.messages).toHaveLength(1);
      expect(plain(out.messages[0])).toEqual(plain(m));
      expect(Array.from(out.raws[0])).toEqual(Array.from(enc));
    });
  }

  it('matches the Data frame vector of PROTOCOL.md Appendix A', () => {
    const payload = concat(
      encodeMessage({ type: MsgType.Ack, largestPn: 200, ackDelayMs: 4 }),
      encodeMessage({
        type: MsgType.Status,
        register: 'kv',
        version: 3,
        hash: h64(0x01020304, 0x05060708),
        logBase: 2,
        resolvedSeq: 1,
        held: [],
      }),
    );
    const frame = encodeFrame({ type: FrameType.Data, flags: 0, pairId: 7, packetNumber: 2 ** 32 + 2 }, payload);
    const want =
      '5350' +
      '01' +
      '04' +
      '00' +
      '14' +
      '0016' +
      '00000007' +
      '00000001' +
      '00000002' + // header
      '02' +
      '03' +
      'c801' +
      '04' + // Ack
      '01' +
      '0f' +
      '02' +
      '6b76' +
      '03' +
      '01020304' +
      '05060708' +
      '02' +
      '01' +
      '00'; // Status (no held ranges)
    expect(Buffer.from(frame).toString('hex')).toBe(want);
    const f = decodeFrame(Uint8Array.from(Buffer.from(want, 'hex')), (id) => id === 7);
    expect(f.header.packetNumber).toBe(2 ** 32 + 2);
    expect(plain(decodeMessages(f.payload).messages)).toEqual(
      plain([
        { type: MsgType.Ack, largestPn: 200, ackDelayMs: 4 },
        { type: MsgType.Status, register: 'kv', version: 3, hash: h64(0x01020304, 0x05060708), logBase: 2, resolvedSeq: 1, held: [] },
      ]),
    );
  });

  it('an empty register name is refused by the encoder and by the decoder', () => {
    const m: Message = { type: MsgType.SnapReq, register: '', targetVersion: 0, flags: 0, fromChunk: 0 };
    expect(() => encodeMessage(m)).toThrowError(/register name must be 1\.\.64 bytes, got 0/);
    // Hand-built: type 9, length 4, name length 0, targetVersion 0, flags 0, fromChunk 0.
    expectWire(() => decodeMessages(new Uint8Array([MsgType.SnapReq, 4, 0, 0, 0, 0])), DropReason.MalformedPayload, 'register');
  });

  it('decodes several messages from one payload, in order, with raws parallel to messages', () => {
    const encs = examples.map(encodeMessage);
    const out = decodeMessages(concat(...encs));
    expect(out.unknown).toBe(0);
    expect(plain(out.messages)).toEqual(plain(examples));
    expect(out.raws.map((r) => Array.from(r))).toEqual(encs.map((e) => Array.from(e)));
  });

  it('skips and counts messages of an unknown type, keeping the known ones around them', () => {
    const payload = concat(
      wrap(0, bytes(1, 2, 3)),
      encodeMessage(examples[1]),
      wrap(200, fill(40)), // body that would be garbage for any known type
      encodeMessage(examples[12]),
      wrap(255, bytes()),
    );
    const out = decodeMessages(payload);
    expect(out.unknown).toBe(3);
    expect(plain(out.messages)).toEqual(plain([examples[1], examples[12]]));
    expect(out.raws).toHaveLength(2);
  });
});

// Malformed payloads are rejected with a WireError naming the field at fault.
describe('malformed messages', () => {
  it('empty payload', () => {
    expectWire(() => decodeMessages(bytes()), DropReason.MalformedPayload, 'payload');
  });

  it('message length longer than the remaining payload', () => {
    expectWire(() => decodeMessages(bytes(MsgType.Ack, 5, 1)), DropReason.MalformedPayload, 'message.length');
    const ok = encodeMessage(examples[1]);
    expectWire(() => decodeMessages(concat(ok, bytes(MsgType.Close, 2, 7))), DropReason.MalformedPayload, 'message.length');
    // an unknown type cannot be skipped if its length lies
    expectWire(() => decodeMessages(bytes(99, 10, 0)), DropReason.MalformedPayload, 'message.length');
  });

  it('message length varint cut off', () => {
    expectWire(() => decodeMessages(bytes(MsgType.Ack)), DropReason.MalformedPayload, 'message.length');
    expectWire(() => decodeMessages(bytes(MsgType.Ack, 0x80)), DropReason.MalformedPayload, 'message.length');
  });

  it('trailing bytes inside a message body', () => {
    expectWire(() => decodeMessages(wrap(MsgType.Close, bytes(1, 0))), DropReason.MalformedPayload, 'message(Close)');
    expectWire(() => decodeMessages(wrap(MsgType.Close, bytes(7))), DropReason.MalformedPayload, 'close.reason');
    const ackBody = new Writer().varint(5).varint(1).u8(0xee).finish();
    expectWire(() => decodeMessages(wrap(MsgType.Ack, ackBody)), DropReason.MalformedPayload, 'message(Ack)');
  });

  it('a body shorter than its fields', () => {
    const full = encodeMessage(examples[0]);
    const body = full.subarray(2); // type + 1-byte length
    let err: unknown;
    try {
      decodeMessages(wrap(MsgType.Status, body.subarray(0, body.length - 3)));
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(WireError);
    expect((err as WireError).field).toMatch(/^status\./);
  });

  it('register name that is not valid UTF-8', () => {
    for (const name of [bytes(0xc3, 0x28), bytes(0xff), bytes(0x61, 0xe2, 0x82)]) {
      const body = new Writer().lenBytes(name).varint(1).hash64(h64(0, 0)).varint(0).varint(0).finish();
      expectWire(() => decodeMessages(wrap(MsgType.Status, body)), DropReason.MalformedPayload, 'register');
    }
  });

  it('register name over 64 bytes (counted in bytes, not characters)', () => {
    const at = { ...examples[8], register: 'x'.repeat(MAX_REGISTER_NAME_LEN) } as Message;
    expect((decodeMessages(encodeMessage(at)).messages[0] as { register: string }).register).toBe('x'.repeat(64));
    // The encoder refuses what the decoder would reject, counting UTF-8 bytes.
    const over = { ...examples[8], register: 'x'.repeat(MAX_REGISTER_NAME_LEN + 1) } as Message;
    expect(() => encodeMessage(over)).toThrowError(/1\.\.64 bytes, got 65/);
    const wide = { ...examples[8], register: 'é'.repeat(33) } as Message; // 33 chars, 66 bytes
    expect(() => encodeMessage(wide)).toThrowError(/got 66/);
    // A hand-built Status whose name is 65 bytes is rejected on decode.
    const name = new Uint8Array(65).fill(0x78);
    const body = [65, ...name, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    expectWire(() => decodeMessages(new Uint8Array([MsgType.Status, body.length, ...body])), DropReason.MalformedPayload, 'register');
  });

  it('ReconReq prefix depth over 8', () => {
    const ok: Message = { type: MsgType.ReconReq, register: 'm', targetVersion: 1, flags: 0, prefixes: [{ depth: 8, prefix: 1 }] };
    expect(decodeMessages(encodeMessage(ok)).messages).toHaveLength(1);
    const bad: Message = {
      type: MsgType.ReconReq,
      register: 'm',
      targetVersion: 1,
      flags: 0,
      prefixes: [
        { depth: 1, prefix: 3 },
        { depth: 9, prefix: 0 },
      ],
    };
    expectWire(() => decodeMessages(encodeMessage(bad)), DropReason.MalformedPayload, 'reconReq[1].depth');
  });

  it('ReconNode at a depth that has no children', () => {
    const bad = { ...examples[5], depth: 8 } as Message;
    expectWire(() => decodeMessages(encodeMessage(bad)), DropReason.MalformedPayload, 'reconNode.depth');
  });

  it('ReconEntries part >= parts', () => {
    const base = examples[6] as Extract<Message, { type: MsgType.ReconEntries }>;
    for (const [part, parts] of [
      [3, 3],
      [5, 3],
      [0, 0],
    ]) {
      expectWire(() => decodeMessages(encodeMessage({ ...base, part, parts })), DropReason.MalformedPayload, 'reconEntries.part');
    }
    expect(decodeMessages(encodeMessage({ ...base, part: 2, parts: 3 })).messages).toHaveLength(1);
  });

  it('SnapChunk chunk >= chunks', () => {
    const base = examples[9] as Extract<Message, { type: MsgType.SnapChunk }>;
    expectWire(() => decodeMessages(encodeMessage({ ...base, chunk: 1, chunks: 1 })), DropReason.MalformedPayload, 'snapChunk.chunk');
  });

  it('a malformed delta inside a Propose names the candidate', () => {
    // name, base 1, one candidate: origin 1, seq 1, delta op 9
    const body = new Writer().lenBytes(b('cfg')).varint(1).varint(1).varint(1).varint(1).u8(9).finish();
    expectWire(() => decodeMessages(wrap(MsgType.Propose, body)), DropReason.MalformedPayload, 'propose[0].delta.op');
  });
});

// ---------------------------------------------------------------- fuzz

/** mulberry32: a small seeded PRNG so the fuzz run is reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

type Outcome = 'ok' | 'wire';

/** decodeFrame then (for Data) decodeMessages; any exception other than WireError fails the test. */
function classify(buf: Uint8Array, knownPair?: (id: number) => boolean): Outcome {
  try {
    const f = decodeFrame(buf, knownPair);
    if (f.header.type === FrameType.Data) decodeMessages(f.payload);
    return 'ok';
  } catch (e) {
    if (e instanceof WireError) {
      expect(DROP_REASON_NAMES[e.reason]).toBeDefined();
      return 'wire';
    }
    throw new Error(`non-WireError for input ${Buffer.from(buf).toString('hex')}: ${String(e)}`, { cause: e });
  }
}

function classifyPayload(buf: Uint8Array): Outcome {
  try {
    decodeMessages(buf);
    return 'ok';
  } catch (e) {
    if (e instanceof WireError) return 'wire';
    throw new Error(`non-WireError for payload ${Buffer.from(buf).toString('hex')}: ${String(e)}`, { cause: e });
  }
}

// Arbitrary input never escapes as anything but success or a WireError.
describe('fuzz', () => {
  it('20,000 random byte strings through decodeFrame and decodeMessages', () => {
    const rnd = prng(0x5350);
    for (let i = 0; i < 20_000; i++) {
      const len = Math.floor(rnd() * (i % 4 === 0 ? MAX_FRAME_LEN + 40 : 64));
      const buf = new Uint8Array(len);
      for (let j = 0; j < len; j++) buf[j] = Math.floor(rnd() * 256);
      classify(buf);
      classify(buf, () => false);
      classifyPayload(buf);
    }
  });

  it('20,000 single-byte mutations of valid frames', () => {
    const PAIR = 0x00c0ffee;
    const valid: Uint8Array[] = [
      ...examples.map((m, i) => encodeFrame({ type: FrameType.Data, flags: 0, pairId: PAIR, packetNumber: 2 ** 32 + i }, encodeMessage(m))),
      encodeFrame(
        { type: FrameType.Data, flags: 1, pairId: PAIR, packetNumber: 9 },
        // StreamData and Fragment (pieces of at least 512 bytes since rev 1.33) alone fill most of a frame.
        concat(...examples.filter((m) => m.type !== MsgType.StreamData && m.type !== MsgType.Fragment).map(encodeMessage)),
      ),
      ...HANDSHAKE_TYPES.map((type) => encodeFrame({ type, flags: 0, pairId: 0, packetNumber: 0 }, fill(64, type))),
    ];
    for (const f of valid) expect(classify(f, (id) => id === PAIR)).toBe('ok');

    const rnd = prng(0xe57f);
    const counts = { ok: 0, wire: 0 };
    for (let i = 0; i < 20_000; i++) {
      const src = valid[Math.floor(rnd() * valid.length)];
      const pos = Math.floor(rnd() * src.length);
      const mutated = withByte(src, pos, src[pos] ^ (1 + Math.floor(rnd() * 255)));
      counts[classify(mutated, (id) => id === PAIR)]++;
    }
    // both outcomes must occur, or the fuzz is not reaching the message decoder
    expect(counts.ok).toBeGreaterThan(0);
    expect(counts.wire).toBeGreaterThan(0);
  });
});

// Fields the decoder must range-check (found while writing docs/PROTOCOL.md).
describe('range-checked fields', () => {
  it('an empty key on the wire is malformed', () => {
    expectWire(() => decodeDelta(new Uint8Array([DeltaOp.Set, 0, 1, 0x76])), DropReason.MalformedPayload, 'delta.key');
    expectWire(() => decodeDelta(new Uint8Array([DeltaOp.Del, 0])), DropReason.MalformedPayload, 'delta.key');
  });

  it('a leading UTF-8 BOM is part of a register name, not stripped', () => {
    const withBom: Message = { type: MsgType.SnapReq, register: '\uFEFFa', targetVersion: 0, flags: 0, fromChunk: 0 };
    const out = decodeMessages(encodeMessage(withBom)).messages[0] as { register: string };
    expect(out.register).toBe('\uFEFFa');
    expect(out.register).not.toBe('a');
  });

  it("a Collapse entry whose delta is the receiver's own (verdict 0x80) round trips without its delta (rev 1.9)", () => {
    const m: Message = {
      type: MsgType.Collapse,
      register: 'm',
      version: 3,
      hash: { hi: 1, lo: 2 },
      entries: [
        { origin: 2, seq: 9, verdict: 'committed', delta: { op: DeltaOp.Set, key: b('k'), value: fill(5000) } },
        { origin: 1, seq: 4, verdict: 'committed', delta: sampleDeltas[0] },
      ],
      elided: [0],
    };
    const enc = encodeMessage(m);
    expect(enc.length).toBeLessThan(100); // the 5000-byte value is not on the wire
    const out = decodeMessages(enc).messages[0] as Extract<Message, { type: MsgType.Collapse }>;
    expect(out.elided).toEqual([0]);
    expect(out.entries[0]).toEqual({ origin: 2, seq: 9, verdict: 'committed', delta: ELIDED_DELTA });
    expect(out.entries[1]).toEqual(m.entries[1]);
  });

  it('a truncated collapse entry names its field; names decode right when consecutive messages alternate registers', () => {
    const entries = [0, 1, 2].map((i) => ({
      origin: 1,
      seq: 200 + i,
      verdict: 'committed' as const,
      delta: { op: DeltaOp.Set, key: Uint8Array.of(1, i), value: Uint8Array.of(i) } as Delta,
    }));
    const enc = encodeMessage({ type: MsgType.Collapse, register: 'm', version: 1, hash: { hi: 0, lo: 0 }, entries });
    // Cut inside entry 2's seq (origin 1 byte, seq 2 bytes): the length prefix is fixed up so only the body is short.
    const body = enc.subarray(2, enc.length - 8);
    const cut = Uint8Array.from([MsgType.Collapse, body.length, ...body]);
    expectWire(() => decodeMessages(cut), DropReason.MalformedPayload, 'collapse[2].seq');
    const names = ['m', 'kv', 'm', 'mm', 'kv', 'é'];
    const payload = names.map((register, i) =>
      encodeMessage({ type: MsgType.SnapReq, register, targetVersion: i, flags: 0, fromChunk: 0 }),
    );
    const all = Uint8Array.from(payload.flatMap((p) => Array.from(p)));
    expect(decodeMessages(all).messages.map((m) => (m as { register: string }).register)).toEqual(names);
  });

  it('unknown collapse verdicts, rejection reasons, request flags and out-of-depth prefixes are malformed', () => {
    const collapse = encodeMessage({
      type: MsgType.Collapse,
      register: 'm',
      version: 1,
      hash: { hi: 0, lo: 0 },
      entries: [{ origin: 1, seq: 1, verdict: 'rejected', reason: RejectReason.CasMismatch }],
    });
    const badVerdict = collapse.slice();
    badVerdict[badVerdict.length - 1] = 9;
    expectWire(() => decodeMessages(badVerdict), DropReason.MalformedPayload, 'collapse[0].verdict');
    const meta = encodeMessage({
      type: MsgType.ReconMeta,
      register: 'm',
      targetVersion: 1,
      hash: { hi: 0, lo: 0 },
      size: 0,
      origins: [],
      rejections: [{ origin: 1, seq: 1, reason: 1 }],
    });
    const badReason = meta.slice();
    badReason[badReason.length - 1] = 0;
    expectWire(() => decodeMessages(badReason), DropReason.MalformedPayload, 'reconMeta.rejections[0].reason');
    expectWire(
      () => decodeMessages(encodeMessage({ type: MsgType.SnapReq, register: 'm', targetVersion: 0, flags: 0x80, fromChunk: 0 })),
      DropReason.MalformedPayload,
      'snapReq.flags',
    );
    expectWire(
      () =>
        decodeMessages(
          encodeMessage({ type: MsgType.ReconReq, register: 'm', targetVersion: 0, flags: 0, prefixes: [{ depth: 1, prefix: 16 }] }),
        ),
      DropReason.MalformedPayload,
      'reconReq[0].prefix',
    );
  });
});

describe('Status held ranges (selective acknowledgement)', () => {
  const st = (held: { from: number; to: number }[]): Uint8Array =>
    encodeMessage({ type: MsgType.Status, register: 'r', version: 10, hash: { hi: 0, lo: 0 }, logBase: 0, resolvedSeq: 0, held });
  it('ranges must lie above the version with a gap, ascending and disjoint', () => {
    expect(
      (
        decodeMessages(
          st([
            { from: 12, to: 13 },
            { from: 15, to: 20 },
          ]),
        ).messages[0] as { held: unknown }
      ).held,
    ).toEqual([
      { from: 12, to: 13 },
      { from: 15, to: 20 },
    ]);
    expectWire(() => decodeMessages(st([{ from: 11, to: 12 }])), DropReason.MalformedPayload, 'status.held[0]'); // no gap: 11 would be applied
    expectWire(
      () =>
        decodeMessages(
          st([
            { from: 12, to: 14 },
            { from: 14, to: 16 },
          ]),
        ),
      DropReason.MalformedPayload,
      'status.held[1]',
    );
    expectWire(
      () => decodeMessages(st(Array.from({ length: 17 }, (_, i) => ({ from: 12 + 2 * i, to: 12 + 2 * i })))),
      DropReason.MalformedPayload,
      'status.held',
    );
  });
});

describe('counts a peer could use to make us allocate', () => {
  it('ReconEntries parts and SnapChunk chunks beyond their bounds are malformed, not a crash', () => {
    const entries = (parts: number): Uint8Array =>
      encodeMessage({ type: MsgType.ReconEntries, register: 'm', targetVersion: 1, depth: 1, prefix: 0, part: 0, parts, entries: [] });
    expectWire(() => decodeMessages(entries(2 ** 40)), DropReason.MalformedPayload, 'reconEntries.part');
    const chunk = encodeMessage({ type: MsgType.SnapChunk, register: 'm', targetVersion: 1, chunk: 0, chunks: 2 ** 40, entries: [] });
    expectWire(() => decodeMessages(chunk), DropReason.MalformedPayload, 'snapChunk.chunk');
  });
});

// Manifest (§3.6.15): every count a peer controls is bounded, reserved bits and disordered limit ids are malformed.
describe('Manifest bounds', () => {
  const base: ManifestMsg = {
    type: MsgType.Manifest,
    flags: 0,
    digest: 1,
    part: 0,
    parts: 1,
    entries: [{ name: 'kv', kind: 1, limits: [] }],
  };
  it('reserved flag bits, part not below parts, parts over the limit, zero parts', () => {
    expectWire(() => decodeMessages(encodeMessage({ ...base, flags: 4 })), DropReason.MalformedPayload, 'manifest.flags');
    expectWire(() => decodeMessages(encodeMessage({ ...base, part: 1 })), DropReason.MalformedPayload, 'manifest.part');
    expectWire(() => decodeMessages(encodeMessage({ ...base, parts: 0 })), DropReason.MalformedPayload, 'manifest.part');
    const over = { ...base, part: 0, parts: MAX_MANIFEST_PARTS + 1 };
    expectWire(() => decodeMessages(encodeMessage(over)), DropReason.MalformedPayload, 'manifest.part');
  });
  it('limit ids zero, repeated or descending; more limits than allowed', () => {
    for (const ids of [[0], [2, 2], [3, 1]]) {
      const m = { ...base, entries: [{ name: 'kv', kind: 1, limits: ids.map((id) => ({ id, value: 5 })) }] };
      expectWire(() => decodeMessages(encodeMessage(m)), DropReason.MalformedPayload, `manifest[0].limits[${ids.length - 1}].id`);
    }
    const many = Array.from({ length: MAX_MANIFEST_LIMITS + 1 }, (_, i) => ({ id: i + 1, value: 1 }));
    expectWire(
      () => decodeMessages(encodeMessage({ ...base, entries: [{ name: 'kv', kind: 1, limits: many }] })),
      DropReason.MalformedPayload,
      'manifest[0].limits',
    );
  });
});

// ---- large values: the Fragment layout follows from (total, count); anything else is malformed (§3.4).
describe('Fragment and FragmentAck range checks', () => {
  const frag = (total: number, count: number, index: number, len: number): Uint8Array => {
    const body = new Writer().varint(1).varint(total).varint(count).varint(index).lenBytes(fill(len)).finish();
    return new Writer().u8(MsgType.Fragment).varint(body.length).bytes(body).finish();
  };
  it('accepts each piece of a layout at its exact length, and nothing else', () => {
    // 3000 bytes in 3: pieces of 1000.
    for (const i of [0, 1, 2]) expect(decodeMessages(frag(3000, 3, i, 1000)).messages[0]).toMatchObject({ index: i, count: 3 });
    expectWire(() => decodeMessages(frag(3000, 3, 2, 999)), DropReason.MalformedPayload, 'fragment.bytes');
    expectWire(() => decodeMessages(frag(3000, 3, 3, 1000)), DropReason.MalformedPayload, 'fragment.index');
    // 2500 in 3: pieces of 834, the last 832.
    expect(decodeMessages(frag(2500, 3, 2, 832)).messages.length).toBe(1);
    expectWire(() => decodeMessages(frag(2500, 3, 2, 834)), DropReason.MalformedPayload, 'fragment.bytes');
  });
  it('refuses layouts no sender makes: one piece, an empty last piece, pieces over a payload, a message over MAX_MESSAGE_LEN', () => {
    expectWire(() => decodeMessages(frag(100, 1, 0, 100)), DropReason.MalformedPayload, 'fragment.count');
    expectWire(() => decodeMessages(frag(4, 3, 0, 2)), DropReason.MalformedPayload, 'fragment.count'); // pieces of 2: the third would be empty
    // Pieces below 512 bytes (rev 1.33): no sender cuts them (its pieces are ≥ 667), and they only multiply the receiver's work.
    expectWire(() => decodeMessages(frag(2044, 4, 0, 511)), DropReason.MalformedPayload, 'fragment.count');
    expectWire(() => decodeMessages(frag(65_542, 65_542, 0, 1)), DropReason.MalformedPayload, 'fragment.count');
    expect(decodeMessages(frag(2045, 4, 0, 512)).messages.length).toBe(1);
    expectWire(() => decodeMessages(frag(4 * MAX_PAYLOAD_LEN, 2, 0, 10)), DropReason.MalformedPayload, 'fragment.count');
    expectWire(() => decodeMessages(frag(MAX_MESSAGE_LEN + 1, 60_000, 0, 10)), DropReason.MalformedPayload, 'fragment.total');
    expect(MAX_MESSAGE_LEN).toBeGreaterThan(MAX_VALUE_LEN);
  });
  it('FragmentAck ranges must ascend with a gap between them', () => {
    const ack = (...r: number[]) => {
      const body = new Writer().varint(1).varint(r.length / 2);
      for (let i = 0; i < r.length; i += 2) body.varint(r[i]).varint(r[i + 1]);
      const bb = body.finish();
      return new Writer().u8(MsgType.FragmentAck).varint(bb.length).bytes(bb).finish();
    };
    expect(decodeMessages(ack(0, 3, 5, 0)).messages[0]).toEqual({
      type: MsgType.FragmentAck,
      msgId: 1,
      ranges: [
        { from: 0, to: 3 },
        { from: 5, to: 5 },
      ],
    });
    expectWire(() => decodeMessages(ack(0, 3, 4, 0)), DropReason.MalformedPayload, 'fragmentAck.ranges[1]'); // adjacent: one range
    expectWire(() => decodeMessages(ack(5, 0, 1, 0)), DropReason.MalformedPayload, 'fragmentAck.ranges[1]');
  });
});
