import { afterEach, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { resolveFormat, syslogPriority } from '../drivers/daemon/logger.js';
import { configOf, inProcess, until, write } from './inproc.js';
import { portBase } from './ports.js';
import { generateKeyPair } from '../crypto/primitives.js';

/** What an operator reads: warnings for silent failures (once), routine writes kept out of info, keys in base64. */
const running: Spookd[] = [];
const dirs: string[] = [];
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

type Line = { level: number; msg: string } & Record<string, unknown>;
const capture = (level: string): { log: ReturnType<typeof pino>; lines: Line[] } => {
  const lines: Line[] = [];
  return { log: pino({ level }, { write: (s: string) => void lines.push(JSON.parse(s) as Line) }), lines };
};

describe('log levels and formats', () => {
  it('maps pino levels to syslog priorities, and picks the journal format under systemd', () => {
    expect([60, 50, 40, 30, 20, 10].map(syslogPriority)).toEqual([2, 3, 4, 6, 7, 7]);
    expect(resolveFormat('auto', { JOURNAL_STREAM: '8:1234' }, false, '8:1234')).toBe('journal');
    // Inherited by a child whose stdout is a pipe or a file: not the journal.
    expect(resolveFormat('auto', { JOURNAL_STREAM: '8:1234' }, false, '12:99')).toBe('json');
    expect(resolveFormat('auto', {}, false, '8:1234')).toBe('json');
    expect(resolveFormat('auto', { JOURNAL_STREAM: '8:1234' }, true, '8:1234')).toBe('pretty');
    expect(resolveFormat('json', { JOURNAL_STREAM: '8:1234' }, false, '8:1234')).toBe('json');
  });
});

describe('spookd warnings', () => {
  it('warns once that a peer endpoint never answers, naming it and this host key in base64', async () => {
    const p = inProcess('spook-log-unanswered', ['a', 'b'], portBase('logging.test.ts'));
    dirs.push(p.dir);
    const { log, lines } = capture('info');
    // b is configured but never started: nothing answers at its endpoint.
    const a = new Spookd(configOf(p, 'a', ['b']), p.keys.a, log);
    running.push(a);
    await a.start();
    const unanswered = (): Line[] => lines.filter((l) => l.level === 40 && /has not answered/.test(l.msg));
    await until('the unanswered-handshake warning', () => unanswered().length > 0, 20_000);
    const w = unanswered()[0];
    expect(w.peer).toBe('b');
    expect(w.endpoint).toBe(`127.0.0.1:${p.port.b}`);
    expect(w.attempts).toBeGreaterThanOrEqual(3);
    expect(w.msg).toContain(encodeKey(p.keys.a.publicKey));
    // Retries go on every 2 s; the warning does not (one a minute per peer).
    await until('two more handshakes', () => a.table.peer('b')!.handshakesSent >= 5, 20_000);
    expect(unanswered()).toHaveLength(1);
    expect(a.table.peer('b')!.sessionsEstablished).toBe(0);
  }, 40_000);

  it('names an unauthorised key in base64, as keys are written in the configuration', async () => {
    const p = inProcess('spook-log-refused', ['a', 'b'], portBase('logging.test.ts') + 2);
    dirs.push(p.dir);
    const { log, lines } = capture('info');
    // b's configuration lists a, but a knows b under another key.
    const wrong = generateKeyPair();
    const aCfg = configOf(p, 'a', ['b']);
    aCfg.peers[0].publicKey = encodeKey(wrong.publicKey);
    const a2 = new Spookd(aCfg, p.keys.a, log);
    const b = new Spookd(configOf(p, 'b', ['a']), p.keys.b, pino({ level: 'silent' }));
    running.push(a2, b);
    await a2.start();
    await b.start();
    const refused = (): Line[] => lines.filter((l) => l.level === 40 && /handshake refused/.test(l.msg));
    await until('the refused-handshake warning', () => refused().length > 0, 20_000);
    expect(refused()[0].msg).toContain(encodeKey(p.keys.b.publicKey));
    expect(refused()[0].msg).not.toMatch(/[0-9a-f]{64}/);
  }, 40_000);

  it('logs a committed write at debug only: nothing at info per write', async () => {
    const p = inProcess('spook-log-writes', ['a', 'b'], portBase('logging.test.ts') + 4);
    dirs.push(p.dir);
    const { log, lines } = capture('debug');
    const a = new Spookd(configOf(p, 'a', ['b']), p.keys.a, log);
    const b = new Spookd(configOf(p, 'b', ['a']), p.keys.b, pino({ level: 'silent' }));
    running.push(a, b);
    await Promise.all([a.start(), b.start()]);
    await until('entangled', () => a.link('b').pair.state === 'ENTANGLED');
    // Start-up's own info lines end with the wrappers' carrier to the peer: not a write's doing.
    await until('the carrier up', () => lines.some((l) => l.msg === 'carrier up'));
    const before = lines.length;
    for (let i = 0; i < 5; i++) {
      const v = a.link('b').pair.register('config').version;
      write(a, 'b', `k${i}`);
      await until(`write ${i} committed`, () => a.link('b').pair.register('config').version > v && a.link('b').pair.state === 'ENTANGLED');
    }
    const during = lines.slice(before);
    // The writes did run through the lifecycle (seen at debug), and none of it reached info.
    expect(during.filter((l) => l.level === 20 && l.msg === 'lifecycle' && l.to === 'COLLAPSING').length).toBeGreaterThanOrEqual(5);
    expect(during.filter((l) => l.level >= 30)).toEqual([]);
  }, 40_000);
});
