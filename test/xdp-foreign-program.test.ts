import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { XdpProgram } from '../drivers/bpf/xdp.js';
import { XDP_FLAGS_SKB_MODE, libbpf } from '../drivers/bpf/libbpf.js';

/**
 * Review 39d, finding 2: XdpProgram.attach calls bpf_xdp_attach without XDP_FLAGS_UPDATE_IF_NOEXIST
 * (defined in libbpf.ts, never used) or an expected program, so spookd silently replaces whatever XDP
 * program the host already runs on that interface (an operator's DDoS filter, a libxdp dispatcher);
 * and detach() (stop) removes whatever program is attached in that mode, even one attached since by
 * someone else. detachStale takes care to leave "a program attached since by someone else" alone;
 * the live paths do not.
 */
const IF = 'r39d-x0';
const PEER = 'r39d-x1';
let ifindex = 0;
const open: XdpProgram[] = [];

const queryGeneric = (): number => {
  const id = [0];
  libbpf().xdpQueryId(ifindex, XDP_FLAGS_SKB_MODE, id);
  return id[0];
};
/** Another tool's XDP program (here: the pass-all baseline of a second load), attached in generic mode. */
function foreignAttach(): { prog: XdpProgram; id: number } {
  const prog = XdpProgram.load();
  open.push(prog);
  const rc = libbpf().xdpAttach(ifindex, prog.progFd('spook_xdp_pass'), XDP_FLAGS_SKB_MODE, null);
  expect(rc).toBeGreaterThanOrEqual(0);
  return { prog, id: queryGeneric() };
}

beforeAll(() => {
  execFileSync('ip', ['link', 'add', IF, 'type', 'veth', 'peer', 'name', PEER]);
  ifindex = Number(readFileSync(`/sys/class/net/${IF}/ifindex`, 'utf8').trim());
});
afterEach(() => {
  libbpf().xdpDetach(ifindex, XDP_FLAGS_SKB_MODE, null);
  for (const p of open.splice(0)) {
    try {
      libbpf().close((p as unknown as { obj: unknown }).obj);
    } catch {
      /* already closed */
    }
  }
});
afterAll(() => {
  execFileSync('ip', ['link', 'del', IF]);
});

describe('attach and detach act on programs that are not spookd’s', () => {
  it('attach (auto, as spookd) does not replace an XDP program another tool attached', () => {
    const other = foreignAttach();
    expect(other.id).toBeGreaterThan(0);
    const spook = XdpProgram.load();
    open.push(spook);
    spook.configure({ port: 51912, enforcePairs: true, handshakeRate: 20, handshakeBurst: 40 });
    try {
      spook.attach(IF, 'auto');
    } catch {
      /* refusing is the right outcome */
    }
    // Currently: native fails (EEXIST, generic is active), the generic fallback silently replaces it.
    expect(queryGeneric()).toBe(other.id);
  });

  it('detach (spookd stop) leaves a program attached since by someone else', () => {
    const spook = XdpProgram.load();
    open.push(spook);
    spook.configure({ port: 51912, enforcePairs: true, handshakeRate: 20, handshakeBurst: 40 });
    expect(spook.attach(IF, 'generic')).toBe('generic');
    const other = foreignAttach(); // the operator's tool replaces it while spookd runs
    expect(other.id).not.toBe(0);
    spook.detach();
    // Currently: bpf_xdp_detach without an expected id removes the operator's program.
    expect(queryGeneric()).toBe(other.id);
  });

  it('spookd on an occupied interface: one clear warning, no fast path, the other program untouched; its own program detaches', async () => {
    const { FastPath } = await import('../drivers/daemon/fastpath.js');
    const { pino } = await import('pino');
    const { mkdtempSync, rmSync } = await import('node:fs');
    const { tmpdir } = await import('node:os');
    const { join } = await import('node:path');
    const dataDir = mkdtempSync(join(tmpdir(), 'r39d-'));
    try {
      const other = foreignAttach();
      const lines: string[] = [];
      const log = pino({ level: 'warn' }, { write: (s: string) => void lines.push(s) });
      const cfg = {
        dataDir,
        xdp: { interface: IF, mode: 'auto', handshakeRate: 20, handshakeBurst: 40, pinDir: '/nonexistent-r39d/spook' },
      };
      const fp = new FastPath(cfg as never, log);
      fp.start(51912);
      expect(fp.status().enabled).toBe(false);
      expect(fp.status().error).toMatch(new RegExp(`${IF} already has an XDP program attached \\(id ${other.id}, generic mode\\)`));
      expect(lines.filter((l) => /XDP fast path unavailable/.test(l))).toHaveLength(1);
      expect(queryGeneric()).toBe(other.id);
      fp.stop();
      expect(queryGeneric()).toBe(other.id);

      // Nothing else attached: spookd's own program attaches, and detach removes it (the kernel confirms it is ours).
      libbpf().xdpDetach(ifindex, XDP_FLAGS_SKB_MODE, null);
      const spook = XdpProgram.load();
      open.push(spook);
      expect(spook.attach(IF, 'generic')).toBe('generic');
      expect(queryGeneric()).toBe(spook.attachment!.programId);
      expect(spook.detach()).toBe('detached');
      expect(queryGeneric()).toBe(0);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
