/**
 * An ssh session that prints a numbered line every 50 ms (line-1, line-2, …) until a stop file
 * exists, then done-N: what a wrapped interactive session looks like across a restart or a cut.
 * Each line is stamped when it arrives, so a silence (the gap a restart causes) can be measured.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { nsArgv, type SshdServer } from './servers.js';
import { sleep } from './netns.js';

export class SshTicker {
  readonly lines: { text: string; at: number }[] = [];
  readonly proc: ChildProcess;
  readonly exit: Promise<number | null>;
  stderr = '';

  constructor(
    clientNs: string,
    addr: string,
    ssh: SshdServer,
    readonly stopFile: string,
  ) {
    rmSync(stopFile, { force: true });
    const cmd = `i=0; while [ ! -e ${stopFile} ]; do i=$((i+1)); echo line-$i; sleep 0.05; done; echo done-$i`;
    const argv = nsArgv(clientNs, 'ssh', [...ssh.sshArgs, addr, cmd]);
    this.proc = spawn(argv[0], argv.slice(1), { stdio: ['pipe', 'pipe', 'pipe'] });
    let buf = '';
    this.proc.stdout!.on('data', (c: Buffer) => {
      buf += c.toString();
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const text of parts) this.lines.push({ text, at: Date.now() });
    });
    this.proc.stderr!.on('data', (c: Buffer) => (this.stderr += c.toString()));
    this.exit = new Promise((r) => this.proc.once('exit', (code) => r(code)));
  }

  /** The longest silence between two lines, for lines arriving in [from, to) (ms). */
  gapIn(from: number, to: number): number {
    let g = 0;
    for (let i = 1; i < this.lines.length; i++)
      if (this.lines[i].at >= from && this.lines[i].at < to) g = Math.max(g, this.lines[i].at - this.lines[i - 1].at);
    return g;
  }

  /** Resolves once `n` more lines than now have arrived (false after `timeoutMs`). */
  async more(n: number, timeoutMs = 20_000): Promise<boolean> {
    const want = this.lines.length + n;
    const deadline = Date.now() + timeoutMs;
    while (this.lines.length < want) {
      if (Date.now() > deadline) return false;
      await sleep(20);
    }
    return true;
  }

  /** Ask the remote loop to end; its exit code (-1: no exit within 20 s). */
  async finish(): Promise<number | null> {
    writeFileSync(this.stopFile, '');
    return Promise.race([this.exit, sleep(20_000).then(() => -1)]);
  }

  /** Every line-k in order from 1, then done-N with N the last k: N, or undefined if not. */
  intact(): number | undefined {
    const texts = this.lines.map((l) => l.text);
    const n = texts.length - 1;
    for (let i = 0; i < n; i++) if (texts[i] !== `line-${i + 1}`) return undefined;
    return texts[n] === `done-${n}` ? n : undefined;
  }

  kill(): void {
    this.proc.kill('SIGKILL');
  }
}
