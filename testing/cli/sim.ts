/** `spook-lab sim`: the deterministic simulator over many seeds, or one seed replayed with a trace. */
import { Command } from 'commander';
import { runSim, SIM_DEFAULTS, type SimOptions } from '../sim/run.js';
import { emptyTally, runSeeds, tallySeeds } from '../sim/batch.js';
import { DOMAIN_SIM_DEFAULTS, runDomainSeeds, runDomainSim, type DomainSimOptions } from '../sim/domain.js';
import { intArg, probArg } from '../../cli/args.js';
import { DEFAULT_WRAP_SIM, runWrapSim, type WrapSimResult } from '../sim/wrap.js';

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
  nodes?: number;
  partitions: boolean;
  crashes: boolean;
  storeFaults: number;
  largeValues: number;
  skew: boolean;
  membership: boolean;
  maxLog?: number;
  wrap: boolean;
  delta: boolean;
  smallCache: boolean;
  hold?: number;
  syncDelayMs?: number;
  reloads: boolean;
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
    .option('--large-values <p>', 'probability per set/cas/append of a large value (8 KiB-1 MiB, fragmented)', probArg('--large-values'), 0)
    .option('--json', 'print one JSON object', false)
    .option('--nodes <n>', 'simulate a QN domain of N members (Raft) instead of one pair', intArg('--nodes', 1))
    .option('--partitions', 'domains: split the members (minority | majority) 1-3 times', false)
    .option('--crashes', 'crash endpoints (domains: members) 1-2 times, all but their store lost, and restart them from it', false)
    .option(
      '--store-faults <p>',
      'per store write (pairs: each call; domains: each batch) probability that it fails during the workload: the endpoint stops as spookd does (fail-stop; a domain is fenced) and restarts from what was made durable',
      probArg('--store-faults'),
      0,
    )
    .option(
      '--sync-delay-ms <ms>',
      "pairs: each batch of writes reaches the store 0 to this many ms after it is taken, as spookd's fsyncs off its event loop (a crash first finds it on disk whole, in part or not at all)",
      intArg('--sync-delay-ms', 0),
    )
    .option(
      '--reloads',
      "pairs: reload a register's quota 1-2 times, at one end then at the other 0-8 s later (the registers differ meanwhile and nothing is decided)",
      false,
    )
    .option('--no-skew', 'domains: run every member clock at the same rate (default: ±10% rates and offsets)')
    .option('--membership', 'domains: remove one member and add a fresh one during the run', false)
    .option(
      '--max-log <n>',
      'domains: Raft log bound before a snapshot (default: drawn per seed from 16, 64, 100000)',
      intArg('--max-log', 8),
    )
    .option('--wrap', 'simulate two wrappers (WRAP sessions) over a carrier cut at seeded moments instead of a pair', false)
    .option('--delta', 'wrap: delta mode on every connection, with repeated content', false)
    .option('--small-cache', 'wrap: delta mode with a receiver cache far too small (references miss: NACK)', false)
    .option('--hold <ms>', `wrap: hold time (default ${DEFAULT_WRAP_SIM.holdMs})`, intArg('--hold', 1))
    .addHelpText(
      'after',
      '\nWith --nodes N the run is a QN domain: per seed it checks that members apply identical entries at every index\n' +
        '(prefixes of one history), that no commit reported to a proposer is lost, that every candidate ends committed or\n' +
        'rejected, and that all members converge to the same (index, hash) after the faults heal. --cuts then cuts single\n' +
        'links, which forces relaying through another member.',
    )
    .action((o: Opts) => {
      if (o.wrap) return runWrap(o);
      if (o.nodes !== undefined) return runDomain(o);
      const opts: Omit<SimOptions, 'seed' | 'trace'> = {
        ...SIM_DEFAULTS,
        loss: o.loss,
        dup: o.dup,
        reorder: o.reorder,
        cuts: o.cuts,
        corrupt: o.corrupt,
        ops: o.ops,
        logRecords: o.logRecords,
        crashes: o.crashes,
        storeFaults: o.storeFaults,
        largeValues: o.largeValues,
        syncDelayMs: o.syncDelayMs,
        reloads: o.reloads,
      };
      if (o.seed !== undefined) {
        const r = runSim({ ...opts, seed: o.seed, trace: o.json ? undefined : (line) => console.log(line) });
        if (o.json) console.log(JSON.stringify(r, null, 2));
        else {
          console.log('');
          console.log(
            `seed ${r.seed}: ${r.violations.length === 0 ? 'OK' : 'FAILED'} — converged ${r.converged}, lost commits ${r.lostCommits}, committed ${r.committed}, rejected ${r.rejected}, refused ${r.refused}`,
          );
          console.log(
            `  ${r.datagrams} datagrams, ${r.bytesSent} bytes, ${r.reconciles} reconciliations, ${r.fullTransfers} full transfers, ${r.crashes} crashes, ${r.storeFaults} store faults, simulated ${(r.simTimeMs / 1000).toFixed(1)} s`,
          );
          for (const [ep, regs] of Object.entries(r.final))
            console.log(`  ${ep}: ${regs.map((g) => `v${g.version} ${g.hash}`).join('  ')}`);
        }
        process.exitCode = r.violations.length === 0 ? 0 : 1;
        return;
      }
      const s = runSeeds(
        o.seeds,
        o.seedBase,
        opts,
        o.json
          ? undefined
          : (r) => {
              if (r.violations.length > 0) console.error(`seed ${r.seed} FAILED: ${r.violations[0]}`);
            },
      );
      if (o.json) console.log(JSON.stringify(s, null, 2));
      else {
        console.log(
          `seeds ${s.seeds} (from ${s.seedBase}): converged ${s.converged}, diverged ${s.diverged}, lost commits ${s.lostCommits}, failed ${s.failedSeeds.length}`,
        );
        console.log(
          `committed ${s.committed}, rejected ${s.rejected}, refused ${s.refused}; ${s.reentanglements} re-entanglements, ${s.reconciles} by reconciliation or full transfer, ${s.fullTransfers} full transfers; ${s.crashes} crashes, ${s.storeFaults} store faults`,
        );
        console.log(`${s.datagrams} datagrams, ${s.bytesSent} bytes; ${s.wallMs} ms wall`);
        if (s.failedSeeds.length > 0)
          console.log(`failed seeds: ${s.failedSeeds.slice(0, 20).join(' ')}  (replay: spook-lab sim --seed S ...same options)`);
      }
      process.exitCode = s.failedSeeds.length === 0 ? 0 : 1;
    });
}

