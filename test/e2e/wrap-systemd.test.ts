/**
 * Issue 17 under a real systemd (252 on Debian 12): each host's spookd runs as the service
 * packaging/spookd.service.in makes (Type=notify, NotifyAccess=main, FileDescriptorStoreMax=4096,
 * SPOOK_FDSTORE, every sandboxing line), under its own /lib/systemd/systemd as PID 1 of a PID and
 * mount namespace inside the lab host's network namespace (testing/lab/systemd.ts). An ssh
 * session printing a numbered line every 50 ms and a counter stream (testing/lab/cutstream.ts),
 * both wrapped, go on across `systemctl restart spookd` of the client side, then of the server
 * side, then of the client side again, with every line and byte in order on the first connection;
 * systemd's own log shows the descriptors going through its store. `systemctl stop` then `start`
 * flushes the store and resets them, as docs/OPERATIONS.md says. A restart into a configuration that
 * does not load keeps the store through Restart=on-failure's retries until one loads (left broken,
 * systemd retries on: the start limit is not reached; a stop releases the store). A store
 * smaller than SPOOK_FDSTORE says keeps the state and the first sockets (the state goes first).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Lab, requireRoot, sleep, until } from '../../testing/lab/netns.js';
import { CutStreams } from '../../testing/lab/cutstream.js';
import { startSshd, type SshdServer } from '../../testing/lab/servers.js';
import { SshTicker } from '../../testing/lab/sshticker.js';
import { LAB_RUN, LabSystemd, spookdUnitFiles } from '../../testing/lab/systemd.js';

const STREAM = 7301;
const STREAM_STOP = 7303;
/** Two streams through a store smaller than spookd believes. */
const SMALL = [7305, 7307];
/** A stream across a restart into a configuration that does not load. */
const BROKEN = 7309;
/** And one left broken. */
const LEFT_BROKEN = 7311;
const SSH = 7322;
const C = 'yc';
const S = 'ys';

let lab: Lab;
let addr: string;
let sshd: SshdServer;
const sd = new Map<string, LabSystemd>();
const cleanup: (() => void)[] = [];

const ticker = (stopFile: string): SshTicker => {
  const t = new SshTicker(lab.host(C).ns, addr, sshd, stopFile);
  cleanup.push(() => t.kill());
  return t;
};

/** The log lines of one spookd process (by pid, as its systemd sees it) whose msg matches. */
function logLines(host: string, pid: string, msg: RegExp): Record<string, unknown>[] {
  // The unit's StandardOutput file (the lab's drop-in: no journald in the namespace).
  return readFileSync(sd.get(host)!.path(`${LAB_RUN}/spookd.log`), 'utf8')
    .split('\n')
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, unknown>]; // spookd's JSON lines; its stderr may hold others
      } catch {
        return [];
      }
    })
    .filter((l) => String(l.pid) === pid && msg.test(String(l.msg)));
}

/** logLines once there is one (pino writes asynchronously: a line may follow READY=1). */
const logged = (host: string, pid: string, msg: RegExp): Promise<Record<string, unknown>[]> =>
  until(
    `${host}'s spookd ${pid} logging ${msg}`,
    async () => (logLines(host, pid, msg).length ? logLines(host, pid, msg) : undefined),
    10_000,
  ).catch(() => []);

/** How many lines of `host`'s systemd log match. */
const count = (host: string, re: RegExp): number =>
  sd
    .get(host)!
    .console()
    .split('\n')
    .filter((l) => re.test(l)).length;
/** count() once it reaches `n` (systemd may log a line after systemctl returned), or what it is after 10 s. */
const countReaching = (host: string, re: RegExp, n: number): Promise<number> =>
  until(`${n} lines ${re} in ${host}'s systemd log`, async () => (count(host, re) >= n ? count(host, re) : undefined), 10_000).catch(() =>
    count(host, re),
  );
const RELEASED = /spookd\.service: Releasing all stored fds/;
const ADDED = /spookd\.service: Added fd \d+ \(spook-wrap-[\w-]+\) to fd store/;

async function carried(host: string, n: number): Promise<void> {
  await until(
    `${n} carried connections on ${host}`,
    async () => ((await lab.admin(host, 'wrap-conns')).length === n ? true : undefined),
    20_000,
  );
}

