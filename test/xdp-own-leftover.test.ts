import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pino } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { XdpProgram } from '../drivers/bpf/xdp.js';
import { XDP_FLAGS_SKB_MODE, libbpf } from '../drivers/bpf/libbpf.js';
import { FastPath } from '../drivers/daemon/fastpath.js';
import { udpPacket } from '../testing/packet.js';
import { encodeFrame } from '../wire/header.js';
import { FrameType } from '../wire/constants.js';

/**
 * Review 39j, finding 1 (regression of c147ff8 + 343babf): spookd now refuses to attach where ANY
 * XDP program is attached, its own leftover included, while FastPath.stop() removes the attachment
 * record even when its detach failed. A detach fails on every stop on kernels 5.4-5.6 (no
 * XDP_FLAGS_REPLACE: outside XDP_FLAGS_MASK, EINVAL), and on any other refusal. The old program stays
 * attached with enforce_pairs and a frozen pair table after spookd exits, and every later start
 * (record gone, so removeStale does nothing) refuses on it: the fast path is lost for good and the
 * leftover drops every new session's Data frame as unknown-pair. Before today the next start replaced it.
 * The same happens after a kill in the window between the attach and the record write.
 */
const IF = 'r39j-x0';
const PEER = 'r39j-x1';
const PORT = 32700;
let ifindex = 0;
const dirs: string[] = [];

const queryGeneric = (): number => {
  const id = [0];
  libbpf().xdpQueryId(ifindex, XDP_FLAGS_SKB_MODE, id);
  return id[0];
};

/** Runs one packet through the attached program by id (bpftool), the verdict: 1 = XDP_DROP, 2 = XDP_PASS. */
function verdictOf(progId: number, pkt: Buffer, dir: string): number {
  const f = join(dir, 'pkt.bin');
  writeFileSync(f, pkt);
  const out = execFileSync('bpftool', ['prog', 'run', 'id', String(progId), 'data_in', f], { encoding: 'utf8' });
  return Number(/Return value: (\d+)/.exec(out)![1]);
}

function cfgFor(dataDir: string) {
  return {
    dataDir,
    xdp: { interface: IF, mode: 'generic', handshakeRate: 20, handshakeBurst: 40, pinDir: '/nonexistent-r39j/spook' },
  } as never;
}

beforeAll(() => {
  execFileSync('ip', ['link', 'add', IF, 'type', 'veth', 'peer', 'name', PEER]);
  ifindex = Number(readFileSync(`/sys/class/net/${IF}/ifindex`, 'utf8').trim());
});
afterEach(() => {
  libbpf().xdpDetach(ifindex, XDP_FLAGS_SKB_MODE, null);
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});
afterAll(() => {
  execFileSync('ip', ['link', 'del', IF]);
});

