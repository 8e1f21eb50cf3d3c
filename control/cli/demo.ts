/** `spook demo`: the main job of the foundation, two endpoints over a lossy simulated network. */
import { Command } from 'commander';
import { runDemo } from '../sim/demo.js';
import { intArg } from './args.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description('Two in-process endpoints share a register over a simulated lossy network: collapse, a cas conflict, decoherence, re-entanglement')
    .option('--seed <s>', 'network randomness seed', intArg('--seed'), 42)
    .option('--json', 'print the result as JSON (no narrative)', false)
    .action((o: { seed: number; json: boolean }) => {
      const r = runDemo(o.json ? () => {} : (line) => console.log(line), o.seed);
      if (o.json) console.log(JSON.stringify(r, null, 2));
      process.exitCode = r.aligned ? 0 : 1;
    });
}
