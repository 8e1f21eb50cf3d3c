/**
 * The per-user share of a peer's wrap slots (PROTOCOL §16.5.1, SECURITY.md "Local unprivileged
 * users (wrapped ports)"): the last eighth of a peer's `maxConnections` is kept for users who hold
 * less than half of them. The rule alone (slotRefusal), the session's count of slots by uid, and
 * WrapManager with a stand-in interceptor that names each client's uid, for TCP connections and
 * UDP flows (no root, no BPF: test/e2e/wrap-user-share.test.ts has the hooks record the uid).
 */
import { describe, expect, it } from 'vitest';
import { connect, type Socket } from 'node:net';
import { createSocket, type Socket as UdpSocket } from 'node:dgram';
import pino from 'pino';
import { slotRefusal } from '../core/wrap/admission.js';
import { WrapSession } from '../core/wrap/session.js';
import { generateKeyPair } from '../crypto/primitives.js';
import { WrapManager, type InterceptedDst, type Interceptor } from '../drivers/wrap/manager.js';
import { decodeOrig, origKey } from '../drivers/bpf/wrap-hooks.js';
import { ORIG_DST, ORIG_FLAG_UID } from '../wire/layouts.js';
import { until } from '../testing/lab/netns.js';

const log = pino({ level: 'silent' });
const TARGET = { family: 4 as const, address: '192.0.2.7', port: 5432 };

/** How many connections a user who holds every one of them opens before a refusal (live = held). */
function alone(max: number): number {
  let n = 0;
  while (!slotRefusal(max, n, n)) n++;
  return n;
}

describe('slotRefusal: the reserve of a peer’s slots', () => {
  it('one user alone gets all but the reserve (896 of the default 1,024; at least 7/8 for every limit)', () => {
    expect(alone(1024)).toBe(896);
    expect(slotRefusal(1024, 896, 896)).toBe('user-share');
    for (let max = 1; max <= 2048; max++) {
      const got = alone(max);
      expect(got * 8).toBeGreaterThanOrEqual(7 * max);
      expect(got).toBe(max - Math.floor(max / 8));
    }
  });

  it('another user is admitted to the reserve, up to the full limit, while the first holds every other slot', () => {
    for (let live = 896; live < 1024; live++) expect(slotRefusal(1024, live, live - 896)).toBeUndefined();
    expect(slotRefusal(1024, 1024, 128)).toBe('too-many-connections');
    // Less than half: admitted into the reserve; half or more: refused there, admitted before it.
    expect(slotRefusal(1024, 1000, 511)).toBeUndefined();
    expect(slotRefusal(1024, 1000, 512)).toBe('user-share');
    expect(slotRefusal(1024, 895, 895)).toBeUndefined();
  });

  it('a client of unknown uid (a record without one) meets only the limit', () => {
    expect(slotRefusal(1024, 1023, undefined)).toBeUndefined();
    expect(slotRefusal(1024, 1024, undefined)).toBe('too-many-connections');
  });
});

describe('WrapSession: slots by uid', () => {
  const session = (maxConnections: number): WrapSession =>
    new WrapSession({ role: 0, bootId: 1n, windowBytes: 65536, maxConnections, pingMs: 1000, silenceMs: 3000 });

  it('counts each local connection under its uid and releases it with the connection, TCP and UDP flows alike', () => {
    const s = session(16);
    const ids: number[] = [];
    for (let i = 0; i < 14; i++) {
      expect(s.slotRefusal(1000)).toBeUndefined();
      ids.push(s.openLocal(0, 5432, TARGET, 60_000, false, i % 2 === 1, false, 1000)!);
    }
    expect(s.slotsOf(1000)).toBe(14);
    expect(s.slotRefusal(1000)).toBe('user-share'); // 14 >= 16/2, and one more would leave 1 < 16/8 free
    expect(s.slotRefusal(2000)).toBeUndefined();
    expect(s.slotRefusal(undefined)).toBeUndefined();
    s.openLocal(0, 5432, TARGET, 60_000, false, true, false, 2000);
    s.openLocal(0, 5432, TARGET, 60_000, false, false, false, undefined); // unknown user: counted in the limit only
    expect(s.slotRefusal(2000)).toBe('too-many-connections');
    expect([s.slotsOf(1000), s.slotsOf(2000), s.slotUsers]).toEqual([14, 1, 2]);
    // Releases (a client's reset) lower the user's count: under half, it may use the reserve again.
    for (const id of ids.slice(0, 7)) s.localReset(1, id, 'client reset');
    expect(s.slotsOf(1000)).toBe(7);
    for (let i = 0; i < 6; i++) s.openLocal(1, 5432, TARGET, 60_000, false, false, false, 3000); // 15 live
    expect(s.slotRefusal(1000)).toBeUndefined(); // 7 < 8: the reserve's last slot is its
    for (const id of ids.slice(7)) s.localReset(2, id, 'client reset');
    expect(s.slotsOf(1000)).toBe(0);
    expect(s.slotUsers).toBe(2); // an entry only while its user holds a slot
    expect(s.audit()).toBeUndefined();
  });
});

