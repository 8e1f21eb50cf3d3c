/**
 * What a configured peer can make spookd log through its pair's lifecycle. Every Manifest that
 * differs from the last one (a register name changed) is a new `register-mismatch`, recorded as a
 * DECOHERENT → DECOHERENT transition, and one that matches after one that does not moves the pair
 * DECOHERENT → REENTANGLING → DECOHERENT: before, each such transition was an info line of its
 * own (~300 octets for a ~10-octet Manifest, ~40 to a datagram), without any limit.
 * Now each transition of a peer's pair is logged at most once per 10 s, the rest counted.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { Spookd } from '../drivers/daemon/spookd.js';
import { encodeKey } from '../drivers/daemon/keys.js';
import { configOf, inProcess, until } from './inproc.js';
import { portBase } from './ports.js';
import { encodeMessage, MsgType, type ManifestEntry } from '../wire/messages.js';
import { manifestDigest } from '../core/pair/manifest.js';
import { PairState } from '../core/pair/lifecycle.js';
import { WarnLimiter } from '../core/util/warn-limiter.js';

const lab = inProcess('spook-log-limits', ['a', 'b'], portBase('spookd-log-limits.test.ts'));
const lines: string[] = [];
let a: Spookd;

beforeAll(async () => {
  // b has no endpoint: a waits for it, and what "b" sends is put into a's pair below.
  const cfg = configOf(lab, 'a', [], { peers: [{ name: 'b', publicKey: encodeKey(lab.keys.b.publicKey) }] });
  a = new Spookd(cfg, lab.keys.a, pino({ level: 'info' }, { write: (s: string) => void lines.push(s) }));
  await a.start();
});

afterAll(async () => {
  await a?.stop();
  rmSync(lab.dir, { recursive: true, force: true });
});

const manifest = (entries: ManifestEntry[]): Buffer =>
  Buffer.from(encodeMessage({ type: MsgType.Manifest, flags: 0, digest: manifestDigest(entries), part: 0, parts: 1, entries }));

/** `payload` as the pair gets an authentic datagram of b's (the driver's own path after the AEAD). */
let pn = 0;
function deliver(payload: Buffer): void {
  const link = a.link('b');
  (a as unknown as { forPeer(l: unknown, what: string, fn: () => void): void }).forPeer(link, 'data frame', () => {
    link.pair.handlePayload(a.now(), pn++, payload);
    a.pump(link);
  });
}

/** An event of a's peer table, as the table reports it. */
const tableEvent = (ev: unknown): void =>
  (a as unknown as { onTableEvent(now: number, ev: unknown, touched: Set<unknown>): void }).onTableEvent(a.now(), ev, new Set());

const lifecycleLines = (): string[] => lines.filter((l) => l.includes('"msg":"lifecycle"'));

describe('what peers and senders can make spookd log', () => {
  it('differing manifests, 40 to a datagram: a few lines, not one each', async () => {
    const link = a.link('b');
    const wrong = (name: string): ManifestEntry[] => [{ name, kind: 1, limits: [] }];
    const datagram = Buffer.concat(Array.from({ length: 40 }, (_, i) => manifest(wrong(i % 2 ? 'x' : 'y'))));
    const before = lifecycleLines().length;
    for (let i = 0; i < 100; i++) deliver(datagram);
    await until('the pair decoherent', () => link.pair.state === PairState.DECOHERENT);
    await new Promise((r) => setTimeout(r, 300));
    const n = lifecycleLines().length - before;
    const octets = lifecycleLines()
      .slice(before)
      .reduce((s, l) => s + l.length, 0);
    console.log(`100 datagrams of ${datagram.length} octets: ${n} lifecycle lines, ${octets} octets logged`);
    expect(n).toBeLessThanOrEqual(5);
  });

  it('a manifest that matches, then one that does not, over and over: a few lines', async () => {
    const link = a.link('b');
    const own = (link.pair as unknown as { manifest: { entries: ManifestEntry[] } }).manifest.entries;
    const right = manifest(own);
    const wrong = manifest([{ name: 'z', kind: 1, limits: [] }]);
    const before = lifecycleLines().length;
    for (let i = 0; i < 500; i++) deliver(i % 2 ? wrong : right);
    await new Promise((r) => setTimeout(r, 300));
    const n = lifecycleLines().length - before;
    console.log(`500 datagrams of ${right.length}/${wrong.length} octets: ${n} lifecycle lines`);
    expect(n).toBeLessThanOrEqual(5);
    // What the lines left out is counted.
    expect(a.warns.suppressed).toBeGreaterThan(0);
  });

  it('a pair that flaps and stays down: a line says where it ended, though the last transition was within the limit', async () => {
    const link = a.link('b');
    // The limit's window, shortened (10 s in the daemon) so the test need not wait for it.
    // (What the tests above owe is dropped: it would be logged only at the end of their 10 s window.)
    const d = a as unknown as { lifecycleLines: WarnLimiter; lifecycleShown?: Map<string, { owed?: NodeJS.Timeout }> };
    d.lifecycleLines = new WarnLimiter(200, 1 << 16);
    for (const s of d.lifecycleShown?.values() ?? []) clearTimeout(s.owed);
    d.lifecycleShown?.clear();
    const { ENTANGLED: E, DECOHERENT: D, REENTANGLING: R } = PairState;
    // An honest link that fails, recovers and fails again within the window: the pair ends DECOHERENT.
    const events = [
      [E, D, 'silence'],
      [D, R, 'reentangle'],
      [R, E, 'reentangled'],
      [E, D, 'silence'],
    ].map(([from, to, cause]) => ({ type: 'lifecycle', from, to, cause }));
    const pair = link.pair as unknown as { pollEvent(): unknown; state: PairState };
    const poll = pair.pollEvent.bind(pair);
    Object.defineProperty(pair, 'state', { configurable: true, get: () => D });
    pair.pollEvent = () => events.shift();
    const before = lifecycleLines().length;
    try {
      (a as unknown as { publish(l: unknown): void }).publish(link);
      await new Promise((r) => setTimeout(r, 600));
    } finally {
      pair.pollEvent = poll;
      delete (pair as { state?: unknown }).state;
    }
    const shown = lifecycleLines()
      .slice(before)
      .map((l) => JSON.parse(l) as { from: string; to: string });
    console.log(`lines: ${shown.map((l) => `${l.from}>${l.to}`).join(', ')}`);
    // What the log says last is where the pair is.
    expect(shown.at(-1)?.to).toBe(D);
  });

  it('refused handshakes from 1,100 addresses leave the warnings about a peer logged', async () => {
    for (let i = 0; i < 1100; i++)
      tableEvent({ type: 'handshake-refused', from: { address: `10.0.${i >> 8}.${i & 255}`, port: 51820 }, detail: 'unauthorized-key' });
    const refused = lines.filter((l) => l.includes('handshake refused from')).length;
    tableEvent({ type: 'handshake-unanswered', peer: 'b', to: { address: '127.0.0.1', port: 9 }, attempts: 5 });
    const unanswered = lines.filter((l) => l.includes('peer b at 127.0.0.1:9 has not answered 5 handshakes')).length;
    console.log(`refused lines ${refused}; the unanswered warning about b logged: ${unanswered}`);
    expect(refused).toBeLessThanOrEqual(1025);
    expect(unanswered).toBe(1);
  });
});
