/**
 * Register manifests (docs/PROTOCOL.md §3.6.15, §6.3). Each end of a pair states the registers
 * it declares (name, kind, and the limits that change what a collapse decides); a pair forms
 * only once the peer's manifest is known to equal this end's, and a difference decoheres it
 * with cause `register-mismatch`, naming each register that differs and how. Without this, two
 * hosts configured differently fail silently (one end ENTANGLED, the other FORMING for good).
 *
 * Here: building this end's manifest and its parts, reassembling the peer's (bounded: at most
 * MAX_MANIFEST_PARTS parts and MAX_MANIFEST_REGISTERS entries in memory), and comparing them.
 * The exchange itself (when to send, flags) is the HalfPair's.
 */
import { Writer } from '../../wire/buffer.js';
import { PairSnapshotKind } from '../../wire/journal.js';
import {
  MAX_MANIFEST_PARTS,
  MAX_MANIFEST_REGISTERS,
  MsgType,
  writeManifestEntry,
  type ManifestEntry,
  type ManifestMsg,
} from '../../wire/messages.js';
import { murmur3 } from '../register/hash.js';
import type { RegisterConfig } from './types.js';

/** The limits a manifest carries (§3.6.15): both ends must configure them alike, or collapse decides differently. */
export enum ManifestLimitId {
  /** quota.maxKeys (map registers only). */
  MaxKeys = 1,
  /** quota.maxBytes. */
  MaxBytes = 2,
  /** quota.maxValueBytes: the two ends must agree on what a collapse may commit and what a follower must take. */
  MaxValueBytes = 3,
}
const LIMIT_NAMES: Record<number, string> = {
  [ManifestLimitId.MaxKeys]: 'maxKeys',
  [ManifestLimitId.MaxBytes]: 'maxBytes',
  [ManifestLimitId.MaxValueBytes]: 'maxValueBytes',
};
const limitName = (id: number): string => LIMIT_NAMES[id] ?? `limit ${id}`;
const kindName = (k: number): string => (k === PairSnapshotKind.Map ? 'map' : k === PairSnapshotKind.Stream ? 'stream' : `kind ${k}`);

/** Entry bytes per Manifest part: with its header and an Ack it fits the smallest payload a pair accepts (1400). */
const PART_BUDGET = 1000;

/** How one register differs between the two manifests, from this end's point of view. */
export type ManifestDiff =
  | { register: string; how: 'missing-at-peer' }
  | { register: string; how: 'missing-here' }
  | { register: string; how: 'kind'; here: string; peer: string }
  | { register: string; how: 'limit'; limit: string; here: number | null; peer: number | null };

/** What this end declares for one register. */
export function manifestEntry(cfg: Pick<RegisterConfig, 'name' | 'kind' | 'quota'>): ManifestEntry {
  const bytes = { id: ManifestLimitId.MaxBytes, value: cfg.quota.maxBytes };
  const value = { id: ManifestLimitId.MaxValueBytes, value: cfg.quota.maxValueBytes };
  return cfg.kind === 'map'
    ? { name: cfg.name, kind: PairSnapshotKind.Map, limits: [{ id: ManifestLimitId.MaxKeys, value: cfg.quota.maxKeys }, bytes, value] }
    : { name: cfg.name, kind: PairSnapshotKind.Stream, limits: [bytes, value] };
}

function entryBytes(e: ManifestEntry): Uint8Array {
  const w = new Writer(96);
  writeManifestEntry(w, e);
  return w.finish();
}

/** The digest a manifest's parts carry: Murmur3 (seed 0) of its entries' encodings, in order. */
export function manifestDigest(entries: readonly ManifestEntry[]): number {
  const w = new Writer(256);
  for (const e of entries) writeManifestEntry(w, e);
  return murmur3(0, w.finish());
}

/** This end's manifest, split into parts that each fit one payload. */
export class OwnManifest {
  readonly digest: number;
  private readonly parts: ManifestEntry[][] = [];

  constructor(readonly entries: readonly ManifestEntry[]) {
    if (entries.length > MAX_MANIFEST_REGISTERS)
      throw new RangeError(`${entries.length} registers on one pair; a manifest holds at most ${MAX_MANIFEST_REGISTERS}`);
    this.digest = manifestDigest(entries);
    let part: ManifestEntry[] = [];
    let size = 0;
    for (const e of entries) {
      const n = entryBytes(e).length;
      if (part.length > 0 && size + n > PART_BUDGET) {
        this.parts.push(part);
        part = [];
        size = 0;
      }
      part.push(e);
      size += n;
    }
    this.parts.push(part); // an empty manifest is one empty part
    if (this.parts.length > MAX_MANIFEST_PARTS)
      throw new RangeError(`manifest needs ${this.parts.length} parts; at most ${MAX_MANIFEST_PARTS}`);
  }

