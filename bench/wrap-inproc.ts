/**
 * Two WrapManagers in this process joined by a loopback carrier, with a stand-in interceptor
 * (no BPF: every intercepted connection's original destination is `targetPort` on loopback),
 * for the root-free CPU benches (wrap-conncpu, wrap-bulkcpu, wrap-rrcpu): this process's CPU
 * time is the two managers' alone. startNodeRelays: the same path through two plain Node relays.
 */
import { spawn } from 'node:child_process';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import pino from 'pino';
import { freePort } from '../testing/lab/servers.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type Interceptor } from '../drivers/wrap/manager.js';

export interface InprocWrap {
  /** The client side's intercept listener: connect here to be carried to `targetPort`. */
  interceptPort: number;
  stop(): Promise<void>;
}

/** `others`: peers configured on both sides beside the one that connects (a hub's peers that are away). */
export async function startInprocWrap(targetPort: number, windowBytes: number, others = 0): Promise<InprocWrap> {
  const log = pino({ level: 'silent' });
  const a = generateKeyPair();
  const b = generateKeyPair();
  const away = Array.from({ length: others }, (_, i) => ({ name: `away${i}`, publicKey: generateKeyPair().publicKey }));
  const pb = await freePort();
  const settings = {
    intercept: { host: '127.0.0.1', port: 0 },
    interception: 'auto' as const,
    windowBytes,
    maxConnections: 1024,
    silenceMs: 5000,
  };
  const mb = new WrapManager(
    {
      key: b,
      peers: [{ name: 'a', publicKey: a.publicKey, role: 1 }, ...away.map((p) => ({ ...p, role: 1 as const }))],
      peerAddr: () => undefined,
      listen: { host: '127.0.0.1', port: pb },
    },
    { ...settings, interception: 'off', allow: [{ peer: 'a', to: `127.0.0.1:${targetPort}`, protocol: 'tcp' }] },
    [],
    log,
  );
  const stand: Interceptor = {
    setPorts: () => {},
    originalDst: () => ({ family: 4, address: '127.0.0.1', port: targetPort }),
    stats: () => ({}),
    close: () => {},
  };
  const ma = new WrapManager(
    {
      key: a,
      peers: [{ name: 'b', publicKey: b.publicKey, role: 0 }, ...away.map((p) => ({ ...p, role: 0 as const }))],
      peerAddr: (name: string) => (name === 'b' ? { address: '127.0.0.1', port: pb } : undefined),
      listen: { host: '127.0.0.1', port: await freePort() },
    },
    settings,
    [{ protocol: 'tcp', port: targetPort, peer: 'b', holdMs: 30_000 }],
    log,
    () => stand,
  );
  await mb.start();
  await ma.start();
  return {
    interceptPort: Number(String(ma.stats().intercept).split(':')[1]),
    stop: async () => {
      await ma.stop();
      await mb.stop();
    },
  };
}

/**
 * The same path without Spook, for the same-run baseline of the root-free benches: two plain Node
 * relays in a row in this process (`net.Server` + `pipe`, one connect per accepted connection,
 * no carrier, no encryption), so this process's CPU is what two Node relays cost.
 */
export async function startNodeRelays(targetPort: number): Promise<{ port: number; stop(): Promise<void> }> {
  const servers: Server[] = [];
  const sockets = new Set<Socket>();
  const relay = async (to: number): Promise<number> => {
    const s = createServer({ allowHalfOpen: true }, (a) => {
      a.setNoDelay(true);
      const b = connect({ host: '127.0.0.1', port: to, noDelay: true, allowHalfOpen: true });
      for (const x of [a, b]) {
        sockets.add(x);
        x.on('close', () => sockets.delete(x));
      }
      a.pipe(b);
      b.pipe(a);
      a.on('error', () => b.destroy());
      b.on('error', () => a.destroy());
    });
    servers.push(s);
    await new Promise<void>((r) => s.listen(0, '127.0.0.1', () => r()));
    return (s.address() as AddressInfo).port;
  };
  const port = await relay(await relay(targetPort));
  return {
    port,
    stop: async () => {
      for (const x of sockets) x.destroy();
      for (const s of servers) await new Promise<void>((r) => s.close(() => r()));
    },
  };
}

const ECHO = `
import { createServer } from 'node:net';
const srv = createServer((s) => { s.setNoDelay(true); s.on('data', (d) => s.write(d)); s.on('error', () => {}); });
srv.listen(0, '127.0.0.1', () => console.log(srv.address().port));
`;

/** An echo server in a child process (its CPU is not this process's), killed when this process exits. */
export async function startEchoServer(): Promise<{ port: number; kill(): void }> {
  const echo = spawn(process.execPath, ['--input-type=module', '-e', ECHO]);
  process.once('exit', () => echo.kill()); // also when a round fails
  const port = await new Promise<number>((r) => echo.stdout.once('data', (d) => r(Number(String(d).trim()))));
  return { port, kill: () => void echo.kill() };
}
