/**
 * Hostile ESTP payloads for fuzzing a HalfPair (test/estp-fuzz.test.ts): random octets, and
 * valid messages of every type (Close excepted: closing is the peer's right) with fields
 * at their extremes, some of them then mutated. Seeded, so a failure replays.
 */
import { MAX_PAYLOAD_LEN } from '../../wire/constants.js';
import type { EntryDelta } from '../../wire/cross.js';
import { DeltaOp, type Delta } from '../../wire/delta.js';
import { MsgType, REQ_WANT_META, encodeMessage, type Message, type WireEntry } from '../../wire/messages.js';
import { Rng } from './rng.js';
import { manifestDigest } from '../../core/pair/manifest.js';

const EXTREMES = [0, 1, 2, 127, 128, 255, 256, 1023, 1024, 65535, 2 ** 31 - 1, 2 ** 32 - 1, 2 ** 32, 2 ** 53 - 1];

export class EstpFuzzer {
  readonly rng: Rng;

  constructor(
    seed: number,
    /** Register names to aim at (unknown ones are added). */
    private readonly registers: string[],
    /** Versions near the pair's current one make semantically plausible messages. */
    private readonly near: () => number,
    /** Also make txn deltas (op 5: often valid, sometimes nested, empty, over-long, a key twice). Off: seeds replay as before. */
    private readonly txn = false,
    /** Also make cross-register txns (op 6) in candidates and records, and parts (op 7) in records. Off: seeds replay as before. */
    private readonly cross = false,
  ) {
    this.rng = new Rng(seed);
  }

  private num(): number {
    const r = this.rng;
    const p = r.float();
    if (p < 0.35) return r.pick(EXTREMES);
    if (p < 0.75) return Math.max(0, this.near() + r.int(-3, 300));
    return r.int(0, 1_000_000);
  }

  private small(max: number): number {
    return this.rng.chance(0.1) ? this.rng.pick([0, max]) : this.rng.int(0, Math.min(max, 8));
  }

  private bytes(max: number): Uint8Array {
    return this.rng.bytes(this.rng.chance(0.05) ? max : this.rng.int(0, Math.min(max, 24)));
  }

  private key(): Uint8Array {
    const k = this.rng.chance(0.5) ? new TextEncoder().encode(`k${this.rng.int(0, 400)}`) : this.bytes(256);
    return k.length === 0 ? Uint8Array.of(1) : k;
  }

  private delta(depth = 0): Delta {
    const r = this.rng;
    if (this.txn && depth < 2 && (depth === 1 || r.chance(0.3))) {
      // Mostly one kind, as an honest txn; nesting only one level deep (the decoder refuses it anyway).
      const n = r.chance(0.05) ? r.pick([0, 256, 257]) : r.int(1, 6);
      const ops = Array.from({ length: n }, () => (depth === 0 && r.chance(0.02) ? this.delta(1) : this.delta(2)));
      if (r.chance(0.05) && ops.length > 1 && 'key' in ops[0] && 'key' in ops[1]) ops[1] = { ...ops[1], key: ops[0].key } as Delta;
      return { op: DeltaOp.Txn, ops } as Delta;
    }
    switch (r.int(1, 4)) {
      case DeltaOp.Set:
        return { op: DeltaOp.Set, key: this.key(), value: this.bytes(900) };
      case DeltaOp.Del:
        return { op: DeltaOp.Del, key: this.key() };
      case DeltaOp.Cas:
        return { op: DeltaOp.Cas, key: this.key(), expect: this.num(), value: this.bytes(900) };
      default:
        return { op: DeltaOp.Append, offset: this.num(), data: this.bytes(1100) };
    }
  }

  /** A candidate's (`record` false) or a record entry's delta: with `cross`, sometimes op 6 or (records) op 7. */
  private entryDelta(record: boolean): EntryDelta {
    const r = this.rng;
    if (!this.cross || !r.chance(0.25)) return this.delta();
    const name = (): string => (r.chance(0.9) ? r.pick(this.registers) : `x${r.int(0, 3)}`);
    if (record && r.chance(0.4)) return { op: DeltaOp.Part, anchor: name(), anchorVersion: Math.max(1, this.num()), delta: this.delta() };
    // Mostly 2-3 parts on distinct registers; sometimes one, seventeen or a register twice.
    const n = r.chance(0.05) ? r.pick([1, 17]) : r.int(2, 3);
    const names = [...this.registers, 'x0', 'x1'].sort(() => r.int(-1, 1));
    const parts = Array.from({ length: n }, (_, i) => ({
      register: r.chance(0.05) ? names[0] : (names[i] ?? `y${i}`),
      at: record ? Math.max(r.chance(0.05) ? 0 : 1, this.num()) : r.chance(0.05) ? 1 : 0,
      delta: this.delta(),
    }));
    return { op: DeltaOp.Cross, parts };
  }

