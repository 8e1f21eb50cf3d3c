import { describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';

/**
 * Every `spook` command, found by walking `--help`, given bad arguments: one line on stderr
 * naming the problem, a non-zero exit (2 for a wrong command line), never a stack trace. The
 * socket is one that does not exist, so whatever gets past parsing fails with exit 3.
 */
const SPOOK = join(import.meta.dirname, '..', 'bin', 'spook');
const NO_DAEMON = '/nonexistent/spook.sock';
const run = (...args: string[]) =>
  spawnSync(SPOOK, args, { encoding: 'utf8', timeout: 20_000, env: { ...process.env, SPOOK_SOCKET: NO_DAEMON } });

/** The subcommand names a `--help` lists. */
const subcommands = (path: string[]): string[] => {
  const help = run(...path, '--help').stdout;
  // The Commands section only: it ends at the first blank line (the exit-status epilogue follows).
  const section = help.split(/^Commands:$/m)[1]?.split(/\n\s*\n/)[0];
  if (!section) return [];
  return [...section.matchAll(/^ {2}(\S+)/gm)].map((m) => m[1]).filter((n) => n !== 'help');
};
const leaves = (path: string[] = []): string[][] => {
  const subs = subcommands(path);
  return subs.length === 0 ? [path] : subs.flatMap((s) => leaves([...path, s]));
};
const ALL = leaves();

/** One line, `spook: ...`, no stack frame. */
function oneLine(stderr: string): void {
  expect(stderr).toMatch(/^spook: [^\n]+\n$/);
  expect(stderr).not.toMatch(/^\s+at /m);
}

describe('spook: every command with bad arguments', () => {
  it('found the commands', () => {
    expect(ALL.map((c) => c.join(' '))).toEqual(
      expect.arrayContaining([
        'status',
        'set',
        'cas',
        'watch',
        'domain set',
        'domain propose',
        'wrap add',
        'wrap remove',
        'xdp status',
        'maps dump',
        'keygen',
      ]),
    );
    expect(ALL.length).toBeGreaterThan(30);
  });

  it('an unknown option: one line, exit 2', () => {
    for (const cmd of ALL) {
      const r = run(...cmd, '--no-such-option');
      expect(r.status, `${cmd.join(' ')}: ${r.stderr}`).toBe(2);
      oneLine(r.stderr);
      expect(r.stderr).toContain(`(see: spook ${cmd.join(' ')} --help)`);
    }
  }, 120_000);

  it('global options before or after the command (-s, --json): the same socket is used', () => {
    for (const args of [
      ['-s', NO_DAEMON, 'status'],
      ['status', '-s', NO_DAEMON],
      ['--json', 'pairs', '-s', NO_DAEMON],
    ]) {
      const r = run(...args);
      expect(r.status, args.join(' ')).toBe(3);
      oneLine(r.stderr);
      expect(r.stderr).toContain(NO_DAEMON);
    }
  });

  it.each([
    [['set', '-t', 'abc', 'config', 'k', 'v'], '--timeout must be a duration such as 500ms, 30s or 2m'],
    [['set', '-t', '-5s', 'config', 'k', 'v'], '--timeout must be a duration'],
    [['cas', 'config', 'k', 'x', 'v'], 'expect must be an integer >= 0, got "x"'],
    [['get', 'config', '--length', '-1'], '--length must be an integer in [0, 1048576], got "-1"'],
    [['get', 'config', '--offset', '1.5'], '--offset must be an integer >= 0, got "1.5"'],
    [['wrap', 'add', 'tcp', '--port', '99999', '--peer', 'b'], '--port must be an integer in [1, 65535], got "99999"'],
    [['wrap', 'remove', '--port', 'ssh'], '--port must be an integer in [1, 65535], got "ssh"'],
    [['wrap', 'add', 'tcp', '-p', '6379', '--port', '6379'], '-p is --peer in every command now; for the port write --port 6379'],
    [['wrap', 'remove', '-p', '6379'], '-p is --peer in every command now; for the port write --port 6379'],
    [['domain', 'outcome', 'abc'], 'seq must be an integer >= 1, got "abc"'],
    [['domain', 'cas', 'kv', 'k', 'seven', 'v'], 'cas: expect must be an integer >= 0, got "seven"'],
    [['domain', 'propose', '--op', 'set kv k'], 'set takes 3 arguments after the op, got 2'],
    [['domain', 'propose', '--op', 'frob kv k'], 'the op must be set, del, cas or append'],
    [['set', 'config'], "missing required argument 'key'"],
    [['nope'], "unknown command 'nope'"],
  ])('%j: exit 2, "%s"', (args, message) => {
    const r = run(...args);
    expect(r.status, r.stderr).toBe(2);
    oneLine(r.stderr);
    expect(r.stderr).toContain(message);
  });

  it('takes a value with spaces as one argument (it once crashed with a stack trace)', () => {
    const r = run('domain', 'set', 'kv', 'k', 'hello world');
    expect(r.status).toBe(3); // parsed; then no daemon
    oneLine(r.stderr);
  });

  it('accepts the duration forms', () => {
    for (const t of ['500ms', '30s', '2m', '1500']) expect(run('set', '-t', t, 'config', 'k', 'v').status, t).toBe(3);
    expect(run('set', '-t', '11m', 'config', 'k', 'v').status).toBe(2); // past the admin API's 600 s
  });
});
