/** `spook sim`: the deterministic simulator over many seeds, or one seed replayed with a trace. */
import { Command } from 'commander';
import { runSim, SIM_DEFAULTS, type SimOptions } from '../sim/run.js';
import { runSeeds } from '../sim/batch.js';
import { intArg, probArg } from './args.js';

interface Opts {
  seeds: number;
  seedBase: number;
  seed?: number;
  loss: number;
  dup: number;
  reorder: number;
  cuts: boolean;
  corrupt: number;
  ops: number;
  logRecords?: number;
  json: boolean;
}

export function simCommand(): Command {
  return new Command('sim')
    .description(
      'Run two endpoints over a simulated network with seeded loss, duplication, reordering, delay and link cuts under a random workload ' +
        '(set, del, conflicting cas, append), then check: same (version, hash) everywhere, no committed delta lost, ' +
        'no candidate both committed and rejected, every candidate decided. Exits 1 if any seed fails.',
    )
    .option('--seeds <n>', 'number of seeds to run', intArg('--seeds', 1), 100)
    .option('--seed-base <b>', 'first seed', intArg('--seed-base'), 1)
    .option('--seed <s>', 'replay one seed with a readable trace', intArg('--seed'))
    .option('--loss <p>', 'datagram loss probability', probArg('--loss'), SIM_DEFAULTS.loss)
    .option('--dup <p>', 'datagram duplication probability', probArg('--dup'), SIM_DEFAULTS.dup)
    .option('--reorder <p>', 'probability a datagram is delayed past later ones', probArg('--reorder'), SIM_DEFAULTS.reorder)
    .option('--cuts', 'cut the link 1-3 times per run (0.5-15 s, one or both directions)', false)
    .option('--corrupt <p>', 'per-operation probability of corrupting a follower entry in memory', probArg('--corrupt'), 0)
    .option('--ops <n>', 'proposals per endpoint', intArg('--ops', 1), SIM_DEFAULTS.ops)
    .option('--log-records <n>', 'delta log bound in records (default: drawn per seed from 8, 32, 4096)', intArg('--log-records', 1))
    .option('--json', 'print one JSON object', false)
    .action((o: Opts) => {
      const opts: Omit<SimOptions, 'seed' | 'trace'> = {
        ...SIM_DEFAULTS,
        loss: o.loss,
        dup: o.dup,
        reorder: o.reorder,
        cuts: o.cuts,
        corrupt: o.corrupt,
        ops: o.ops,
        logRecords: o.logRecords,
      };
      if (o.seed !== undefined) {
        const r = runSim({ ...opts, seed: o.seed, trace: o.json ? undefined : (line) => console.log(line) });
        if (o.json) console.log(JSON.stringify(r, null, 2));
        else {
          console.log('');
          console.log(`seed ${r.seed}: ${r.violations.length === 0 ? 'OK' : 'FAILED'} — converged ${r.converged}, lost commits ${r.lostCommits}, committed ${r.committed}, rejected ${r.rejected}, refused ${r.refused}`);
          console.log(`  ${r.datagrams} datagrams, ${r.bytesSent} bytes, ${r.reconciles} reconciliations, ${r.fullTransfers} full transfers, simulated ${(r.simTimeMs / 1000).toFixed(1)} s`);
          for (const [ep, regs] of Object.entries(r.final)) console.log(`  ${ep}: ${regs.map((g) => `v${g.version} ${g.hash}`).join('  ')}`);
        }
        process.exitCode = r.violations.length === 0 ? 0 : 1;
        return;
      }
      const s = runSeeds(o.seeds, o.seedBase, opts, o.json ? undefined : (r) => {
        if (r.violations.length > 0) console.error(`seed ${r.seed} FAILED: ${r.violations[0]}`);
      });
      if (o.json) console.log(JSON.stringify(s, null, 2));
      else {
        console.log(`seeds ${s.seeds} (from ${s.seedBase}): converged ${s.converged}, diverged ${s.diverged}, lost commits ${s.lostCommits}, failed ${s.failedSeeds.length}`);
        console.log(`committed ${s.committed}, rejected ${s.rejected}, refused ${s.refused}; ${s.reentanglements} re-entanglements, ${s.reconciles} by reconciliation or full transfer, ${s.fullTransfers} full transfers`);
        console.log(`${s.datagrams} datagrams, ${s.bytesSent} bytes; ${s.wallMs} ms wall`);
        if (s.failedSeeds.length > 0) console.log(`failed seeds: ${s.failedSeeds.slice(0, 20).join(' ')}  (replay: spook sim --seed S ...same options)`);
      }
      process.exitCode = s.failedSeeds.length === 0 ? 0 : 1;
    });
}