async function carrierUp(): Promise<void> {
  await until('the carrier', async () => (await lab.admin(C, 'wrap-stats')).peers[0].carrier === 'up' || undefined, 30_000);
}

beforeAll(async () => {
  requireRoot();
  lab = new Lab([C, S], [{ a: C, b: S, subnet: 73 }], 48170);
  addr = lab.host(S).addrs.get(C)!;
  const regs = [{ name: 'r', kind: 'map' }];
  const ports = [STREAM, STREAM_STOP, SSH, ...SMALL, BROKEN, LEFT_BROKEN];
  lab.configure(C, regs, { wrap: { wrappers: ports.map((port) => ({ protocol: 'tcp', port, peer: S })) } });
  lab.configure(S, regs, { wrap: { allow: ports.map((p) => ({ peer: C, to: `${addr}:${p}` })) } });
  for (const h of [S, C]) {
    const m = await LabSystemd.boot(lab, h, spookdUnitFiles(lab, h));
    sd.set(h, m);
    lab.host(h).socket = m.path('/run/spook/admin.sock');
    await until(
      'spookd.service active',
      async () => (await m.show('spookd', ['ActiveState'])).ActiveState === 'active' || undefined,
      60_000,
      250,
    );
  }
  await carrierUp();
  sshd = await startSshd(lab.host(S).ns, addr, SSH, join(lab.host(S).dir, 'sshd'));
}, 150_000);

afterAll(async () => {
  for (const f of cleanup) f();
  await sshd?.stop?.();
  for (const m of sd.values()) await m.destroy();
  await lab?.destroy();
}, 60_000);