describe('struct spook_orig: the uid beside the original destination', () => {
  it('is read only when the hook set its flag; a refusal key carries neither', () => {
    const rec = Buffer.from(
      ORIG_DST.encode({ family: 4, flags: ORIG_FLAG_UID, port: 22, ip4: 0x0a4d0102, ip6: new Uint8Array(16), uid: 65534 }),
    );
    expect(decodeOrig(rec)).toEqual({ family: 4, address: '10.77.1.2', port: 22, uid: 65534 });
    const root = Buffer.from(
      ORIG_DST.encode({ family: 4, flags: ORIG_FLAG_UID, port: 22, ip4: 0x0a4d0102, ip6: new Uint8Array(16), uid: 0 }),
    );
    expect(decodeOrig(root).uid).toBe(0); // root is a user like any other
    // An object built before the field (flags 0, the value 24 octets: the rest of the buffer zero): no uid known.
    const old = Buffer.alloc(ORIG_DST.size);
    rec.copy(old, 0, 0, 24);
    old[1] = 0;
    expect(decodeOrig(old)).toEqual({ family: 4, address: '10.77.1.2', port: 22 });
    const key = origKey({ family: 4, address: '10.77.1.2', port: 22, uid: 1000 } as never)!;
    expect(ORIG_DST.decode(key)).toMatchObject({ flags: 0, uid: 0 });
  });
});

/**
 * A client-side manager whose peer is never reachable (its connections are held, each keeping its
 * slot), with a stand-in interceptor: TCP clients are of user `uid.next`, UDP clients of the user
 * `uid.byPort` names for their port.
 */
async function clientManager(
  transport: 'tcp' | 'udp',
  maxConnections: number,
  holdMs: number,
): Promise<{ m: WrapManager; uid: { next: number | undefined; byPort: Map<number, number> } }> {
  const uid = { next: undefined as number | undefined, byPort: new Map<number, number>() };
  const stand: Interceptor = {
    setPorts: () => {},
    originalDst: (): InterceptedDst => ({ ...TARGET, uid: uid.next }),
    originalUdpDst: (c): InterceptedDst => ({ ...TARGET, port: 5683, uid: uid.byPort.get(c.port) }),
    stats: () => ({}),
    close: () => {},
  };
  const b = generateKeyPair();
  const m = new WrapManager(
    {
      key: generateKeyPair(),
      peers: [{ name: 'b', publicKey: b.publicKey, role: 0 }],
      peerAddr: () => undefined,
      listen: { host: '127.0.0.1', port: 0 },
    },
    { intercept: { host: '127.0.0.1', port: 0 }, interception: 'auto', windowBytes: 65536, maxConnections, silenceMs: 3000 },
    [
      transport === 'tcp'
        ? { protocol: 'tcp', port: TARGET.port, peer: 'b', holdMs, connectTimeoutMs: 60_000 }
        : { protocol: 'udp', port: 5683, peer: 'b', holdMs },
    ],
    log,
    () => stand,
  );
  await m.start();
  return { m, uid };
}

const connections = (m: WrapManager): number => (m.stats() as { peers: { connections: number }[] }).peers[0].connections;