  private entry(): WireEntry {
    return { key: this.key(), version: this.num(), value: this.bytes(900) };
  }

  private hash(): { hi: number; lo: number } {
    return { hi: this.rng.int(0, 2 ** 32 - 1), lo: this.rng.int(0, 2 ** 32 - 1) };
  }

  private list<T>(make: () => T, max: number): T[] {
    return Array.from({ length: this.small(max) }, make);
  }

  message(): Message {
    const r = this.rng;
    const register = r.chance(0.05) ? 'nope' : r.pick(this.registers);
    const flags = r.chance(0.5) ? REQ_WANT_META : 0;
    if (r.chance(0.03)) return this.manifest();
    // 13 and 14 stand for the fragmentation layer's Fragment and FragmentAck (§3.7).
    const drawn = r.int(1, 14);
    if (drawn === 13) return this.fragment();
    if (drawn === 14) return this.fragmentAck();
    switch (drawn as MsgType) {
      case MsgType.Status: {
        const version = this.num();
        return {
          type: MsgType.Status,
          register,
          version,
          hash: this.hash(),
          logBase: this.num(),
          resolvedSeq: this.num(),
          held: r.chance(0.7) ? [] : [{ from: version + 2, to: version + 2 + r.int(0, 300) }],
        };
      }
      case MsgType.Ack:
        return { type: MsgType.Ack, largestPn: this.num(), ackDelayMs: this.num() };
      case MsgType.Propose:
        return {
          type: MsgType.Propose,
          register,
          base: this.num(),
          candidates: this.list(() => ({ origin: r.int(0, 3), seq: this.num(), delta: this.entryDelta(false) }), 40),
        };
      case MsgType.Collapse:
        return {
          type: MsgType.Collapse,
          register,
          version: this.num(),
          hash: this.hash(),
          entries: this.list(
            () =>
              r.chance(0.5)
                ? { origin: r.int(0, 3), seq: this.num(), verdict: 'committed', delta: this.entryDelta(true) }
                : { origin: r.int(0, 3), seq: this.num(), verdict: 'rejected', reason: r.int(1, 4) },
            40,
          ),
        };
      case MsgType.ReconReq:
        return {
          type: MsgType.ReconReq,
          register,
          targetVersion: this.num(),
          flags,
          prefixes: this.list(() => {
            const depth = r.int(0, 8);
            return { depth, prefix: r.int(0, 16 ** depth - 1) };
          }, 256),
        };
      case MsgType.ReconNode:
        return {
          type: MsgType.ReconNode,
          register,
          targetVersion: this.num(),
          depth: r.int(0, 7),
          prefix: r.int(0, 15),
          children: Array.from({ length: 16 }, () => ({ count: this.num(), hash: this.hash() })),
        };
      case MsgType.ReconEntries: {
        const parts = r.pick([1, 1, 2, 4096]);
        return {
          type: MsgType.ReconEntries,
          register,
          targetVersion: this.num(),
          depth: r.int(0, 8),
          prefix: r.int(0, 15),
          part: r.int(0, parts - 1),
          parts,
          entries: this.list(() => this.entry(), 30),
        };
      }
      case MsgType.ReconMeta:
        return {
          type: MsgType.ReconMeta,
          register,
          targetVersion: this.num(),
          hash: this.hash(),
          size: this.num(),
          origins: this.list(() => ({ origin: r.int(0, 3), seq: this.num() }), 8),
          rejections: this.list(() => ({ origin: r.int(0, 3), seq: this.num(), reason: r.int(1, 4) }), 8),
        };
      case MsgType.SnapReq:
        return { type: MsgType.SnapReq, register, targetVersion: this.num(), flags, fromChunk: this.num() };
      case MsgType.SnapChunk: {
        const chunks = r.pick([1, 2, 16, 1 << 24, this.num() + 1]);
        return {
          type: MsgType.SnapChunk,
          register,
          targetVersion: this.num(),
          chunk: r.int(0, Math.min(chunks, 2 ** 31) - 1),
          chunks,
          entries: this.list(() => this.entry(), 30),
        };
      }
      case MsgType.StreamReq:
        return { type: MsgType.StreamReq, register, targetVersion: this.num(), flags, offset: this.num() };
      default:
        return { type: MsgType.StreamData, register, targetVersion: this.num(), offset: this.num(), data: this.bytes(1200) };
    }
  }

