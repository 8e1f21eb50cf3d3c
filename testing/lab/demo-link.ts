/**
 * `spook-lab demo link` (what `make demo` runs): two spookd in two network namespaces (or on
 * loopback when namespaces are unavailable), pair them, sync, cut the link, write on both
 * sides, heal, and show `spook pairs` / `spook pair show` before and after.
 */
import { execFileSync } from 'node:child_process';
import { join } from 'node:path';
import { Lab, ROOT, canUseNetns, sleep, until } from './netns.js';
import type { PairSummary } from '../../client/protocol.js';

export async function runLinkDemo(print: (line: string) => void): Promise<boolean> {
  const netns = canUseNetns();
  const lab = new Lab(['a', 'b'], [{ a: 'a', b: 'b', subnet: 1 }], 47200, !netns);
  const cli = (host: string, ...args: string[]): void => {
    const sock = lab.host(host).socket;
    print(`\n$ spook ${args.join(' ')}            # on host ${host}`);
    try {
      print(execFileSync(process.execPath, [join(ROOT, 'bin/spook'), ...args, '-s', sock], { encoding: 'utf8' }).trimEnd());
    } catch (e) {
      print(((e as { stdout?: string }).stdout ?? '') + ((e as { stderr?: string }).stderr ?? ''));
    }
  };
  const pair = (host: string, peer: string): Promise<PairSummary> => lab.admin(host, 'pair', { peer });
  const aligned = async (): Promise<boolean> => {
    const [p, q] = await Promise.all([pair('a', 'b'), pair('b', 'a')]);
    return (
      p.state === 'ENTANGLED' &&
      q.state === 'ENTANGLED' &&
      p.registers.every(
        (r, i) => r.version === q.registers[i].version && r.hash === q.registers[i].hash && r.pending + q.registers[i].pending === 0,
      )
    );
  };
  try {
    print(
      netns
        ? 'Two hosts, a and b, in network namespaces joined by a veth link (10.77.1.1 <-> 10.77.1.2).'
        : 'Network namespaces are unavailable (not root?): two hosts on loopback; the "cut" stops b (SIGSTOP).',
    );
    for (const h of ['a', 'b']) lab.configure(h, [{ name: 'config', kind: 'map', policy: 'buffer' }]);
    await lab.start('a');
    await lab.start('b');
    await until('the pair to form', aligned, 20_000);
    cli('a', 'pairs');
    cli('a', 'set', 'config', 'region', 'eu-west');
    cli('b', 'set', 'config', 'owner', 'bob');
    cli('b', 'get', 'config', 'region');
    cli('a', 'pair', 'show', 'b');

    print(`\n--- cutting the link ${netns ? '(ip link set down)' : '(SIGSTOP b)'}; the sequencer keeps committing, the follower buffers`);
    lab.setLink('a', 'b', false);
    await until('decoherence', async () => (await pair('a', 'b')).state === 'DECOHERENT', 20_000);
    const seq = (await pair('a', 'b')).role === 'sequencer' ? 'a' : 'b';
    for (let i = 0; i < 5; i++)
      await lab.admin(seq, 'set', {
        peer: seq === 'a' ? 'b' : 'a',
        register: 'config',
        key: `during-cut/${i}`,
        value: `${i}`,
        timeoutMs: 500,
      });
    print(`host ${seq} (sequencer) committed 5 writes during the cut`);
    if (netns && seq === 'a') cli('b', 'set', 'config', 'buffered-on-b', 'yes', '--timeout', '1000');
    cli('a', 'pairs');

    print('\n--- healing the link');
    lab.setLink('a', 'b', true);
    await until('re-entanglement', aligned, 30_000);
    await sleep(200);
    cli('a', 'pairs');
    cli('a', 'pair', 'show', 'b');
    cli('b', 'registers');
    const [p, q] = await Promise.all([pair('a', 'b'), pair('b', 'a')]);
    const ok = p.registers[0].version === q.registers[0].version && p.registers[0].hash === q.registers[0].hash;
    print(
      `\n${ok ? 'ALIGNED' : 'NOT ALIGNED'}: a at v${p.registers[0].version} ${p.registers[0].hash}, b at v${q.registers[0].version} ${q.registers[0].hash}`,
    );
    return ok;
  } finally {
    await lab.destroy();
  }
}