describe('WrapManager: the reserve with a stand-in interceptor', () => {
  it('TCP: one uid holding the slots leaves the reserve to another; resets give a user its share back', async () => {
    const { m, uid } = await clientManager('tcp', 16, 60_000);
    const port = Number(String(m.stats().intercept).split(':')[1]);
    const socks: Socket[] = [];
    /** One connect as `u`, waited for until the manager has admitted or refused it. */
    const open = async (u: number): Promise<'admitted' | string> => {
      uid.next = u;
      const before = { n: connections(m), refused: { ...m.refused } };
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      socks.push(s);
      const why = await until(
        'the manager to admit or refuse the connection',
        async () => {
          if (connections(m) > before.n) return 'admitted';
          for (const [k, v] of Object.entries(m.refused)) if (v !== before.refused[k as keyof typeof m.refused]) return k;
          return undefined;
        },
        5_000,
        5,
      );
      return why;
    };
    try {
      const first: string[] = [];
      for (let i = 0; i < 16; i++) first.push(await open(1000));
      // 16 - ⌊16/8⌋ = 14 for the one user; the last two are the reserve's.
      expect(first).toEqual([...Array(14).fill('admitted'), 'user-share', 'user-share']);
      expect([await open(2000), await open(2000), await open(2000)]).toEqual(['admitted', 'admitted', 'too-many-connections']);
      expect(m.refused).toMatchObject({ 'user-share': 2, 'too-many-connections': 1 });
      // uid 1000 resets 7 of its 14 (its count falls to 7 < 16/2), uid 3000 takes 5 of the 7 slots
      // freed: a connection of uid 1000 now gets one of the reserve's slots.
      const admitted1000 = socks.slice(0, 14);
      for (const s of admitted1000.slice(0, 7)) s.resetAndDestroy();
      await until('the resets to release their slots', async () => connections(m) === 9 || undefined, 5_000, 5);
      for (let i = 0; i < 5; i++) expect(await open(3000)).toBe('admitted');
      expect(await open(1000)).toBe('admitted'); // 15 live; refused had its count stayed at 14
      expect(await open(1000)).toBe('user-share'); // 8 of 16 now: half
      expect(await open(2000)).toBe('admitted'); // the last slot
      expect(await open(2000)).toBe('too-many-connections');
    } finally {
      for (const s of socks) s.destroy();
      await m.stop();
    }
  }, 20_000);

  it('UDP: flows count as connections; a flow released (its hold expired) gives its user the slot back', async () => {
    const { m, uid } = await clientManager('udp', 16, 3_000);
    const port = Number(String((m.stats() as { udpIntercept: string }).udpIntercept).split(':')[1]);
    const socks: UdpSocket[] = [];
    const drops = (): Record<string, number> => (m.stats() as { udpDrops: Record<string, number> }).udpDrops;
    /** One datagram from a new client socket of user `u`, waited for until it opened a flow or was dropped. */
    const flow = async (u: number): Promise<string> => {
      const s = createSocket('udp4');
      socks.push(s);
      await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
      uid.byPort.set(s.address().port, u);
      const before = { n: connections(m), drops: { ...drops() } };
      s.send('hi', port, '127.0.0.1');
      return until(
        'the datagram to open a flow or be dropped',
        async () => {
          if (connections(m) > before.n) return 'admitted';
          for (const [k, v] of Object.entries(drops())) if (v !== before.drops[k]) return k;
          return undefined;
        },
        5_000,
        5,
      );
    };
    try {
      const first: string[] = [];
      for (let i = 0; i < 16; i++) first.push(await flow(1000));
      expect(first).toEqual([...Array(14).fill('admitted'), 'user-share', 'user-share']);
      expect([await flow(0), await flow(0), await flow(0)]).toEqual(['admitted', 'admitted', 'too-many-connections']); // root too
      // The carrier never comes: every flow's hold expires and its slot, and its user's count, go;
      // uid 1000 then holds none, and gets the reserve while uid 3000 holds every other slot.
      await until('the holds to expire', async () => connections(m) === 0 || undefined, 10_000, 20);
      const again: string[] = [];
      for (let i = 0; i < 15; i++) again.push(await flow(3000));
      expect(again).toEqual([...Array(14).fill('admitted'), 'user-share']);
      expect([await flow(1000), await flow(1000)]).toEqual(['admitted', 'admitted']); // refused had its count stayed at 14
    } finally {
      for (const s of socks) s.close();
      await m.stop();
    }
  }, 25_000);
});
