import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { execFileSync } from 'node:child_process';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import { rmSync } from 'node:fs';
import { pino } from 'pino';
import { inProcess, configOf, logOf, until, writeTold, has, type InProcess } from './inproc.js';
import { Spookd } from '../drivers/daemon/spookd.js';
import { PairState } from '../core/pair/lifecycle.js';
import { decodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';

/**
 * Review 39 (OS resources), finding 2: a UDP send that the socket refuses synchronously is
 * thrown out of the transmit path. A datagram from source port 0 is delivered by Linux (Node's
 * rinfo.port = 0); once it is an authentic Data frame (an on-path host rewrote the source port
 * of one frame the peer sent), roaming (core/etcp/peers.ts, `peer.addr = from`) takes port 0 as
 * the peer's address, and the next `socket.send(d, 0, addr)` (drivers/daemon/spookd.ts,
 * flushTransmit) throws ERR_SOCKET_BAD_PORT inside forPeer: the pair is fenced `internal-error`
 * until spookd restarts. One rewritten datagram, and the peer's later authentic frames (which
 * would roam it back) are never heard again.
 *
 * Two spookd in this process on loopback, OS-chosen ports; the rewritten frame is sent for real
 * through a raw socket (python3, root).
 */
let lab: InProcess;
const d: Record<string, Spookd> = {};

async function freeUdpPort(): Promise<number> {
  const s = createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `payload` to 127.0.0.1:`port` from source port 0, through a raw socket. */
function sendFromPortZero(port: number, payload: Uint8Array): void {
  const py = `
import socket, struct, sys
port = int(sys.argv[1]); p = bytes.fromhex(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
s.sendto(struct.pack('!HHHH', 0, port, 8 + len(p), 0) + p, ('127.0.0.1', 0))
`;
  execFileSync('python3', ['-c', py, String(port), Buffer.from(payload).toString('hex')]);
}

beforeAll(async () => {
  lab = inProcess('r39h-os2', ['a', 'b'], 0);
  lab.port.a = await freeUdpPort();
  lab.port.b = await freeUdpPort();
  d.a = new Spookd(configOf(lab, 'a', ['b']), lab.keys.a, logOf(lab, 'a'));
  d.b = new Spookd(configOf(lab, 'b', ['a']), lab.keys.b, pino({ level: 'silent' }));
  await Promise.all([d.a.start(), d.b.start()]);
  await until('a-b entangled', () => d.a.link('b').pair.state === PairState.ENTANGLED && d.b.link('a').pair.state === PairState.ENTANGLED);
}, 30_000);

afterAll(async () => {
  await Promise.all(Object.values(d).map((s) => s.stop()));
  rmSync(lab.dir, { recursive: true, force: true });
});

describe('an authentic frame from source port 0', () => {
  it('does not fence the pair (a send error is not an internal error); the pair keeps committing', async () => {
    // On the path from b to a: take b's next Data frame off the wire, and drop b's frames to a
    // for a second (an on-path host: it may drop as well as rewrite)...
    const sock = (d.b as unknown as { socket: UdpSocket }).socket;
    const send = sock.send.bind(sock) as (...a: unknown[]) => void;
    let taken: Uint8Array | undefined;
    (sock as unknown as { send: (...a: unknown[]) => void }).send = (...args: unknown[]) => {
      const buf = args[0] as Uint8Array;
      if (args[1] === lab.port.a) {
        if (taken !== undefined) return; // dropped on the path
        try {
          if (decodeFrame(buf).header.type === FrameType.Data) {
            taken = Uint8Array.from(buf);
            return;
          }
        } catch {
          /* not a frame */
        }
      }
      send(...args);
    };
    await until('a Data frame from b taken', () => taken !== undefined);
    // ...and deliver it to a from source port 0 (a rewritten source port; the kernel delivers it).
    sendFromPortZero(lab.port.a, taken!);
    await new Promise((r) => setTimeout(r, 1_000));
    // The path heals: b's frames reach a again, and would roam it back to b's real port.
    (sock as unknown as { send: unknown }).send = send;
    await new Promise((r) => setTimeout(r, 1_000));
    const f = d.a.link('b').fenced;
    expect(f, `a fenced its pair with b: ${f?.cause} ${String(f?.error)}`).toBeUndefined();
    const w = writeTold(d.a, 'b', 'after-port-zero');
    await until('the write commits and crosses', () => w.told.length === 1 && has(d.b, 'a', 'after-port-zero'), 5_000);
    expect(w.told[0]).toMatchObject({ verdict: 'committed' });
  }, 30_000);
});
