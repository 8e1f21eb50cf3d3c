import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Lab, until } from '../../testing/lab/netns.js';
import { openRegister, SpookError, type Outcome, type RegisterHandle } from '../../client/index.js';

/**
 * The library against real spookd processes in two network namespaces (created and always
 * removed by the test): one register handle lives through kill -9 and a restart of its spookd,
 * and every write it was told is committed is there afterwards, at both ends.
 */
let lab: Lab;

beforeAll(async () => {
  lab = new Lab(['a', 'b'], [{ a: 'a', b: 'b', subnet: 81 }], 47900);
  for (const h of ['a', 'b']) lab.configure(h, [{ name: 'config', kind: 'map', policy: 'buffer', maxPending: 4096 }], { logLevel: 'info' });
  await Promise.all(['a', 'b'].map((h) => lab.start(h)));
}, 60_000);

afterAll(async () => {
  await lab?.destroy();
}, 30_000);

describe('the library across kill -9 of its spookd', () => {
  it('one handle keeps working after kill -9 and restart; every committed write survives at both ends; no call hangs', async () => {
    const reg: RegisterHandle = await openRegister('config', { peer: 'b', socket: lab.host('a').socket });
    try {
      await until('entangled', async () => (await reg.set('warmup', '1', { timeoutMs: 2_000 })).verdict === 'committed', 20_000, 200);
      const committed = new Map<string, string>();
      const failures = new Map<string, number>();
      let stop = false;
      let n = 0;
      // 16 writers, each waiting for its outcome; bounded in count and time.
      const deadline = Date.now() + 40_000;
      const writer = async (): Promise<void> => {
        while (!stop && n < 5_000 && Date.now() < deadline) {
          const key = `k${n++}`;
          try {
            const o: Outcome = await reg.set(key, `v-${key}`, { timeoutMs: 5_000 });
            if (o.verdict === 'committed') committed.set(key, `v-${key}`);
          } catch (e) {
            // The daemon died under the call: it ends with a code, never hangs and never claims success.
            expect(e).toBeInstanceOf(SpookError);
            const code = (e as SpookError).code;
            expect(['connection-closed', 'timeout', 'daemon-not-running']).toContain(code);
            failures.set(code, (failures.get(code) ?? 0) + 1);
          }
        }
      };
      const work = Promise.all(Array.from({ length: 16 }, writer));
      await until('some commits', async () => committed.size >= 50, 20_000, 20);
      await lab.kill9('a');
      const atKill = committed.size;
      await lab.start('a');
      await until('commits after the restart, on the same handle', async () => committed.size >= atKill + 50, 30_000, 50);
      stop = true;
      await work;
      expect(failures.size, 'calls in flight at the kill ended with a code').toBeGreaterThan(0);
      // Nothing promised is lost: every write reported committed is readable at both ends.
      const other = await openRegister('config', { peer: 'a', socket: lab.host('b').socket });
      try {
        for (const [key, value] of committed) {
          expect((await reg.get(key)).value, `${key} at a`).toBe(value);
          await until(`${key} at b`, async () => (await other.get(key)).value === value, 10_000, 50);
        }
      } finally {
        other.close();
      }
    } finally {
      reg.close();
    }
  }, 120_000);
});