  /** A Manifest (§3.6.15): the victim's registers and others, kinds and limits at the edges, the digest mostly right. */
  private manifest(): Message {
    const r = this.rng;
    const entries = this.list(
      () => ({
        name: r.chance(0.1) ? `r${r.int(0, 9)}` : r.pick(this.registers),
        kind: r.pick([1, 2, 0, 255]),
        limits: this.list(() => this.num(), 16).map((value, i) => ({ id: i + 1, value })),
      }),
      40,
    );
    const parts = r.pick([1, 1, 2, 256]);
    return {
      type: MsgType.Manifest,
      flags: r.int(0, 3),
      digest: r.chance(0.8) ? manifestDigest(entries) : r.int(0, 2 ** 32 - 1),
      part: r.int(0, parts - 1),
      parts,
      entries,
    };
  }

  /** The large message whose pieces the fuzz sends (so some complete), and its id. */
  private big: { msgId: number; raw: Uint8Array; count: number } | undefined;

  /**
   * A Fragment: mostly a piece of the current large message (an encoded message of a few KiB,
   * valid or not, so reassembly completes and hands hostile content to the registers), else a
   * piece of a random layout under a colliding id (contradictions, quota pressure).
   */
  private fragment(): Message {
    const r = this.rng;
    if (!this.big || r.chance(0.02)) {
      let raw: Uint8Array;
      try {
        const m = this.message();
        raw = m.type === MsgType.Fragment || m.type === MsgType.FragmentAck ? r.bytes(3000) : encodeMessage(m);
      } catch {
        raw = r.bytes(3000);
      }
      if (raw.length < 1500) raw = Uint8Array.from([...raw, ...r.bytes(1500 - raw.length + r.int(0, 4000))]);
      this.big = { msgId: r.int(0, 20), raw, count: Math.ceil(raw.length / 1300) };
    }
    if (r.chance(0.7)) {
      const { msgId, raw, count } = this.big;
      const index = r.int(0, count - 1);
      const f = Math.ceil(raw.length / count);
      return {
        type: MsgType.Fragment,
        msgId,
        total: raw.length,
        count,
        index,
        bytes: raw.subarray(index * f, Math.min(raw.length, (index + 1) * f)),
      };
    }
    const total = r.chance(0.8) ? r.int(1500, 20_000) : r.int(1500, 8_000_000);
    const count = Math.ceil(total / r.int(1000, 1300));
    const index = r.int(0, count - 1);
    const f = Math.ceil(total / count);
    return {
      type: MsgType.Fragment,
      msgId: r.int(0, 20),
      total,
      count,
      index,
      bytes: r.bytes(Math.max(0, Math.min(f, total - index * f))),
    };
  }

  private fragmentAck(): Message {
    const r = this.rng;
    const ranges: { from: number; to: number }[] = [];
    let floor = 0;
    for (let i = this.small(32); i > 0; i--) {
      const from = floor + r.int(0, 3);
      const to = from + r.int(0, r.chance(0.1) ? 60_000 : 20);
      ranges.push({ from, to });
      floor = to + 2;
    }
    return { type: MsgType.FragmentAck, msgId: r.int(0, 20), ranges };
  }

  /** One payload: random octets (30%), or 1-3 encoded messages, mutated one time in three. */
  payload(): Uint8Array {
    const r = this.rng;
    if (r.chance(0.3)) return r.bytes(r.int(0, r.chance(0.1) ? MAX_PAYLOAD_LEN : 64));
    const parts: Uint8Array[] = [];
    for (let i = r.int(1, 3); i > 0; i--) {
      try {
        parts.push(encodeMessage(this.message()));
      } catch {
        parts.push(r.bytes(r.int(1, 40))); // a field the encoder refuses: send noise instead
      }
    }
    let out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const p of parts) {
      out.set(p, at);
      at += p.length;
    }
    if (r.chance(0.33)) {
      out = out.slice();
      for (let i = r.int(1, 4); i > 0 && out.length > 0; i--) {
        const pos = r.int(0, out.length - 1);
        if (r.chance(0.7)) out[pos] = r.int(0, 255);
        else out = out.subarray(0, pos);
      }
    }
    return out.length > MAX_PAYLOAD_LEN ? out.subarray(0, MAX_PAYLOAD_LEN) : out;
  }
}
