/**
 * Review 39n-3 (CPU per message, differences): a `snapDiff` is checked at its own cost before the
 * member copies its state (readDiff), and a member installs at most one difference per electionMs
 * ('diff-rate'). But diffInstalledAt is set only once the install SUCCEEDS (core/qn/raft.ts
 * installDiff), and a difference can pass readDiff (digest included: the leader computes it from
 * the versions and hashes it names) and still fail afterwards: one that names a register at a
 * version below the versions of the entries it does not list. patch() then copies the whole state
 * (snapshot() + load()), patches it, encodes it again (snapshot()), and installSnapshot's
 * restore() refuses it ("entry.version exceeds" the register's): 'bad-snapshot', nothing
 * installed, no rate applied. A member playing leader repeats the same ~40-octet message: each
 * costs the victim three passes over its whole state.
 */
import { describe, expect, it } from 'vitest';
import { HAND, handMember } from './helpers.js';
import { type DomainNode } from '../core/qn/node.js';
import { type RaftMsg } from '../core/qn/raft.js';
import { encodeCandidate, type CandidateOp } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import { Writer } from '../wire/buffer.js';
import { encodeEnvelope } from '../wire/qn.js';

const { self: SELF, adv: ADV, domain: DOMAIN } = HAND;
const KEYS = 100_000;

const member = (): DomainNode => handMember({ electionMs: 1000 });

function drain(n: DomainNode): void {
  for (let r = n.ready(); r; r = n.ready()) n.advance();
}

function send(n: DomainNode, now: number, body: RaftMsg): void {
  n.handleDatagram(now, ADV, encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body }));
  drain(n);
}

describe('a difference that passes its checks and fails to restore is not rate-limited', () => {
  it('a member does not copy its whole state for each such difference', () => {
    const n = member();
    const enc = new TextEncoder();
    // KEYS keys, committed by ADV as leader (256 sets per candidate).
    let index = 0;
    let now = 10;
    for (let seq = 1; seq * 256 <= KEYS;) {
      const entries: { term: number; cmd: Uint8Array }[] = [];
      for (let j = 0; j < 64 && seq * 256 <= KEYS; j++, seq++) {
        const ops: CandidateOp[] = [];
        for (let k = 0; k < 256; k++)
          ops.push({
            register: 'kv',
            delta: { op: DeltaOp.Set, key: enc.encode(`key-${seq}-${k}`), value: enc.encode(`value-${seq}-${k}`) },
          });
        entries.push({ term: 1, cmd: encodeCandidate({ origin: ADV, seq, ops }) });
      }
      send(n, now++, { t: 'append', term: 1, prevIndex: index, prevTerm: index === 0 ? 0 : 1, commit: index + entries.length, entries });
      index += entries.length;
    }
    const reg = n.state.registers.get('kv')!;
    expect(n.raft.applied).toBe(index);
    expect(reg.state.size()).toBeGreaterThan(KEYS - 256);

    // The attack: a difference from our commit index to 64 past it, naming kv at version 0 and no
    // entries. Its digest is the state's with kv at version 0 (what a leader holding the same state computes).
    const base = n.raft.commit;
    const to = base + 64;
    const h = reg.state.hash;
    const d = n.state.digest(new Map([['kv', { version: 0, hash: { hi: h.hi, lo: h.lo } }]]));
    const data = new Writer(64)
      .varint(to)
      .varint(base)
      .u32(d.hi)
      .u32(d.lo)
      .varint(1)
      .lenBytes(enc.encode('kv'))
      .u8(1)
      .varint(0)
      .varint(0)
      .varint(0)
      .varint(0)
      .finish();
    const msg: RaftMsg = {
      t: 'snap',
      term: 1,
      index: to,
      lastTerm: 1,
      members: [SELF, ADV, 30],
      base,
      baseTerm: 1,
      offset: 0,
      total: data.length,
      data,
    };
    const octets = encodeEnvelope({ domain: DOMAIN, from: ADV, to: SELF, ttl: 1, body: msg }).length;

    // For scale: a difference the digest check refuses (at its own cost).
    const wrong = new Uint8Array(data);
    wrong[4] ^= 1; // a digest octet (after the two 2-octet varints)
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) send(n, now++, { ...msg, data: wrong });
    const cheap = (performance.now() - t0) / 20;

    const ROUNDS = 10;
    const t1 = performance.now();
    for (let i = 0; i < ROUNDS; i++) send(n, now++, msg); // within one electionMs (1 ms apart)
    const each = (performance.now() - t1) / ROUNDS;
    console.log(
      `${reg.state.size()} keys: a ${octets}-octet snapDiff refused by its digest costs ${cheap.toFixed(3)} ms; ` +
        `one that passes it and fails to restore ${each.toFixed(1)} ms, ${ROUNDS} of them within ${ROUNDS} ms ` +
        `(bad-snapshot ${n.stats.drops['bad-snapshot']}, diff-rate ${n.stats.drops['diff-rate'] ?? 0}, installed ${n.raft.stats.diffsInstalled})`,
    );
    expect(n.raft.stats.diffsInstalled).toBe(0);
    expect(n.fencedCause).toBeUndefined();
    // At most one such state-sized copy per electionMs: the other nine are refused ('diff-rate') at the cost of a message.
    expect(n.stats.drops['diff-rate'] ?? 0).toBeGreaterThanOrEqual(ROUNDS - 1);
  }, 120_000);
});