function runDomain(o: Opts): void {
  const opts: Omit<DomainSimOptions, 'seed' | 'trace'> = {
    ...DOMAIN_SIM_DEFAULTS,
    nodes: o.nodes!,
    loss: o.loss,
    dup: o.dup,
    reorder: o.reorder,
    cuts: o.cuts,
    partitions: o.partitions,
    crashes: o.crashes,
    storeFaults: o.storeFaults,
    skew: o.skew,
    membership: o.membership,
    ops: o.ops,
    maxLogEntries: o.maxLog,
  };
  if (o.seed !== undefined) {
    const r = runDomainSim({ ...opts, seed: o.seed, trace: o.json ? undefined : (line) => console.log(line) });
    if (o.json) console.log(JSON.stringify(r, null, 2));
    else {
      console.log('');
      console.log(
        `seed ${r.seed}: ${r.violations.length === 0 ? 'OK' : 'FAILED'} — ${r.nodes} members converged ${r.converged} at index ${r.index} hash ${r.hash}`,
      );
      console.log(
        `  committed ${r.committed}, rejected ${r.rejected}, refused ${r.refused}; ${r.partitions} partitions, ${r.crashes} crashes, ${r.storeFaults} store faults, ${r.leaderChanges} leader changes, ${r.snapshots} snapshots installed, ${r.backgroundWritten} written in the background (${r.backgroundFailed} failed), ${r.relayed} relayed`,
      );
      for (const v of r.violations) console.log(`  VIOLATION ${v}`);
    }
    process.exitCode = r.violations.length === 0 ? 0 : 1;
    return;
  }
  const s = runDomainSeeds(
    o.seeds,
    o.seedBase,
    opts,
    o.json
      ? undefined
      : (r) => {
          if (r.violations.length > 0) console.error(`seed ${r.seed} FAILED: ${r.violations[0]}`);
        },
  );
  if (o.json) console.log(JSON.stringify(s, null, 2));
  else {
    console.log(`seeds ${s.seeds} (from ${s.seedBase}), ${s.nodes} members: converged ${s.converged}, failed ${s.failedSeeds.length}`);
    console.log(
      `committed ${s.committed}, rejected ${s.rejected}, refused ${s.refused}; ${s.partitions} partitions, ${s.crashes} crashes, ${s.storeFaults} store faults, ${s.leaderChanges} leader changes, ${s.snapshots} snapshots, ${s.backgroundWritten} written in the background (${s.backgroundFailed} failed), ${s.relayed} relayed`,
    );
    console.log(`${s.datagrams} datagrams, ${s.bytesSent} bytes; ${s.wallMs} ms wall`);
    if (s.failedSeeds.length > 0)
      console.log(
        `failed seeds: ${s.failedSeeds.slice(0, 20).join(' ')}  (replay: spook-lab sim --nodes ${s.nodes} --seed S ...same options)`,
      );
  }
  process.exitCode = s.failedSeeds.length === 0 ? 0 : 1;
}

/** `--wrap`: per seed, every stream is delivered byte-exact and in order, or both ends close at the hold. */
function runWrap(o: Opts): void {
  const summed = ['completed', 'holdExpired', 'outages', 'cuts', 'refBytes', 'nacks'] as const;
  const run = (seed: number): WrapSimResult & { converged: boolean; violations: string[] } => {
    const r = runWrapSim({
      ...DEFAULT_WRAP_SIM,
      seed,
      delta: o.delta || o.smallCache,
      smallCache: o.smallCache,
      holdMs: o.hold ?? DEFAULT_WRAP_SIM.holdMs,
    });
    return { ...r, converged: r.ok, violations: r.failure ? [r.failure] : [] };
  };
  const [count, base] = o.seed !== undefined ? [1, o.seed] : [o.seeds, o.seedBase];
  const sum = { ...emptyTally(summed), seedBase: base };
  tallySeeds(count, base, run, summed, sum, (r) => {
    if (!r.ok && !o.json) console.error(`seed ${r.seed} FAILED: ${r.failure}`);
  });
  if (o.json) console.log(JSON.stringify(sum, null, 2));
  else {
    console.log(
      `wrap seeds ${sum.seeds} (from ${sum.seedBase}): failed ${sum.failedSeeds.length}; connections completed ${sum.completed}, hold-expired ${sum.holdExpired}`,
    );
    console.log(
      `${sum.cuts} carrier cuts, ${sum.outages} connection outages held; delta mode ${sum.refBytes} bytes by reference, ${sum.nacks} NACKs; ${sum.wallMs} ms wall`,
    );
    if (sum.failedSeeds.length > 0)
      console.log(`failed seeds: ${sum.failedSeeds.slice(0, 20).join(' ')}  (replay: spook-lab sim --wrap --seed S ...same options)`);
  }
  process.exitCode = sum.failedSeeds.length === 0 ? 0 : 1;
}
