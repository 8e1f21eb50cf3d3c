/**
 * `spook-lab`: the developers' CLI of a checkout (never installed). The seeded simulators,
 * the demos and the benchmarks, beside the operators' `spook`.
 */
import { Command } from 'commander';
import { simCommand } from './sim.js';
import { demoCommand } from './demo.js';
import { benchCommand } from './bench.js';

const program = new Command()
  .name('spook-lab')
  .description('Spook from a checkout: seeded simulators, demos and benchmarks (not installed).')
  .showHelpAfterError('(run with --help for usage)');

program.addCommand(simCommand());
program.addCommand(demoCommand());
program.addCommand(benchCommand());

await program.parseAsync(process.argv);
