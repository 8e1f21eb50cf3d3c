/**
 * A difference naming a register at a version below the register's here cannot restore (the
 * entries it does not list keep their versions, up to the register's): readDiff refuses it at
 * the cost of the difference, before the state is copied (qn-diff-restore-rate; PROTOCOL.md §15.4, rev 1.34).
 */
import { describe, expect, it } from 'vitest';
import { DomainState, encodeCandidate, type CandidateOp } from '../core/qn/state.js';
import { DeltaOp } from '../wire/delta.js';
import { Writer } from '../wire/buffer.js';

const enc = (s: string): Uint8Array => new TextEncoder().encode(s);

describe('readDiff refuses a register version below the one here', () => {
  it('before copying the state, whatever its size', () => {
    const st = new DomainState(1, [{ name: 'kv', kind: 'map' }], []);
    let index = 0;
    for (let seq = 1; seq <= 80; seq++) {
      const ops: CandidateOp[] = [];
      for (let k = 0; k < 256; k++) ops.push({ register: 'kv', delta: { op: DeltaOp.Set, key: enc(`k-${seq}-${k}`), value: enc('v') } });
      st.apply({ term: 1, index: ++index, cmd: encodeCandidate({ origin: 7, seq, ops }) });
    }
    const reg = st.registers.get('kv')!;
    expect(reg.version).toBe(80);
    const diffAt = (version: number): Uint8Array => {
      const h = reg.state.hash;
      const d = st.digest(new Map([['kv', { version, hash: { hi: h.hi, lo: h.lo } }]]));
      return new Writer(64)
        .varint(index + 64)
        .varint(index)
        .u32(d.hi)
        .u32(d.lo)
        .varint(1)
        .lenBytes(enc('kv'))
        .u8(1)
        .varint(version)
        .varint(0)
        .varint(0)
        .varint(0)
        .finish();
    };
    // Below: refused; its digest is right, so before rev 1.34 it was copied, then refused by restore.
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) expect(st.patch(diffAt(3), index, index + 64)).toBeUndefined();
    const refused = (performance.now() - t0) / 20;
    const t1 = performance.now();
    const copy = st.patch(diffAt(80), index, index + 64); // the same difference at the register's version: copied and patched
    const patched = performance.now() - t1;
    expect(copy).toBeDefined();
    const fresh = new DomainState(1, [{ name: 'kv', kind: 'map' }], []);
    expect(fresh.restore(copy!, index + 64)).toBe(true);
    console.log(`${reg.state.size()} keys: refused in ${refused.toFixed(3)} ms, a patch that copies ${patched.toFixed(1)} ms`);
    expect(refused).toBeLessThan(Math.max(1, patched / 10));
  });
});
