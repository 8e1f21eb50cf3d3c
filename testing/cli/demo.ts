/** `spook-lab demo`: the main job of the foundation, two endpoints over a lossy simulated network. */
import { Command } from 'commander';
import { runDemo } from '../sim/demo.js';
import { intArg } from '../../cli/args.js';
import { runLinkDemo } from '../lab/demo-link.js';

export function demoCommand(): Command {
  const demo = new Command('demo')
    .description(
      'Two in-process endpoints share a register over a simulated lossy network: collapse, a cas conflict, decoherence, re-entanglement',
    )
    .option('--seed <s>', 'network randomness seed', intArg('--seed'), 42)
    .option('--json', 'print the result as JSON (no narrative)', false)
    .action((o: { seed: number; json: boolean }) => {
      const r = runDemo(o.json ? () => {} : (line) => console.log(line), o.seed);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      process.exitCode = r.aligned ? 0 : 1;
    });
  demo
    .command('link')
    .description(
      'two spookd in network namespaces (loopback without root): pair, sync, cut, heal; spook pairs / pair show before and after',
    )
    .action(async () => {
      process.exitCode = (await runLinkDemo((line) => console.log(line))) ? 0 : 1;
    });
  return demo;
}
