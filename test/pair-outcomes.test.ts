import { describe, expect, it } from 'vitest';
import { OwnOutcomes } from '../core/pair/outcomes.js';

describe('OwnOutcomes: the last own outcomes of a register, by sequence number', () => {
  it('keeps verdicts, versions, reasons and failed ops; the newest word on a number wins', () => {
    const o = new OwnOutcomes(8);
    o.note(1, { verdict: 'committed' }, 10);
    o.note(2, { verdict: 'rejected', reason: 'cas-version-mismatch', op: 3 }, 11);
    o.note(3, { verdict: 'rejected', reason: 'sequence-reused' }, 12);
    expect(o.get(1)).toEqual({ verdict: 'committed', version: 10 });
    expect(o.get(2)).toEqual({ verdict: 'rejected', reason: 'cas-version-mismatch', op: 3, version: 11 });
    expect(o.get(3)).toEqual({ verdict: 'rejected', reason: 'sequence-reused', version: 12 });
    expect(o.get(4)).toBeUndefined();
    o.note(1, { verdict: 'committed' }, 10);
    expect(o.get(1)).toEqual({ verdict: 'committed', version: 10 });
  });

  it('grows as written, then forgets the oldest past its bound (memory: 24 octets an outcome, at most the bound)', () => {
    const o = new OwnOutcomes(100);
    for (let s = 1; s <= 250; s++)
      o.note(s, s % 7 === 0 ? { verdict: 'rejected', reason: 'quota-exceeded' } : { verdict: 'committed' }, s + 1000);
    expect(o.size).toBe(100);
    expect(o.get(150)).toBeUndefined();
    expect(o.get(151)).toEqual({ verdict: 'committed', version: 1151 });
    expect(o.get(154)).toEqual({ verdict: 'rejected', reason: 'quota-exceeded', version: 1154 });
    expect(o.get(250)).toEqual({ verdict: 'committed', version: 1250 });
  });
});