  /** Every part, with these flags. */
  messages(flags: number): ManifestMsg[] {
    return this.parts.map((entries, part) => ({
      type: MsgType.Manifest,
      flags,
      digest: this.digest,
      part,
      parts: this.parts.length,
      entries,
    }));
  }
}

export type Assembled =
  | { kind: 'pending' }
  | { kind: 'complete'; entries: ManifestEntry[]; flags: number }
  /** The parts do not make a valid manifest (a peer violation): dropped, assembly restarts. */
  | { kind: 'invalid'; detail: string };

/**
 * The peer's manifest, reassembled from its parts (any order, duplicates ignored). Parts of
 * another digest or part count start a new assembly: at most one is held, and it holds at
 * most MAX_MANIFEST_REGISTERS entries.
 */
export class ManifestAssembly {
  private digest = -1;
  private parts = 0;
  private readonly got = new Map<number, ManifestEntry[]>();
  private count = 0;

  accept(m: ManifestMsg): Assembled {
    if (m.digest !== this.digest || m.parts !== this.parts) {
      this.reset();
      this.digest = m.digest;
      this.parts = m.parts;
    }
    if (!this.got.has(m.part)) {
      if (this.count + m.entries.length > MAX_MANIFEST_REGISTERS) {
        this.reset();
        return { kind: 'invalid', detail: `manifest holds more than ${MAX_MANIFEST_REGISTERS} registers` };
      }
      this.got.set(m.part, m.entries);
      this.count += m.entries.length;
    }
    if (this.got.size < this.parts) return { kind: 'pending' };
    const entries: ManifestEntry[] = [];
    for (let i = 0; i < this.parts; i++) entries.push(...this.got.get(i)!);
    this.reset();
    const names = new Set<string>();
    for (const e of entries) {
      if (names.has(e.name)) return { kind: 'invalid', detail: `register ${JSON.stringify(e.name)} listed twice` };
      names.add(e.name);
    }
    if (manifestDigest(entries) !== m.digest) return { kind: 'invalid', detail: 'digest does not match the parts' };
    return { kind: 'complete', entries, flags: m.flags };
  }

  private reset(): void {
    this.got.clear();
    this.count = 0;
    this.digest = -1;
    this.parts = 0;
  }
}

/** Every register that differs, in name order (empty: the manifests are equal). */
export function diffManifests(here: readonly ManifestEntry[], peer: readonly ManifestEntry[]): ManifestDiff[] {
  const theirs = new Map(peer.map((e) => [e.name, e]));
  const ours = new Map(here.map((e) => [e.name, e]));
  const out: ManifestDiff[] = [];
  for (const e of here) {
    const p = theirs.get(e.name);
    if (!p) {
      out.push({ register: e.name, how: 'missing-at-peer' });
      continue;
    }
    if (p.kind !== e.kind) {
      out.push({ register: e.name, how: 'kind', here: kindName(e.kind), peer: kindName(p.kind) });
      continue;
    }
    const ids = [...new Set([...e.limits.map((l) => l.id), ...p.limits.map((l) => l.id)])].sort((x, y) => x - y);
    for (const id of ids) {
      const a = e.limits.find((l) => l.id === id)?.value ?? null;
      const b = p.limits.find((l) => l.id === id)?.value ?? null;
      if (a !== b) out.push({ register: e.name, how: 'limit', limit: limitName(id), here: a, peer: b });
    }
  }
  for (const p of peer) if (!ours.has(p.name)) out.push({ register: p.name, how: 'missing-here' });
  return out.sort((x, y) => (x.register < y.register ? -1 : x.register > y.register ? 1 : 0));
}

const MAX_DESCRIBED = 8;

/** One diff in words, `peer` naming the other end (its configured name when the driver knows it). */
export function describeDiff(d: ManifestDiff, peer = 'the peer'): string {
  switch (d.how) {
    case 'missing-at-peer':
      return `register ${d.register} missing at ${peer}`;
    case 'missing-here':
      return `register ${d.register} missing here (declared at ${peer})`;
    case 'kind':
      return `register ${d.register} kind ${d.here} here vs ${d.peer} at ${peer}`;
    case 'limit':
      return `register ${d.register} ${d.limit} ${d.here ?? 'unset'} here vs ${d.peer ?? 'unset'} at ${peer}`;
  }
}

/** Every diff in words (the first MAX_DESCRIBED, then how many more). */
export function describeDiffs(diffs: readonly ManifestDiff[], peer?: string): string {
  const shown = diffs.slice(0, MAX_DESCRIBED).map((d) => describeDiff(d, peer));
  if (diffs.length > MAX_DESCRIBED) shown.push(`and ${diffs.length - MAX_DESCRIBED} more`);
  return shown.join('; ');
}