describe("spookd's own leftover program is replaced, and stop keeps the record of one it could not detach", () => {
  it('a stop on a kernel before 5.7 (XDP_FLAGS_REPLACE is EINVAL) still detaches, and the next start has the fast path', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'r39j-1-'));
    dirs.push(dataDir);
    const log = pino({ level: 'silent' });
    const fp = new FastPath(cfgFor(dataDir), log);
    fp.start(PORT);
    expect(fp.status().enabled).toBe(true);
    fp.addPair(0x01020304);

    const l = libbpf() as unknown as { xdpDetach: (i: number, f: number, o: unknown) => number };
    const orig = l.xdpDetach;
    // What a 5.4-5.6 kernel answers to a detach carrying XDP_FLAGS_REPLACE (IFLA_XDP_EXPECTED_FD).
    l.xdpDetach = (i, f, o) => (o ? -22 : orig(i, f, o));
    try {
      fp.stop();
    } finally {
      l.xdpDetach = orig;
    }
    // There, the id is checked and the mode detached: nothing of ours is left, nor its record.
    expect(queryGeneric()).toBe(0);
    expect(existsSync(join(dataDir, 'xdp-attached.json'))).toBe(false);

    const fp2 = new FastPath(cfgFor(dataDir), log);
    fp2.start(PORT);
    const st = fp2.status();
    fp2.stop();
    expect(st.error).toBeNull();
    expect(st.enabled).toBe(true);
  });

  it('a stop whose detach is refused keeps the record, leaves the program passing everything, and the next start removes it', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'r39j-1-'));
    dirs.push(dataDir);
    const log = pino({ level: 'silent' });
    const fp = new FastPath(cfgFor(dataDir), log);
    fp.start(PORT);
    expect(fp.status().enabled).toBe(true);
    const oldId = fp.status().programId!;
    fp.addPair(0x01020304);

    const l = libbpf() as unknown as { xdpDetach: (i: number, f: number, o: unknown) => number };
    const orig = l.xdpDetach;
    l.xdpDetach = () => -1; // any refusal (EPERM here)
    try {
      fp.stop();
    } finally {
      l.xdpDetach = orig;
    }
    // The program is still attached; the record that lets the next start remove it is kept.
    expect(queryGeneric()).toBe(oldId);
    expect(existsSync(join(dataDir, 'xdp-attached.json'))).toBe(true);

    // The leftover passes everything (port 0), a new session's Data frame included: no black hole.
    const newSession = udpPacket(encodeFrame({ type: FrameType.Data, flags: 0, pairId: 0x0a0b0c0d, packetNumber: 1 }, new Uint8Array(40)), {
      dstPort: PORT,
    });
    expect(verdictOf(oldId, newSession, dataDir)).toBe(2);

    // The restart (systemd's, or an upgrade's).
    const fp2 = new FastPath(cfgFor(dataDir), log);
    fp2.start(PORT);
    const st = fp2.status();
    expect(st.error).toBeNull();
    expect(st.enabled).toBe(true);
    expect(st.programId).not.toBe(oldId);
    expect(queryGeneric()).toBe(st.programId);
    fp2.stop();
    expect(queryGeneric()).toBe(0);
    expect(existsSync(join(dataDir, 'xdp-attached.json'))).toBe(false);
  });

  it('a run killed between the attach and the record write: the next start replaces its own leftover', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'r39j-1-'));
    dirs.push(dataDir);
    // What the killed run did before writing xdp-attached.json (pinning may run `mount` first).
    const prev = XdpProgram.load();
    prev.configure({ port: PORT, enforcePairs: true, handshakeRate: 20, handshakeBurst: 40 });
    prev.attach(IF, 'generic');
    const oldId = prev.attachment!.programId;
    try {
      const fp = new FastPath(cfgFor(dataDir), pino({ level: 'silent' }));
      fp.start(PORT);
      const st = fp.status();
      expect(queryGeneric()).toBe(st.programId);
      fp.stop();
      expect(queryGeneric()).toBe(0);
      // Currently: refused with XdpOccupiedError naming oldId (spookd's own program from the killed run).
      expect(st.error ?? '').not.toContain(`id ${oldId}`);
      expect(st.enabled).toBe(true);
    } finally {
      libbpf().close((prev as unknown as { obj: unknown }).obj);
    }
  });

  it('the record is written before the attach: a run killed right after it is cleaned up even without an xdp section', () => {
    const dataDir = mkdtempSync(join(tmpdir(), 'r39j-1-'));
    dirs.push(dataDir);
    let intent: { ifname: string; programId: number; flags?: number } | undefined;
    const l = libbpf() as unknown as { xdpAttach: (i: number, fd: number, f: number, o: unknown) => number };
    const orig = l.xdpAttach;
    // The kill: the record as it stood when the attach ran.
    l.xdpAttach = (i, fd, f, o) => {
      intent = JSON.parse(readFileSync(join(dataDir, 'xdp-attached.json'), 'utf8'));
      return orig(i, fd, f, o);
    };
    const fp = new FastPath(cfgFor(dataDir), pino({ level: 'silent' }));
    try {
      fp.start(PORT);
    } finally {
      l.xdpAttach = orig;
    }
    const id = fp.status().programId!;
    expect(intent).toMatchObject({ ifname: IF, programId: id });
    expect(intent!.flags).toBeUndefined();
    // Killed (no stop): only the intent on disk; the program stays attached.
    writeFileSync(join(dataDir, 'xdp-attached.json'), JSON.stringify(intent));
    const fp2 = new FastPath({ dataDir } as never, pino({ level: 'silent' }));
    fp2.start(PORT);
    expect(queryGeneric()).toBe(0);
    expect(existsSync(join(dataDir, 'xdp-attached.json'))).toBe(false);
    (fp as unknown as { prog: { close(): void } }).prog.close();
  });
});