describe('spookd under a real systemd', () => {
  it('systemctl restart of either side: the ssh session and the stream go on through the descriptor store, every byte in order', async () => {
    for (const m of sd.values()) {
      const unit = await m.show('spookd', ['Type', 'NotifyAccess', 'FileDescriptorStoreMax', 'NFileDescriptorStore', 'Environment']);
      expect(unit).toMatchObject({ Type: 'notify', NotifyAccess: 'main', FileDescriptorStoreMax: '4096', NFileDescriptorStore: '0' });
      expect(unit.Environment).toContain('SPOOK_FDSTORE=4096');
      // What spookd was given (its environ, seen from the host): systemd 252 sets no $FDSTORE.
      const node = readFileSync(`/proc/${m.pid1}/task/${m.pid1}/children`, 'utf8')
        .trim()
        .split(/\s+/)
        .find((p) => readFileSync(`/proc/${p}/comm`, 'utf8').trim() === 'node')!;
      const env = readFileSync(`/proc/${node}/environ`, 'utf8').split('\0');
      expect(env).toContain('SPOOK_FDSTORE=4096');
      // The unit's sandbox holds (and the wrappers work inside it: the rest of this file): a seccomp
      // filter (SystemCallFilter=), no new privileges, and only the unit's capabilities.
      const status = readFileSync(`/proc/${node}/status`, 'utf8');
      expect(status).toMatch(/^Seccomp:\s+2$/m);
      expect(status).toMatch(/^NoNewPrivs:\s+1$/m);
      // CapBnd: CAP_CHOWN (0), CAP_NET_ADMIN (12), CAP_SYS_ADMIN (21), CAP_BPF (39): nothing more.
      const bnd = BigInt(`0x${/^CapBnd:\s+([0-9a-f]+)$/m.exec(status)![1]}`);
      expect(bnd).toBe((1n << 0n) | (1n << 12n) | (1n << 21n) | (1n << 39n));
      expect(env).toContain('NOTIFY_SOCKET=/run/systemd/notify');
      expect(env.filter((e) => e.startsWith('FDSTORE='))).toEqual([]);
    }
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [STREAM], { gapMs: 100 });
    cleanup.push(() => streams.close());
    await streams.start();
    const ssh = ticker(join(lab.host(S).dir, 'stop-ticker'));
    await until('ssh output', async () => (ssh.lines.length >= 10 ? true : undefined), 20_000);
    await carried(C, 2);
    await carried(S, 2);

    const rounds: string[] = [];
    for (const host of [C, S, C]) {
      const m = sd.get(host)!;
      const before = (await m.show('spookd', ['MainPID'])).MainPID;
      const stored = count(host, ADDED);
      const passed = count(host, /spookd\.service: Passing 3 fds to service/);
      const t0 = Date.now();
      const r = await m.systemctl('restart', 'spookd');
      const ms = Date.now() - t0;
      expect(r.code, r.stderr).toBe(0);
      const after = await m.show('spookd', ['MainPID', 'ActiveState', 'NFileDescriptorStore']);
      expect(after.ActiveState).toBe('active');
      expect(after.MainPID).not.toBe(before);
      // The old process stored both sockets and its state; the new one took both back from
      // LISTEN_FDS and removed them from the store (FDSTOREREMOVE=1).
      expect(await logged(host, before, /handed over to the next spookd/)).toMatchObject([{ handedOver: 2, partial: 0, reset: 0 }]);
      expect(await logged(host, after.MainPID, /taken over from the previous spookd/)).toMatchObject([{ restored: 2, dropped: 0 }]);
      expect(after.NFileDescriptorStore).toBe('0');
      // systemd itself: FDSTORE=1 of both sockets and the state, passed to the next process.
      expect((await countReaching(host, ADDED, stored + 3)) - stored).toBe(3);
      expect((await countReaching(host, /spookd\.service: Passing 3 fds to service/, passed + 1)) - passed).toBe(1);
      await carried(host, 2);
      expect(await ssh.more(20)).toBe(true);
      rounds.push(`${host} ${ms} ms (pid ${before} → ${after.MainPID}, ssh silent ${ssh.gapIn(t0, Date.now())} ms)`);
    }

    const code = await ssh.finish();
    expect(code, ssh.stderr).toBe(0);
    const lines = ssh.intact();
    expect(lines, ssh.lines.map((l) => l.text).join(' ')).toBeDefined();
    const r = (await streams.stop())[STREAM];
    expect(r.error).toBeNull();
    expect(r.serverError).toBeUndefined();
    expect(r.ended).toBe(true);
    expect(r.inOrder).toBe(true);
    expect(r.received).toBe(r.sent);
    const st = await lab.admin(C, 'wrap-stats');
    for (const w of st.wrappers) expect(w.closes['client-reset'] ?? 0).toBe(0);
    console.log(
      `${(await sd.get(C)!.systemctl('--version')).stdout.split('\n')[0]}: systemctl restart spookd on ${rounds.join(', ')}; ` +
        `ssh: ${lines} lines in order; stream: ${(r.received / 1e6).toFixed(1)} MB in order`,
    );
  }, 240_000);

  it('systemctl stop, then start: the store is flushed and the connections are reset', async () => {
    const m = sd.get(C)!;
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [STREAM_STOP], { gapMs: 100 });
    cleanup.push(() => streams.close());
    await streams.start();
    const ssh = ticker(join(lab.host(S).dir, 'stop-ticker-2'));
    await until('ssh output', async () => (ssh.lines.length >= 10 ? true : undefined), 20_000);
    await carried(C, 2);
    const before = (await m.show('spookd', ['MainPID'])).MainPID;
    const t0 = Date.now();
    const r = await m.systemctl('stop', 'spookd');
    expect(r.code, r.stderr).toBe(0);
    // spookd handed over as at any stop (it cannot tell), and systemd closed the store at once.
    expect(await logged(C, before, /handed over to the next spookd/)).toMatchObject([{ handedOver: 2 }]);
    expect(await m.show('spookd', ['ActiveState', 'NFileDescriptorStore'])).toMatchObject({
      ActiveState: 'inactive',
      NFileDescriptorStore: '0',
    });
    expect(await countReaching(C, RELEASED, 1)).toBe(1);
    // The peer cannot tell either: it holds its side (the servers' sockets) until this host is back.
    expect(await lab.admin(S, 'wrap-conns')).toHaveLength(2);
    // The closed sockets carried SO_LINGER 0: the ssh client sees a reset while spookd is down.
    const code = await Promise.race([ssh.exit, sleep(20_000).then(() => -1)]);
    const resetMs = Date.now() - t0;
    expect(code).not.toBe(-1);
    expect(code).not.toBe(0);
    const passedNone = count(C, /spookd\.service: Passing 0 fds to service/);
    const s = await m.systemctl('start', 'spookd');
    expect(s.code, s.stderr).toBe(0);
    const after = (await m.show('spookd', ['MainPID'])).MainPID;
    expect(await logged(C, after, /wrappers ready/)).toHaveLength(1);
    expect(logLines(C, after, /taken over from the previous spookd/)).toEqual([]);
    expect((await countReaching(C, /spookd\.service: Passing 0 fds to service/, passedNone + 1)) - passedNone).toBe(1);
    const rep = (await streams.stop())[STREAM_STOP];
    expect(rep.error ?? rep.serverError).toBeTruthy();
    expect(ssh.lines.at(-1)?.text.startsWith('done-')).toBe(false);
    await carrierUp();
    // The server side's halves go too (at the new process's first HELLO: another boot id).
    await until(
      'the server side dropping its halves',
      async () => ((await lab.admin(S, 'wrap-conns')).length === 0 ? true : undefined),
      30_000,
    );
    console.log(
      `systemctl stop: ssh ended with ${code} ${resetMs} ms after the stop began (${ssh.stderr.trim().split('\n').at(-1)}); stream: ${rep.error ?? rep.serverError}`,
    );
  }, 120_000);

  it('a restart into a configuration that does not load: the store waits through the retries, and a fixed one takes the connection back', async () => {
    const m = sd.get(C)!;
    // systemd's start limit (5 starts in 10 s) counts the earlier tests' restarts too: start this one's count afresh.
    expect((await m.systemctl('reset-failed', 'spookd')).code).toBe(0);
    const conf = m.path(`${LAB_RUN}/etc/spook/spookd.conf`);
    const good = readFileSync(conf, 'utf8');
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [BROKEN], { gapMs: 100 });
    cleanup.push(() => streams.close());
    await streams.start();
    await carried(C, 1);
    writeFileSync(conf, '{ "listen": ');
    const r = await m.systemctl('restart', 'spookd');
    expect(r.code).not.toBe(0); // the new process exits 2 before it takes anything
    // Restart=on-failure: systemd retries (RestartSec=2) and keeps the store meanwhile.
    expect(await m.show('spookd', ['ActiveState', 'NFileDescriptorStore'])).toMatchObject({ NFileDescriptorStore: '2' });
    writeFileSync(conf, good);
    await until(
      'spookd.service active again',
      async () => (await m.show('spookd', ['ActiveState'])).ActiveState === 'active' || undefined,
      30_000,
      250,
    );
    const after = await m.show('spookd', ['MainPID', 'NRestarts', 'NFileDescriptorStore']);
    expect(Number(after.NRestarts)).toBeGreaterThanOrEqual(1);
    expect(await logged(C, after.MainPID, /taken over from the previous spookd/)).toMatchObject([{ restored: 1, dropped: 0, missing: 0 }]);
    expect(after.NFileDescriptorStore).toBe('0');
    await carried(C, 1);
    const rep = (await streams.stop())[BROKEN];
    expect(rep).toMatchObject({ error: null, ended: true, inOrder: true });
    expect(rep.received).toBe(rep.sent);
    console.log(
      `restart into a broken configuration: ${after.NRestarts} automatic restart(s), then taken back; stream ${(rep.received / 1e6).toFixed(1)} MB in order`,
    );
  }, 120_000);

  it('a configuration left broken: systemd retries and keeps the store (no start limit at RestartSec=2) until a stop releases it', async () => {
    const m = sd.get(C)!;
    // systemd's start limit (5 starts in 10 s) counts the earlier tests' restarts too: start this one's count afresh.
    expect((await m.systemctl('reset-failed', 'spookd')).code).toBe(0);
    const conf = m.path(`${LAB_RUN}/etc/spook/spookd.conf`);
    const good = readFileSync(conf, 'utf8');
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, [LEFT_BROKEN], { gapMs: 100 });
    cleanup.push(() => streams.close());
    await streams.start();
    await carried(C, 1);
    const released = count(C, RELEASED);
    const before = Number((await m.show('spookd', ['NRestarts'])).NRestarts);
    writeFileSync(conf, '{ "listen": ');
    let restored = false;
    try {
      expect((await m.systemctl('restart', 'spookd')).code).not.toBe(0);
      // Each failed start takes RestartSec=2 plus Node's start: never 5 starts in 10 s (the default start limit).
      const retrying = await until(
        'four automatic restarts',
        async () => {
          const x = await m.show('spookd', ['ActiveState', 'Result', 'NRestarts', 'NFileDescriptorStore']);
          return Number(x.NRestarts) - before >= 4 ? x : undefined;
        },
        60_000,
        250,
      );
      expect(retrying.ActiveState).not.toBe('failed');
      expect(retrying.NFileDescriptorStore).toBe('2');
      expect(count(C, RELEASED)).toBe(released);
      // Giving up is a stop: the store goes, the connection is reset.
      expect((await m.systemctl('stop', 'spookd')).code).toBe(0);
      // Stopped: `inactive`, or `failed` when the stop came while systemd waited to restart a failed start (the
      // unit keeps that start's result); either way nothing runs and the store is released.
      const stopped = await m.show('spookd', ['ActiveState', 'NFileDescriptorStore']);
      expect(['inactive', 'failed']).toContain(stopped.ActiveState);
      expect(stopped.NFileDescriptorStore).toBe('0');
      expect((await countReaching(C, RELEASED, released + 1)) - released).toBe(1);
      const rep = (await streams.stop())[LEFT_BROKEN];
      expect(rep.error ?? rep.serverError).toBeTruthy();
      writeFileSync(conf, good);
      expect((await m.systemctl('start', 'spookd')).code).toBe(0);
      await carrierUp();
      restored = true;
      console.log(
        `configuration left broken: ${Number(retrying.NRestarts) - before} automatic restarts, still ${retrying.ActiveState}, store kept; stop: released, stream ${rep.error ?? rep.serverError}`,
      );
    } finally {
      // A failure above must not leave the later tests a broken configuration and no spookd.
      if (!restored) {
        writeFileSync(conf, good);
        await m.systemctl('reset-failed', 'spookd');
        await m.systemctl('start', 'spookd');
      }
    }
  }, 120_000);

  it('a store smaller than spookd believes: systemd refuses the last socket, the state goes first and the other connection survives', async () => {
    // An operator lowered FileDescriptorStoreMax= in a drop-in but not SPOOK_FDSTORE (systemd 252 does
    // not set $FDSTORE): spookd offers the state and both sockets, systemd keeps two descriptors.
    const m = sd.get(C)!;
    expect((await m.systemctl('reset-failed', 'spookd')).code).toBe(0);
    writeFileSync(m.path(`${LAB_RUN}/units/spookd.service.d/small-store.conf`), '[Service]\nFileDescriptorStoreMax=2\n');
    expect((await m.systemctl('daemon-reload')).code).toBe(0);
    expect(await m.show('spookd', ['FileDescriptorStoreMax'])).toMatchObject({ FileDescriptorStoreMax: '2' });
    const streams = new CutStreams(lab.host(S).ns, lab.host(C).ns, addr, SMALL, { gapMs: 100 });
    cleanup.push(() => streams.close());
    await streams.start();
    await carried(C, 2);
    const before = (await m.show('spookd', ['MainPID'])).MainPID;
    const r = await m.systemctl('restart', 'spookd');
    expect(r.code, r.stderr).toBe(0);
    const after = (await m.show('spookd', ['MainPID'])).MainPID;
    expect(await logged(C, before, /handed over to the next spookd/)).toMatchObject([{ handedOver: 2 }]);
    expect(await countReaching(C, /spookd\.service: Cannot store more fds than FileDescriptorStoreMax=2, closing remaining/, 1)).toBe(1);
    expect(await logged(C, after, /taken over from the previous spookd/)).toMatchObject([{ restored: 1, dropped: 0, missing: 1 }]);
    await carried(C, 1);
    const reps = await streams.stop();
    const [ok, lost] = SMALL.map((p) => reps[p]).sort((a, b) => Number(!!a.error) - Number(!!b.error));
    expect(ok).toMatchObject({ error: null, ended: true, inOrder: true });
    expect(ok.received).toBe(ok.sent);
    expect(lost.error).toBeTruthy();
    console.log(
      `FileDescriptorStoreMax=2 under SPOOK_FDSTORE=4096: one stream went on (${(ok.received / 1e6).toFixed(1)} MB in order), the other: ${lost.error}`,
    );
  }, 120_000);
});
