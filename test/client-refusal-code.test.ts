import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Spookd } from '../drivers/daemon/spookd.js';
import { AdminClient, type SpookError } from '../client/admin-client.js';

import { startSoloSpookd } from './admin-solo.js';

/**
 * spookd refuses a connection with one line of id 0 (`too-busy`: as many admin connections as it
 * allows; `request-too-large`), then closes it. The library dropped that line (no call has id 0) and
 * told every call `connection-closed`, "spookd stopped or restarted": a program that retries on
 * `too-busy` (client/protocol.ts: "Reconnect and retry") never saw it. The calls now end with its code.
 */
const dir = mkdtempSync(join(tmpdir(), 'spook-refusal-'));
const socket = join(dir, 'a.sock');
let d: Spookd;

beforeAll(async () => {
  d = await startSoloSpookd(dir, socket);
});
afterAll(async () => {
  await d?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('a connection spookd refuses', { timeout: 15_000 }, () => {
  it('ends its calls with the refusal (too-busy), not connection-closed', async () => {
    const limits = d.admin!.limits;
    const before = limits.maxConnections;
    limits.maxConnections = 1;
    const first = await AdminClient.connect(socket);
    try {
      await first.request('status');
      const second = await AdminClient.connect(socket);
      const code = await second.request('status', {}, { timeoutMs: 5_000 }).then(
        () => 'answered',
        (e: SpookError) => `${e.code}: ${e.message}`,
      );
      second.close();
      expect(code).toMatch(/^too-busy: spookd has 1 admin connections open/);
    } finally {
      limits.maxConnections = before;
      first.close();
    }
  });
});
