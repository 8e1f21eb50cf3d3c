/** `spook reload`'s exit status (issue 18, review): a reload that refused a change is not reported as success. */
import { describe, expect, it } from 'vitest';
import { describeReload, reloadExit } from '../cli/reload.js';
import type { ReloadReport } from '../client/protocol.js';

const report = (extra: Partial<ReloadReport> = {}): ReloadReport => ({
  config: '/etc/spook/spookd.yaml',
  added: [],
  removed: [],
  rekeyed: [],
  moved: [],
  wrappers: { added: [], removed: [], reset: [], updated: [] },
  allowChanged: false,
  limits: [],
  needRestart: [],
  refused: [],
  ...extra,
});

describe('spook reload', () => {
  it('exits 0 when everything in the file was applied (a restart still needed is said, not a failure)', () => {
    expect(reloadExit(report())).toBe(0);
    expect(reloadExit(report({ needRestart: ['listen'] }))).toBe(0);
  });

  it('exits 1 when a change was refused, the report still printed', () => {
    const r = report({ removed: ['c'], refused: [{ peer: 'b', reason: 'peer b is a member of domain main: change the domain first' }] });
    expect(reloadExit(r)).toBe(1);
    expect(describeReload(r)).toContain('refused     peer b: peer b is a member of domain main');
  });
});
