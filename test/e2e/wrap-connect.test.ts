/**
 * Honest connects (issue 17; docs/OPERATIONS.md, "What a client sees when it connects"): real
 * node clients in the client namespace connect through wrappers and, in the same run, directly
 * to the same server host, and the two are compared:
 * - a refusing server: direct ECONNREFUSED at once; wrapped, the first connect is reset within a
 *   round trip, and the next one (the refusal remembered in the hook) gets ECONNREFUSED itself;
 * - an unreachable server (no ARP answer): both fail after the neighbour timeout (wrapped: reset),
 *   and the next wrapped connect gets EHOSTUNREACH from the hook;
 * - a silent server (its SYNs vanish): direct, the client's own connect
 *   timeout fires; wrapped, the connection is reset at the wrapper's connect timeout; ssh's
 *   ConnectTimeout fires either way (it covers the banner exchange too);
 * - the serving spookd stopped: `direct` reaches the server as direct does, `refuse` fails at once
 *   (EHOSTUNREACH), `hold` is reset at its connect timeout; a connect made while the carrier is
 *   only briefly gone (within the grace) is held and carried once the serving spookd is back.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { requireRoot, until } from '../../testing/lab/netns.js';
import { CONNECT_PORTS, ConnectLab, SILENT_NET, showOutcome as show } from '../../testing/lab/connects.js';
import { DOWN_GRACE_MS, ERRNO } from '../../core/wrap/connect.js';
import { nsRun } from '../../testing/lab/servers.js';

const { REFUSED, SILENT, HOLD, DIRECT, REFUSE, PLAIN, PLAIN_CLOSED } = CONNECT_PORTS;
const CONNECT_TIMEOUT_MS = 3_000;

let cl: ConnectLab;
let server: string; // the server host's address, from the client
const figures: string[] = [];

const carrier = (): Promise<string> => cl.carrier();

beforeAll(async () => {
  requireRoot();
  cl = await ConnectLab.start({ basePort: 48050, subnet: 72, connectTimeoutMs: CONNECT_TIMEOUT_MS });
  server = cl.server;
}, 60_000);

afterAll(async () => {
  if (figures.length) console.log(`honest connects, wrapped vs direct (same run):\n  ${figures.join('\n  ')}`);
  await cl?.close();
}, 30_000);

describe('honest connects', () => {
  it('a refusing server: direct refused at once; wrapped reset within a round trip, then refused by the hook', async () => {
    const [direct, first, second] = await cl.run([
      { name: 'direct', host: server, port: PLAIN_CLOSED },
      { name: 'wrapped', host: server, port: REFUSED },
      { name: 'wrapped again', host: server, port: REFUSED },
    ]);
    figures.push(`refused: direct ${show(direct)}; wrapped ${show(first)}; wrapped again ${show(second)}`);
    expect(direct).toMatchObject({ connected: false, error: 'ECONNREFUSED' });
    // The first wrapped connect completes locally; the far side's refusal comes back as a reset.
    expect(first).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(first.errorMs!).toBeLessThan(2_000);
    // The next one, within REFUSAL_MEMO_MS, is refused in the connect hook as it would be direct.
    expect(second).toMatchObject({ connected: false, error: 'ECONNREFUSED' });
    expect(second.errorMs!).toBeLessThan(500);
    const st = await cl.lab.admin('cc', 'wrap-stats');
    expect(st.hooks?.memo_refused).toBeGreaterThanOrEqual(1);
    expect(st.connects.refusalsRemembered).toBeGreaterThanOrEqual(1);
    expect(ERRNO.ECONNREFUSED).toBe(111);
  }, 20_000);

  it('an unreachable server (no ARP answer): both fail after the neighbour timeout, the next wrapped connect at once', async () => {
    const nobody = cl.nobody;
    const [direct, first, second] = await cl.run([
      { name: 'direct', host: nobody, port: PLAIN },
      // A wrapper whose connect timeout (30 s) outlasts the far side's neighbour timeout.
      { name: 'wrapped', host: nobody, port: REFUSE },
      { name: 'wrapped again', host: nobody, port: REFUSE },
    ]);
    figures.push(`unreachable: direct ${show(direct)}; wrapped ${show(first)}; wrapped again ${show(second)}`);
    expect(direct).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(first).toMatchObject({ connected: true, error: 'ECONNRESET' });
    // The far side's own neighbour timeout, about the direct one's (both ~3 s), plus a round trip.
    expect(first.errorMs!).toBeLessThan(direct.errorMs! + 3_000);
    expect(second).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(second.errorMs!).toBeLessThan(500);
  }, 30_000);

  it("a silent server: direct, the client's own connect timeout fires; wrapped, reset at the wrapper's connect timeout", async () => {
    const [direct, wrapped] = await cl.run([
      { name: 'direct', host: `${SILENT_NET}.2`, port: PLAIN, connectTimeoutMs: CONNECT_TIMEOUT_MS },
      { name: 'wrapped', host: `${SILENT_NET}.2`, port: SILENT, boundMs: 20_000 },
    ]);
    figures.push(`silent: direct ${show(direct)}; wrapped (connectTimeout ${CONNECT_TIMEOUT_MS} ms) ${show(wrapped)}`);
    expect(direct).toMatchObject({ connected: false, error: 'client-connect-timeout' });
    expect(wrapped).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(wrapped.errorMs!).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 500);
    expect(wrapped.errorMs!).toBeLessThan(CONNECT_TIMEOUT_MS + 5_000);
    expect((await cl.lab.admin('cc', 'wrap-stats')).connects.timedOut).toBeGreaterThanOrEqual(1);
  }, 30_000);

  it('ssh to a silent server: its own ConnectTimeout fires, wrapped (during the banner exchange) as direct', async () => {
    const ssh = async (port: number): Promise<{ ms: number; out: string }> => {
      const t0 = Date.now();
      const r = await nsRun(
        cl.lab.host('cc').ns,
        'ssh',
        [
          '-o',
          'ConnectTimeout=2',
          '-o',
          'BatchMode=yes',
          '-o',
          'StrictHostKeyChecking=no',
          '-p',
          String(port),
          `nobody@${SILENT_NET}.2`,
          'true',
        ],
        { timeoutMs: 20_000 },
      );
      return { ms: Date.now() - t0, out: `${r.code} ${r.stderr.trim()}` };
    };
    const direct = await ssh(PLAIN);
    const wrapped = await ssh(SILENT);
    figures.push(
      `ssh -o ConnectTimeout=2 to a silent server: direct ${direct.ms} ms (${direct.out}); wrapped ${wrapped.ms} ms (${wrapped.out})`,
    );
    expect(direct.out).toMatch(/^255 .*timed out/);
    expect(wrapped.out).toMatch(/^255 .*timed out/);
    // Both at ssh's own 2 s, well before the wrapper's connect timeout would reset it.
    expect(wrapped.ms).toBeLessThan(CONNECT_TIMEOUT_MS + 500);
  }, 30_000);

  it('a connect while the carrier is briefly gone (within the grace) is held and carried when it returns', async () => {
    const stopping = cl.lab.stop('cs');
    await until('the carrier lost', async () => (await carrier()) !== 'up' || undefined, 10_000, 20);
    const lostAt = Date.now();
    // On the `refuse` wrapper: within the grace it is held, never refused.
    const pending = cl.run([{ name: 'during redial', host: server, port: REFUSE, send: 'carried', boundMs: 40_000 }]);
    await stopping;
    await cl.lab.start('cs');
    const [r] = await pending;
    figures.push(`connect ${Date.now() - lostAt} ms before the end, made within the grace of a carrier loss: ${show(r)}`);
    expect(r).toMatchObject({ connected: true, echo: 'carried' });
    await until('the carrier back', async () => (await carrier()) === 'up' || undefined, 20_000);
  }, 60_000);

  it('the serving spookd stopped: direct reaches the server, refuse fails at once, hold resets at its bound', async () => {
    await cl.lab.stop('cs');
    await until('the carrier lost', async () => (await carrier()) !== 'up' || undefined, 10_000, 20);
    // After the grace the hooks apply whenDown.
    await until(
      'the down ports in the hooks',
      async () => {
        const d = (await cl.lab.admin('cc', 'wrap-stats')).connects.downPorts;
        return (d.includes(DIRECT) && d.includes(REFUSE)) || undefined;
      },
      DOWN_GRACE_MS + 10_000,
      50,
    );
    const [plain, direct, refuse, refuse6, hold] = await cl.run([
      { name: 'plain direct', host: server, port: PLAIN, send: 'hello' },
      { name: 'whenDown direct', host: server, port: DIRECT, send: 'hello' },
      { name: 'whenDown refuse', host: server, port: REFUSE, send: 'hello' },
      // A dual-stack socket: the connect6 hook, the destination v4-mapped.
      { name: 'whenDown refuse, IPv6 socket', host: `::ffff:${server}`, port: REFUSE, send: 'hello' },
      { name: 'whenDown hold', host: server, port: HOLD, send: 'hello', boundMs: 20_000 },
    ]);
    figures.push(
      `serving spookd down: plain direct ${show(plain)}; whenDown direct ${show(direct)}; refuse ${show(refuse)}; hold (connectTimeout ${CONNECT_TIMEOUT_MS} ms) ${show(hold)}`,
    );
    expect(plain).toMatchObject({ connected: true, echo: 'hello' });
    expect(direct).toMatchObject({ connected: true, echo: 'hello' });
    expect(refuse).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(refuse.errorMs!).toBeLessThan(500);
    expect(refuse6).toMatchObject({ connected: false, error: 'EHOSTUNREACH' });
    expect(hold).toMatchObject({ connected: true, error: 'ECONNRESET' });
    expect(hold.errorMs!).toBeGreaterThanOrEqual(CONNECT_TIMEOUT_MS - 500);
    expect(hold.errorMs!).toBeLessThan(CONNECT_TIMEOUT_MS + 5_000);
    const st = await cl.lab.admin('cc', 'wrap-stats');
    expect(st.hooks?.down_direct).toBeGreaterThanOrEqual(1);
    expect(st.hooks?.down_refused).toBeGreaterThanOrEqual(1);
    const list = await cl.lab.admin('cc', 'wraps');
    expect(list.find((x) => x.port === REFUSE)).toMatchObject({ whenDown: 'refuse', connectTimeoutMs: 30_000 });
    expect(list.find((x) => x.port === HOLD)).toMatchObject({ whenDown: 'hold', connectTimeoutMs: CONNECT_TIMEOUT_MS });
  }, 60_000);
});
